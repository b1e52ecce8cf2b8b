package daemon_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/store"
)

// lateKind is "test.late": its first two attempts wait for the test to
// release them, ignoring their context; every attempt then writes one errand.workspace_members row in the
// transaction that completes the job, on a context nothing cancels (as
// email's bookkeeping does), and reports what CompleteInWorkspace returned.
type lateKind struct {
	mu       sync.Mutex
	attempts map[int]*lateAttempt
}

type lateAttempt struct {
	started, release, done chan struct{}
	err                    error // what CompleteInWorkspace returned, once done
	onStart, onLet, onDone sync.Once
}

func (k *lateKind) attempt(n int) *lateAttempt {
	k.mu.Lock()
	defer k.mu.Unlock()
	a := k.attempts[n]
	if a == nil {
		a = &lateAttempt{started: make(chan struct{}), release: make(chan struct{}), done: make(chan struct{})}
		if n > 2 {
			a.let()
		}
		k.attempts[n] = a
	}
	return a
}

func (a *lateAttempt) let() { a.onLet.Do(func() { close(a.release) }) }

// settle waits until every attempt that started has finished.
func (k *lateKind) settle(t *testing.T) {
	t.Helper()
	k.mu.Lock()
	var all []*lateAttempt
	for _, a := range k.attempts {
		all = append(all, a)
	}
	k.mu.Unlock()
	for _, a := range all {
		select {
		case <-a.started:
			waitFor(t, a.done, "an attempt's end")
		default:
		}
	}
}

func (k *lateKind) define() jobs.Kind {
	return jobs.Define("test.late", jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, args struct{}) error {
		a := k.attempt(job.Attempt)
		a.onStart.Do(func() { close(a.started) })
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

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("no %s within 30s", what)
	}
}

// A stale attempt: its replica is dead as far as the database knows (a paused
// VM, a database clock that jumped past the lease) but never noticed, so it
// did not fence. Its job was rescued and rerun; then the stale attempt
// completes. Its tenant write must not commit: the effect exists once.
func TestLateCompletionOfARescuedAttemptCommitsNothing(t *testing.T) {
	cases := []struct {
		name string
		// staleFirst: the stale attempt completes while the rerun still
		// runs; otherwise after the rerun completed.
		staleFirst bool
		// sameReplica: the stale replica itself reruns the job (it is
		// alive again by the time it fetches), so its replica id is the
		// rerun's too and only the attempt number tells them apart.
		sameReplica bool
		// guardOff: the stale replica is behind a pooler that drops
		// notifications, so the completion guard is off.
		guardOff bool
	}{
		{name: "after another replica's rerun completed"},
		{name: "after the same replica's rerun completed", sameReplica: true},
		{name: "while the same replica's rerun runs", staleFirst: true, sameReplica: true},
		{name: "while another replica's rerun runs, completion guard off", staleFirst: true, guardOff: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := &lateKind{attempts: map[int]*lateAttempt{}}
			kind := k.define()
			dbURL, pool := errandtest.MigratedDB(t, errand.WithKinds(kind))
			ws := errandtest.NewWorkspace(t, pool, "acme")
			ctx := context.Background()

			// The stale replica has a lease of its own that it will not
			// renew during the test, and one worker (the stuck attempt
			// keeps it, so the rerun goes to the other replica) unless it
			// is to rerun the job itself.
			staleURL, guard, workers := dbURL, "true", "default=1"
			if tc.guardOff {
				staleURL, guard = notificationDroppingProxy(t, dbURL), "false"
			}
			if tc.sameReplica {
				workers = "default=2"
			}
			stale := errandtest.StartDaemon(t, staleURL, map[string]string{
				"ERRAND_QUEUES": workers, "ERRAND_RESCUE_AFTER": "1h", "ERRAND_FETCH_POLL_INTERVAL": "100ms",
			}, errand.WithKinds(kind))
			t.Cleanup(func() { // before the daemons stop: no attempt is left blocked
				k.attempt(1).let()
				k.attempt(2).let()
			})
			if want := `"completion_guard":` + guard; !strings.Contains(stale.Logs.String(), want) {
				t.Fatalf("stale replica's log lacks %s:\n%s", want, stale.Logs.String())
			}
			id := errandtest.Enqueue(t, pool, ws, "test.late", `{}`)
			first := k.attempt(1)
			waitFor(t, first.started, "first attempt's start")

			// Declared dead in the database; the replica itself does not know.
			const staleReplica = `(SELECT attempted_by[1] FROM errand.river_job WHERE id = $1)`
			if _, err := pool.Exec(ctx, `UPDATE errand.replicas SET heartbeat_at = '-infinity' WHERE id = `+staleReplica, id); err != nil {
				t.Fatal(err)
			}
			if tc.sameReplica {
				// The test rescues it the way every replica's rescuer does,
				// then the replica is alive again and fetches the job.
				rescued, err := store.RescueOrphans(ctx, pool, time.Minute)
				if err != nil || len(rescued) != 1 {
					t.Fatalf("rescue: %v %v", rescued, err)
				}
				if _, err := pool.Exec(ctx, `UPDATE errand.replicas SET heartbeat_at = now() WHERE id = `+staleReplica, id); err != nil {
					t.Fatal(err)
				}
			} else {
				// Another replica rescues the job at once and reruns it.
				errandtest.StartDaemon(t, dbURL, map[string]string{"ERRAND_FETCH_POLL_INTERVAL": "100ms"}, errand.WithKinds(kind))
			}
			second := k.attempt(2)
			waitFor(t, second.started, "rerun's start")

			if tc.staleFirst {
				first.let()
				waitFor(t, first.done, "stale attempt's end")
				if !errors.Is(first.err, jobs.ErrAttemptSuperseded) {
					t.Errorf("stale attempt completing before the rerun: %v, want ErrAttemptSuperseded", first.err)
				}
				// With the guard off, the stale attempt's failure may also put
				// the running rerun back (River's completer finishes it with
				// UPDATE ... WHERE state = 'running'): then a third attempt
				// completes the job. With it on, as for the same replica's
				// rerun, the guard refuses that failure (migration 027: its
				// error's attempt is older than the row's). Either way the
				// effect commits once.
				second.let()
			} else {
				second.let()
				waitFor(t, second.done, "rerun's end")
				if second.err != nil {
					t.Fatalf("rerun: %v", second.err)
				}
				errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
				first.let()
				waitFor(t, first.done, "stale attempt's end")
				if !errors.Is(first.err, jobs.ErrAttemptSuperseded) {
					t.Errorf("stale attempt completing after the rerun: %v, want ErrAttemptSuperseded", first.err)
				}
			}
			errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
			k.settle(t)
			if n := countMembers(t, pool, ws); n != 1 {
				t.Errorf("the job's effect committed %d times, want exactly once", n)
			}
		})
	}
}

func countMembers(t *testing.T, pool *pgxpool.Pool, ws string) int {
	t.Helper()
	var n int
	// The superuser test connection bypasses RLS.
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM errand.workspace_members WHERE workspace_id = $1`, ws).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
