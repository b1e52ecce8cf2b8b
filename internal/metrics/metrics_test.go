package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/internal/metrics"
	"github.com/errand-dev/errand/internal/netfault"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/store"
)

func TestMain(m *testing.M) { os.Exit(errandtest.Main(m)) }

// scrape reads /metrics and parses it, failing the test on any lint problem
// (client_golang's promlint: names, units, suffixes, help texts).
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	problems, err := promlint.New(strings.NewReader(string(body))).Lint()
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return families
}

// value is the value of the series of family name whose labels include
// want, and whether there is one.
func value(families map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// metricsKinds are kinds of the tests' own, for outcomes ping cannot give:
// metrics.snooze snoozes its first run, metrics.block runs until it is
// cancelled, metrics.permanent fails with a permanent error.
func metricsKinds() []jobs.Kind {
	var mu sync.Mutex
	snoozed := map[int64]bool{}
	type noArgs struct{}
	return []jobs.Kind{
		jobs.Define("metrics.snooze", jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, _ noArgs) error {
			mu.Lock()
			defer mu.Unlock()
			if !snoozed[job.ID] {
				snoozed[job.ID] = true
				return jobs.Snooze(10 * time.Millisecond) // waits without using an attempt
			}
			return nil
		}),
		jobs.Define("metrics.block", jobs.QueueDefault, func(ctx context.Context, _ *jobs.Job, _ noArgs) error {
			<-ctx.Done()
			return ctx.Err()
		}),
		jobs.Define("metrics.permanent", jobs.QueueDefault, func(ctx context.Context, _ *jobs.Job, _ noArgs) error {
			return jobs.Permanent(errors.New("this job cannot succeed"))
		}),
	}
}

// series is one expected series: its value must lie in [min, max].
type series struct {
	name     string
	labels   map[string]string
	min, max float64
}

func exactly(name string, labels map[string]string, v float64) series {
	return series{name, labels, v, v}
}

func atLeast(name string, labels map[string]string, v float64) series {
	return series{name, labels, v, math.Inf(1)}
}

// waitFor scrapes addr until every series in want has its value (the
// counters are counted as each attempt ends, the database figures are
// refreshed every few seconds: a bound, not a measurement).
func waitFor(t *testing.T, addr string, want ...series) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		families := scrape(t, addr)
		var missing []string
		for _, w := range want {
			if v, ok := value(families, w.name, w.labels); !ok || v < w.min || v > w.max {
				missing = append(missing, fmt.Sprintf("%s%v = %v (present %v), want between %v and %v", w.name, w.labels, v, ok, w.min, w.max))
			}
		}
		if len(missing) == 0 {
			return families
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s:\n%s", strings.Join(missing, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A daemon's /metrics counts the jobs it finished by outcome, how long they
// ran and waited, the kinds' own outcomes (an email captured, a webhook
// delivered), reads the backlog from the database (pending, held by a paused
// workspace, processing), says it leads; the output passes promlint.
func TestDaemonServesMetrics(t *testing.T) {
	t.Parallel()
	kinds := errand.WithKinds(metricsKinds()...)
	url, pool := errandtest.MigratedDB(t, kinds)
	ws := errandtest.NewWorkspace(t, pool, "metrics")
	paused := errandtest.NewWorkspace(t, pool, "paused")
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
	t.Cleanup(receiver.Close)
	d := errandtest.StartDaemon(t, url, map[string]string{"ERRAND_WEBHOOK_ALLOW_CIDRS": "127.0.0.1/32"}, kinds)
	ctx := context.Background()

	insert := func(ws, kind, args string, maxAttempts int, runAt string) int64 {
		var id int64
		if err := pool.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, max_attempts, run_at)
			VALUES ($1, $2, $3, $4, now() + $5::interval) RETURNING id`, ws, kind, args, maxAttempts, runAt).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	if _, err := pool.Exec(ctx, `SELECT errand.pause_workspace($1)`, paused); err != nil {
		t.Fatal(err)
	}
	insert(paused, "ping", `{}`, 3, "0s") // held
	done := insert(ws, "ping", `{}`, 3, "0s")
	retried := insert(ws, "ping", `{"fail_times": 1}`, 3, "0s")
	failed := insert(ws, "ping", `{"fail_times": 5}`, 1, "0s")
	insert(ws, "ping", `{}`, 3, "1 hour") // pending, not due
	snoozed := insert(ws, "metrics.snooze", `{}`, 3, "0s")
	permanent := insert(ws, "metrics.permanent", `{}`, 3, "0s")
	blocked := insert(ws, "metrics.block", `{}`, 3, "0s")
	email := errandtest.Enqueue(t, pool, ws, "email.send", `{"to": "ann@example.com", "template": "custom", "subject": "Hi", "text": "Hello"}`)
	if _, err := pool.Exec(ctx, `INSERT INTO errand.webhook_endpoints (workspace_id, url, event_types) VALUES ($1, $2, '{a.b}')`, ws, receiver.URL); err != nil {
		t.Fatal(err)
	}
	dispatch := errandtest.Enqueue(t, pool, ws, "webhook.dispatch", `{"event_type": "a.b", "payload": {"n": 1}}`)
	errandtest.WaitJob(t, pool, done, 30*time.Second, "completed")
	errandtest.WaitJob(t, pool, retried, 30*time.Second, "completed")
	errandtest.WaitJob(t, pool, failed, 30*time.Second, "failed")
	errandtest.WaitJob(t, pool, snoozed, 30*time.Second, "completed")
	errandtest.WaitJob(t, pool, permanent, 30*time.Second, "failed")
	errandtest.WaitJob(t, pool, email, 30*time.Second, "completed")
	errandtest.WaitJob(t, pool, dispatch, 30*time.Second, "completed")
	errandtest.WaitJob(t, pool, blocked, 30*time.Second, "processing")

	// While metrics.block runs, the database says so.
	waitFor(t, d.Addr, atLeast("errand_queue_jobs", map[string]string{"queue": "default", "status": "processing"}, 1))
	var answer string
	if err := pool.QueryRow(ctx, `SELECT errand.cancel_job($1)`, blocked).Scan(&answer); err != nil || answer != "cancelling" {
		t.Fatalf("cancel_job: %q, %v", answer, err)
	}
	errandtest.WaitJob(t, pool, blocked, 30*time.Second, "failed")

	ping := func(outcome string) map[string]string {
		return map[string]string{"kind": "ping", "queue": "default", "outcome": outcome}
	}
	families := waitFor(t, d.Addr,
		exactly("errand_jobs_total", ping("completed"), 2),
		exactly("errand_jobs_total", ping("retried"), 1),
		exactly("errand_jobs_total", ping("failed"), 1),
		exactly("errand_jobs_total", map[string]string{"kind": "metrics.snooze", "outcome": "snoozed"}, 1),
		exactly("errand_jobs_total", map[string]string{"kind": "metrics.snooze", "outcome": "completed"}, 1),
		exactly("errand_jobs_total", map[string]string{"kind": "metrics.permanent", "outcome": "failed"}, 1),
		exactly("errand_jobs_total", map[string]string{"kind": "metrics.block", "outcome": "cancelled"}, 1),
		exactly("errand_job_duration_seconds", map[string]string{"kind": "ping"}, 4),
		atLeast("errand_job_wait_seconds", map[string]string{"queue": "default"}, 8),
		// The job an hour away and the paused workspace's, which is held
		// (pending, not due); nothing runs any more.
		exactly("errand_queue_jobs", map[string]string{"queue": "default", "status": "pending"}, 2),
		exactly("errand_queue_jobs", map[string]string{"queue": "default", "status": "held"}, 1),
		exactly("errand_queue_jobs", map[string]string{"queue": "default", "status": "due"}, 0),
		exactly("errand_queue_jobs", map[string]string{"queue": "default", "status": "processing"}, 0),
		exactly("errand_queue_oldest_due_seconds", map[string]string{"queue": "default"}, 0),
		exactly("errand_workspace_jobs", map[string]string{"workspace": ws, "status": "pending"}, 1),
		exactly("errand_workspace_jobs", map[string]string{"workspace": paused, "status": "pending"}, 1),
		exactly("errand_leader", nil, 1),
		atLeast("errand_heartbeat_renewals_total", map[string]string{"result": "ok"}, 1),
		exactly("errand_emails_total", map[string]string{"outcome": "captured"}, 1),
		exactly("errand_webhook_deliveries_total", map[string]string{"outcome": "delivered"}, 1),
		exactly("errand_fencing_total", nil, 0),
	)
	// The README's table names every errand metric a daemon serves.
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range families {
		if strings.HasPrefix(name, "errand_") && !strings.Contains(string(readme), "`"+name+"`") {
			t.Errorf("the README's metrics table does not list %s", name)
		}
	}
	// Only the job an operator cancelled is cancelled.
	for _, m := range families["errand_jobs_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["outcome"] == "cancelled" && labels["kind"] != "metrics.block" {
			t.Errorf("a cancellation nobody asked for: %v", labels)
		}
	}
}

// A burst of quick jobs is counted exactly, however many River reports at
// once. The test makes the burst: while it holds the row lock of a finished
// job, River's completer is stuck writing that job's completion and every
// other ping finishes meanwhile; released, the completer writes them all in
// one batch and reports them in one go, more than River's event
// subscriptions buffer (1,000, dropped beyond).
func TestBurstIsCountedExactly(t *testing.T) {
	t.Parallel()
	const n = 5000
	open := make(chan struct{})
	gate := jobs.Define("metrics.gate", jobs.QueueDefault, func(ctx context.Context, _ *jobs.Job, _ struct{}) error {
		select {
		case <-open:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	url, pool := errandtest.MigratedDB(t, errand.WithKinds(gate))
	ws := errandtest.NewWorkspace(t, pool, "burst")
	d := errandtest.StartDaemon(t, url, nil, errand.WithKinds(gate))
	ctx := context.Background()

	gated := errandtest.Enqueue(t, pool, ws, "metrics.gate", `{}`)
	errandtest.WaitJob(t, pool, gated, 30*time.Second, "processing")
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM errand.river_job WHERE id = $1 FOR UPDATE`, gated); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, run_at)
		SELECT $1, 'ping', '{}', now() + interval '1 hour' FROM generate_series(1, $2)`, ws, n); err != nil {
		t.Fatal(err)
	}
	// River's completer gives a batch 10 s before it tries again (and gives
	// up after three tries): the lock is released well within the first.
	close(open)
	released := time.Now().Add(7 * time.Second)
	if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET scheduled_at = now(), state = 'available' WHERE kind = 'ping'`); err != nil {
		t.Fatal(err)
	}
	// Every ping taken: all but the few still in a worker wait for the
	// completer.
	waitCount := func(what, query string, want int) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		for {
			var got int
			if err := pool.QueryRow(ctx, query).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d after 3 min, want %d", what, got, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Every ping taken, or the 7 s up: whatever finished meanwhile waits for
	// the completer and is reported at once (how many is logged: on a busy
	// machine fewer than all). The counts below must be exact either way.
	for time.Now().Before(released) {
		var left int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.river_job WHERE kind = 'ping' AND state = 'available'`).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var held int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.river_job WHERE kind = 'ping' AND state = 'running'`).Scan(&held); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pings finished or working behind the held completion when it was released", held)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitCount("pings completed", `SELECT count(*) FROM errand.jobs WHERE kind = 'ping' AND status = 'completed'`, n)
	waitFor(t, d.Addr,
		exactly("errand_jobs_total", map[string]string{"kind": "ping", "outcome": "completed"}, n),
		exactly("errand_job_duration_seconds", map[string]string{"kind": "ping"}, n),
		exactly("errand_job_wait_seconds", map[string]string{"queue": "default"}, n+1),
	)
}

// The database figures from the store's backlog query: pending, due (and how
// long the oldest has waited), held by a paused workspace.
func TestQueueFigures(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	ws := errandtest.NewWorkspace(t, pool, "figures")
	paused := errandtest.NewWorkspace(t, pool, "paused")
	if _, err := pool.Exec(ctx, `SELECT errand.pause_workspace($1)`, paused); err != nil {
		t.Fatal(err)
	}
	for _, j := range []struct{ ws, runAt string }{{ws, "-1 hour"}, {ws, "1 hour"}, {paused, "0s"}, {paused, "0s"}} {
		if _, err := pool.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, run_at)
			VALUES ($1, 'ping', '{}', now() + $2::interval)`, j.ws, j.runAt); err != nil {
			t.Fatal(err)
		}
	}
	// email is served and has no job: it reads 0, not absent.
	m := metrics.New(metrics.Config{DB: pool, Queues: []string{"default", "email"}})
	families := gather(t, m)
	want := []series{
		exactly("errand_queue_jobs", map[string]string{"queue": "email", "status": "pending"}, 0),
		exactly("errand_queue_jobs", map[string]string{"queue": "email", "status": "processing"}, 0),
		exactly("errand_queue_oldest_due_seconds", map[string]string{"queue": "email"}, 0),
		exactly("errand_queue_jobs", map[string]string{"queue": "default", "status": "pending"}, 4),
		exactly("errand_queue_jobs", map[string]string{"queue": "default", "status": "due"}, 1),
		exactly("errand_queue_jobs", map[string]string{"queue": "default", "status": "held"}, 2),
		exactly("errand_queue_jobs", map[string]string{"queue": "default", "status": "processing"}, 0),
		// Waiting since its run_at an hour ago, by the database's clock.
		atLeast("errand_queue_oldest_due_seconds", map[string]string{"queue": "default"}, 3600),
		// No cap is set: the due job may start; the paused ones may not.
		exactly("errand_queue_jobs", map[string]string{"queue": "default", "status": "startable"}, 1),
		atLeast("errand_queue_oldest_startable_seconds", map[string]string{"queue": "default"}, 3600),
		exactly("errand_queue_jobs", map[string]string{"queue": "email", "status": "startable"}, 0),
		exactly("errand_workspace_jobs", map[string]string{"workspace": paused, "status": "pending"}, 2),
	}
	for _, w := range want {
		if v, ok := value(families, w.name, w.labels); !ok || v < w.min || v > w.max {
			t.Errorf("%s%v = %v (present %v), want between %v and %v", w.name, w.labels, v, ok, w.min, w.max)
		}
	}
}

// gather is the registry's families by name.
func gather(t *testing.T, m *metrics.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	families, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	return byName
}

// When the database stops answering, the previous figures are served and
// their age keeps growing from the last read that worked; errand_leader is
// there all along (this replica knows whether it leads without asking).
func TestSnapshotAgeIsTheLastSuccessfulRead(t *testing.T) {
	t.Parallel()
	url, _ := errandtest.MigratedDB(t)
	proxy := netfault.New(t, hostPort(t, url))
	pool := errandtest.Pool(t, proxy.URL(t, url))
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	m := metrics.New(metrics.Config{DB: pool, RefreshEvery: 5 * time.Second, Now: func() time.Time { return now }})

	check := func(step string, wantAge, wantErrors float64) {
		t.Helper()
		families := gather(t, m)
		if v, ok := value(families, "errand_metrics_snapshot_age_seconds", nil); !ok || v != wantAge {
			t.Errorf("%s: errand_metrics_snapshot_age_seconds = %v (present %v), want %v", step, v, ok, wantAge)
		}
		if v, ok := value(families, "errand_metrics_snapshot_errors_total", nil); !ok || v != wantErrors {
			t.Errorf("%s: errand_metrics_snapshot_errors_total = %v (present %v), want %v", step, v, ok, wantErrors)
		}
		if _, ok := value(families, "errand_leader", nil); !ok {
			t.Errorf("%s: no errand_leader", step)
		}
	}
	check("first read", 0, 0)
	proxy.Cut(true)
	now = now.Add(5 * time.Second)
	check("failed read", 5, 1)
	now = now.Add(2 * time.Second)
	check("between reads", 7, 1)
	now = now.Add(3 * time.Second)
	check("failed again", 10, 2)
	proxy.Cut(false)
	pool.Reset() // connections the cut closed
	now = now.Add(5 * time.Second)
	check("read again", 0, 2)
}

// A replica whose first read fails still says whether it leads, so
// max(errand_leader) == 0 fires when no replica can.
func TestLeaderIsExportedBeforeAnyRead(t *testing.T) {
	t.Parallel()
	url, _ := errandtest.MigratedDB(t)
	proxy := netfault.New(t, hostPort(t, url))
	pool := errandtest.Pool(t, proxy.URL(t, url))
	proxy.Cut(true)
	m := metrics.New(metrics.Config{DB: pool})
	families := gather(t, m)
	if v, ok := value(families, "errand_leader", nil); !ok || v != 0 {
		t.Errorf("errand_leader = %v (present %v), want 0", v, ok)
	}
	if v, ok := value(families, "errand_metrics_snapshot_errors_total", nil); !ok || v != 1 {
		t.Errorf("errand_metrics_snapshot_errors_total = %v (present %v), want 1", v, ok)
	}
	for _, name := range []string{"errand_queue_jobs", "errand_metrics_snapshot_age_seconds"} {
		if _, ok := families[name]; ok {
			t.Errorf("%s without any figures read", name)
		}
	}
}

// A replica cut off from the database fences itself: it counts the failed
// renewals and the fencing, keeps serving the previous figures (counting the
// failed reads), and no longer says it leads, as River ended its term.
func TestFencingIsCounted(t *testing.T) {
	t.Parallel()
	url, _ := errandtest.MigratedDB(t)
	proxy := netfault.New(t, hostPort(t, url))
	// 10 s: the replica fences after 4 s without a renewal, which a busy
	// machine can cause on its own before the cut; the counts are compared
	// with those before the cut, not with zero.
	d := errandtest.StartDaemon(t, proxy.URL(t, url), map[string]string{"ERRAND_RESCUE_AFTER": "10s"})
	before := waitFor(t, d.Addr, exactly("errand_leader", nil, 1), atLeast("errand_fencing_total", nil, 0))
	fenced, _ := value(before, "errand_fencing_total", nil)
	failedReads, _ := value(before, "errand_metrics_snapshot_errors_total", nil)
	failedRenewals, _ := value(before, "errand_heartbeat_renewals_total", map[string]string{"result": "failed"})
	proxy.Cut(true)
	waitFor(t, d.Addr,
		atLeast("errand_heartbeat_renewals_total", map[string]string{"result": "failed"}, failedRenewals+1),
		atLeast("errand_fencing_total", nil, fenced+1),
		atLeast("errand_metrics_snapshot_errors_total", nil, failedReads+1),
		exactly("errand_leader", nil, 0),
	)
	proxy.Cut(false)
}

// River's leadership hook: 1 from an election to the end of the term.
func TestLeaderFollowsRiversTerm(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	m := metrics.New(metrics.Config{DB: pool})
	leader := func() float64 {
		t.Helper()
		v, ok := value(gather(t, m), "errand_leader", nil)
		if !ok {
			t.Fatal("no errand_leader")
		}
		return v
	}
	if v := leader(); v != 0 {
		t.Fatalf("errand_leader = %v before any election, want 0", v)
	}
	hook, ok := m.Plugin().(rivertype.HookPeriodicJobsStart)
	if !ok {
		t.Fatal("the plugin is not River's HookPeriodicJobsStart")
	}
	term, end := context.WithCancel(context.Background())
	if err := hook.Start(term, &rivertype.HookPeriodicJobsStartParams{}); err != nil {
		t.Fatal(err)
	}
	if v := leader(); v != 1 {
		t.Fatalf("errand_leader = %v during a term, want 1", v)
	}
	end()
	deadline := time.Now().Add(30 * time.Second)
	for leader() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("errand_leader still 1 30 s after the term ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hostPort is the host:port of a database URL.
func hostPort(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := neturl.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// A scraper that asks for OpenMetrics gets it.
func TestOpenMetricsWhenAsked(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	m := metrics.New(metrics.Config{DB: pool})
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	get := func(accept string) (string, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Get("Content-Type"), string(body)
	}
	ct, body := get("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
	if !strings.HasPrefix(ct, "application/openmetrics-text") || !strings.HasSuffix(body, "# EOF\n") {
		t.Errorf("asked for OpenMetrics, got %q ending %q", ct, body[max(0, len(body)-40):])
	}
	if ct, _ := get(""); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("asked for nothing in particular, got %q, want the text format", ct)
	}
}

// countingDB is a real database that counts the statements it is sent.
type countingDB struct {
	store.DB
	queries atomic.Int64
	slow    time.Duration // each statement waits this long first (a large backlog)
}

func (c *countingDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c.queries.Add(1)
	time.Sleep(c.slow)
	return c.DB.Query(ctx, sql, args...)
}

func (c *countingDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c.queries.Add(1)
	time.Sleep(c.slow)
	return c.DB.QueryRow(ctx, sql, args...)
}

// Reads that take long (the counts of a backlog of millions) are made
// less often: the next waits ten times as long as the last took, so a
// replica spends at most about a tenth of its time counting.
func TestASlowSnapshotIsReadLessOften(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	db := &countingDB{DB: pool, slow: 300 * time.Millisecond}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	m := metrics.New(metrics.Config{DB: db, RefreshEvery: 5 * time.Second, Now: func() time.Time { return now }})
	scrape := func() { gather(t, m) }
	scrape()
	first := db.queries.Load()
	if first < 2 {
		t.Fatalf("the first scrape read %d statements, want the two counts", first)
	}
	// The read took at least 2 × 300 ms: the next is at least 6 s later,
	// not RefreshEvery's 5.
	now = now.Add(5 * time.Second)
	scrape()
	if got := db.queries.Load(); got != first {
		t.Fatalf("%d statements 5 s after a read that took over 0.6 s, want still %d", got, first)
	}
	// (Unless the read took over 6 s, a minute is past ten times it.)
	now = now.Add(55 * time.Second)
	scrape()
	if got := db.queries.Load(); got != 2*first {
		t.Fatalf("%d statements a minute later, want %d (one more read)", got, 2*first)
	}
}

// However often it is scraped, a replica reads the database figures at most
// once per refresh interval.
func TestSnapshotIsReadAtMostOncePerInterval(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	db := &countingDB{DB: pool}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	m := metrics.New(metrics.Config{DB: db, RefreshEvery: 5 * time.Second, Now: func() time.Time { return now }})
	scrape := func() { gather(t, m) }
	scrape()
	first := db.queries.Load()
	if first == 0 {
		t.Fatal("the first scrape read nothing")
	}
	for range 5 {
		scrape()
	}
	now = now.Add(4 * time.Second)
	scrape()
	if got := db.queries.Load(); got != first {
		t.Fatalf("%d statements after six more scrapes within the interval, want still %d", got, first)
	}
	now = now.Add(time.Second)
	scrape()
	if got := db.queries.Load(); got != 2*first {
		t.Fatalf("%d statements after the interval, want %d (one more read)", got, 2*first)
	}
}

// Per-workspace figures are the TopN busiest workspaces, never one series
// per tenant.
func TestWorkspaceFiguresAreBounded(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	busiest := ""
	for i := range 8 {
		ws := errandtest.NewWorkspace(t, pool, fmt.Sprintf("w%d", i))
		if _, err := pool.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, run_at)
			SELECT $1, 'ping', '{}', now() + interval '1 hour' FROM generate_series(1, $2)`, ws, i+1); err != nil {
			t.Fatal(err)
		}
		busiest = ws
	}
	m := metrics.New(metrics.Config{DB: pool, TopN: 3})
	families, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	f := byName["errand_workspace_jobs"]
	if f == nil || len(f.Metric) != 3*2 {
		t.Fatalf("errand_workspace_jobs: %v, want 3 workspaces × 2 statuses", f)
	}
	if v, ok := value(byName, "errand_workspace_jobs", map[string]string{"workspace": busiest, "status": "pending"}); !ok || v != 8 {
		t.Errorf("the busiest workspace: %v (present %v), want 8 pending", v, ok)
	}
}

// The registry lints clean on its own, before any job has run.
func TestRegistryLintsClean(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	m := metrics.New(metrics.Config{DB: pool})
	problems, err := testutil.GatherAndLint(m.Gatherer())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
