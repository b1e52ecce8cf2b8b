package opstest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/store"
)

// One worker on the default queue: River fetches the oldest available job
// first, so a job of another workspace enqueued after a held one completing
// proves the held one was not available to take.
var oneWorker = map[string]string{"ERRAND_QUEUES": "default=1,email=0,webhooks=0,documents=0"}

// wantHeld checks a job waits as pending, held by its paused workspace, with
// attempt attempts used.
func wantHeld(t *testing.T, pool *pgxpool.Pool, id int64, attempt int) {
	t.Helper()
	j := errandtest.GetJob(t, pool, id)
	if j.Status != "pending" || j.RiverState != "pending" || j.Attempt != attempt {
		t.Fatalf("job %d: status %s (river %s), attempt %d; want pending (river pending), attempt %d", id, j.Status, j.RiverState, j.Attempt, attempt)
	}
}

// waitRiverState polls until the job's River state is want (a generous
// bound, not a measurement).
func waitRiverState(t *testing.T, pool *pgxpool.Pool, id int64, want string, attempt int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		j := errandtest.GetJob(t, pool, id)
		if j.RiverState == want && j.Attempt == attempt {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d: river state %s, attempt %d after 60s; want %s, attempt %d", id, j.RiverState, j.Attempt, want, attempt)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func enqueueAt(t *testing.T, pool *pgxpool.Pool, ws, args string, runAt time.Time) int64 {
	t.Helper()
	var id int64
	if err := pool.QueryRow(context.Background(),
		`INSERT INTO errand.jobs (workspace_id, kind, args, run_at) VALUES ($1, 'ping', $2, $3) RETURNING id`, ws, args, runAt).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// A paused workspace's jobs wait, whether they were waiting when it paused,
// enqueued while it is paused or scheduled to come due while it is, and
// use no attempt; another workspace's jobs run meanwhile; resuming runs them.
func TestPausedWorkspaceWaitsWhileOthersRun(t *testing.T) {
	ctx := context.Background()
	url, pool := errandtest.MigratedDB(t)
	paused := errandtest.NewWorkspace(t, pool, "paused")
	other := errandtest.NewWorkspace(t, pool, "other")

	// Waiting before the pause (no daemon runs yet); then one scheduled to
	// come due while paused: River's scheduler makes it available, the
	// trigger holds it. (Enqueued after the pause, so that a stalled machine
	// cannot make it due before the pause counts what it held.)
	before := errandtest.Enqueue(t, pool, paused, "ping", `{}`)
	n, err := store.PauseWorkspace(ctx, pool, paused)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("pause held %d jobs, want 1 (the available one)", n)
	}
	later := enqueueAt(t, pool, paused, `{}`, time.Now().Add(time.Second))
	wantHeld(t, pool, before, 0)

	errandtest.StartDaemon(t, url, oneWorker)
	during := errandtest.Enqueue(t, pool, paused, "ping", `{}`)
	wantHeld(t, pool, during, 0)
	otherJob := errandtest.Enqueue(t, pool, other, "ping", `{}`)
	errandtest.WaitJob(t, pool, otherJob, 60*time.Second, "completed")
	waitRiverState(t, pool, later, "pending", 0)
	// A job of the other workspace enqueued after the scheduler held the
	// late one runs too, and the held ones are still untouched.
	otherJob = errandtest.Enqueue(t, pool, other, "ping", `{}`)
	errandtest.WaitJob(t, pool, otherJob, 60*time.Second, "completed")
	for _, id := range []int64{before, during, later} {
		wantHeld(t, pool, id, 0)
	}

	// Pausing again changes nothing.
	if n, err := store.PauseWorkspace(ctx, pool, paused); err != nil || n != 0 {
		t.Fatalf("second pause: %d, %v; want 0, nil", n, err)
	}
	n, err = store.ResumeWorkspace(ctx, pool, paused)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("resume released %d jobs, want 3", n)
	}
	for _, id := range []int64{before, during, later} {
		if j := errandtest.WaitJob(t, pool, id, 60*time.Second, "completed"); j.Attempt != 1 {
			t.Errorf("job %d completed on attempt %d, want 1: the pause used none", id, j.Attempt)
		}
	}
	var metadata int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.river_job WHERE metadata ? 'errand:paused'`).Scan(&metadata); err != nil || metadata != 0 {
		t.Fatalf("%d jobs still carry errand:paused (%v)", metadata, err)
	}
}

// A job running when its workspace pauses finishes its attempt; its retry
// waits for the resume, as does a failed job retried by hand meanwhile.
func TestRetryDuringPauseWaits(t *testing.T) {
	ctx := context.Background()
	release := make(chan struct{})
	gate := jobs.Define("test.gate", jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, _ struct{}) error {
		if job.Attempt > 1 {
			return nil
		}
		select {
		case <-release:
			return errors.New("first attempt fails")
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	url, pool := errandtest.MigratedDB(t, errand.WithKinds(gate))
	paused := errandtest.NewWorkspace(t, pool, "paused")
	other := errandtest.NewWorkspace(t, pool, "other")
	var failed int64
	if err := pool.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, max_attempts)
		VALUES ($1, 'ping', '{"fail_times": 1}', 1) RETURNING id`, paused).Scan(&failed); err != nil {
		t.Fatal(err)
	}
	errandtest.StartDaemon(t, url, map[string]string{"ERRAND_QUEUES": "default=2,email=0,webhooks=0,documents=0"}, errand.WithKinds(gate))
	errandtest.WaitJob(t, pool, failed, 60*time.Second, "failed")

	running := errandtest.Enqueue(t, pool, paused, "test.gate", `{}`)
	errandtest.WaitJob(t, pool, running, 60*time.Second, "processing")
	if _, err := store.PauseWorkspace(ctx, pool, paused); err != nil {
		t.Fatal(err)
	}
	close(release) // its first attempt fails now, with the workspace paused
	waitRiverState(t, pool, running, "pending", 1)
	if res, err := store.RetryJob(ctx, pool, failed); err != nil || res != "paused" {
		t.Fatalf("retry of a failed job while paused: %q, %v; want \"paused\"", res, err)
	}
	wantHeld(t, pool, failed, 1)
	otherJob := errandtest.Enqueue(t, pool, other, "ping", `{}`)
	errandtest.WaitJob(t, pool, otherJob, 60*time.Second, "completed")
	wantHeld(t, pool, running, 1)
	wantHeld(t, pool, failed, 1)

	if _, err := store.ResumeWorkspace(ctx, pool, paused); err != nil {
		t.Fatal(err)
	}
	if j := errandtest.WaitJob(t, pool, running, 60*time.Second, "completed"); j.Attempt != 2 {
		t.Errorf("gate job completed on attempt %d, want 2", j.Attempt)
	}
	// ping with fail_times 1 succeeds on its second attempt, the one retry
	// added (it had used its only one).
	if j := errandtest.WaitJob(t, pool, failed, 60*time.Second, "completed"); j.Attempt != 2 || j.MaxAttempts != 2 {
		t.Errorf("retried job: attempt %d of %d, want 2 of 2", j.Attempt, j.MaxAttempts)
	}
}

// Two replicas on one database: neither takes a paused workspace's jobs,
// both keep working the others', and a resume releases them to both.
func TestTwoDaemonsRespectPause(t *testing.T) {
	ctx := context.Background()
	url, pool := errandtest.MigratedDB(t)
	paused := errandtest.NewWorkspace(t, pool, "paused")
	other := errandtest.NewWorkspace(t, pool, "other")
	env := map[string]string{"ERRAND_QUEUES": "default=2,email=0,webhooks=0,documents=0"}
	errandtest.StartDaemon(t, url, env)
	errandtest.StartDaemon(t, url, env)
	if _, err := store.PauseWorkspace(ctx, pool, paused); err != nil {
		t.Fatal(err)
	}
	var held, others []int64
	for range 20 {
		held = append(held, errandtest.Enqueue(t, pool, paused, "ping", `{"sleep_ms": 5}`))
		others = append(others, errandtest.Enqueue(t, pool, other, "ping", `{"sleep_ms": 5}`))
	}
	for _, id := range others {
		errandtest.WaitJob(t, pool, id, 60*time.Second, "completed")
	}
	for _, id := range held {
		wantHeld(t, pool, id, 0)
	}
	if n, err := store.ResumeWorkspace(ctx, pool, paused); err != nil || n != int64(len(held)) {
		t.Fatalf("resume: %d, %v; want %d", n, err, len(held))
	}
	for _, id := range held {
		if j := errandtest.WaitJob(t, pool, id, 60*time.Second, "completed"); j.Attempt != 1 {
			t.Errorf("job %d completed on attempt %d, want 1", id, j.Attempt)
		}
	}
}

// Cancelling a running job asks its replica to stop it: its context is
// cancelled and the job ends cancelled (status failed), not retried.
func TestCancelRunningJob(t *testing.T) {
	ctx := context.Background()
	stopped := make(chan struct{})
	block := jobs.Define("test.block", jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, _ struct{}) error {
		<-ctx.Done()
		close(stopped)
		return ctx.Err()
	})
	url, pool := errandtest.MigratedDB(t, errand.WithKinds(block))
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, nil, errand.WithKinds(block))
	id := errandtest.Enqueue(t, pool, ws, "test.block", `{}`)
	errandtest.WaitJob(t, pool, id, 60*time.Second, "processing")
	if res, err := store.CancelJob(ctx, pool, id); err != nil || res != "cancelling" {
		t.Fatalf("cancel of a running job: %q, %v; want \"cancelling\"", res, err)
	}
	select {
	case <-stopped:
	case <-time.After(60 * time.Second):
		t.Fatal("the running job's context was not cancelled within 60s")
	}
	if j := errandtest.WaitJob(t, pool, id, 60*time.Second, "failed"); j.RiverState != "cancelled" || j.Attempt != 1 {
		t.Errorf("cancelled job: %+v; want river state cancelled after 1 attempt", j)
	}
}

// Pausing a workspace while two replicas are working through its backlog:
// no job of it starts after the pause has committed (every replica's next
// fetch leaves it alone: started jobs carry their fetch's clock, read
// before the pause's commit), the jobs already running finish, the rest
// wait as pending with no attempt used, and another workspace's jobs keep
// completing. After the resume each held job runs once.
func TestPauseWhileTwoReplicasDrainTheBacklog(t *testing.T) {
	ctx := context.Background()
	url, pool := errandtest.MigratedDB(t)
	paused := errandtest.NewWorkspace(t, pool, "paused")
	other := errandtest.NewWorkspace(t, pool, "other")
	env := map[string]string{"ERRAND_QUEUES": "default=4,email=0,webhooks=0,documents=0"}
	errandtest.StartDaemon(t, url, env)
	errandtest.StartDaemon(t, url, env)
	count := func(sql string, args ...any) (n int) {
		t.Helper()
		if err := pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	const total = 1000
	if _, err := pool.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args)
		SELECT ws, 'ping', '{"sleep_ms": 20}' FROM generate_series(1, $3) AS g,
		       LATERAL (SELECT CASE WHEN g % 4 = 0 THEN $2::uuid ELSE $1::uuid END) AS w(ws)`, paused, other, total); err != nil {
		t.Fatal(err)
	}
	// waitUntil polls cond until it holds, failing the test after a bound
	// generous for a busy machine (positive signals only).
	waitUntil := func(what string, bound time.Duration, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(bound); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not after %s", what, bound)
			}
		}
	}
	completed := `SELECT count(*) FROM errand.jobs WHERE workspace_id = $1 AND status = 'completed'`
	waitUntil("50 of the workspace's jobs completed", time.Minute, func() bool { return count(completed, paused) >= 50 })
	if _, err := store.PauseWorkspace(ctx, pool, paused); err != nil {
		t.Fatal(err)
	}
	var committed time.Time
	if err := pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&committed); err != nil {
		t.Fatal(err)
	}
	// The other workspace's jobs all complete while the pause holds.
	waitUntil("every job of the other workspace completed", 2*time.Minute, func() bool { return count(completed, other) == total/4 })
	// What was running when the pause committed finishes (20 ms jobs);
	// then nothing of the paused workspace runs.
	waitUntil("no job of the paused workspace running", time.Minute, func() bool {
		return count(`SELECT count(*) FROM errand.jobs WHERE workspace_id = $1 AND status = 'processing'`, paused) == 0
	})
	if n := count(`SELECT count(*) FROM errand.river_job WHERE metadata ->> 'workspace_id' = $1 AND attempted_at > $2`, paused, committed); n != 0 {
		t.Errorf("%d jobs of the paused workspace started after the pause committed, want none", n)
	}
	done := count(completed, paused)
	held := count(`SELECT count(*) FROM errand.jobs WHERE workspace_id = $1 AND status = 'pending' AND attempt = 0`, paused)
	if held == 0 || done+held != total*3/4 {
		t.Fatalf("paused workspace: %d completed, %d pending with no attempt used, want some held and %d in all", done, held, total*3/4)
	}
	if n, err := store.ResumeWorkspace(ctx, pool, paused); err != nil || n != int64(held) {
		t.Fatalf("resume: %d, %v; want %d", n, err, held)
	}
	waitUntil("every job of the paused workspace completed after the resume", 2*time.Minute, func() bool { return count(completed, paused) == total*3/4 })
	if n := count(`SELECT count(*) FROM errand.jobs WHERE workspace_id = $1 AND attempt <> 1`, paused); n != 0 {
		t.Errorf("%d jobs of the paused workspace ran more than once or not at all", n)
	}
}
