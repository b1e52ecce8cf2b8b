package daemon_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs"
)

// Behind a transaction-mode pooler a session setting one client makes is
// what the next client finds: a replica id set there would make the
// completion guard refuse other replicas' own completions (UPDATE 0, no
// error), leaving their finished jobs running. ERRAND_POLL_ONLY=true says
// nothing about the connection, so the daemon still probes it and turns the
// guard off. Two replicas, each the only one knowing its kind, share the
// pooler's one server session.
func TestPollOnlyBehindATransactionPoolerTurnsTheGuardOff(t *testing.T) {
	done := func(ctx context.Context, job *jobs.Job, args struct{}) error { return nil }
	kindA := jobs.Define("test.on_a", jobs.QueueDefault, done)
	kindB := jobs.Define("test.on_b", jobs.QueueDefault, done)
	dbURL, pool := errandtest.MigratedDB(t, errand.WithKinds(kindA, kindB))
	ws := errandtest.NewWorkspace(t, pool, "acme")
	pooled := transactionPooler(t, dbURL)

	env := map[string]string{"ERRAND_POLL_ONLY": "true", "ERRAND_FETCH_POLL_INTERVAL": "100ms"}
	for _, kind := range []jobs.Kind{kindA, kindB} {
		d := errandtest.StartDaemon(t, pooled, env, errand.WithKinds(kind))
		if logs := d.Logs.String(); !strings.Contains(logs, `"poll_only":true,"completion_guard":false`) {
			t.Errorf("replica for %s: want poll_only and the completion guard off:\n%s", kind.Name, logs)
		}
	}

	// What any client of the pooler finds in the shared session.
	conn, err := pgx.Connect(context.Background(), pooled)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var leaked *string
	if err := conn.QueryRow(context.Background(), `SELECT current_setting('errand.replica_id', true)`).Scan(&leaked); err != nil {
		t.Fatal(err)
	}
	if leaked != nil && *leaked != "" {
		t.Errorf("the shared session carries errand.replica_id %q, which every client of the pooler now presents", *leaked)
	}

	for _, kind := range []string{"test.on_a", "test.on_b"} {
		id := errandtest.Enqueue(t, pool, ws, kind, `{}`)
		errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
	}
}

// On a connection of its own the probe succeeds: polling as asked, the guard on.
func TestPollOnlyOnADirectConnectionKeepsTheGuard(t *testing.T) {
	dbURL, _ := errandtest.MigratedDB(t)
	d := errandtest.StartDaemon(t, dbURL, map[string]string{"ERRAND_POLL_ONLY": "true"})
	if logs := d.Logs.String(); !strings.Contains(logs, `"poll_only":true,"completion_guard":true`) || strings.Contains(logs, "LISTEN/NOTIFY does not work") {
		t.Errorf("want poll_only, the guard on and no warning:\n%s", logs)
	}
}

// River's stuck-job rescuer runs on the leader. A job whose attempt ignores
// its context on another replica that is alive (it heartbeats, so errand's
// rescuer leaves it alone) is River's to rescue once it has run longer than
// RescueStuckJobsAfter (1 h here); the completion guard must let River's
// rescuer through rather than leave the job running for as long as its
// replica lives. The live replica is a row that never expires and the job a
// row it has been running for two hours: that is all the guard sees of them.
func TestRiversStuckJobRescuerGetsPastTheGuard(t *testing.T) {
	kind := jobs.Define("test.stuck", jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, args struct{}) error { return nil })
	dbURL, pool := errandtest.MigratedDB(t, errand.WithKinds(kind))
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	id := errandtest.Enqueue(t, pool, ws, "test.stuck", `{}`)
	if _, err := pool.Exec(ctx, `INSERT INTO errand.replicas (id, heartbeat_at) VALUES ('live-but-stuck', 'infinity')`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'running', attempt = 1,
		attempted_at = now() - interval '2 hours', attempted_by = '{live-but-stuck}' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}

	// The only daemon is River's leader; its rescuer sweeps as it is elected.
	errandtest.StartDaemon(t, dbURL, nil, errand.WithKinds(kind))
	j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
	if j.Attempt != 2 || !strings.Contains(j.LastError, "Stuck job rescued by JobRescuer") {
		t.Errorf("got %+v, want completed on attempt 2 after River's rescuer put it back", j)
	}
}

// The guard lets through only what River's rescuer does, and only when River
// would: everything else from a replica that does not own the job is
// refused as before.
func TestGuardStillRefusesWhatIsNotRiversRescue(t *testing.T) {
	dbURL, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO errand.replicas (id, heartbeat_at) VALUES ('owner', 'infinity')`); err != nil {
		t.Fatal(err)
	}
	const rescue = `UPDATE errand.river_job SET state = 'retryable', errors = array_append(errors, '{}'::jsonb),
		metadata = metadata || jsonb_build_object('river:rescue_count', coalesce(CASE WHEN jsonb_typeof(metadata -> 'river:rescue_count') = 'number'
			THEN (metadata ->> 'river:rescue_count')::int END, 0) + 1)
		WHERE id = $1 AND state = 'running'`
	const complete = `UPDATE errand.river_job SET state = 'completed', finalized_at = now() WHERE id = $1 AND state = 'running'`
	cases := []struct {
		name       string
		stuckAfter string // the session's errand.stuck_after; "" leaves it unset
		age        string
		update     string
		wantRows   int64
	}{
		{"River's rescue of a job older than the threshold", "3600", "2 hours", rescue, 1},
		{"River's rescue of a job younger than the threshold", "3600", "10 minutes", rescue, 0},
		{"a rescue from a replica that publishes no threshold", "", "2 hours", rescue, 0},
		{"a completion of an old job", "3600", "2 hours", complete, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := errandtest.Enqueue(t, pool, ws, "ping", `{}`)
			if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'running', attempt = 1,
				attempted_at = now() - $2::interval, attempted_by = '{owner}' WHERE id = $1`, id, tc.age); err != nil {
				t.Fatal(err)
			}
			conn, err := pgx.Connect(ctx, dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, `SELECT set_config('errand.replica_id', 'leader', false), set_config('errand.stuck_after', $1, false)`, tc.stuckAfter); err != nil {
				t.Fatal(err)
			}
			tag, err := conn.Exec(ctx, tc.update, id)
			if err != nil {
				t.Fatal(err)
			}
			if tag.RowsAffected() != tc.wantRows {
				t.Errorf("%d rows updated, want %d", tag.RowsAffected(), tc.wantRows)
			}
		})
	}
}

// A replica paused long enough for its jobs to be rescued (a frozen VM never
// fences: its clock does not move) can fetch one of them again on waking,
// before its heartbeat learns that its lease ran out. Its old attempt then
// finishes on the same replica as the job's new one. River says which attempt
// finishes in every outcome but a completion, and the guard refuses the old
// attempt's: it must not put the new attempt's row back (the job would run
// once more, beyond max_attempts if the new attempt was its last). The
// outcomes are River's own, through its driver, as its completer sends them.
func TestGuardRefusesAnOlderAttemptOfTheSameReplica(t *testing.T) {
	dbURL, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO errand.replicas (id, heartbeat_at) VALUES ('woke-up', 'infinity')`); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["errand.replica_id"] = "woke-up"
	replica, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(replica.Close)
	exec := riverpgxv5.New(replica).GetExecutor()

	errData := func(attempt int) []byte {
		b, err := json.Marshal(rivertype.AttemptError{At: time.Now(), Attempt: attempt, Error: "boom"})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	later := time.Now().Add(time.Hour)
	now := time.Now()
	// The job runs its attempt 2 on the replica; finishing is attempt 1 (stale)
	// or attempt 2 (current).
	cases := []struct {
		name    string
		outcome func(id int64, finishing int) *riverdriver.JobSetStateIfRunningParams
		// what a current attempt's outcome leaves; a stale one leaves the row running
		state   string
		attempt int
	}{
		{"an error with retries left", func(id int64, a int) *riverdriver.JobSetStateIfRunningParams {
			return riverdriver.JobSetStateErrorRetryable(id, later, errData(a), nil)
		}, "retryable", 2},
		{"an error on the last attempt", func(id int64, a int) *riverdriver.JobSetStateIfRunningParams {
			return riverdriver.JobSetStateDiscarded(id, now, errData(a), nil)
		}, "discarded", 2},
		{"a cancel", func(id int64, a int) *riverdriver.JobSetStateIfRunningParams {
			return riverdriver.JobSetStateCancelled(id, now, errData(a), nil)
		}, "cancelled", 2},
		{"a snooze", func(id int64, a int) *riverdriver.JobSetStateIfRunningParams {
			return riverdriver.JobSetStateSnoozed(id, later, a-1, []byte(`{"snoozes": 1}`))
		}, "scheduled", 1},
		{"a shutdown's interruption", func(id int64, a int) *riverdriver.JobSetStateIfRunningParams {
			return riverdriver.JobSetStateInterrupted(id, now, max(a-1, 0), nil)
		}, "available", 1},
	}
	finish := func(p *riverdriver.JobSetStateIfRunningParams) {
		t.Helper()
		_, err := exec.JobSetStateIfRunningMany(ctx, &riverdriver.JobSetStateIfRunningManyParams{
			ID: []int64{p.ID}, Attempt: []*int{p.Attempt}, ErrData: [][]byte{p.ErrData},
			FinalizedAt: []*time.Time{p.FinalizedAt}, MetadataDoMerge: []bool{p.MetadataDoMerge},
			MetadataUpdates: [][]byte{p.MetadataUpdates}, ScheduledAt: []*time.Time{p.ScheduledAt},
			Schema: "errand", State: []rivertype.JobState{p.State},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	row := func(id int64) (state string, attempt, errs int) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT state::text, attempt, coalesce(cardinality(errors), 0) FROM errand.river_job WHERE id = $1`, id).Scan(&state, &attempt, &errs); err != nil {
			t.Fatal(err)
		}
		return
	}
	running := func() int64 {
		t.Helper()
		id := errandtest.Enqueue(t, pool, ws, "ping", `{}`)
		// Attempt 1 was rescued (its error is on the row); attempt 2 runs.
		if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'running', attempt = 2, max_attempts = 2,
			attempted_at = now(), attempted_by = '{woke-up,woke-up}',
			errors = ARRAY[jsonb_build_object('at', now(), 'attempt', 1, 'error', 'rescued: replica woke-up stopped heartbeating while running this job')]
			WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := running()
			finish(tc.outcome(id, 1))
			if state, attempt, errs := row(id); state != "running" || attempt != 2 || errs != 1 {
				t.Errorf("after attempt 1's outcome: %s, attempt %d, %d errors; want the row left to attempt 2 (running, attempt 2, 1 error)", state, attempt, errs)
			}
			finish(tc.outcome(id, 2))
			if state, attempt, _ := row(id); state != tc.state || attempt != tc.attempt {
				t.Errorf("after attempt 2's outcome: %s, attempt %d; want %s, attempt %d", state, attempt, tc.state, tc.attempt)
			}
		})
	}

	// A completion says no attempt: it moves the row, whichever attempt sent it.
	id := running()
	finish(riverdriver.JobSetStateCompleted(id, now, nil))
	if state, _, _ := row(id); state != "completed" {
		t.Errorf("a completion left the job %s, want completed", state)
	}
}
