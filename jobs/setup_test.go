package jobs

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A tenant-data page on a loopback address answers a browser on this
// machine only when the browser asked for this machine: a page whose own
// name was rebound to 127.0.0.1 (DNS rebinding) sends its name as Host.
func TestTenantDataPagesRefuseAHostThatIsNotThisMachine(t *testing.T) {
	var mounted http.Handler
	s := NewSetup(Env{}, nil, nil, nil, true, func(_ string, h http.Handler) { mounted = h })
	if !s.HandleTenantData("GET /emails", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("every tenant's emails"))
	})) {
		t.Fatal("not mounted on a loopback address")
	}
	cases := []struct {
		name, host string
		want       int
	}{
		{"a rebound name with the daemon's port", "rebind.attacker.example:8080", http.StatusForbidden},
		{"a rebound name without a port", "rebind.attacker.example", http.StatusForbidden},
		{"a name under localhost's", "localhost.attacker.example:8080", http.StatusForbidden},
		{"a subdomain of localhost", "evil.localhost:8080", http.StatusForbidden},
		{"a private address", "192.168.1.10:8080", http.StatusForbidden},
		{"the unspecified address", "0.0.0.0:8080", http.StatusForbidden},
		{"an IPv6 address that is not loopback", "[fe80::1]:8080", http.StatusForbidden},
		{"no Host at all", "", http.StatusForbidden},
		{"localhost", "localhost:8080", http.StatusOK},
		{"localhost in capitals, without a port", "LOCALHOST", http.StatusOK},
		{"127.0.0.1", "127.0.0.1:8080", http.StatusOK},
		{"another address of 127.0.0.0/8", "127.1.2.3", http.StatusOK},
		{"IPv6 loopback", "[::1]:8080", http.StatusOK},
		{"IPv6 loopback without a port", "[::1]", http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/emails", nil)
			r.Host = tc.host
			w := httptest.NewRecorder()
			mounted.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Errorf("Host %q: %d %s, want %d", tc.host, w.Code, w.Body, tc.want)
			}
		})
	}
}

// A route the mux refuses stops the kind's start with an error naming it,
// as an error from setup does, instead of a panic that takes the daemon
// down with a goroutine dump.
func TestARouteTheMuxRefusesIsAnErrorAtStart(t *testing.T) {
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	cases := map[string]struct {
		pattern string
		handler http.Handler
		want    string
	}{
		"a route the daemon already serves": {"GET /healthz", ok, `route "GET /healthz":`},
		"a malformed pattern":               {"GET healthz", ok, `route "GET healthz":`},
		"a nil handler":                     {"GET /exports", nil, `route "GET /exports": the handler is nil`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.Handle("GET /healthz", ok)
			k := Define("test.routes", QueueDefault, func(context.Context, *Job, struct{}) error { return nil },
				WithSetup(func(_ context.Context, s *Setup) error {
					s.Handle(tc.pattern, tc.handler)
					return nil
				}))
			s := NewSetup(NewEnv(func(string) string { return "" }, nil, nil), nil, &Problems{}, nil, true, mux.Handle)
			err := k.Start(context.Background(), s)
			if err == nil || !strings.Contains(err.Error(), "kind test.routes: "+tc.want) {
				t.Errorf("Start = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
