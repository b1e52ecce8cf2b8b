// Package errandtest runs errand for tests, in the test's own process,
// against a real PostgreSQL: a migrated database of the test's own, the
// daemon started in-process with the test's environment, and helpers that
// enqueue through the SQL contract and wait for a job's status. errand's own
// kinds keep their tests beside them with it; a team's kinds can do the same.
//
//	func TestMain(m *testing.M) { os.Exit(errandtest.Main(m)) }
//
//	func TestMyKind(t *testing.T) {
//		url, pool := errandtest.MigratedDB(t, errand.WithKinds(myKind))
//		ws := errandtest.NewWorkspace(t, pool, "acme")
//		errandtest.StartDaemon(t, url, nil, errand.WithKinds(myKind))
//		id := errandtest.Enqueue(t, pool, ws, "my.kind", `{}`)
//		errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
//	}
package errandtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/internal/cli"
	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/store"
)

// Main is a test package's TestMain: it gives the package a PostgreSQL (the
// server DATABASE_URL points at, any superuser connection, or a private one
// started from the installed binaries) and cleans up after it.
func Main(m *testing.M) int { return testdb.Main(m) }

// Buffer is a log sink the daemon writes while the test reads.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Daemon is `errand run` running in the test's process.
type Daemon struct {
	// Addr is its HTTP address (host:port).
	Addr string
	// Logs holds everything it logged.
	Logs   *Buffer
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Stop sends the equivalent of SIGTERM and returns what Main returned.
func (d *Daemon) Stop(t testing.TB) error {
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

// Done is closed when the daemon's Main has returned; Err is then valid.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Err is what Main returned, once Done is closed.
func (d *Daemon) Err() error { return d.err }

// FreeAddr is a loopback address nobody listens on right now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Env turns a map into a getenv.
func Env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// DaemonEnv is the environment StartDaemon uses: env on top of test
// defaults (a loopback HTTP address on a port the kernel picks, JSON logs,
// 20 ms first retry, a 60 s rescue lease, email capture unless env sets RESEND_API_KEY, and every recurring
// schedule off unless env sets ERRAND_SCHEDULES: a test drives time with
// `errand schedules tick`, and a daemon that happens to run at Monday 08:00
// UTC makes no usage reports it did not ask for).
func DaemonEnv(t testing.TB, dbURL string, env map[string]string) map[string]string {
	t.Helper()
	vars := map[string]string{
		"DATABASE_URL":      dbURL,
		"ERRAND_HTTP_ADDR":  "127.0.0.1:0",
		"ERRAND_LOG_FORMAT": "json",
		"ERRAND_RETRY_BASE": "20ms",
		"ERRAND_SCHEDULES":  "*=off",
		// A replica fences itself after 0.4 x this without a heartbeat
		// renewal; at the default 10 s a 4 s stall of a busy machine would
		// fence a test's daemon and rerun its jobs. Tests of rescue and
		// fencing set their own.
		"ERRAND_RESCUE_AFTER": "60s",
	}
	if env["RESEND_API_KEY"] == "" {
		vars["ERRAND_EMAIL_CAPTURE"] = "true"
	}
	for k, v := range env {
		vars[k] = v
	}
	return vars
}

// StartDaemon runs `errand run` in-process against dbURL with env on top of
// DaemonEnv's defaults, waits until /readyz answers 200, and stops it when
// the test ends (printing its logs if the test failed).
func StartDaemon(t testing.TB, dbURL string, env map[string]string, opts ...errand.Option) *Daemon {
	t.Helper()
	vars := DaemonEnv(t, dbURL, env)
	ctx, cancel := context.WithCancel(context.Background())
	d := &Daemon{Logs: &Buffer{}, cancel: cancel, done: make(chan struct{})}
	// The address the daemon listens on, from the daemon itself: a port
	// picked beforehand and released could be taken by another test first.
	// A caller's own WithReady is called too.
	var caller cli.Options
	for _, o := range opts {
		o(&caller)
	}
	listening := make(chan string, 1)
	opts = append(slices.Clip(opts), errand.WithReady(func(addr string) {
		if caller.OnReady != nil {
			caller.OnReady(addr)
		}
		listening <- addr
	}))
	go func() {
		d.err = errand.Main(ctx, []string{"run"}, Env(vars), d.Logs, d.Logs, opts...)
		close(d.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-d.done:
		case <-time.After(60 * time.Second):
		}
		if t.Failed() {
			t.Logf("daemon logs:\n%s", d.Logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	select {
	case d.Addr = <-listening:
	case <-d.done:
		t.Fatalf("daemon exited early: %v\n%s", d.err, d.Logs.String())
	case <-time.After(time.Until(deadline)):
		t.Fatalf("daemon not ready within 30s\n%s", d.Logs.String())
	}
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			t.Fatalf("daemon exited early: %v\n%s", d.err, d.Logs.String())
		default:
		}
		if resp, err := http.Get("http://" + d.Addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return d
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("daemon not ready within 30s\n%s", d.Logs.String())
	return nil
}

// NewDatabase is an empty database of the test's own, dropped when it ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return testdb.NewDatabase(t, false)
}

// Pool opens a pool on url, closed when the test ends.
func Pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	return testdb.Pool(t, url)
}

// MigratedDB is a fresh database migrated by `errand migrate` (kinds
// published, the binary's own with opts), and a superuser pool on it.
func MigratedDB(t testing.TB, opts ...errand.Option) (string, *pgxpool.Pool) {
	t.Helper()
	url := testdb.NewDatabase(t, false)
	var out bytes.Buffer
	if err := errand.Main(context.Background(), []string{"migrate"}, Env(map[string]string{"DATABASE_URL": url}), &out, &out, opts...); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	return url, testdb.Pool(t, url)
}

// NewWorkspace adds a workspace (name: slug in capitals) and returns its id.
func NewWorkspace(t testing.TB, pool *pgxpool.Pool, slug string) string {
	t.Helper()
	var id string
	if err := pool.QueryRow(context.Background(),
		"INSERT INTO errand.workspaces (name, slug) VALUES ($1, $2) RETURNING id::text", strings.ToUpper(slug), slug).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// Job is a row of errand.jobs, as a test looks at it.
type Job struct {
	ID          int64
	Status      string
	Attempt     int
	MaxAttempts int
	LastError   string
	RiverState  string
}

// GetJob reads a job through errand.jobs.
func GetJob(t testing.TB, pool *pgxpool.Pool, id int64) Job {
	t.Helper()
	var j Job
	err := pool.QueryRow(context.Background(), `
		SELECT id, status, attempt, max_attempts, coalesce(last_error, ''), river_state
		FROM errand.jobs WHERE id = $1`, id).Scan(&j.ID, &j.Status, &j.Attempt, &j.MaxAttempts, &j.LastError, &j.RiverState)
	if err != nil {
		t.Fatalf("read job %d: %v", id, err)
	}
	return j
}

// WaitJob polls until the job's status is one of want, failing the test
// after timeout (a generous bound, not a measurement).
func WaitJob(t testing.TB, pool *pgxpool.Pool, id int64, timeout time.Duration, want ...string) Job {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j := GetJob(t, pool, id)
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

// Enqueue inserts one job through the SQL contract and returns its id.
func Enqueue(t testing.TB, pool *pgxpool.Pool, ws, kind, args string) int64 {
	t.Helper()
	var id int64
	if err := pool.QueryRow(context.Background(),
		"INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, $2, $3) RETURNING id", ws, kind, args).Scan(&id); err != nil {
		t.Fatalf("enqueue %s %s: %v", kind, args, err)
	}
	return id
}

// ScopedArgs are the args of ScopedKind.
type ScopedArgs struct {
	Note string `json:"note" errand:"required"`
	Fail bool   `json:"fail"`
}

// ScopedKind is kind "test.scoped", for tests of tenant scoping: it writes
// one errand.workspace_members row (role viewer) in the job's workspace, in
// the transaction that completes the job, and with "fail": true fails after
// writing, so nothing of it may commit.
func ScopedKind() jobs.Kind {
	return jobs.Define("test.scoped", jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, args ScopedArgs) error {
		return job.CompleteInWorkspace(ctx, func(tx pgx.Tx) error {
			// No WHERE workspace_id: row level security fills it in.
			if _, err := tx.Exec(ctx, `INSERT INTO errand.workspace_members (workspace_id, user_id, role)
				VALUES (current_setting('app.current_workspace_id')::uuid, gen_random_uuid(), 'viewer')`); err != nil {
				return err
			}
			if args.Fail {
				return errors.New("asked to fail after writing")
			}
			return nil
		})
	})
}

// CountJobs counts every job in River's table, whatever its state.
func CountJobs(t testing.TB, db store.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM errand.river_job").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// ExampleDatabase is an empty database for a runnable example, which has no
// testing.T to clean up after it: call drop when done. It needs Main to
// have run (TestMain).
func ExampleDatabase() (url string, drop func(), err error) { return testdb.Fresh(false) }

// ExampleRun is errand migrated and running on a database of its own, for a
// runnable example of a kind (which has no testing.T): see StartExample.
type ExampleRun struct {
	// Conn is a superuser connection to the database.
	Conn *pgx.Conn
	drop func()
	stop context.CancelFunc
	done chan error
}

// StartExample migrates a fresh database, starts `errand run` on it with env
// on top of quiet defaults (loopback address, email capture, 20 ms first
// retry, errors only on stderr), and connects to it. Stop it when done.
func StartExample(env map[string]string, opts ...errand.Option) (*ExampleRun, error) {
	ctx := context.Background()
	url, drop, err := testdb.Fresh(false)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{"DATABASE_URL": url, "ERRAND_HTTP_ADDR": "127.0.0.1:0", "ERRAND_EMAIL_CAPTURE": "true",
		"ERRAND_RETRY_BASE": "20ms", "ERRAND_LOG_LEVEL": "error"}
	for k, v := range env {
		vars[k] = v
	}
	if err := errand.Main(ctx, []string{"migrate"}, Env(vars), io.Discard, os.Stderr, opts...); err != nil {
		drop()
		return nil, err
	}
	runCtx, stop := context.WithCancel(ctx)
	r := &ExampleRun{drop: drop, stop: stop, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		r.done <- errand.Main(runCtx, []string{"run"}, Env(vars), io.Discard, os.Stderr,
			append(opts, errand.WithReady(func(string) { close(ready) }))...)
	}()
	select {
	case <-ready:
	case err := <-r.done:
		stop()
		drop()
		return nil, err
	}
	if r.Conn, err = pgx.Connect(ctx, url); err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// Workspace adds a workspace and returns its id.
func (r *ExampleRun) Workspace(name, slug string) (string, error) {
	var id string
	err := r.Conn.QueryRow(context.Background(), `INSERT INTO errand.workspaces (name, slug) VALUES ($1, $2) RETURNING id`, name, slug).Scan(&id)
	return id, err
}

// Wait polls errand.jobs until the job is completed or failed (at most a
// minute) and returns its status, attempt and last error.
func (r *ExampleRun) Wait(id int64) (status string, attempt int, lastError string, err error) {
	deadline := time.Now().Add(time.Minute)
	for status != "completed" && status != "failed" {
		if time.Now().After(deadline) {
			return status, attempt, lastError, fmt.Errorf("job %d still %s after a minute", id, status)
		}
		time.Sleep(10 * time.Millisecond)
		err = r.Conn.QueryRow(context.Background(), `SELECT status, attempt, coalesce(last_error, '') FROM errand.jobs WHERE id = $1`, id).
			Scan(&status, &attempt, &lastError)
		if err != nil {
			return status, attempt, lastError, err
		}
	}
	return status, attempt, lastError, nil
}

// Stop shuts errand down, returns what its Main returned and drops the
// database.
func (r *ExampleRun) Stop() error {
	r.stop()
	err := <-r.done
	if r.Conn != nil {
		r.Conn.Close(context.Background())
	}
	r.drop()
	return err
}
