package fair_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs"
)

type probeArgs struct{}

// probeKind records, on the database's clock, when each of its jobs' work
// begins and ends: an interval inside the job's time in River's running
// state, so overlapping intervals never outnumber the running jobs.
func probeKind(pool *pgxpool.Pool) jobs.Kind {
	return jobs.Define("test.fair_probe", jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, _ probeArgs) error {
		if _, err := pool.Exec(ctx, `INSERT INTO fair_probe (job_id, workspace_id, started_at) VALUES ($1, $2, clock_timestamp())`,
			job.ID, job.WorkspaceID); err != nil {
			return err
		}
		select {
		case <-time.After(30 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		_, err := pool.Exec(ctx, `UPDATE fair_probe SET ended_at = clock_timestamp() WHERE job_id = $1`, job.ID)
		return err
	})
}

func TestCapHoldsAcrossThreeDaemons(t *testing.T) {
	// Published by migrate; worked by the daemons' own copy below.
	url, pool := errandtest.MigratedDB(t, errand.WithKinds(probeKind(nil)))
	kind := probeKind(pool)
	if _, err := pool.Exec(context.Background(), `
		CREATE TABLE public.fair_probe (job_id bigint PRIMARY KEY, workspace_id uuid, started_at timestamptz, ended_at timestamptz);
		INSERT INTO errand.plans (plan, concurrency) VALUES ('pro', 3)`); err != nil {
		t.Fatal(err)
	}
	free := errandtest.NewWorkspace(t, pool, "free")
	pro := errandtest.NewWorkspace(t, pool, "pro")
	setPlan(t, pool, pro, "pro")
	env := map[string]string{"ERRAND_WORKSPACE_CONCURRENCY": "2", "ERRAND_QUEUES": "default=10"}
	for range 3 {
		errandtest.StartDaemon(t, url, env, errand.WithKinds(kind))
	}
	if _, err := pool.Exec(context.Background(), `
		INSERT INTO errand.jobs (workspace_id, kind, args)
		SELECT ws, 'test.fair_probe', '{}' FROM unnest(ARRAY[$1, $2]::uuid[]) ws, generate_series(1, 30)`, free, pro); err != nil {
		t.Fatal(err)
	}
	waitAllCompleted(t, pool, 60*time.Second, "of two workspaces capped at 2 and 3 across three daemons")
	for ws, cap := range map[string]int{free: 2, pro: 3} {
		var most, runs, attempts int
		if err := pool.QueryRow(context.Background(), `
			SELECT max((SELECT count(*) FROM fair_probe q
			            WHERE q.workspace_id = p.workspace_id AND q.started_at <= p.started_at AND q.ended_at > p.started_at)),
			       count(*)
			FROM fair_probe p WHERE p.workspace_id = $1`, ws).Scan(&most, &runs); err != nil {
			t.Fatal(err)
		}
		if err := pool.QueryRow(context.Background(), `SELECT max(attempt) FROM errand.jobs WHERE workspace_id = $1`, ws).Scan(&attempts); err != nil {
			t.Fatal(err)
		}
		if most > cap || most < 1 {
			t.Errorf("workspace %s: at most %d jobs worked at once across three daemons, want 1 to its cap %d", ws, most, cap)
		}
		if runs != 30 || attempts != 1 {
			t.Errorf("workspace %s: %d jobs worked, most attempts %d, want 30 and 1 (held-back jobs use no attempt)", ws, runs, attempts)
		}
	}
}

type gateArgs struct {
	Wait bool `json:"wait,omitempty"`
}

// The daemon gives River the pilot's middleware: a capped workspace's next
// job starts once the previous one's work has returned, before River's
// completer has committed it. Here the completer cannot: the test holds the
// finished job's row locked until the next job has started.
func TestDaemonStartsTheNextCappedJobBeforeTheLastIsCompleted(t *testing.T) {
	started := make(chan int64, 10)
	release := make(chan struct{})
	kind := jobs.Define("test.fair_gate", jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, args gateArgs) error {
		started <- job.ID
		if args.Wait {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	url, pool := errandtest.MigratedDB(t, errand.WithKinds(kind))
	ctx := context.Background()
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, map[string]string{"ERRAND_WORKSPACE_CONCURRENCY": "1"}, errand.WithKinds(kind))
	enqueueGate := func(wait bool) int64 {
		t.Helper()
		var id int64
		if err := pool.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'test.fair_gate', $2) RETURNING id`,
			ws, map[string]bool{"wait": wait}).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	waitStart := func(want int64, what string) {
		t.Helper()
		select {
		case id := <-started:
			if id != want {
				t.Fatalf("job %d started, want %d (%s)", id, want, what)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("job %d did not start within 30 s (%s)", want, what)
		}
	}
	first := enqueueGate(true)
	waitStart(first, "the first job")
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT 1 FROM errand.river_job WHERE id = $1 FOR UPDATE`, first); err != nil {
		t.Fatal(err)
	}
	second := enqueueGate(false)
	close(release)
	waitStart(second, "capped at 1, after the first job's work returned while its completion was held up")
	var state string
	if err := pool.QueryRow(ctx, `SELECT state FROM errand.river_job WHERE id = $1`, first).Scan(&state); err != nil {
		t.Fatal(err)
	}
	if state != "running" {
		t.Errorf("first job %s when the second started, want still running (its completion held up)", state)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitAllCompleted(t, pool, 60*time.Second, "once the first job's row was let go")
}

// River fetches again when a worker frees only after a full fetch; a fetch
// that a cap cut short must not leave the held-back jobs to the next poll.
// With a 10 s poll interval, ten jobs capped at one at a time would take
// over 90 s without errand's wake-up; they take about a second with it.
func TestCappedJobsStartWithoutWaitingForThePoll(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, map[string]string{
		"ERRAND_WORKSPACE_CONCURRENCY": "1",
		"ERRAND_FETCH_POLL_INTERVAL":   "10s",
	})
	enqueue(t, pool, ws, 10, `{}`)
	waitAllCompleted(t, pool, 45*time.Second, "capped at one at a time (a 10 s poll each would take over 90 s)")
}

// waitAllCompleted polls until every job is completed, failing the test
// after timeout (a generous bound, not a measurement).
func waitAllCompleted(t *testing.T, pool *pgxpool.Pool, timeout time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var left, all int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE status <> 'completed'), count(*) FROM errand.jobs`).Scan(&left, &all); err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d jobs %s not completed after %s", left, all, what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
