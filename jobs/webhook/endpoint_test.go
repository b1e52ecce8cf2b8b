package webhook_test

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/errand-dev/errand/errandtest"
)

// An app that writes secret = NULL (instead of leaving the column out)
// gets a generated secret all the same: "whsec_" and the base64 of 32
// bytes, which the reference library accepts.
func TestAnExplicitNullSecretGetsAGeneratedOne(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	var secret string
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.webhook_endpoints (workspace_id, url, secret)
		VALUES ($1, 'https://hooks.example.com/in', NULL) RETURNING secret`, ws).Scan(&secret); err != nil {
		t.Fatal(err)
	}
	encoded, ok := strings.CutPrefix(secret, "whsec_")
	key, err := base64.StdEncoding.DecodeString(encoded)
	if !ok || err != nil || len(key) != 32 {
		t.Errorf("secret %q: prefix whsec_ %v, %d bytes (%v); want 32", secret, ok, len(key), err)
	}
	if _, err := standardwebhooks.NewWebhook(secret); err != nil {
		t.Errorf("the reference library refuses secret %q: %v", secret, err)
	}
}

// An empty port is the scheme's default (RFC 3986; Go delivers to port 80
// or 443, TestAnEmptyPortIsTheSchemesDefault), and escapes of two hex digits
// are fine anywhere: such URLs are accepted as they are.
func TestAURLWithAnEmptyPortOrEscapesIsAccepted(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	for _, u := range []string{"https://hooks.example.com:/in", "http://[2606:4700::1111]:/in", "https://hooks.example.com/in%2Fout?q=50%25#%C3%A9"} {
		var stored string
		if err := pool.QueryRow(context.Background(), `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, $2) RETURNING url`, ws, u).Scan(&stored); err != nil || stored != u {
			t.Errorf("%s: stored %q, %v; want it accepted as it is", u, stored, err)
		}
	}
}

// An endpoint's URL is checked on UPDATE as at INSERT: an app that moves
// its endpoint to loopback, a private address (in any notation) or
// something that is no URL is refused, and the endpoint keeps its URL.
func TestAnEndpointUpdatedToABadURLIsRefused(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	const good = "https://hooks.example.com/in"
	ep, _ := newEndpoint(t, pool, ws, good)
	for _, tc := range []struct{ name, url, code, message string }{
		{"a url on loopback", "http://127.0.0.1:8080/hook", "22023", "host 127.0.0.1 is loopback"},
		{"a url on loopback in decimal", "http://2130706433/", "22023", "(the IPv4 address 127.0.0.1 written another way) is loopback"},
		{"a url in a private network", "https://192.168.1.10/hook", "22023", "is private (RFC 1918)"},
		{"a url on the cloud metadata address", "http://169.254.169.254/latest/meta-data/", "22023", "is link-local"},
		{"a url on IPv6 loopback", "http://[::1]/", "22023", "host [::1] is loopback"},
		{"a url on localhost", "http://localhost:3000/", "22023", "host localhost is loopback"},
		{"a url that is not a url", "hooks.example.com/in", "22023", "must start with http:// or https://"},
		{"a url with a user and password", "https://user:pw@hooks.example.com/in", "22023", "must not carry a user or password"},
		{"a url with a % that starts no escape", "https://hooks.example.com/in/%zz", "22023", "has '%zz' in its path: a % must start an escape of two hex digits"},
		{"a url whose host has two dots in a row", "https://hooks..example.com/in", "22023", "host 'hooks..example.com' has an empty label"},
		{"no url", "", "23502", "webhook endpoint url is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var url any = tc.url
			if tc.url == "" {
				url = nil
			}
			_, err := pool.Exec(context.Background(), `UPDATE errand.webhook_endpoints SET url = $2 WHERE id = $1`, ep, url)
			wantPgError(t, err, tc.code, tc.message)
		})
	}
	var url string
	if err := pool.QueryRow(context.Background(), `SELECT url FROM errand.webhook_endpoints WHERE id = $1`, ep).Scan(&url); err != nil || url != good {
		t.Errorf("the endpoint's url is %q (%v) after the refused updates, want %q", url, err, good)
	}
}
