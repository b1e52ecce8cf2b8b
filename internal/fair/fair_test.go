package fair_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/rivershared/riverpilot"
	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/internal/fair"
	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/store"
)

func TestMain(m *testing.M) { os.Exit(errandtest.Main(m)) }

// fetch is one fetch of the default queue as River's producer makes it
// (errand.fair_fetch through the pilot), returning the started jobs'
// workspaces in the order the fetch chose them.
func fetch(t *testing.T, pool *pgxpool.Pool, n int, cfg fair.Config) []*rivertype.JobRow {
	t.Helper()
	jobs, err := tryFetch(pool, n, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return jobs
}

func tryFetch(pool *pgxpool.Pool, n int, cfg fair.Config) ([]*rivertype.JobRow, error) {
	res, err := fair.NewDriver(pool, cfg).PluginPilot().JobGetAvailable(context.Background(), nil, nil, &riverdriver.JobGetAvailableParams{
		ClientID:       "test-client",
		MaxAttemptedBy: 100,
		MaxToLock:      n,
		Queue:          "default",
	})
	if err != nil {
		return nil, err
	}
	return res.Jobs, nil
}

// fetchConcurrently is fetchers replicas fetching n jobs at once, rounds
// times each, each a producer keeping its counts as River's do.
func fetchConcurrently(t *testing.T, pool *pgxpool.Pool, fetchers, rounds, n int, cfg fair.Config) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range fetchers {
		p := newProducer(t, fair.NewDriver(pool, cfg), fmt.Sprintf("replica-%d", i))
		wg.Go(func() {
			for range rounds {
				if _, err := p.tryFetch(n); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// producer is one River producer of the default queue on a driver's pilot,
// as River's client starts it: its fetches pass what it has at work, and
// it is told when a job's work ends.
type producer struct {
	d      *fair.Driver
	state  riverpilot.ProducerState
	id     int64
	client string
}

func newProducer(t testing.TB, d *fair.Driver, client string) *producer {
	t.Helper()
	id, state, err := d.PluginPilot().ProducerInit(context.Background(), d.GetExecutor(),
		&riverpilot.ProducerInitParams{ClientID: client, Queue: "default", Schema: "errand"})
	if err != nil {
		t.Fatal(err)
	}
	return &producer{d: d, state: state, id: id, client: client}
}

func (p *producer) tryFetch(n int) ([]*rivertype.JobRow, error) {
	res, err := p.d.PluginPilot().JobGetAvailable(context.Background(), nil, p.state, &riverdriver.JobGetAvailableParams{
		ClientID: p.client, MaxAttemptedBy: 100, MaxToLock: n, Queue: "default",
	})
	if err != nil {
		return nil, err
	}
	return res.Jobs, nil
}

func (p *producer) fetch(t testing.TB, n int) []*rivertype.JobRow {
	t.Helper()
	jobs, err := p.tryFetch(n)
	if err != nil {
		t.Fatal(err)
	}
	return jobs
}

// shutdown is River stopping the producer once its jobs are done.
func (p *producer) shutdown(t testing.TB) {
	t.Helper()
	if err := p.d.PluginPilot().ProducerShutdown(context.Background(), p.d.GetExecutor(),
		&riverpilot.ProducerShutdownParams{ProducerID: p.id, Queue: "default", Schema: "errand"}); err != nil {
		t.Fatal(err)
	}
}

func workspaceOf(t *testing.T, job *rivertype.JobRow) string {
	t.Helper()
	i := strings.Index(string(job.Metadata), `"workspace_id": "`)
	if i < 0 {
		return ""
	}
	rest := string(job.Metadata)[i+len(`"workspace_id": "`):]
	return rest[:strings.IndexByte(rest, '"')]
}

func enqueue(t *testing.T, pool *pgxpool.Pool, ws string, n int, args string) {
	t.Helper()
	if _, err := pool.Exec(context.Background(),
		`INSERT INTO errand.jobs (workspace_id, kind, args) SELECT $1, 'ping', $3::jsonb FROM generate_series(1, $2::int)`,
		ws, n, args); err != nil {
		t.Fatal(err)
	}
}

// complete finishes running jobs, as River's completer would.
func complete(t *testing.T, pool *pgxpool.Pool, jobs []*rivertype.JobRow) {
	t.Helper()
	ids := make([]int64, len(jobs))
	for i, j := range jobs {
		ids[i] = j.ID
	}
	if _, err := pool.Exec(context.Background(),
		`UPDATE errand.river_job SET state = 'completed', finalized_at = now() WHERE id = ANY($1)`, ids); err != nil {
		t.Fatal(err)
	}
}

func setPlan(t *testing.T, pool *pgxpool.Pool, ws, plan string) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), `UPDATE errand.workspaces SET plan = $2 WHERE id = $1`, ws, plan); err != nil {
		t.Fatal(err)
	}
}

func TestFetchStartsJobsAsRiversFetchDoes(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	id := errandtest.Enqueue(t, pool, ws, "ping", `{"sleep_ms": 1}`)
	// A previous attempt's error, which the row must carry decoded.
	if _, err := pool.Exec(context.Background(), `UPDATE errand.river_job
		SET errors = ARRAY['{"at": "2026-12-03T00:00:00Z", "attempt": 1, "error": "boom", "trace": ""}'::jsonb], attempt = 1
		WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}

	jobs := fetch(t, pool, 10, fair.Config{})
	if len(jobs) != 1 {
		t.Fatalf("fetched %d jobs, want 1", len(jobs))
	}
	j := jobs[0]
	if j.ID != id || j.Kind != "ping" || j.Queue != "default" || j.State != rivertype.JobStateRunning || j.Attempt != 2 {
		t.Errorf("fetched id %d kind %s queue %s state %s attempt %d, want %d ping default running 2", j.ID, j.Kind, j.Queue, j.State, j.Attempt, id)
	}
	if j.AttemptedAt == nil || len(j.AttemptedBy) != 1 || j.AttemptedBy[0] != "test-client" {
		t.Errorf("attempted_at %v attempted_by %v, want set and [test-client]", j.AttemptedAt, j.AttemptedBy)
	}
	if len(j.Errors) != 1 || j.Errors[0].Error != "boom" || j.Errors[0].Attempt != 1 {
		t.Errorf("errors %+v, want the previous attempt's", j.Errors)
	}
	if workspaceOf(t, j) != ws || string(j.EncodedArgs) != `{"sleep_ms": 1}` {
		t.Errorf("metadata %s args %s", j.Metadata, j.EncodedArgs)
	}
	if got := errandtest.GetJob(t, pool, id); got.RiverState != "running" || got.Attempt != 2 {
		t.Errorf("stored state %s attempt %d, want running 2", got.RiverState, got.Attempt)
	}
	if again := fetch(t, pool, 10, fair.Config{}); len(again) != 0 {
		t.Errorf("a second fetch took %d jobs, want none", len(again))
	}
}

func TestOneWorkspaceAloneGetsEveryWorker(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "alone")
	enqueue(t, pool, ws, 120, `{}`)
	if got := len(fetch(t, pool, 100, fair.Config{})); got != 100 {
		t.Errorf("fetched %d, want 100: a workspace alone must not be held to a share", got)
	}
}

func TestSmallWorkspacesGoFirstBehindAFlood(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	flood := errandtest.NewWorkspace(t, pool, "flood")
	enqueue(t, pool, flood, 1000, `{}`)
	// The flood has been running a while.
	complete(t, pool, fetch(t, pool, 50, fair.Config{}))
	var small []string
	for i := range 10 {
		ws := errandtest.NewWorkspace(t, pool, "small-"+string(rune('a'+i)))
		small = append(small, ws)
		enqueue(t, pool, ws, 3, `{}`)
	}
	got := fetch(t, pool, 20, fair.Config{})
	if len(got) != 20 {
		t.Fatalf("fetched %d, want 20", len(got))
	}
	per := map[string]int{}
	for _, j := range got {
		per[workspaceOf(t, j)]++
	}
	for _, ws := range small {
		if per[ws] < 1 {
			t.Errorf("small workspace %s got nothing of 20 workers behind the flood: %v", ws, per)
		}
	}
	if per[flood] > 10 {
		t.Errorf("the flood got %d of 20 workers with ten other workspaces waiting", per[flood])
	}
}

func TestWeightedShares(t *testing.T) {
	for _, batch := range []int{1, 4, 16} {
		t.Run(fmt.Sprintf("fetches of %d", batch), func(t *testing.T) {
			_, pool := errandtest.MigratedDB(t)
			if _, err := pool.Exec(context.Background(), `INSERT INTO errand.plans (plan, weight) VALUES ('pro', 3)`); err != nil {
				t.Fatal(err)
			}
			free := errandtest.NewWorkspace(t, pool, "free")
			pro := errandtest.NewWorkspace(t, pool, "pro")
			setPlan(t, pool, pro, "pro")
			enqueue(t, pool, free, 400, `{}`)
			enqueue(t, pool, pro, 400, `{}`)
			per := map[string]int{}
			for total := 0; total < 400; {
				jobs := fetch(t, pool, batch, fair.Config{})
				if len(jobs) == 0 {
					t.Fatal("nothing fetched with work waiting")
				}
				for _, j := range jobs {
					per[workspaceOf(t, j)]++
				}
				total += len(jobs)
				complete(t, pool, jobs)
			}
			// Weight 3 against 1: 300 and 100 of the first 400, within 5%.
			if per[pro] < 285 || per[pro] > 315 {
				t.Errorf("pro (weight 3) got %d and free (weight 1) %d of the first %d, want about 300 and 100", per[pro], per[free], per[pro]+per[free])
			}
		})
	}
}

func TestPriorityOrdersWorkWithinAWorkspace(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	var low, high int64
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args, priority) VALUES ($1, 'ping', '{}', 4) RETURNING id`, ws).Scan(&low); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args, priority) VALUES ($1, 'ping', '{}', 1) RETURNING id`, ws).Scan(&high); err != nil {
		t.Fatal(err)
	}
	got := fetch(t, pool, 1, fair.Config{})
	if len(got) != 1 || got[0].ID != high {
		t.Fatalf("fetched %v, want the priority 1 job %d before the earlier priority 4 one %d", got, high, low)
	}
}

func TestCapHoldsAcrossConcurrentFetchers(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	if _, err := pool.Exec(context.Background(), `INSERT INTO errand.plans (plan, concurrency) VALUES ('pro', 5)`); err != nil {
		t.Fatal(err)
	}
	free1 := errandtest.NewWorkspace(t, pool, "free-1")
	free2 := errandtest.NewWorkspace(t, pool, "free-2")
	pro := errandtest.NewWorkspace(t, pool, "pro")
	setPlan(t, pool, pro, "pro")
	for _, ws := range []string{free1, free2, pro} {
		enqueue(t, pool, ws, 60, `{}`)
	}
	// Eight replicas fetching at once, over and over; nothing completes,
	// so every job ever started is still running at the end.
	cfg := fair.Config{DefaultCap: 2}
	fetchConcurrently(t, pool, 8, 15, 7, cfg)
	want := map[string]int{free1: 2, free2: 2, pro: 5}
	for ws, cap := range want {
		var running, available, attempted int
		if err := pool.QueryRow(context.Background(), `
			SELECT count(*) FILTER (WHERE state = 'running'), count(*) FILTER (WHERE state = 'available'),
			       count(*) FILTER (WHERE state = 'available' AND attempt > 0)
			FROM errand.river_job WHERE metadata ->> 'workspace_id' = $1`, ws).Scan(&running, &available, &attempted); err != nil {
			t.Fatal(err)
		}
		if running != cap {
			t.Errorf("workspace %s: %d running, want exactly its cap %d", ws, running, cap)
		}
		if available != 60-cap || attempted != 0 {
			t.Errorf("workspace %s: %d held back (%d with an attempt used), want %d and none", ws, available, attempted, 60-cap)
		}
	}
	// A finished job frees its slot.
	var one int64
	if err := pool.QueryRow(context.Background(), `
		UPDATE errand.river_job SET state = 'completed', finalized_at = now()
		WHERE id = (SELECT min(id) FROM errand.river_job WHERE state = 'running' AND metadata ->> 'workspace_id' = $1)
		RETURNING id`, free1).Scan(&one); err != nil {
		t.Fatal(err)
	}
	got := fetch(t, pool, 10, cfg)
	if len(got) != 1 || workspaceOf(t, got[0]) != free1 {
		t.Errorf("after one of free-1's jobs finished, fetched %d jobs, want 1 of free-1", len(got))
	}
}

func TestCapCountsOnlyItsQueue(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	enqueue(t, pool, ws, 5, `{}`)
	// Two of the workspace's jobs running in another queue.
	if _, err := pool.Exec(context.Background(), `
		INSERT INTO errand.river_job (args, kind, max_attempts, metadata, priority, queue, state, attempt)
		SELECT '{}', 'other', 25, jsonb_build_object('workspace_id', $1::uuid), 1, 'email', 'running', 1
		FROM generate_series(1, 2)`, ws); err != nil {
		t.Fatal(err)
	}
	if got := len(fetch(t, pool, 10, fair.Config{DefaultCap: 2})); got != 2 {
		t.Errorf("fetched %d, want 2: the cap is per queue", got)
	}
}

func TestErrandsOwnJobsAreFetched(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	enqueue(t, pool, ws, 3, `{}`)
	// A fan-out tick: no workspace.
	var own int64
	if err := pool.QueryRow(context.Background(), `
		INSERT INTO errand.river_job (args, kind, max_attempts, metadata, priority, queue, state)
		VALUES ('{}', 'ping', 25, '{}', 1, 'default', 'available') RETURNING id`).Scan(&own); err != nil {
		t.Fatal(err)
	}
	got := fetch(t, pool, 10, fair.Config{DefaultCap: 1})
	ids := map[int64]bool{}
	for _, j := range got {
		ids[j.ID] = true
	}
	if len(got) != 2 || !ids[own] {
		t.Errorf("fetched %d jobs (errand's own among them: %v), want the workspace's one (cap 1) and errand's own, which no cap holds", len(got), ids[own])
	}
}

func TestWorkspacesTakeTurnsWhenMoreHaveWorkThanOneFetchConsiders(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	var all []string
	for i := range 5 {
		ws := errandtest.NewWorkspace(t, pool, "ws-"+string(rune('a'+i)))
		all = append(all, ws)
		enqueue(t, pool, ws, 10, `{}`)
	}
	// Two candidates per fetch, one job each time: five fetches serve all
	// five workspaces once.
	seen := map[string]int{}
	for range 5 {
		got := fetch(t, pool, 1, fair.Config{Candidates: 2})
		if len(got) != 1 {
			t.Fatalf("fetched %d, want 1", len(got))
		}
		seen[workspaceOf(t, got[0])]++
		complete(t, pool, got)
	}
	for _, ws := range all {
		if seen[ws] != 1 {
			t.Errorf("in five fetches workspace %s was served %d times, want once each: %v", ws, seen[ws], seen)
		}
	}
}

func TestPlanWithBadLimitsIsRefused(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	for _, tc := range []struct{ name, insert, constraint string }{
		{"zero weight", `INSERT INTO errand.plans (plan, weight) VALUES ('free', 0)`, "plans_weight_range"},
		{"weight over 1000", `INSERT INTO errand.plans (plan, weight) VALUES ('free', 1001)`, "plans_weight_range"},
		{"zero concurrency", `INSERT INTO errand.plans (plan, concurrency) VALUES ('free', 0)`, "plans_concurrency_positive"},
		{"negative emails per minute", `INSERT INTO errand.plans (plan, emails_per_minute) VALUES ('free', -1)`, "plans_emails_per_minute_positive"},
		{"zero webhooks per second", `INSERT INTO errand.plans (plan, webhooks_per_second) VALUES ('free', 0)`, "plans_webhooks_per_second_positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pool.Exec(context.Background(), tc.insert)
			if err == nil || !strings.Contains(err.Error(), tc.constraint) {
				t.Errorf("%s: error %v, want a violation of %s", tc.insert, err, tc.constraint)
			}
		})
	}
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM errand.plans`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d plans stored (%v), want none", n, err)
	}
}

// A candidate list the pilot kept (errand.fair_fetch's last argument) that
// no longer has work does not leave workers idle: the fetch looks again.
func TestAStaleCandidateListIsLookedAtAgain(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	gone := errandtest.NewWorkspace(t, pool, "gone")
	busy := errandtest.NewWorkspace(t, pool, "busy")
	enqueue(t, pool, busy, 5, `{}`)
	// One connection: the list used is a setting of the session.
	conn, err := pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	var n int
	if err := conn.QueryRow(context.Background(), `
		SELECT count(*) FROM errand.fair_fetch_counted('default', 10, 'test', 100, NULL, NULL, 0, 1000, ARRAY[$1]::uuid[])`, gone).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Errorf("fetched %d with a stale list naming only an idle workspace, want the busy one's 5", n)
	}
	var cands string
	if err := conn.QueryRow(context.Background(), `SELECT current_setting('errand.fair_cands', true)`).Scan(&cands); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cands, busy) || strings.Contains(cands, gone) {
		t.Errorf("the list it used: %s, want the busy workspace only", cands)
	}
}

// A replica's producer counts the jobs it starts whatever the workspace's
// plan: jobs started while the workspace had no cap count against the cap
// it gets, and jobs whose work ended free their slots.
func TestCapCountsJobsStartedWhileTheWorkspaceHadNoCap(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO errand.plans (plan, concurrency) VALUES ('capped', 20)`); err != nil {
		t.Fatal(err)
	}
	ws := errandtest.NewWorkspace(t, pool, "acme")
	setPlan(t, pool, ws, "capped")
	enqueue(t, pool, ws, 100, `{}`)
	d := fair.NewDriver(pool, fair.Config{})
	p := newProducer(t, d, "replica")
	// Fetches of 5, each one's work ended before the next: 25 started in
	// all, more than the cap, none held back.
	for i := range 5 {
		got := p.fetch(t, 5)
		if len(got) != 5 {
			t.Fatalf("fetch %d: %d jobs with nothing at work, want 5", i+1, len(got))
		}
		for _, j := range got {
			workEnds(t, d, j)
		}
	}
	// Uncapped for a while: 12 start and keep working.
	setPlan(t, pool, ws, "free")
	if got := p.fetch(t, 12); len(got) != 12 {
		t.Fatalf("uncapped: %d, want 12", len(got))
	}
	// Capped at 20 again: 8 more may start, and no more.
	setPlan(t, pool, ws, "capped")
	started := 0
	for range 6 {
		started += len(p.fetch(t, 5))
	}
	if started != 8 {
		t.Errorf("capped at 20 with 12 at work: %d more started, want 8", started)
	}
}

// The settings a fetch leaves describe that fetch, never an earlier one on
// the same connection.
func TestFetchSettingsDescribeTheLastFetchOnly(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	var wss []string
	for i := range 9 {
		ws := errandtest.NewWorkspace(t, pool, fmt.Sprintf("ws-%d", i))
		wss = append(wss, ws)
		enqueue(t, pool, ws, 1, `{}`)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	settings := func() (held, cands string) {
		t.Helper()
		if err := conn.QueryRow(ctx, `SELECT current_setting('errand.fair_held', true), current_setting('errand.fair_cands', true)`).Scan(&held, &cands); err != nil {
			t.Fatal(err)
		}
		return held, cands
	}
	// One fetch of one job: nine workspaces had work, one held back by
	// nothing (no cap).
	if _, err := conn.Exec(ctx, `SELECT count(*) FROM errand.fair_fetch_counted('default', 1, 'test', 100, NULL, NULL, 0, 1000)`); err != nil {
		t.Fatal(err)
	}
	if held, cands := settings(); held != "false" || strings.Count(cands, ",") != 8 {
		t.Errorf("after a fetch among nine workspaces: held %q, candidates %q", held, cands)
	}
	// Drain all but one workspace: the next fetch takes the fast path and
	// must not leave the nine-workspace list behind.
	if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'completed', finalized_at = now()
		WHERE state = 'available' AND metadata ->> 'workspace_id' <> $1`, wss[8]); err != nil {
		t.Fatal(err)
	}
	enqueue(t, pool, wss[8], 1, `{}`)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM errand.fair_fetch_counted('default', 1, 'test', 100, NULL, NULL, 0, 1000)`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("fetched %d with one workspace's job waiting, want 1", n)
	}
	if held, cands := settings(); held != "false" || cands != "" {
		t.Errorf("after a fetch with one workspace left: held %q, candidates %q, want false and none", held, cands)
	}
}

// A fetch shared among several workspaces names, for the pilot's wake-up,
// every capped workspace it held back: one already at its cap (nothing of
// it chosen) as well as one that got all its room, and neither a capped one
// with room to spare nor one without a cap (migration 045 counts the chosen
// jobs per workspace once; the one at its cap is the case an inner join
// would lose).
func TestASharedFetchNamesEveryCappedWorkspaceItHeldBack(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO errand.plans (plan, concurrency) VALUES ('two', 2), ('ten', 10)`); err != nil {
		t.Fatal(err)
	}
	atCap := errandtest.NewWorkspace(t, pool, "at-cap")
	fills := errandtest.NewWorkspace(t, pool, "fills-its-room")
	spare := errandtest.NewWorkspace(t, pool, "room-to-spare")
	uncapped := errandtest.NewWorkspace(t, pool, "uncapped")
	setPlan(t, pool, atCap, "two")
	setPlan(t, pool, fills, "two")
	setPlan(t, pool, spare, "ten")
	for ws, n := range map[string]int{atCap: 5, fills: 5, spare: 3, uncapped: 5} {
		enqueue(t, pool, ws, n, `{}`)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// The fetching producer has two of at-cap's jobs at work.
	var fetched int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM errand.fair_fetch_counted('default', 50, 'test', 100, NULL, NULL, 0, 1000,
		NULL, ARRAY[$1]::uuid[], ARRAY[2])`, atCap).Scan(&fetched); err != nil {
		t.Fatal(err)
	}
	if fetched != 2+3+5 {
		t.Errorf("fetched %d, want 10 (none of at-cap's, two of fills-its-room's, all of the others')", fetched)
	}
	var flag string
	var held []string
	if err := conn.QueryRow(ctx, `SELECT current_setting('errand.fair_held'),
		coalesce(nullif(current_setting('errand.fair_held_ws'), ''), '{}')::uuid[]::text[]`).Scan(&flag, &held); err != nil {
		t.Fatal(err)
	}
	slices.Sort(held)
	want := []string{atCap, fills}
	slices.Sort(want)
	if flag != "true" || !slices.Equal(held, want) {
		t.Errorf("held back: flag %q, workspaces %v; want true and %v (at-cap %s, fills-its-room %s)", flag, held, want, atCap, fills)
	}
}

// A fetch whose window of candidates can start nothing (every workspace in
// it at its cap) reads the next window at once, and the next fetch starts
// past it: the window moved on only after a fetch that started something,
// so workspaces beyond it, with room and work, waited while workers idled.
// Windows of 3 here stand for the pilot's 1,000.
func TestAWindowOfWorkspacesAtTheirCapDoesNotHoldBackTheNext(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	var wss []string
	for i := 1; i <= 5; i++ {
		ws := fmt.Sprintf("00000000-0000-4000-8000-00000000000%d", i) // the candidates' order
		if _, err := pool.Exec(ctx, `INSERT INTO errand.workspaces (id, name, slug) VALUES ($1, $2, $2)`, ws, fmt.Sprintf("ws-%d", i)); err != nil {
			t.Fatal(err)
		}
		enqueue(t, pool, ws, 10, `{}`)
		wss = append(wss, ws)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// The first three each run 2 (this caller's counts), at the default
	// cap of 2.
	rows, err := conn.Query(ctx, `SELECT metadata ->> 'workspace_id'
		FROM errand.fair_fetch_counted('default', 10, 'test', 100, NULL, NULL, 2, 3, NULL, $1::uuid[], '{2,2,2}'::int[])`, wss[:3])
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	started := map[string]int{}
	for _, ws := range ids {
		started[ws]++
	}
	if started[wss[3]] != 2 || started[wss[4]] != 2 || len(started) != 2 {
		t.Errorf("started %v, want 2 each of %s and %s (room past a window at its cap)", started, wss[3], wss[4])
	}
	var held []string
	if err := conn.QueryRow(ctx, `SELECT current_setting('errand.fair_held_ws')::uuid[]::text[]`).Scan(&held); err != nil {
		t.Fatal(err)
	}
	for _, ws := range wss {
		if !slices.Contains(held, ws) {
			t.Errorf("held back %v, want every workspace at its cap named, %s too", held, ws)
		}
	}

	// Every workspace at its cap: nothing starts, the windows stop once they
	// come round to the first workspace, and each is named once.
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*)
		FROM errand.fair_fetch_counted('default', 10, 'test', 100, NULL, NULL, 2, 3, NULL, $1::uuid[], '{2,2,2,2,2}'::int[])`, wss).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT current_setting('errand.fair_held_ws')::uuid[]::text[]`).Scan(&held); err != nil {
		t.Fatal(err)
	}
	slices.Sort(held)
	if n != 0 || !slices.Equal(held, wss) {
		t.Errorf("every workspace at its cap: %d started, held back %v; want 0, and each of %v once", n, held, wss)
	}
}

// An app may replace errand.plans by a view, which has none of the table's
// checks: the fetch reads what it returns within them (migration 045). A
// weight of 0 divided by zero and stopped every fetch of the queue; a
// concurrency of 0 or less held its workspace back for good.
func TestAPlansViewWithValuesTheTableRefusesDoesNotStopTheQueue(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `
		ALTER TABLE errand.plans RENAME TO plans_table;
		CREATE VIEW errand.plans AS
			SELECT * FROM errand.plans_table
			UNION ALL SELECT 'zero weight', 0, NULL::integer, NULL::integer, NULL::integer
			UNION ALL SELECT 'zero cap', 1, 0, NULL, NULL
			UNION ALL SELECT 'huge weight, negative cap', 5000, -1, NULL, NULL
			UNION ALL SELECT 'fractional cap', 1, 0.4, NULL, NULL
			UNION ALL SELECT 'cap beyond an integer', 1, 3000000000, NULL, NULL`); err != nil {
		t.Fatal(err)
	}
	plans := []string{"zero weight", "zero cap", "huge weight, negative cap", "fractional cap", "cap beyond an integer"}
	var wss []string
	for i, plan := range plans {
		ws := errandtest.NewWorkspace(t, pool, fmt.Sprintf("ws-%d", i))
		setPlan(t, pool, ws, plan)
		enqueue(t, pool, ws, 5, `{}`)
		wss = append(wss, ws)
	}
	// Shared among them, each held to the default cap of 2 but the one
	// capped beyond an integer, which runs all 5.
	started := map[string]int{}
	rows, err := pool.Query(ctx, `SELECT metadata ->> 'workspace_id'
		FROM errand.fair_fetch_counted('default', 25, 'test', 100, NULL, NULL, 2, 1000, NULL, '{}'::uuid[], '{}'::int[])`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var ws string
		if err := rows.Scan(&ws); err != nil {
			t.Fatal(err)
		}
		started[ws]++
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("a shared fetch with the view's plans: %v", err)
	}
	for i, ws := range wss {
		want := 2
		if plans[i] == "cap beyond an integer" {
			want = 5
		}
		if started[ws] != want {
			t.Errorf("plan %q: %d started, want %d", plans[i], started[ws], want)
		}
	}
	// Alone in the queue (the single-workspace path), the zero cap is the
	// default cap too.
	if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'completed', finalized_at = now() WHERE state IN ('available', 'running')`); err != nil {
		t.Fatal(err)
	}
	enqueue(t, pool, wss[1], 5, `{}`)
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*)
		FROM errand.fair_fetch_counted('default', 5, 'test', 100, NULL, NULL, 2, 1000, NULL, '{}'::uuid[], '{}'::int[])`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("plan %q alone: %d started, want 2 (the default cap)", plans[1], n)
	}
}

// One pilot fetching again hands the statement the candidate list it kept
// (with eight or more workspaces busy; kept an hour here, so the second and
// third fetches always use it); the fetches serve every workspace in turn.
func TestPilotFetchesWithItsKeptCandidateList(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	for i := range 10 {
		enqueue(t, pool, errandtest.NewWorkspace(t, pool, fmt.Sprintf("ws-%d", i)), 3, `{}`)
	}
	pilot := fair.NewDriver(pool, fair.Config{CandidatesTTL: time.Hour}).PluginPilot()
	per := map[string]int{}
	for range 3 {
		res, err := pilot.JobGetAvailable(context.Background(), nil, nil, &riverdriver.JobGetAvailableParams{
			ClientID: "test-client", MaxAttemptedBy: 100, MaxToLock: 10, Queue: "default",
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range res.Jobs {
			per[workspaceOf(t, j)]++
		}
	}
	if len(per) != 10 {
		t.Fatalf("three fetches of 10 served %d workspaces, want all 10: %v", len(per), per)
	}
	for ws, n := range per {
		if n != 3 {
			t.Errorf("workspace %s: %d of its 3 jobs in three fetches of 10, want 3 (one a fetch)", ws, n)
		}
	}
}

// fetchWorkspaces runs one fair fetch of up to n jobs of queue default on
// conn and returns the started jobs' workspaces.
func fetchWorkspaces(t *testing.T, conn *pgx.Conn, n int) []string {
	t.Helper()
	return collectStrings(t)(conn.Query(context.Background(),
		`SELECT metadata ->> 'workspace_id' FROM errand.fair_fetch_counted('default', $1, 'test-client', 100, now(), NULL, 0, 1000)`, n))
}

// collectStrings returns a function that reads a query's one text column,
// failing the test on any error.
func collectStrings(t *testing.T) func(pgx.Rows, error) []string {
	return func(rows pgx.Rows, err error) []string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
}

// TestFetchReadsOneWorkspaceByTheFairIndexWhateverTheStatistics floods a
// queue that river_job's statistics have never seen (a flood that came
// since the last ANALYZE, the case fairness is for) and shows, with
// auto_explain's actual row counts, that no statement of the fetch reads
// the flood's jobs to find another workspace's or to lock its own. Before
// migration 020 the planner took River's fetch index for those lookups and
// filtered every available job of the queue, in every fetch.
func TestFetchReadsOneWorkspaceByTheFairIndexWhateverTheStatistics(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	flood := errandtest.NewWorkspace(t, pool, "flood")
	small := errandtest.NewWorkspace(t, pool, "small")
	enqueue(t, pool, flood, 20000, `{}`)
	enqueue(t, pool, small, 3, `{}`)

	// The plans PL/pgSQL settles on after a few calls, from the first.
	conn, plans, _ := testdb.ExplainedConn(t, url, `SET plan_cache_mode = force_generic_plan`)
	for round := range 2 {
		got := fetchWorkspaces(t, conn, 10)
		if len(got) != 10 || (round == 0 && !slices.Contains(got, small)) {
			t.Errorf("fetch %d started %d jobs of workspaces %v, want 10 with the small workspace's", round+1, len(got), got)
		}
	}
	removed := regexp.MustCompile(`Rows Removed by Filter: (\d+)`)
	usedFair := false
	for _, p := range plans() {
		usedFair = usedFair || strings.Contains(p, "river_job_fair_fetch_idx")
		for _, m := range removed.FindAllStringSubmatch(p, -1) {
			if n, _ := strconv.Atoi(m[1]); n >= 1000 {
				t.Errorf("a statement of the fetch filtered out %d rows:\n%s", n, p)
			}
		}
	}
	if !usedFair {
		t.Errorf("no statement of the fetch used river_job_fair_fetch_idx; plans:\n%s", strings.Join(plans(), "\n"))
	}
}

// TestFetchPlansMadeOnAnEmptyQueueStillServeAFlood: the fair functions
// keep generic plans (migration 021), made on a connection's first fetches.
// A daemon's first fetches find an empty or nearly empty river_job, which
// invites a sequential scan; kept after a flood of 20,000 jobs, such a plan
// would read every one of them on every fetch. No plan node of a ten-job
// fetch may read 1,000 rows of river_job, in the single-workspace path or
// in the weighted one, when both were first planned on a near-empty table.
func TestFetchPlansMadeOnAnEmptyQueueStillServeAFlood(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	flood := errandtest.NewWorkspace(t, pool, "flood")
	small := errandtest.NewWorkspace(t, pool, "small")

	conn, plans, resetPlans := testdb.ExplainedConn(t, url)
	fetch := func(n int) []string { return fetchWorkspaces(t, conn, n) }
	// The plans are made here: an empty queue, then one workspace's job
	// (the single-workspace path), then two workspaces' (the weighted one).
	fetch(10)
	enqueue(t, pool, flood, 1, `{}`)
	fetch(10)
	enqueue(t, pool, flood, 1, `{}`)
	enqueue(t, pool, small, 1, `{}`)
	if got := fetch(10); len(got) != 2 {
		t.Fatalf("the near-empty fetch started %v, want both workspaces' jobs", got)
	}
	enqueue(t, pool, flood, 20000, `{}`)
	resetPlans()
	if got := fetch(10); len(got) != 10 {
		t.Errorf("the flood's single-workspace fetch started %d jobs, want 10", len(got))
	}
	enqueue(t, pool, small, 3, `{}`)
	if got := fetch(10); len(got) != 10 || !slices.Contains(got, small) {
		t.Errorf("the weighted fetch started %v, want 10 with the small workspace's", got)
	}
	read := regexp.MustCompile(`(?m)^.*on river_job\b.*actual time=[0-9.]+\.\.[0-9.]+ rows=(\d+) loops=(\d+).*$`)
	for _, p := range plans() {
		for _, m := range read.FindAllStringSubmatch(p, -1) {
			rows, _ := strconv.Atoi(m[1])
			loops, _ := strconv.Atoi(m[2])
			if rows*loops >= 1000 {
				t.Errorf("a plan node read %d rows of river_job for a ten-job fetch:\n%s\nin:\n%s", rows*loops, m[0], p)
			}
		}
	}
}

// TestCapHoldsForAWorkspaceAloneAcrossConcurrentFetchers: a capped
// workspace alone in its queue takes the single-workspace path, never more
// than the cap however many replicas fetch at once (each counting what the
// others' rows say they run), and, counted from River's running jobs by a
// caller that keeps no counts, it starts as many as finished.
func TestCapHoldsForAWorkspaceAloneAcrossConcurrentFetchers(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "alone")
	enqueue(t, pool, ws, 100, `{}`)
	cfg := fair.Config{DefaultCap: 9}
	fetchConcurrently(t, pool, 8, 10, 2, cfg)
	var running int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM errand.river_job WHERE state = 'running'`).Scan(&running); err != nil {
		t.Fatal(err)
	}
	if running != 9 {
		t.Errorf("%d running, want exactly the cap 9", running)
	}
	// Two finish: the next fetches start two more, and no more.
	if _, err := pool.Exec(context.Background(), `
		UPDATE errand.river_job SET state = 'completed', finalized_at = now()
		WHERE id IN (SELECT id FROM errand.river_job WHERE state = 'running' ORDER BY id LIMIT 2)`); err != nil {
		t.Fatal(err)
	}
	got := len(fetch(t, pool, 5, cfg)) + len(fetch(t, pool, 5, cfg))
	if got != 2 {
		t.Errorf("after two finished, fetched %d, want 2", got)
	}
}

// workEnds runs job through the driver's middleware, as River's executor
// does, with work that returns at once.
func workEnds(t *testing.T, d *fair.Driver, job *rivertype.JobRow) {
	t.Helper()
	mw, ok := d.Middleware().(rivertype.WorkerMiddleware)
	if !ok {
		t.Fatal("the driver's middleware is not worker middleware: River would not run it")
	}
	if err := mw.Work(context.Background(), job, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// River's completer commits finished jobs in batches, up to 250 ms later;
// until then they are running in river_job. A job whose work has ended
// (its middleware returned, or River said its executor is done) must not
// hold its workspace's cap meanwhile.
func TestEndedWorkDoesNotHoldTheCapWhileItsCompletionWaits(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	ws := errandtest.NewWorkspace(t, pool, "acme")
	enqueue(t, pool, ws, 10, `{}`)
	d := fair.NewDriver(pool, fair.Config{DefaultCap: 2})
	p := newProducer(t, d, "replica")
	first := p.fetch(t, 5)
	if len(first) != 2 {
		t.Fatalf("capped at 2: fetched %d, want 2", len(first))
	}
	if got := p.fetch(t, 5); len(got) != 0 {
		t.Fatalf("two working under a cap of 2: fetched %d more, want 0", len(got))
	}
	workEnds(t, d, first[0])
	next := p.fetch(t, 5)
	if len(next) != 1 {
		t.Fatalf("one of two ended, its completion not yet committed: fetched %d, want 1", len(next))
	}
	if got := p.fetch(t, 5); len(got) != 0 {
		t.Fatalf("two working again: fetched %d more, want 0", len(got))
	}
	var running int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.river_job WHERE state = 'running'`).Scan(&running); err != nil {
		t.Fatal(err)
	}
	if running != 3 {
		t.Fatalf("%d running in river_job, want 3 (two working, one awaiting its completion)", running)
	}
	// River's word alone (a job whose worker never ran its middleware).
	p.state.JobFinish(next[0])
	if got := p.fetch(t, 5); len(got) != 1 {
		t.Fatalf("River said a job's executor is done: fetched %d, want 1", len(got))
	}
}

// An attempt is named by the attempted_at its fetch set: when a job is
// fetched again (a snooze gives its attempt back) before River reports the
// end of its earlier attempt, that late report does not free the slot the
// new attempt holds.
func TestALateEndOfAnEarlierAttemptDoesNotFreeTheSlotOfTheNext(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	ws := errandtest.NewWorkspace(t, pool, "acme")
	enqueue(t, pool, ws, 10, `{}`)
	d := fair.NewDriver(pool, fair.Config{DefaultCap: 1})
	p := newProducer(t, d, "replica")
	first := p.fetch(t, 5)
	if len(first) != 1 {
		t.Fatalf("capped at 1: fetched %d, want 1", len(first))
	}
	workEnds(t, d, first[0])
	if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'available', attempt = attempt - 1 WHERE id = $1`, first[0].ID); err != nil {
		t.Fatal(err)
	}
	again := p.fetch(t, 5)
	if len(again) != 1 || again[0].ID != first[0].ID {
		t.Fatalf("after a snooze: fetched %d jobs, want job %d again", len(again), first[0].ID)
	}
	p.state.JobFinish(first[0]) // the first attempt's end, reported late
	if got := p.fetch(t, 5); len(got) != 0 {
		t.Fatalf("the snoozed job working again under a cap of 1: fetched %d more, want 0", len(got))
	}
	p.state.JobFinish(again[0])
	if got := p.fetch(t, 5); len(got) != 1 {
		t.Fatalf("its second attempt ended: fetched %d, want 1", len(got))
	}
}

// The cap holds across replicas by each one's counts in the database: a
// replica's row counts what it started until its own next fetch or, when it
// does not fetch again, until a refresh soon after its work ended; the row
// goes at its producer's shutdown, and with the rescue of its jobs when it
// died, while a live replica's row stays.
func TestEveryReplicasCountsHoldTheCap(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	ws := errandtest.NewWorkspace(t, pool, "acme")
	other := errandtest.NewWorkspace(t, pool, "other")
	enqueue(t, pool, ws, 20, `{}`)
	cfg := fair.Config{DefaultCap: 2}
	da, db := fair.NewDriver(pool, cfg), fair.NewDriver(pool, cfg)
	a, b := newProducer(t, da, "replica-a"), newProducer(t, db, "replica-b")
	onA := a.fetch(t, 5)
	if len(onA) != 2 {
		t.Fatalf("capped at 2: replica a fetched %d, want 2", len(onA))
	}
	if got := b.fetch(t, 5); len(got) != 0 {
		t.Fatalf("two working on replica a: replica b fetched %d, want 0", len(got))
	}
	// a's work ends and a fetches no more: its row is rewritten soon after,
	// and b gets the two slots.
	for _, j := range onA {
		workEnds(t, da, j)
	}
	complete(t, pool, onA)
	deadline := time.Now().Add(30 * time.Second)
	onB := 0
	for onB < 2 && time.Now().Before(deadline) {
		onB += len(b.fetch(t, 5))
		if onB < 2 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if onB != 2 {
		t.Fatalf("replica a's work ended 30 s ago without a fetch: replica b fetched %d, want 2", onB)
	}
	if got := a.fetch(t, 5); len(got) != 0 {
		t.Fatalf("two working on replica b: replica a fetched %d, want 0", len(got))
	}
	// b's producer shuts down: its row goes. (River shuts a producer down
	// once its jobs are done; here b's row still counts two, so that only
	// the shutdown can free them.)
	b.shutdown(t)
	if got := a.fetch(t, 5); len(got) != 2 {
		t.Fatalf("replica b's producer shut down: replica a fetched %d, want 2", len(got))
	}
	// a dies with its two jobs; c, a live replica, works another workspace.
	if _, err := pool.Exec(ctx, `INSERT INTO errand.replicas (id, heartbeat_at) VALUES ('replica-a', '-infinity'), ('replica-c', 'infinity')`); err != nil {
		t.Fatal(err)
	}
	enqueue(t, pool, other, 1, `{}`)
	c := newProducer(t, fair.NewDriver(pool, cfg), "replica-c")
	if got := c.fetch(t, 5); len(got) != 1 || workspaceOf(t, got[0]) != other {
		t.Fatalf("replica a's two jobs not yet rescued: replica c fetched %d jobs, want the other workspace's one", len(got))
	}
	rescued, err := store.RescueOrphans(ctx, pool, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(rescued) != 2 {
		t.Fatalf("rescued %d of replica a's jobs, want 2", len(rescued))
	}
	var rows []string
	rows = collectStrings(t)(pool.Query(ctx, `SELECT client FROM errand.fair_working ORDER BY client`))
	if !slices.Equal(rows, []string{"replica-c"}) {
		t.Fatalf("counts of %v after the rescue, want replica c's only (replica a dead, replica b shut down)", rows)
	}
	if got := c.fetch(t, 5); len(got) != 2 {
		t.Fatalf("replica a's jobs rescued: replica c fetched %d, want 2", len(got))
	}
}

// River's rescuer can put a job back while its worker still runs (it
// ignored its timeout) and the same producer fetch it again: both attempts
// are at work and both count, whichever ends first.
func TestTwoAttemptsOfOneJobAtWorkBothCount(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	ws := errandtest.NewWorkspace(t, pool, "acme")
	enqueue(t, pool, ws, 5, `{}`)
	d := fair.NewDriver(pool, fair.Config{DefaultCap: 2})
	p := newProducer(t, d, "replica")
	first := p.fetch(t, 1)
	if len(first) != 1 {
		t.Fatalf("fetched %d, want 1", len(first))
	}
	if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'available' WHERE id = $1`, first[0].ID); err != nil {
		t.Fatal(err)
	}
	again := p.fetch(t, 1)
	if len(again) != 1 || again[0].ID != first[0].ID {
		t.Fatalf("after the rescue: fetched %d jobs, want job %d again", len(again), first[0].ID)
	}
	if got := p.fetch(t, 5); len(got) != 0 {
		t.Fatalf("two attempts at work under a cap of 2: fetched %d more, want 0", len(got))
	}
	workEnds(t, d, again[0])
	if got := p.fetch(t, 5); len(got) != 1 {
		t.Fatalf("the second attempt ended, the first still at work: fetched %d, want 1", len(got))
	}
	if got := p.fetch(t, 5); len(got) != 0 {
		t.Fatalf("two at work again: fetched %d more, want 0", len(got))
	}
}

// A replica of the previous release calls errand.fair_fetch as it did
// (during a rolling deploy, migrations being expand-only), with its
// parameters as its pilot sent them: its jobs at work are counted for this
// release's replicas, and theirs for it.
func TestAReplicaOfThePreviousReleaseIsCountedDuringARollingDeploy(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	ws := errandtest.NewWorkspace(t, pool, "acme")
	enqueue(t, pool, ws, 10, `{}`)
	// The previous release's statement and arguments (internal/fair before
	// migration 033): no kept candidates, and the attempts whose work ended.
	oldFetch := func(endedIDs []int64, endedAt []time.Time) []*rivertype.JobRow {
		t.Helper()
		rows, err := pool.Query(ctx, `
			SELECT id, args, attempt, attempted_at, attempted_by, created_at, errors, finalized_at, kind,
			       max_attempts, metadata, priority, queue, state::text, scheduled_at, tags, unique_key, unique_states
			FROM errand.fair_fetch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			"default", 5, "old-replica", 100, nil, []string(nil), 3, 1000, []string(nil), endedIDs, endedAt)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var got []*rivertype.JobRow
		for rows.Next() {
			var j rivertype.JobRow
			var attempt, maxAttempts, priority int16
			var state string
			var uniqueStates pgtype.Bits
			var errs [][]byte
			if err := rows.Scan(&j.ID, &j.EncodedArgs, &attempt, &j.AttemptedAt, &j.AttemptedBy, &j.CreatedAt, &errs,
				&j.FinalizedAt, &j.Kind, &maxAttempts, &j.Metadata, &priority, &j.Queue, &state, &j.ScheduledAt,
				&j.Tags, &j.UniqueKey, &uniqueStates); err != nil {
				t.Fatal(err)
			}
			got = append(got, &j)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return got
	}
	p := newProducer(t, fair.NewDriver(pool, fair.Config{DefaultCap: 3}), "new-replica")
	if got := p.fetch(t, 2); len(got) != 2 {
		t.Fatalf("this release's replica, capped at 3: fetched %d, want 2", len(got))
	}
	onOld := oldFetch(nil, nil)
	if len(onOld) != 1 {
		t.Fatalf("two at work on this release's replica, capped at 3: the previous release's fetched %d, want 1", len(onOld))
	}
	if got := p.fetch(t, 5); len(got) != 0 {
		t.Fatalf("two at work here and one on the previous release's replica: this release's fetched %d, want 0", len(got))
	}
	// The old replica's work on its job ended (its completion not yet
	// committed): it takes that slot again, and no more.
	if got := oldFetch([]int64{onOld[0].ID}, []time.Time{*onOld[0].AttemptedAt}); len(got) != 1 {
		t.Fatalf("its one job ended: the previous release's replica fetched %d, want 1", len(got))
	}
	if got := p.fetch(t, 5); len(got) != 0 {
		t.Fatalf("three at work again: this release's fetched %d, want 0", len(got))
	}
	// The previous release's replica drains (SIGTERM: it fetches no more)
	// and its jobs complete: its row, written at its last fetch, must not
	// hold their slots (migration 034 counts such a row's jobs live).
	if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'completed', finalized_at = now()
		WHERE state = 'running' AND attempted_by[array_length(attempted_by, 1)] = 'old-replica'`); err != nil {
		t.Fatal(err)
	}
	if got := p.fetch(t, 5); len(got) != 1 {
		t.Fatalf("the previous release's jobs completed, two at work here, capped at 3: this release's fetched %d, want 1", len(got))
	}
}

// A refresh the database refuses (here: another transaction holds the
// producer's row past the refresh's statement timeout) keeps the row as high
// as it was and is tried again, later each time, until it is written.
func TestARefusedRefreshIsTriedAgainUntilTheRowIsWritten(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	ws := errandtest.NewWorkspace(t, pool, "acme")
	enqueue(t, pool, ws, 5, `{}`)
	p := newProducer(t, fair.NewDriver(pool, fair.Config{DefaultCap: 5}), "replica")
	got := p.fetch(t, 2)
	if len(got) != 2 {
		t.Fatalf("fetched %d, want 2", len(got))
	}
	count := func() int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, `SELECT coalesce((SELECT sum(x) FROM errand.fair_working w, unnest(w.counts) x
			WHERE w.client = 'replica'), 0)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 2 {
		t.Fatalf("the row counts %d, want 2", n)
	}
	lock, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, `SELECT 1 FROM errand.fair_working WHERE client = 'replica' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	p.state.JobFinish(got[0])
	// A refresh waits for the lock, is cancelled by its statement timeout,
	// and another one waits: two statements seen waiting, started apart.
	waiting := func() (time.Time, bool) {
		t.Helper()
		var started time.Time
		err := pool.QueryRow(ctx, `SELECT query_start FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%fair_working_put%'`).Scan(&started)
		if errors.Is(err, pgx.ErrNoRows) {
			return time.Time{}, false
		}
		if err != nil {
			t.Fatal(err)
		}
		return started, true
	}
	var first time.Time
	retried := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && !retried; time.Sleep(20 * time.Millisecond) {
		started, ok := waiting()
		switch {
		case !ok:
		case first.IsZero():
			first = started
		case started.After(first):
			retried = true
		}
		if n := count(); n != 2 {
			t.Fatalf("while the refresh is refused the row counts %d, want 2 (never less than the work at hand)", n)
		}
	}
	if first.IsZero() || !retried {
		t.Fatalf("within 30 s: a refresh seen waiting %v, one after it %v", !first.IsZero(), retried)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); count() != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the lock went the row still counts %d, want 1", count())
		}
	}
}

// A job's attempted_at is when the fetch started it (migration 045): a
// fetch whose transaction began while the job's INSERT was still open
// stamped its own transaction's start, moments after the INSERT's, so the
// wait from INSERT to start read as about nothing however long the job
// really waited (errand bench noisy's idle p95 once read 0.0 ms).
func TestAJobsStartIsWhenTheFetchStartedIt(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	ws := errandtest.NewWorkspace(t, pool, "acme")
	insert, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer insert.Rollback(ctx)
	if _, err := insert.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', '{}')`, ws); err != nil {
		t.Fatal(err)
	}
	fetchTx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer fetchTx.Rollback(ctx)
	var began time.Time
	if err := fetchTx.QueryRow(ctx, `SELECT now()`).Scan(&began); err != nil {
		t.Fatal(err)
	}
	if err := insert.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var committed time.Time
	if err := pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&committed); err != nil {
		t.Fatal(err)
	}
	var started time.Time
	if err := fetchTx.QueryRow(ctx, `SELECT attempted_at
		FROM errand.fair_fetch_counted('default', 1, 'test', 100, NULL, NULL, 0, 1000, NULL, '{}'::uuid[], '{}'::int[])`).Scan(&started); err != nil {
		t.Fatal(err)
	}
	if started.Before(committed) {
		t.Errorf("started at %s, before the INSERT committed (by %s); the fetch's transaction began at %s", started, committed, began)
	}
}
