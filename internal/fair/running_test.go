package fair_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/internal/fair"
	"github.com/errand-dev/errand/jobs"
)

// A slow workspace's jobs and a quick workspace's, weighted wSlow and
// wQuick, sharing a queue of W workers while both have work. The fetch
// shares the workers by what each workspace is running (migration 030):
// it gives each free worker to the workspace whose running jobs, this
// fetch's included, are fewest for its weight. A job goes to the slow
// workspace only while (its running, that job excluded) / wSlow is at most
// the quick workspace's running / wQuick (ties go either way), so with
// slow + quick <= W it never holds more than
// floor((W*wSlow + wQuick) / (wSlow + wQuick)) workers while the quick one
// has work: 10 of 20 at equal weights, 5 of 20 at 1 against 3.
var runningShares = []struct {
	slowWeight, quickWeight, slowMost int
}{
	{1, 1, 10},
	{1, 3, 5},
	{3, 1, 15},
}

func setWeights(t *testing.T, pool *pgxpool.Pool, slow, quick string, slowWeight, quickWeight int) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), `INSERT INTO errand.plans (plan, weight) VALUES ('slow', $1), ('quick', $2)`,
		slowWeight, quickWeight); err != nil {
		t.Fatal(err)
	}
	setPlan(t, pool, slow, "slow")
	setPlan(t, pool, quick, "quick")
}

// runningOf counts ws's jobs in River's running state.
func runningOf(t *testing.T, pool *pgxpool.Pool, ws string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(),
		`SELECT count(*) FROM errand.river_job WHERE state = 'running' AND metadata ->> 'workspace_id' = $1`, ws).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The audit's case, fetch by fetch: 20 workers; the slow workspace's jobs
// never finish, the quick one's finish before the next fetch, which asks
// for every free worker. Sharing job starts, the slow workspace held 10,
// 15, 17, 19, then all 20 workers and the quick one none.
func TestASlowWorkspaceHoldsOnlyItsShareOfTheWorkers(t *testing.T) {
	const workers = 20
	for _, tc := range runningShares {
		t.Run(fmt.Sprintf("weights %d and %d", tc.slowWeight, tc.quickWeight), func(t *testing.T) {
			_, pool := errandtest.MigratedDB(t)
			slow := errandtest.NewWorkspace(t, pool, "slow")
			quick := errandtest.NewWorkspace(t, pool, "quick")
			setWeights(t, pool, slow, quick, tc.slowWeight, tc.quickWeight)
			enqueue(t, pool, slow, 500, `{}`)
			enqueue(t, pool, quick, 500, `{}`)
			for round := 1; round <= 10; round++ {
				got := fetch(t, pool, workers-runningOf(t, pool, slow), fair.Config{})
				var quickJobs []*rivertype.JobRow
				for _, j := range got {
					if workspaceOf(t, j) == quick {
						quickJobs = append(quickJobs, j)
					}
				}
				if held := runningOf(t, pool, slow); held != tc.slowMost {
					t.Fatalf("fetch %d: the slow workspace holds %d of %d workers, want its share %d", round, held, workers, tc.slowMost)
				}
				if want := workers - tc.slowMost; len(quickJobs) != want {
					t.Fatalf("fetch %d: the quick workspace started %d jobs, want the %d workers the slow one does not hold", round, len(quickJobs), want)
				}
				complete(t, pool, quickJobs)
			}
		})
	}
}

type slowArgs struct {
	Block bool `json:"block,omitempty"`
}

// The same through a daemon with 20 workers: the slow workspace's jobs
// block until the test ends, the quick one's return at once, and River's
// producer fetches as workers free. The slow workspace's running count only
// grows and the quick one's backlog only shrinks, so each reading of the
// database covers every moment before it: while the quick workspace has work
// waiting, the slow one must never hold more than its share, until the quick
// one has finished 300 jobs beside it. (30,000 quick jobs: a poll starved
// for seconds on a busy machine must still find some waiting.)
func TestASlowWorkspaceDoesNotStarveAQuickOneThroughTheDaemon(t *testing.T) {
	for _, tc := range runningShares[:2] {
		t.Run(fmt.Sprintf("weights %d and %d", tc.slowWeight, tc.quickWeight), func(t *testing.T) {
			release := make(chan struct{})
			kind := jobs.Define("test.fair_slow", jobs.QueueDefault, func(ctx context.Context, _ *jobs.Job, args slowArgs) error {
				if args.Block {
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
			slow := errandtest.NewWorkspace(t, pool, "slow")
			quick := errandtest.NewWorkspace(t, pool, "quick")
			setWeights(t, pool, slow, quick, tc.slowWeight, tc.quickWeight)
			errandtest.StartDaemon(t, url, map[string]string{"ERRAND_QUEUES": "default=20"}, errand.WithKinds(kind))
			t.Cleanup(func() { close(release) }) // before the daemon stops (cleanups run last first)
			if _, err := pool.Exec(ctx, `
				INSERT INTO errand.jobs (workspace_id, kind, args)
				SELECT $1::uuid, 'test.fair_slow', '{"block": true}'::jsonb FROM generate_series(1, 100)
				UNION ALL
				SELECT $2::uuid, 'test.fair_slow', '{}'::jsonb FROM generate_series(1, 30000)`, slow, quick); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(60 * time.Second)
			for {
				var done, waiting, held int
				if err := pool.QueryRow(ctx, `
					SELECT count(*) FILTER (WHERE workspace_id = $2 AND status = 'completed'),
					       count(*) FILTER (WHERE workspace_id = $2 AND status = 'pending'),
					       count(*) FILTER (WHERE workspace_id = $1 AND status = 'processing')
					FROM errand.jobs`, slow, quick).Scan(&done, &waiting, &held); err != nil {
					t.Fatal(err)
				}
				// Its backlog only shrinks: while work waits, it waited
				// at every fetch so far.
				if waiting > 0 && held > tc.slowMost {
					t.Fatalf("with the quick workspace's work waiting, the slow one holds %d of 20 workers, want at most its share %d (the quick one finished %d)", held, tc.slowMost, done)
				}
				if done >= 300 {
					if waiting == 0 {
						t.Fatalf("the quick workspace's backlog ran out (%d done): the test proves nothing", done)
					}
					if held < 1 {
						t.Errorf("the slow workspace holds no worker, want 1 to its share %d", tc.slowMost)
					}
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("the quick workspace finished %d of its jobs in 60 s while the slow one held %d of 20 workers", done, held)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// Sharing by running jobs leaves no worker idle: a workspace over its share
// still gets the workers the others have no work for.
func TestWorkersNobodyElseHasWorkForGoToAWorkspaceOverItsShare(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	slow := errandtest.NewWorkspace(t, pool, "slow")
	quick := errandtest.NewWorkspace(t, pool, "quick")
	enqueue(t, pool, slow, 100, `{}`)
	if got := len(fetch(t, pool, 10, fair.Config{})); got != 10 {
		t.Fatalf("the slow workspace alone: fetched %d, want 10", got)
	}
	enqueue(t, pool, quick, 3, `{}`)
	per := map[string]int{}
	for _, j := range fetch(t, pool, 10, fair.Config{}) {
		per[workspaceOf(t, j)]++
	}
	if per[quick] != 3 || per[slow] != 7 {
		t.Errorf("10 free workers, the quick workspace's 3 jobs waiting and the slow one running 10: fetched %d and %d, want 3 and 7", per[quick], per[slow])
	}
}
