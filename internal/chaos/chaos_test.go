// Package chaos runs real errand processes (errand-chaos: errand plus a kind
// whose effect commits with its completion) and breaks things under them:
// SIGKILL, cut connections, SIGTERM under load, a PostgreSQL restart. The
// time bounds are generous correctness bounds, not performance figures.
package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/internal/netfault"
	"github.com/errand-dev/errand/internal/testdb"
)

var (
	binary     string
	buildFlags []string
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if !isShort() {
			dir, err := os.MkdirTemp("", "errand-chaos-bin-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			binary = filepath.Join(dir, "errand-chaos")
			args := append(append([]string{"build"}, buildFlags...), "-o", binary, "./errand-chaos")
			out, err := exec.Command("go", args...).CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "build errand-chaos: %v\n%s", err, out)
				return 1
			}
		}
		return testdb.Main(m)
	}())
}

func isShort() bool {
	for _, a := range os.Args {
		if a == "-test.short=true" || a == "-test.short" {
			return true
		}
	}
	return false
}

const rescueAfter = 3 * time.Second

type env struct {
	url  string
	pool *pgxpool.Pool
	ws   string
}

// prepare migrates url with errand-chaos (publishing chaos.effect) and adds
// the effects table, a tenant table like any other.
func prepare(t *testing.T, url string) env {
	t.Helper()
	cmd := exec.Command(binary, "migrate")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+url)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	pool := testdb.Pool(t, url)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `
		CREATE TABLE errand.chaos_effects (workspace_id uuid NOT NULL, job_id bigint NOT NULL, replica text NOT NULL, at timestamptz NOT NULL DEFAULT now());
		ALTER TABLE errand.chaos_effects ENABLE ROW LEVEL SECURITY;
		ALTER TABLE errand.chaos_effects FORCE ROW LEVEL SECURITY;
		CREATE POLICY tenant_isolation ON errand.chaos_effects
			USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
			WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);
		SELECT errand.grant_tenant('errand.chaos_effects');`)
	if err != nil {
		t.Fatal(err)
	}
	var ws string
	if err := pool.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('Chaos', 'chaos') RETURNING id::text`).Scan(&ws); err != nil {
		t.Fatal(err)
	}
	return env{url, pool, ws}
}

func setup(t *testing.T) env {
	t.Helper()
	if testing.Short() {
		t.Skip("chaos tests run real processes")
	}
	return prepare(t, testdb.NewDatabase(t, false))
}

type replica struct {
	name string
	cmd  *exec.Cmd
	addr string
	mu   sync.Mutex
	logs strings.Builder
	done chan struct{}
	err  error
}

func (r *replica) log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logs.String()
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func start(t *testing.T, name, dbURL string, extra ...string) *replica {
	t.Helper()
	r := &replica{name: name, addr: freeAddr(t), done: make(chan struct{})}
	r.cmd = exec.Command(binary, "run")
	r.cmd.Env = append(os.Environ(),
		"DATABASE_URL="+dbURL,
		"ERRAND_HTTP_ADDR="+r.addr,
		"ERRAND_RESCUE_AFTER="+rescueAfter.String(),
		"ERRAND_RETRY_BASE=50ms",
		"ERRAND_LOG_FORMAT=json",
		"ERRAND_LOG_LEVEL=warn",
		"ERRAND_EMAIL_CAPTURE=true",
		// CI runs every package against one server of 100 connections, two
		// packages at a time; three replicas at the default pool of 20 plus
		// their control and page pools would take most of it.
		"ERRAND_DB_MAX_CONNS=8",
	)
	r.cmd.Env = append(r.cmd.Env, extra...)
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stderr = r.cmd.Stdout
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(out)
		s.Buffer(make([]byte, 1<<20), 1<<20)
		for s.Scan() {
			r.mu.Lock()
			r.logs.WriteString(s.Text() + "\n")
			r.mu.Unlock()
		}
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		_ = r.cmd.Process.Kill()
		<-r.done
		if strings.Contains(r.log(), "WARNING: DATA RACE") {
			t.Errorf("replica %s reported a data race", r.name)
		}
		if t.Failed() {
			t.Logf("replica %s logs:\n%s", r.name, r.log())
		}
	})
	if !r.waitReady(30 * time.Second) {
		t.Fatalf("replica %s not ready within 30s:\n%s", name, r.log())
	}
	return r
}

func (r *replica) ready() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + r.addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

func (r *replica) waitReady(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-r.done:
			return false
		default:
		}
		if r.ready() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func (e env) enqueue(t *testing.T, n, sleepMS int) {
	t.Helper()
	_, err := e.pool.Exec(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args)
		SELECT $1::uuid, 'chaos.effect', jsonb_build_object('sleep_ms', $3::int) FROM generate_series(1, $2::int)`, e.ws, n, sleepMS)
	if err != nil {
		t.Fatal(err)
	}
}

func (e env) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (e env) waitCount(t *testing.T, want int, d time.Duration, sql string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := e.count(t, sql)
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d after %s, want %d: %s", got, d, want, sql)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkOnce: every job completed, each effect committed exactly once.
func (e env) checkOnce(t *testing.T, n int) {
	t.Helper()
	if got := e.count(t, `SELECT count(*) FROM errand.jobs WHERE kind = 'chaos.effect' AND status = 'completed'`); got != n {
		t.Errorf("%d of %d jobs completed", got, n)
	}
	if dup := e.count(t, `SELECT count(*) FROM (SELECT job_id FROM errand.chaos_effects GROUP BY job_id HAVING count(*) > 1) d`); dup != 0 {
		t.Errorf("%d jobs committed their effect more than once", dup)
	}
	if got := e.count(t, `SELECT count(DISTINCT job_id) FROM errand.chaos_effects`); got != n {
		t.Errorf("%d effects for %d jobs", got, n)
	}
}

func TestKilledLeaderReplicasJobsAreRescuedAndEffectsHappenOnce(t *testing.T) {
	e := setup(t)
	const n = 5000
	e.enqueue(t, n, 150)
	replicas := []*replica{start(t, "a", e.url), start(t, "b", e.url), start(t, "c", e.url)}
	e.waitCount(t, 600, 60*time.Second, `SELECT count(*) FROM errand.jobs WHERE status = 'completed'`)

	// The victim is River's leader, the hardest case for River's own
	// rescuer (its lease has to pass on first); errand's must not care.
	var victim string
	var pid int
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := e.pool.QueryRow(context.Background(), `SELECT r.id, r.pid FROM errand.river_leader l JOIN errand.replicas r ON r.id = l.leader_id`).Scan(&victim, &pid)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader elected within 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var a *replica
	for _, r := range replicas {
		if r.cmd.Process.Pid == pid {
			a = r
		}
	}
	if a == nil {
		t.Fatalf("the leader %s (pid %d) is not one of the test's replicas", victim, pid)
	}
	// The kill's time on the database's clock, which stamps the rescue.
	var killedAt time.Time
	if err := e.pool.QueryRow(context.Background(), `SELECT clock_timestamp()`).Scan(&killedAt); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.done
	// What it held when it died: a statement its backends were already
	// running (a claim of the next batch) may still commit after the kill, on
	// a busy machine well after it. Wait until PostgreSQL has let go of every
	// one of its sessions; a rescue may come first, so its jobs count too.
	gone := time.Now().Add(30 * time.Second)
	for e.count(t, `SELECT count(*) FROM pg_stat_activity WHERE application_name = left($1, 63)`, "errand "+victim) > 0 {
		if time.Now().After(gone) {
			t.Fatalf("the victim's database sessions outlived it by 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	released := time.Since(killed)
	const fromVictim = `EXISTS (SELECT 1 FROM unnest(errors) err WHERE err ->> 'error' LIKE 'rescued: replica ' || $1 || ' %')`
	held := e.count(t, `SELECT count(*) FROM errand.river_job
		WHERE (state = 'running' AND attempted_by[array_length(attempted_by, 1)] = $1) OR `+fromVictim, victim)
	if held == 0 {
		t.Fatal("the victim held no jobs when it died")
	}

	e.waitCount(t, n, 3*time.Minute, `SELECT count(*) FROM errand.jobs WHERE status = 'completed'`)
	e.checkOnce(t, n)
	rescued := e.count(t, `SELECT count(*) FROM errand.river_job WHERE `+fromVictim, victim)
	if rescued != held {
		t.Errorf("%d jobs rescued, the victim held %d when it died", rescued, held)
	}
	// A replica starved of CPU for 0.4 × ERRAND_RESCUE_AFTER fences itself
	// and its jobs are rescued too, as designed; when no replica fenced, no
	// job but the victim's may be rescued (that would be two live runs).
	if others := e.count(t, `SELECT count(*) FROM errand.river_job
		WHERE EXISTS (SELECT 1 FROM unnest(errors) err WHERE err ->> 'error' LIKE 'rescued:%') AND NOT `+fromVictim, victim); others > 0 {
		fenced := false
		// The victim too: it may have fenced and rejoined under a new id
		// before it was killed.
		for _, r := range replicas {
			if strings.Contains(r.log(), "fencing") {
				fenced = true
			}
		}
		if !fenced {
			t.Errorf("%d jobs of live replicas that never fenced were rescued", others)
		} else {
			t.Logf("a starved survivor fenced; %d of its jobs were rescued as well", others)
		}
	}
	// Each of the victim's jobs was available again soon after the kill, or
	// after PostgreSQL ended a claim it had in flight (when the job then ran
	// depends on the queue ahead of it). Designed for under 3 ×
	// ERRAND_RESCUE_AFTER (logged below, and measured by the crash-recovery
	// bench); asserted within 30 s, which a machine this test overloads on
	// purpose, with survivors starved into fencing and rejoining, cannot
	// exceed unless the rescue is broken.
	var slowest time.Duration
	err := e.pool.QueryRow(context.Background(), `
		SELECT coalesce(max((err ->> 'at')::timestamptz) - $1, '0')
		FROM errand.river_job, unnest(errors) AS err
		WHERE err ->> 'error' LIKE 'rescued: replica ' || $2 || ' %'`, killedAt, victim).Scan(&slowest)
	if err != nil {
		t.Fatal(err)
	}
	if bound := 30*time.Second + released; slowest <= 0 || slowest > bound {
		t.Errorf("rescued %s after the kill, bound %s", slowest, bound)
	}
	t.Logf("victim held %d jobs; %d rescued; its sessions ended %s and all its jobs were available again %s after the kill (ERRAND_RESCUE_AFTER %s)",
		held, rescued, released, slowest, rescueAfter)
}

func TestCutOffReplicaFencesBeforeItsJobsAreRescued(t *testing.T) {
	e := setup(t)
	u, _ := url.Parse(e.url)
	proxy := netfault.New(t, u.Host)
	// A wider lease than the other chaos tests: the order asserted below
	// (fence at 0.4 × R, rescue at 0.6 × R) then has a 4 s margin, which a
	// CPU-starved child process on a busy machine cannot eat (2 s, at 10 s,
	// was judged too thin by a review).
	const lease = 20 * time.Second
	leaseEnv := "ERRAND_RESCUE_AFTER=" + lease.String()
	cutOff := start(t, "cut-off", proxy.URL(t, e.url), leaseEnv)
	const n = 20
	e.enqueue(t, n, 4000)
	e.waitCount(t, n, 30*time.Second, `SELECT count(*) FROM errand.jobs WHERE status = 'processing'`)
	var firstID string
	if err := e.pool.QueryRow(context.Background(), `SELECT id FROM errand.replicas WHERE pid = $1`, cutOff.cmd.Process.Pid).Scan(&firstID); err != nil {
		t.Fatal(err)
	}

	// A partition, before any job can finish: the cut-off replica's sockets
	// stay open, its queries hang. The healthy replica connects directly.
	proxy.Blackhole(true)
	start(t, "healthy", e.url, leaseEnv)
	e.waitCount(t, n, 3*lease+30*time.Second, `SELECT count(*) FROM errand.jobs WHERE status = 'completed'`)
	e.checkOnce(t, n)
	if byCut := e.count(t, `SELECT count(*) FROM errand.chaos_effects WHERE replica = $1`, firstID); byCut != 0 {
		t.Errorf("%d effects committed by the cut-off replica's old identity", byCut)
	}

	// Never two live runs: the cut-off replica fenced (cancelling its jobs)
	// before the first of them was rescued.
	fencedAt, ok := logTime(cutOff.log(), "fencing")
	if !ok {
		t.Fatalf("the cut-off replica did not log that it fenced itself")
	}
	var rescuedAt time.Time
	err := e.pool.QueryRow(context.Background(), `
		SELECT min((err ->> 'at')::timestamptz) FROM errand.river_job, unnest(errors) AS err
		WHERE err ->> 'error' LIKE 'rescued: replica ' || $1 || ' %'`, firstID).Scan(&rescuedAt)
	if err != nil {
		t.Fatal(err)
	}
	if !fencedAt.Before(rescuedAt) {
		t.Errorf("fenced at %s, but its jobs were rescued at %s", fencedAt, rescuedAt)
	}
	t.Logf("fenced %s before the rescue", rescuedAt.Sub(fencedAt))
	if cutOff.ready() {
		t.Error("cut-off replica reports ready")
	}

	// The partition heals: it rejoins under a new identity without a restart.
	proxy.Cut(true)
	proxy.Blackhole(false)
	proxy.Cut(false)
	if !cutOff.waitReady(60 * time.Second) {
		t.Fatal("cut-off replica not ready again within 60s of reconnecting")
	}
	e.enqueue(t, 10, 0)
	e.waitCount(t, n+10, 60*time.Second, `SELECT count(*) FROM errand.jobs WHERE status = 'completed'`)
	e.checkOnce(t, n+10)
}

// logTime finds the first JSON log line containing substr and returns its time.
func logTime(logs, substr string) (time.Time, bool) {
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, substr) {
			continue
		}
		var l struct {
			Time time.Time `json:"time"`
		}
		if json.Unmarshal([]byte(line), &l) == nil {
			return l.Time, true
		}
	}
	return time.Time{}, false
}

func TestSIGTERMUnderLoadLosesNothingAndUsesNoAttempt(t *testing.T) {
	e := setup(t)
	const n = 300
	e.enqueue(t, n, 700)
	// Nothing here needs a rescue: a lease of 30 s keeps a starved replica
	// from fencing (after 12 s without a renewal; and a rescue from using an
	// attempt) on a busy machine.
	a := start(t, "a", e.url, "ERRAND_SHUTDOWN_TIMEOUT=300ms", "ERRAND_RESCUE_AFTER=30s")
	start(t, "b", e.url, "ERRAND_RESCUE_AFTER=30s")
	e.waitCount(t, 60, 60*time.Second, `SELECT count(*) FROM errand.jobs WHERE status = 'completed'`)
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.done:
		if a.err != nil {
			t.Errorf("SIGTERM exit: %v, want 0", a.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit within 30s of SIGTERM")
	}
	e.waitCount(t, n, 3*time.Minute, `SELECT count(*) FROM errand.jobs WHERE status = 'completed'`)
	e.checkOnce(t, n)
	if more := e.count(t, `SELECT count(*) FROM errand.jobs WHERE attempt <> 1`); more != 0 {
		t.Errorf("%d jobs used more than one attempt", more)
	}
}
