package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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

// A client that sends half of a request's headers and then nothing (a
// slowloris) loses its connection once ReadHeaderTimeout has passed, instead
// of holding it for as long as it likes.
func TestServerClosesAConnectionWhoseHeadersNeverEnd(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(http.NewServeMux())
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: errand\r\nX-Slow: ")); err != nil {
		t.Fatal(err)
	}
	// A generous bound for a busy machine: far past the 5 s the server
	// allows, far short of never.
	if err := conn.SetReadDeadline(time.Now().Add(60 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection was still open after %s with its headers unfinished", time.Since(start).Round(time.Second))
	}
	if waited := time.Since(start); waited < srv.ReadHeaderTimeout-100*time.Millisecond {
		t.Errorf("the connection closed after %s, before ReadHeaderTimeout (%s)", waited, srv.ReadHeaderTimeout)
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
