package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/internal/metrics"
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

// A daemon's /metrics counts the jobs it finished by outcome, how long they
// ran and waited, reads the backlog from the database, says it leads, and
// carries the kinds' own metrics; the output passes promlint.
func TestDaemonServesMetrics(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "metrics")
	d := errandtest.StartDaemon(t, url, nil)
	ctx := context.Background()

	insert := func(args string, maxAttempts int, runAt string) int64 {
		var id int64
		if err := pool.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, max_attempts, run_at)
			VALUES ($1, 'ping', $2, $3, now() + $4::interval) RETURNING id`, ws, args, maxAttempts, runAt).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	done := insert(`{}`, 3, "0s")
	retried := insert(`{"fail_times": 1}`, 3, "0s")
	failed := insert(`{"fail_times": 5}`, 1, "0s")
	insert(`{}`, 3, "1 hour") // pending, not due
	errandtest.WaitJob(t, pool, done, 30*time.Second, "completed")
	errandtest.WaitJob(t, pool, retried, 30*time.Second, "completed")
	errandtest.WaitJob(t, pool, failed, 30*time.Second, "failed")

	// River reports a job after its completion commits, and the database
	// figures are refreshed every few seconds: wait for both (a bound, not a
	// measurement).
	want := []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"errand_jobs_total", map[string]string{"kind": "ping", "queue": "default", "outcome": "completed"}, 2},
		{"errand_jobs_total", map[string]string{"kind": "ping", "queue": "default", "outcome": "retried"}, 1},
		{"errand_jobs_total", map[string]string{"kind": "ping", "queue": "default", "outcome": "failed"}, 1},
		{"errand_job_duration_seconds", map[string]string{"kind": "ping"}, 4},
		{"errand_job_wait_seconds", map[string]string{"queue": "default"}, 4},
		{"errand_queue_jobs", map[string]string{"queue": "default", "status": "pending"}, 1},
		{"errand_workspace_jobs", map[string]string{"workspace": ws, "status": "pending"}, 1},
		{"errand_leader", nil, 1},
		{"errand_heartbeat_renewals_total", map[string]string{"result": "ok"}, 1},
		{"errand_emails_total", map[string]string{"outcome": "sent"}, 0},
		{"errand_webhook_deliveries_total", map[string]string{"outcome": "delivered"}, 0},
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		families := scrape(t, d.Addr)
		var missing []string
		for _, w := range want {
			if v, ok := value(families, w.name, w.labels); !ok || v < w.min {
				missing = append(missing, fmt.Sprintf("%s%v = %v (present %v), want at least %v", w.name, w.labels, v, ok, w.min))
			}
		}
		if due, _ := value(families, "errand_queue_jobs", map[string]string{"queue": "default", "status": "due"}); due != 0 {
			missing = append(missing, fmt.Sprintf("errand_queue_jobs due = %v, want 0 (the only pending job runs in an hour)", due))
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s:\n%s", strings.Join(missing, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// countingDB is a real database that counts the statements it is sent.
type countingDB struct {
	store.DB
	queries atomic.Int64
}

func (c *countingDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c.queries.Add(1)
	return c.DB.Query(ctx, sql, args...)
}

func (c *countingDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c.queries.Add(1)
	return c.DB.QueryRow(ctx, sql, args...)
}

// However often it is scraped, a replica reads the database figures at most
// once per refresh interval.
func TestSnapshotIsReadAtMostOncePerInterval(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	db := &countingDB{DB: pool}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	m := metrics.New(metrics.Config{DB: db, RefreshEvery: 5 * time.Second, Now: func() time.Time { return now }})

	gather := func() {
		if _, err := m.Gatherer().Gather(); err != nil {
			t.Fatal(err)
		}
	}
	gather()
	first := db.queries.Load()
	if first == 0 {
		t.Fatal("the first scrape read nothing")
	}
	for range 5 {
		gather()
	}
	now = now.Add(4 * time.Second)
	gather()
	if got := db.queries.Load(); got != first {
		t.Fatalf("%d statements after six more scrapes within the interval, want still %d", got, first)
	}
	now = now.Add(time.Second)
	gather()
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
