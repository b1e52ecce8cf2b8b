package daemon_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs"
)

// runsKind is "test.runs": every run of a job, in the order runs start, is
// sent to the test and waits for it to let it go; then it writes one
// errand.workspace_members row in the transaction that completes the job,
// as lateKind's attempts do.
type runsKind struct {
	started chan *lateAttempt
}

func (k *runsKind) define() jobs.Kind {
	return jobs.Define("test.runs", jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, args struct{}) error {
		a := &lateAttempt{started: make(chan struct{}), release: make(chan struct{}), done: make(chan struct{})}
		k.started <- a
		<-a.release
		err := job.CompleteInWorkspace(context.WithoutCancel(ctx), func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO errand.workspace_members (workspace_id, user_id, role)
				VALUES (current_setting('app.current_workspace_id')::uuid, gen_random_uuid(), 'viewer')`)
			return err
		})
		a.onDone.Do(func() { a.err = err; close(a.done) })
		return err
	})
}

// A fetch's claim commits without waiting for the WAL flush (migration 026),
// so a crash of PostgreSQL right after it can lose it: the job is available
// again with the attempt number it had, and the same replica starts that
// attempt a second time while the first run still goes on. The two runs
// carry the same attempt number and replica; the job's database effect must
// still commit once, whichever run completes first.
func TestALostClaimAppliesEffectsOnce(t *testing.T) {
	for _, firstRunCompletesFirst := range []bool{true, false} {
		name := "the first run completes first"
		if !firstRunCompletesFirst {
			name = "the second run completes first"
		}
		t.Run(name, func(t *testing.T) {
			k := &runsKind{started: make(chan *lateAttempt, 4)}
			kind := k.define()
			dbURL, pool := errandtest.MigratedDB(t, errand.WithKinds(kind))
			ws := errandtest.NewWorkspace(t, pool, "acme")
			ctx := context.Background()
			errandtest.StartDaemon(t, dbURL, map[string]string{
				"ERRAND_QUEUES": "default=2", "ERRAND_RESCUE_AFTER": "1h", "ERRAND_FETCH_POLL_INTERVAL": "100ms",
			}, errand.WithKinds(kind))
			var runs []*lateAttempt
			t.Cleanup(func() { // before the daemon stops: no run is left blocked
				for _, r := range runs {
					r.let()
				}
			})
			next := func(what string) *lateAttempt {
				t.Helper()
				select {
				case r := <-k.started:
					runs = append(runs, r)
					return r
				case <-time.After(30 * time.Second):
					t.Fatalf("no %s within 30s", what)
					return nil
				}
			}

			id := errandtest.Enqueue(t, pool, ws, "test.runs", `{}`)
			first := next("first run")
			// The claim: the job's attempt number and who attempted it.
			claim := func() string {
				t.Helper()
				var c string
				if err := pool.QueryRow(ctx, `SELECT attempt || ' by ' || coalesce(attempted_by::text, 'nobody') FROM errand.river_job WHERE id = $1`, id).Scan(&c); err != nil {
					t.Fatal(err)
				}
				return c
			}
			claimed := claim()
			// What the crash leaves: the row as it was before the claim.
			if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'available', attempt = 0, attempted_at = NULL, attempted_by = NULL
				WHERE id = $1`, id); err != nil {
				t.Fatal(err)
			}
			second := next("second run of the same attempt")
			if again := claim(); again != claimed || !strings.HasPrefix(claimed, "1 by {") {
				t.Fatalf("second claim: %s, first %s; want attempt 1 by the same replica both times", again, claimed)
			}

			winner, loser := first, second
			if !firstRunCompletesFirst {
				winner, loser = second, first
			}
			winner.let()
			waitFor(t, winner.done, "the first completion")
			if winner.err != nil {
				t.Fatalf("the run that completes first: %v", winner.err)
			}
			errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
			loser.let()
			waitFor(t, loser.done, "the second completion")
			if !errors.Is(loser.err, jobs.ErrAttemptSuperseded) {
				t.Errorf("the run that completes second: %v, want ErrAttemptSuperseded", loser.err)
			}
			errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
			if n := countMembers(t, pool, ws); n != 1 {
				t.Errorf("the job's effect committed %d times, want exactly once", n)
			}
		})
	}
}
