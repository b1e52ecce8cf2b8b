package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/store"
)

// The ops queries and the statements inside the SQL functions read through
// the indexes, however many completed jobs are kept (watchData: 20,000).
func TestOpsQueriesUseTheirIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.NewDatabase(t, true)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	big, _ := watchData(t, conn)

	for _, q := range []struct {
		name    string
		stmt    captured
		indexes []string
		status  bool
	}{
		{"workspaces list", capture(t, func(db store.DB) error { _, err := store.Workspaces(ctx, db, 100); return err }),
			[]string{statusIdx}, true},
		{"stats: finished in the last hour", captured{sql: store.FinishedByQueueSQL},
			[]string{"river_job_state_and_finalized_at_index"}, false},
		// The statements of pause_workspace, resume_workspace and retry_jobs
		// (migrations/016_operations.sql), as written there. Pausing and
		// resuming name River's state too, so the planner may instead take
		// River's fetch index (state first) or the status index: each of
		// them reads waiting jobs only, never the completed ones.
		{"pause_workspace's update", captured{sql: `UPDATE errand.river_job j SET state = 'pending'
			WHERE (j.metadata ->> 'workspace_id')::uuid = $1::uuid AND errand.job_status(j.state) = 'pending' AND j.state = 'available'`, args: []any{big}},
			[]string{wsIdx, statusIdx, fetchIdx}, false},
		{"resume_workspace's update", captured{sql: `UPDATE errand.river_job j SET state = 'available'
			WHERE (j.metadata ->> 'workspace_id')::uuid = $1::uuid AND errand.job_status(j.state) = 'pending' AND j.state = 'pending'
			  AND j.metadata ? 'errand:paused'`, args: []any{big}},
			[]string{wsIdx, statusIdx, fetchIdx}, false},
		{"retry_jobs' selection", captured{sql: `SELECT j.id FROM errand.river_job j
			WHERE (j.metadata ->> 'workspace_id')::uuid = $1::uuid AND errand.job_status(j.state) = 'failed' ORDER BY j.id FOR UPDATE`, args: []any{big}},
			[]string{wsIdx}, true},
	} {
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			plan := explain(t, conn, q.stmt, mode)
			if err := checkPlan(plan, q.indexes, q.status); err != nil {
				t.Errorf("%s (%s): %v\nSQL: %s\nplan:\n%s", q.name, mode, err, q.stmt.sql, plan)
			}
		}
	}
}

// opsDB is a migrated database of the test's own with kind ping published.
func opsDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool := testdb.Pool(t, testdb.NewDatabase(t, true))
	if _, err := pool.Exec(context.Background(), "INSERT INTO errand.kinds (kind, queue) VALUES ('ping', 'default') ON CONFLICT DO NOTHING"); err != nil {
		t.Fatal(err)
	}
	return pool
}

// fetchIdx is River's fetch index, (state, queue, priority, scheduled_at, id).
const fetchIdx = "river_job_prioritized_fetching_index"

func enqueuePing(t *testing.T, db store.DB, ws string) int64 {
	t.Helper()
	var id int64
	if err := db.QueryRow(context.Background(),
		`INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', '{}') RETURNING id`, ws).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func riverState(t *testing.T, db store.DB, id int64) string {
	t.Helper()
	var s string
	if err := db.QueryRow(context.Background(), `SELECT state::text FROM errand.river_job WHERE id = $1`, id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// Each refusal of the SQL functions: its SQLSTATE and message, and
// nothing changed.
func TestOpsFunctionsRefuse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := opsDB(t)
	ws := newWorkspace(t, pool, "acme")
	gone := newWorkspace(t, pool, "gone")
	pending := enqueuePing(t, pool, ws)
	done := enqueuePing(t, pool, ws)
	orphan := enqueuePing(t, pool, gone)
	if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'completed', attempt = 1, finalized_at = now() WHERE id = $1`, done); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `DELETE FROM errand.workspaces WHERE id = $1`, gone); err != nil { // cancels its job
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, sql string
		args      []any
		code      string
		message   string
	}{
		{"pause of an unknown workspace", `SELECT errand.pause_workspace($1)`, []any{"5dac5824-4ac0-4db5-8f13-b01ac0ac2c36"},
			"23503", "errand: workspace 5dac5824-4ac0-4db5-8f13-b01ac0ac2c36 does not exist in errand.workspaces"},
		{"pause of NULL", `SELECT errand.pause_workspace(NULL)`, nil, "23502", "errand: workspace id is required"},
		{"resume of an unknown workspace", `SELECT errand.resume_workspace($1)`, []any{gone}, "23503", "does not exist in errand.workspaces"},
		{"retry of an unknown job", `SELECT errand.retry_job(999999)`, nil, "23503", "errand: job 999999 does not exist"},
		{"retry of NULL", `SELECT errand.retry_job(NULL)`, nil, "23502", "errand: job id is required"},
		{"retry of a pending job", `SELECT errand.retry_job($1)`, []any{pending}, "55000", "is pending, and only a failed job can be retried"},
		{"retry of a completed job", `SELECT errand.retry_job($1)`, []any{done}, "55000", "is completed, and only a failed job can be retried"},
		{"retry of a deleted workspace's job", `SELECT errand.retry_job($1)`, []any{orphan}, "23503", "which no longer exists in errand.workspaces"},
		{"retry_jobs of pending jobs", `SELECT errand.retry_jobs($1, 'pending')`, []any{ws}, "22023", "errand: retry_jobs retries failed jobs only, got status 'pending'"},
		{"retry_jobs of an unknown workspace", `SELECT errand.retry_jobs($1)`, []any{gone}, "23503", "does not exist in errand.workspaces"},
		{"cancel of an unknown job", `SELECT errand.cancel_job(999999)`, nil, "23503", "errand: job 999999 does not exist"},
		{"cancel of a completed job", `SELECT errand.cancel_job($1)`, []any{done}, "55000", "is already completed, there is nothing to cancel"},
		{"cancel of a failed job", `SELECT errand.cancel_job($1)`, []any{orphan}, "55000", "is already failed, there is nothing to cancel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pool.Exec(ctx, tc.sql, tc.args...)
			var pg *pgconn.PgError
			if !errors.As(err, &pg) || pg.Code != tc.code || !strings.Contains(pg.Message, tc.message) {
				t.Fatalf("%s: %v; want SQLSTATE %s, %q", tc.sql, err, tc.code, tc.message)
			}
		})
	}

	// A transaction scoped to another workspace sees no job or workspace.
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', gen_random_uuid()::text, true)`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT errand.cancel_job($1)`, pending)
		return err
	})
	if pg := (*pgconn.PgError)(nil); !errors.As(err, &pg) || pg.Code != "23503" {
		t.Errorf("cancel from another workspace's scope: %v, want 23503", err)
	}
	// Pausing in REPEATABLE READ could miss jobs committed while it waited.
	err = pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT errand.pause_workspace($1)`, ws)
		return err
	})
	if pg := (*pgconn.PgError)(nil); !errors.As(err, &pg) || pg.Code != "25000" || !strings.Contains(pg.Message, "must run in a READ COMMITTED transaction, not REPEATABLE READ") {
		t.Errorf("pause in REPEATABLE READ: %v", err)
	}
	// A role that was granted nothing may not call them.
	role := "ops_nobody_" + randomHex(t)
	if _, err := pool.Exec(ctx, `CREATE ROLE `+role+` NOLOGIN`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Exec(context.Background(), `DROP OWNED BY `+role+`; DROP ROLE `+role) }) //nolint:errcheck
	if _, err := pool.Exec(ctx, `GRANT USAGE ON SCHEMA errand TO `+role); err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+role); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT errand.pause_workspace($1)`, ws)
		return err
	})
	if pg := (*pgconn.PgError)(nil); !errors.As(err, &pg) || pg.Code != sqlInsufficientPrivilege {
		t.Errorf("pause by a role without EXECUTE: %v, want 42501", err)
	}

	if s := riverState(t, pool, pending); s != "available" {
		t.Errorf("pending job is %s after the refusals, want available", s)
	}
	var paused int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.paused_workspaces`).Scan(&paused); err != nil || paused != 0 {
		t.Errorf("%d paused workspaces after the refusals (%v)", paused, err)
	}
}

// waitForLockWait waits until a transaction of this database waits for a
// pause bucket lock (the positive signal that pause or resume is blocked).
func waitForLockWait(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := pool.QueryRow(context.Background(), `
			SELECT count(*) FROM pg_locks
			WHERE locktype = 'advisory' AND NOT granted AND classid = 1702322540::oid
			  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing waited for a pause bucket lock within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An enqueue still open when a pause starts is waited for: its job, which
// it made available before the pause, is held once both commit. An enqueue
// that a pause made hold its job and that commits after a resume started is
// waited for too: the resume releases it.
func TestPauseAndResumeWaitForOpenEnqueues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := opsDB(t)
	ws := newWorkspace(t, pool, "acme")

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(context.Background()) }) //nolint:errcheck // committed unless the test failed
	id := enqueuePing(t, tx, ws)
	if s := riverState(t, tx, id); s != "available" {
		t.Fatalf("job is %s before the pause, want available", s)
	}
	held := make(chan error, 1)
	var n int64
	go func() {
		var err error
		n, err = store.PauseWorkspace(ctx, pool, ws)
		held <- err
	}()
	waitForLockWait(t, pool)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-held; err != nil || n != 1 {
		t.Fatalf("pause: %d, %v; want 1 job held", n, err)
	}
	if s := riverState(t, pool, id); s != "pending" {
		t.Fatalf("job is %s after the pause, want pending", s)
	}

	tx2, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx2.Rollback(context.Background()) }) //nolint:errcheck // committed unless the test failed
	id2 := enqueuePing(t, tx2, ws)
	if s := riverState(t, tx2, id2); s != "pending" {
		t.Fatalf("job enqueued while paused is %s, want pending", s)
	}
	released := make(chan error, 1)
	go func() {
		var err error
		n, err = store.ResumeWorkspace(ctx, pool, ws)
		released <- err
	}()
	waitForLockWait(t, pool)
	if err := tx2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-released; err != nil || n != 2 {
		t.Fatalf("resume: %d, %v; want 2 jobs released", n, err)
	}
	for _, id := range []int64{id, id2} {
		if s := riverState(t, pool, id); s != "available" {
			t.Errorf("job %d is %s after the resume, want available", id, s)
		}
	}
}

// A transaction left open after enqueueing holds a pause at most 5s, and
// the pause then says why.
func TestPauseGivesUpOnAnEnqueueLeftOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := opsDB(t)
	ws := newWorkspace(t, pool, "acme")
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(context.Background()) }) //nolint:errcheck // the enqueue left open
	enqueuePing(t, tx, ws)
	_, err = store.PauseWorkspace(ctx, pool, ws)
	var op *store.OpError
	if !errors.As(err, &op) || op.PG.Code != "55P03" || !strings.Contains(err.Error(), "waited 5s for transactions enqueuing jobs of workspace") {
		t.Fatalf("pause with an enqueue left open: %v", err)
	}
	var paused int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.paused_workspaces`).Scan(&paused); err != nil || paused != 0 {
		t.Errorf("%d paused workspaces after the refused pause (%v)", paused, err)
	}
}

// Every way a job becomes available holds it while its workspace is paused,
// and leaves another workspace's job in the same statement alone: the
// contract, enqueue_many, River's client (a plain INSERT, and COPY), and
// updates as River's scheduler, completer and errand's rescuer make them.
func TestPausedWorkspaceHoldsEveryWayToAvailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := opsDB(t)
	paused := newWorkspace(t, pool, "paused")
	other := newWorkspace(t, pool, "other")
	if _, err := store.PauseWorkspace(ctx, pool, paused); err != nil {
		t.Fatal(err)
	}
	ids := func(sql string, args ...any) []int64 {
		t.Helper()
		rows, err := pool.Query(ctx, sql, args...)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		list, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return list
	}
	check := func(how string, heldID, otherID int64) {
		t.Helper()
		if s := riverState(t, pool, heldID); s != "pending" {
			t.Errorf("%s: the paused workspace's job is %s, want pending", how, s)
		}
		if s := riverState(t, pool, otherID); s == "pending" {
			t.Errorf("%s: the other workspace's job is held", how)
		}
	}
	const river = `INSERT INTO errand.river_job (args, kind, max_attempts, metadata, priority, queue, scheduled_at, state)
		SELECT '{}', 'ping', 25, jsonb_build_object('workspace_id', ws), 1, 'default', now(), $3::errand.river_job_state
		FROM unnest(ARRAY[$1::uuid, $2::uuid]) AS ws RETURNING id`

	l := ids(`INSERT INTO errand.jobs (workspace_id, kind) VALUES ($1, 'ping'), ($2, 'ping') RETURNING id`, paused, other)
	check("the contract", l[0], l[1])
	l = ids(`SELECT id FROM errand.enqueue_many(workspace_id => ARRAY[$1::uuid, $2::uuid], kind => ARRAY['ping', 'ping'])`, paused, other)
	check("enqueue_many", l[0], l[1])
	l = ids(river, paused, other, "available")
	check("River's insert", l[0], l[1])
	n, err := pool.CopyFrom(ctx, pgx.Identifier{"errand", "river_job"},
		[]string{"args", "kind", "max_attempts", "metadata", "priority", "queue", "state"},
		pgx.CopyFromRows([][]any{
			{[]byte(`{}`), "ping", 25, map[string]any{"workspace_id": paused}, 1, "default", "available"},
			{[]byte(`{}`), "ping", 25, map[string]any{"workspace_id": other}, 1, "default", "available"},
		}))
	if err != nil || n != 2 {
		t.Fatalf("copy: %d, %v", n, err)
	}
	l = ids(`SELECT id FROM errand.river_job ORDER BY id DESC LIMIT 2`)
	check("COPY", l[1], l[0])
	for _, from := range []string{"scheduled", "retryable", "running"} {
		l = ids(river, paused, other, from)
		if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'available' WHERE id = ANY($1)`, l); err != nil {
			t.Fatal(err)
		}
		check(from+" to available", l[0], l[1])
	}
	// Jobs that are not becoming available keep their state.
	l = ids(river, paused, other, "scheduled")
	if s := riverState(t, pool, l[0]); s != "scheduled" {
		t.Errorf("a scheduled job of the paused workspace is %s, want scheduled until it comes due", s)
	}
}

// Workspaces reads only the candidates for its first N (paused ones, those
// with jobs counted, the first N by slug) and still lists exactly the first
// N of the full order: paused first, then most pending, then slug.
func TestWorkspacesListsTheFirstNOfTheFullOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t, testdb.NewDatabase(t, true))
	if _, err := pool.Exec(ctx, `INSERT INTO errand.kinds (kind, queue) VALUES ('ping', 'default') ON CONFLICT DO NOTHING`); err != nil {
		t.Fatal(err)
	}
	// 30 workspaces, slugs out of insertion order; every third has pending
	// jobs (as many as its number mod 5, so some tie), every fifth a failed
	// one, two are paused (one of them with pending jobs).
	_, err := pool.Exec(ctx, `
		INSERT INTO errand.workspaces (name, slug) SELECT 'W' || g, 'w-' || lpad(((g * 7) % 30)::text, 2, '0') FROM generate_series(0, 29) g;
		INSERT INTO errand.jobs (workspace_id, kind, args, run_at)
		SELECT w.id, 'ping', '{}', now() + interval '1 day'
		FROM errand.workspaces w, generate_series(1, 5) k
		WHERE right(w.slug, 2)::int % 3 = 0 AND k <= right(w.slug, 2)::int % 5;
		INSERT INTO errand.jobs (workspace_id, kind, args, run_at)
		SELECT w.id, 'ping', '{"failed": true}', now() + interval '1 day' FROM errand.workspaces w WHERE right(w.slug, 2)::int % 5 = 0;
		UPDATE errand.river_job SET state = 'discarded', finalized_at = now() WHERE args ? 'failed';`)
	if err != nil {
		t.Fatal(err)
	}
	for _, slug := range []string{"w-07", "w-12"} {
		if _, err := pool.Exec(ctx, `SELECT errand.pause_workspace(id) FROM errand.workspaces WHERE slug = $1`, slug); err != nil {
			t.Fatal(err)
		}
	}
	// The full order, as one plain sort over every workspace.
	rows, err := pool.Query(ctx, `
		SELECT w.id::text FROM errand.workspaces w
		LEFT JOIN errand.paused_workspaces p ON p.workspace_id = w.id
		LEFT JOIN (SELECT workspace_id, count(*) FILTER (WHERE status = 'pending') AS pending FROM errand.jobs GROUP BY 1) c ON c.workspace_id = w.id
		ORDER BY p.paused_at IS NULL, coalesce(c.pending, 0) DESC, w.slug`)
	if err != nil {
		t.Fatal(err)
	}
	want, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 2, 5, 12, 29, 30, 100} {
		list, err := store.Workspaces(ctx, pool, n)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]string, len(list))
		for i, w := range list {
			got[i] = w.WorkspaceID
		}
		if w := want[:min(n, len(want))]; strings.Join(got, ",") != strings.Join(w, ",") {
			t.Errorf("Workspaces(%d):\n got %v\nwant %v", n, got, w)
		}
	}
}

// `errand stats` counts the hour's finished jobs from the leader's
// per-minute roll-up (errand.queue_counts) up to its watermark and from
// River's rows after it: each job once, before the roll-up, after it, and
// after River's cleaner deleted the rows.
func TestStatsCountsEachFinishedJobOnceAcrossTheRollUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := opsDB(t)
	ws := newWorkspace(t, pool, "acme")
	finish := func(state, at string) {
		t.Helper()
		id := enqueuePing(t, pool, ws)
		if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = $2::errand.river_job_state, attempt = 1,
			attempted_at = `+at+`, finalized_at = `+at+` WHERE id = $1`, id, state); err != nil {
			t.Fatal(err)
		}
	}
	finish("completed", "now() - interval '30 minutes'")
	finish("discarded", "now() - interval '10 minutes'")
	finish("cancelled", "now() - interval '3 hours'") // outside the hour
	// Stamped ahead of the database's clock (a replica's clock may be), so
	// that it stays within "the last minute" however slowly the test runs.
	finish("completed", "now() + interval '10 minutes'")
	// A job of no workspace (a schedule's fan-out) counts too: these are
	// the queue's figures.
	if _, err := pool.Exec(ctx, `INSERT INTO errand.river_job (state, attempt, max_attempts, attempted_at, finalized_at, args, kind, queue)
		VALUES ('completed', 1, 1, now() - interval '5 minutes', now() - interval '5 minutes', '{}', 'schedule.tick', 'default')`); err != nil {
		t.Fatal(err)
	}
	want := func(when string, completed, failed int64, perSecond float64) {
		t.Helper()
		list, err := store.Stats(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Queue != "default" || list[0].CompletedLastHour != completed ||
			list[0].FailedLastHour != failed || list[0].PerSecond != perSecond {
			t.Errorf("%s: stats %+v, want default with %d completed and %d failed in the hour, %g/s", when, list, completed, failed, perSecond)
		}
	}
	want("before any roll-up", 3, 1, 1.0/60)

	// The leader's roll-up, up to now (its own default lags a minute).
	if _, err := pool.Exec(ctx, `SELECT errand.roll_up_job_counts(now())`); err != nil {
		t.Fatal(err)
	}
	var rolled, old int64
	if err := pool.QueryRow(ctx, `SELECT coalesce(sum(count), 0), count(*) FILTER (WHERE minute < now() - interval '2 hours')
		FROM errand.queue_counts WHERE queue = 'default'`).Scan(&rolled, &old); err != nil {
		t.Fatal(err)
	}
	if rolled != 3 || old != 0 {
		t.Errorf("errand.queue_counts holds %d jobs and %d minutes older than two hours; want 3 and 0", rolled, old)
	}
	want("after the roll-up", 3, 1, 1.0/60)

	// River's cleaner deletes the rows; the roll-up's minutes still count them.
	if _, err := pool.Exec(ctx, `DELETE FROM errand.river_job WHERE finalized_at < now() - interval '1 minute'`); err != nil {
		t.Fatal(err)
	}
	want("after the cleaner", 3, 1, 1.0/60)

	// Another job finished after the watermark is read from River's rows.
	finish("completed", "clock_timestamp() + interval '10 minutes'")
	want("with a job after the watermark", 4, 1, 2.0/60)

	// Minutes older than two hours before a roll-up's horizon are deleted.
	if _, err := pool.Exec(ctx, `INSERT INTO errand.queue_counts (queue, minute, state, count)
		VALUES ('default', date_bin('1 minute', now() - interval '3 hours', timestamptz 'epoch'), 'completed', 7)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `SELECT errand.roll_up_job_counts(clock_timestamp())`); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.queue_counts WHERE minute < now() - interval '2 hours'`).Scan(&old); err != nil || old != 0 {
		t.Errorf("minutes older than two hours after a roll-up: %d, %v; want 0", old, err)
	}
	want("after the second roll-up", 4, 1, 2.0/60)

	// A horizon ahead of the database's clock (given by hand) leaves
	// minutes missing before it: the hour is read from River's rows again,
	// which still hold the two recent jobs only, and no minute is deleted.
	if _, err := pool.Exec(ctx, `SELECT errand.roll_up_job_counts(now() + interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	want("with a watermark in the future", 2, 0, 2.0/60)
	if err := pool.QueryRow(ctx, `SELECT coalesce(sum(count), 0) FROM errand.queue_counts WHERE queue = 'default'`).Scan(&rolled); err != nil || rolled != 5 {
		t.Errorf("errand.queue_counts after a horizon in the future: %d jobs, %v; want 5 (none deleted)", rolled, err)
	}
}

// An operator names a workspace by its id or its slug: a slug that looks
// like an id too, and a deleted workspace whose jobs are kept (or that is
// still paused) by its id.
func TestResolveWorkspaceFindsWhatAnOperatorNames(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t, testdb.NewDatabase(t, true))
	var plain, hexy, gone, paused string
	if err := pool.QueryRow(ctx, `
		WITH ws AS (INSERT INTO errand.workspaces (name, slug) VALUES ('Plain', 'plain'),
		            ('Hexy', '0123456789abcdef0123456789abcdef'), ('Gone', 'gone'), ('Paused', 'paused') RETURNING id, slug)
		SELECT (SELECT id::text FROM ws WHERE slug = 'plain'), (SELECT id::text FROM ws WHERE slug = '0123456789abcdef0123456789abcdef'),
		       (SELECT id::text FROM ws WHERE slug = 'gone'), (SELECT id::text FROM ws WHERE slug = 'paused')`).Scan(&plain, &hexy, &gone, &paused); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`INSERT INTO errand.river_job (state, args, kind, metadata, queue) VALUES ('available', '{}', 'ping', '{"workspace_id": "` + gone + `"}', 'default')`,
		`SELECT errand.pause_workspace('` + paused + `')`,
		`DELETE FROM errand.workspaces WHERE slug IN ('gone', 'paused')`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	cases := []struct{ name, given, want string }{
		{"its slug", "plain", plain},
		{"its id", plain, plain},
		{"its id in capitals", strings.ToUpper(plain), plain},
		{"a slug that looks like an id", "0123456789abcdef0123456789abcdef", hexy},
		{"a deleted workspace's id, whose jobs are kept", gone, gone},
		{"a deleted workspace's id, still paused", paused, paused},
	}
	for _, c := range cases {
		if got, err := store.ResolveWorkspace(ctx, pool, c.given); err != nil || got != c.want {
			t.Errorf("%s: ResolveWorkspace(%q) = %q, %v; want %q", c.name, c.given, got, err, c.want)
		}
	}
	for name, given := range map[string]string{
		"a slug nobody has":                 "nobody",
		"an id no workspace or job has had": "00000000-0000-4000-8000-000000000001",
		"a deleted workspace's slug":        "gone",
	} {
		if got, err := store.ResolveWorkspace(ctx, pool, given); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "give its id or its slug") {
			t.Errorf("%s: ResolveWorkspace(%q) = %q, %v; want not found, saying what to give", name, given, got, err)
		}
	}
}
