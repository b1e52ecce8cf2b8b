package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/errand-dev/errand/jobs"
)

// Every phase of a request is bounded: a client that dawdles over headers,
// body or reading the answer, or keeps a connection idle, cannot hold it.
func TestServerBoundsEveryPhaseOfARequest(t *testing.T) {
	srv := newServer(http.NewServeMux())
	for name, d := range map[string]int64{
		"ReadHeaderTimeout": int64(srv.ReadHeaderTimeout), "ReadTimeout": int64(srv.ReadTimeout),
		"WriteTimeout": int64(srv.WriteTimeout), "IdleTimeout": int64(srv.IdleTimeout),
	} {
		if d <= 0 {
			t.Errorf("%s is not set", name)
		}
	}
}

// /readyz answers unauthenticated callers: it says what is wrong, not the
// database's own error text (which can name hosts, users and databases).
func TestReadyzDoesNotEchoDatabaseErrors(t *testing.T) {
	var logged strings.Builder
	logger := slog.New(slog.NewTextHandler(&logged, nil))
	mux := http.NewServeMux()
	handleHealth(mux, pingFunc(func() error {
		return errors.New(`dial tcp 10.1.2.3:5432: connect: connection refused (user "errand_prod" database "billing")`)
	}), func() error { return nil }, &jobs.Problems{}, logger)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || strings.Contains(rec.Body.String(), "10.1.2.3") || strings.Contains(rec.Body.String(), "errand_prod") {
		t.Errorf("/readyz answered %d %q: want 503 without the database's error", rec.Code, rec.Body.String())
	}
	if !strings.Contains(logged.String(), "10.1.2.3") {
		t.Errorf("the database's error was not logged: %q", logged.String())
	}
}

// pingFunc makes a function a pinger.
type pingFunc func() error

func (f pingFunc) Ping(context.Context) error { return f() }
