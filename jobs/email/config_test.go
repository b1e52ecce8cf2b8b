package email_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

// `errand run` without RESEND_API_KEY must not quietly capture (and publish)
// a production deploy's emails: it refuses to start and names both ways out.
func TestRunWithoutResendKeyRefusesToStartUnlessCaptureIsAskedFor(t *testing.T) {
	url, _ := errandtest.MigratedDB(t)
	cases := map[string]struct {
		env  map[string]string
		want []string
	}{
		"a deploy whose API key secret did not mount": {
			env:  map[string]string{"ERRAND_EMAIL_CAPTURE": ""},
			want: []string{"RESEND_API_KEY is not set", "ERRAND_EMAIL_CAPTURE=true", "ERRAND_QUEUES=email=0"},
		},
		"an API key together with capture mode": {
			env:  map[string]string{"RESEND_API_KEY": "re_x", "ERRAND_EMAIL_FROM": "a@acme.test", "ERRAND_EMAIL_CAPTURE": "true"},
			want: []string{"RESEND_API_KEY and ERRAND_EMAIL_CAPTURE=true are both set"},
		},
		"an API key without a sender": {
			env:  map[string]string{"RESEND_API_KEY": "re_x"},
			want: []string{"ERRAND_EMAIL_FROM is required when RESEND_API_KEY is set"},
		},
		"capture mode that is not a boolean": {
			env:  map[string]string{"ERRAND_EMAIL_CAPTURE": "yes please"},
			want: []string{`ERRAND_EMAIL_CAPTURE="yes please": want true or false`},
		},
		"the API key sent over plain http to another machine": {
			env:  map[string]string{"RESEND_API_KEY": "re_x", "ERRAND_EMAIL_FROM": "a@acme.test", "RESEND_BASE_URL": "http://resend-proxy.internal"},
			want: []string{"RESEND_BASE_URL=", "want https"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := errandtest.DaemonEnv(t, url, tc.env)
			var out bytes.Buffer
			err := errand.Main(context.Background(), []string{"run"}, errandtest.Env(env), &out, &out)
			if err == nil {
				t.Fatalf("started; want refused with %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// A replica that works no email needs no Resend key; plain http to a local
// Resend stand-in is fine.
func TestRunWithoutEmailWorkersNeedsNoResendKey(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, map[string]string{"ERRAND_EMAIL_CAPTURE": "", "ERRAND_QUEUES": "email=0"})
	id := errandtest.Enqueue(t, pool, ws, "ping", `{}`)
	errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
	// Without a key this replica is not in capture mode either: it has no
	// captured emails to show, and other replicas' mail is not its to publish.
	for _, path := range []string{"/emails", "/emails/1"} {
		resp, err := http.Get("http://" + d.Addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s on a replica without email workers or capture mode: %d, want 404", path, resp.StatusCode)
		}
	}

	var out bytes.Buffer
	env := errandtest.DaemonEnv(t, url, map[string]string{"RESEND_API_KEY": "re_x", "ERRAND_EMAIL_FROM": "a@acme.test", "RESEND_BASE_URL": "http://127.0.0.1:1"})
	err := errand.Main(context.Background(), []string{"migrate"}, errandtest.Env(env), &out, &out)
	if err != nil {
		t.Errorf("plain http to a loopback Resend stand-in refused: %v", err)
	}
}

// The captured-email pages show every tenant's emails without
// authentication: never on an address other machines can reach.
func TestCapturedEmailsAreNotServedOnANonLoopbackAddress(t *testing.T) {
	url, _ := errandtest.MigratedDB(t)
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	d := errandtest.StartDaemon(t, url, map[string]string{"ERRAND_HTTP_ADDR": "0.0.0.0:" + port})
	for _, path := range []string{"/emails", "/emails/1"} {
		resp, err := http.Get("http://127.0.0.1:" + port + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s on 0.0.0.0: %d, want 404", path, resp.StatusCode)
		}
	}
	if !strings.Contains(d.Logs.String(), "not serving GET /emails") {
		t.Errorf("the log does not say why /emails is not served:\n%s", d.Logs.String())
	}
}

// The captured-email pages listen on loopback, which a browser on this
// machine still reaches: a page whose name its owner rebinds to 127.0.0.1
// (DNS rebinding) sends that name as Host, and is refused; a request for
// this machine is served.
func TestCapturedEmailsAreNotServedToARequestForAnotherHost(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, nil)
	id := errandtest.Enqueue(t, pool, ws, "email.send", customEmail("For acme only"))
	errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
	var emailID int64
	if err := pool.QueryRow(context.Background(), `SELECT id FROM errand.emails WHERE job_id = $1`, id).Scan(&emailID); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(d.Addr)
	get := func(host, path string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+d.Addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/emails", fmt.Sprintf("/emails/%d", emailID), fmt.Sprintf("/emails/%d?workspace=%s", emailID, ws)} {
		for _, host := range []string{"rebind.attacker.example:" + port, "rebind.attacker.example"} {
			if code, body := get(host, path); code != http.StatusForbidden || strings.Contains(body, "For acme only") {
				t.Errorf("GET %s for Host %s: %d, want 403 and no email", path, host, code)
			}
		}
		for _, host := range []string{"localhost:" + port, "127.0.0.1:" + port} {
			if code, body := get(host, path); code != http.StatusOK || !strings.Contains(body, "For acme only") {
				t.Errorf("GET %s for Host %s: %d, want the page", path, host, code)
			}
		}
	}
}
