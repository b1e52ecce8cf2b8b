package errand_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/jobs"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// syncBuffer is a log sink the daemon writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type daemon struct {
	addr   string
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan struct{} // closed when Main returns
	err    error         // what Main returned, valid after done
}

// stop sends the equivalent of SIGTERM and returns what Main returned.
func (d *daemon) stop(t *testing.T) error {
	t.Helper()
	d.cancel()
	select {
	case <-d.done:
		return d.err
	case <-time.After(60 * time.Second):
		t.Fatal("daemon did not stop within 60s")
		return nil
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startDaemon runs `errand run` in-process against dbURL with env on top of
// test defaults, and waits until /readyz answers 200.
func startDaemon(t *testing.T, dbURL string, env map[string]string, opts ...errand.Option) *daemon {
	t.Helper()
	vars := map[string]string{
		"DATABASE_URL":      dbURL,
		"ERRAND_HTTP_ADDR":  freeAddr(t),
		"ERRAND_LOG_FORMAT": "json",
		"ERRAND_RETRY_BASE": "20ms",
	}
	for k, v := range env {
		vars[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{addr: vars["ERRAND_HTTP_ADDR"], logs: &syncBuffer{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		d.err = errand.Main(ctx, []string{"run"}, func(k string) string { return vars[k] }, d.logs, d.logs, opts...)
		close(d.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-d.done:
		case <-time.After(60 * time.Second):
		}
		if t.Failed() {
			t.Logf("daemon logs:\n%s", d.logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			t.Fatalf("daemon exited early: %v\n%s", d.err, d.logs.String())
		default:
		}
		if resp, err := http.Get("http://" + d.addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return d
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("daemon not ready within 30s\n%s", d.logs.String())
	return nil
}

// migratedDB is a fresh database migrated by `errand migrate` (kinds published).
func migratedDB(t *testing.T, opts ...errand.Option) (string, *pgxpool.Pool) {
	t.Helper()
	url := testdb.NewDatabase(t, false)
	var out bytes.Buffer
	if err := errand.Main(context.Background(), []string{"migrate"}, mapEnv(map[string]string{"DATABASE_URL": url}), &out, &out, opts...); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	return url, testdb.Pool(t, url)
}

func mapEnv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func newWorkspace(t *testing.T, pool *pgxpool.Pool, slug string) string {
	t.Helper()
	var id string
	if err := pool.QueryRow(context.Background(),
		"INSERT INTO errand.workspaces (name, slug) VALUES ($1, $2) RETURNING id::text", strings.ToUpper(slug), slug).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

type jobRow struct {
	ID          int64
	Status      string
	Attempt     int
	MaxAttempts int
	LastError   string
	RiverState  string
}

func getJob(t *testing.T, pool *pgxpool.Pool, id int64) jobRow {
	t.Helper()
	var j jobRow
	err := pool.QueryRow(context.Background(), `
		SELECT id, status, attempt, max_attempts, coalesce(last_error, ''), river_state
		FROM errand.jobs WHERE id = $1`, id).Scan(&j.ID, &j.Status, &j.Attempt, &j.MaxAttempts, &j.LastError, &j.RiverState)
	if err != nil {
		t.Fatalf("read job %d: %v", id, err)
	}
	return j
}

// waitJob polls until the job's status is one of want.
func waitJob(t *testing.T, pool *pgxpool.Pool, id int64, timeout time.Duration, want ...string) jobRow {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j := getJob(t, pool, id)
		for _, w := range want {
			if j.Status == w {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d: status %q (river %s, attempt %d, error %q) after %s, want %v", id, j.Status, j.RiverState, j.Attempt, j.LastError, timeout, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func enqueue(t *testing.T, pool *pgxpool.Pool, ws, kind, args string) int64 {
	t.Helper()
	var id int64
	if err := pool.QueryRow(context.Background(),
		"INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, $2, $3) RETURNING id", ws, kind, args).Scan(&id); err != nil {
		t.Fatalf("enqueue %s %s: %v", kind, args, err)
	}
	return id
}

var _ = errors.New
var _ = fmt.Sprint
var _ = jobs.QueueDefault
