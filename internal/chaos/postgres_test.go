package chaos

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/internal/localpg"
)

// privatePostgres starts a PostgreSQL of the test's own: these tests restart
// or starve the server, which must never be the one other packages share.
func privatePostgres(t *testing.T) (*localpg.Server, localpg.Options) {
	t.Helper()
	if testing.Short() {
		t.Skip("chaos tests run real processes")
	}
	base, err := os.MkdirTemp("", "errand-chaos-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := localpg.Options{DataDir: filepath.Join(base, "data"), Ephemeral: true, BinDir: os.Getenv("ERRAND_PG_BINDIR")}
	srv, err := localpg.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Port = srv.Port()
	t.Cleanup(func() { _ = srv.Stop() })
	return srv, opts
}

func TestPostgresRestartMidRun(t *testing.T) {
	srv, opts := privatePostgres(t)
	e := prepare(t, srv.URL("postgres"))
	const n = 400
	e.enqueue(t, n, 50)
	a := start(t, "a", e.url)
	b := start(t, "b", e.url)
	e.waitCount(t, 50, 60*time.Second, `SELECT count(*) FROM errand.jobs WHERE status = 'completed'`)

	e.pool.Reset()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	notReady := func(r *replica) bool {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if !r.ready() {
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	}
	if !notReady(a) || !notReady(b) {
		t.Error("a replica stayed ready with PostgreSQL down")
	}
	restarted, err := localpg.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = restarted.Stop() })
	for _, r := range []*replica{a, b} {
		if !r.waitReady(60 * time.Second) {
			t.Fatalf("replica %s not ready within 60s of PostgreSQL's return", r.name)
		}
		select {
		case <-r.done:
			t.Fatalf("replica %s exited: %v", r.name, r.err)
		default:
		}
	}
	e.enqueue(t, 50, 0)
	e.waitCount(t, n+50, 3*time.Minute, `SELECT count(*) FROM errand.jobs WHERE status = 'completed'`)
	e.checkOnce(t, n+50)
}

// The server refuses new connections (all slots taken) and then statements
// time out (a lock held past statement_timeout): the replica logs why, stays
// up, and finishes every job once the trouble passes.
func TestConnectionExhaustionAndStatementTimeoutRecover(t *testing.T) {
	srv, _ := privatePostgres(t)
	e := prepare(t, srv.URL("postgres"))
	ctx := context.Background()
	if _, err := e.pool.Exec(ctx, `ALTER ROLE postgres SET statement_timeout = '1s'`); err != nil {
		t.Fatal(err)
	}
	r := start(t, "a", e.url, "ERRAND_DB_MAX_CONNS=8", "ERRAND_LOG_LEVEL=info")

	// Take every connection slot, and for two seconds keep cutting the
	// replica's own connections and taking the slots they free, so that it
	// must reconnect to a full server.
	var hogs []*pgx.Conn
	fill := func() {
		for {
			c, err := pgx.Connect(ctx, srv.URL("postgres"))
			if err != nil {
				if !strings.Contains(err.Error(), "too many clients") && !strings.Contains(err.Error(), "remaining connection slots") {
					t.Fatalf("unexpected connect error: %v", err)
				}
				return
			}
			hogs = append(hogs, c)
		}
	}
	fill()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if _, err := hogs[0].Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'errand %'`); err != nil {
			t.Fatal(err)
		}
		fill()
		time.Sleep(50 * time.Millisecond)
	}
	const n = 200
	// Enqueue through a hog (the pool can't connect either).
	if _, err := hogs[0].Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args)
		SELECT $1::uuid, 'chaos.effect', '{"sleep_ms": 5}' FROM generate_series(1, $2::int)`, e.ws, n); err != nil {
		t.Fatal(err)
	}
	// Let the replica back in on a few slots, so that it meets the lock
	// below (with every slot taken it might not reach the server at all
	// while the lock is held).
	for free := min(4, len(hogs)-2); free > 0; free-- {
		hogs[len(hogs)-1].Close(ctx)
		hogs = hogs[:len(hogs)-1]
	}
	// Hold a lock River needs past the statement timeout: until the replica
	// has logged a statement cancelled by it (at most a minute; the check
	// below says so if it never came).
	tx, err := hogs[1].Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0; LOCK TABLE errand.river_job IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	const timedOut = "canceling statement due to statement timeout"
	before := strings.Count(r.log(), timedOut)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) &&
		strings.Count(r.log(), timedOut) == before; {
		time.Sleep(100 * time.Millisecond)
	}
	_ = tx.Rollback(ctx)
	for _, c := range hogs {
		c.Close(ctx)
	}
	e.waitCount(t, n, 3*time.Minute, `SELECT count(*) FROM errand.jobs WHERE status = 'completed'`)
	e.checkOnce(t, n)
	if stuck := e.count(t, `SELECT count(*) FROM errand.jobs WHERE status = 'processing'`); stuck != 0 {
		t.Errorf("%d jobs stuck processing", stuck)
	}
	if !r.waitReady(30 * time.Second) {
		t.Error("replica not ready after the trouble passed")
	}
	logs := r.log()
	for _, cause := range []string{"too many clients", timedOut} {
		if !strings.Contains(logs, cause) {
			t.Errorf("the logs do not say %q", cause)
		}
	}
}
