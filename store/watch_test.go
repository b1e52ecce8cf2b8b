package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/store"
)

// watchData fills a database of its own the way production looks: many
// completed jobs (half of them in one workspace), a few failed, pending and
// running ones, then ANALYZE. It returns the big workspace and a small one
// that has failed and completed jobs.
func watchData(t *testing.T, db store.DB) (big, small string) {
	t.Helper()
	ctx := context.Background()
	const setup = `
	WITH ws AS (
		INSERT INTO errand.workspaces (name, slug) SELECT 'watch ' || g, 'watch-' || g FROM generate_series(1, 300) AS g
		RETURNING id, slug
	)
	SELECT array_agg(id ORDER BY split_part(slug, '-', 2)::int) FROM ws`
	var ids []string
	if err := db.QueryRow(ctx, setup).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		// 20,000 completed over the last 20 hours; even ones in the first
		// workspace, odd ones spread over the other 299; one in ten an email.
		`INSERT INTO errand.river_job (state, attempt, attempted_at, created_at, finalized_at, scheduled_at, args, kind, metadata, queue)
		SELECT 'completed', 1, t, t, t, t, '{}', CASE WHEN g % 10 = 3 THEN 'email.send' ELSE 'ping' END,
		       jsonb_build_object('workspace_id', CASE WHEN g % 2 = 0 THEN w.ids[1] ELSE w.ids[2 + (g / 2) % 299] END),
		       CASE WHEN g % 10 = 3 THEN 'email' ELSE 'default' END
		FROM (SELECT $1::uuid[] AS ids) AS w, generate_series(1, 20000) AS g,
		     LATERAL (SELECT now() - interval '20 hours' + g * interval '3 seconds') AS a(t)`,
		// 40 failed (discarded or cancelled) in ten small workspaces.
		`INSERT INTO errand.river_job (state, attempt, attempted_at, created_at, finalized_at, scheduled_at, args, kind, metadata, queue, errors)
		SELECT CASE WHEN g % 3 = 0 THEN 'cancelled' ELSE 'discarded' END::errand.river_job_state, 3, now(), now(), now(), now(), '{}',
		       CASE WHEN g % 4 = 0 THEN 'email.send' ELSE 'ping' END, jsonb_build_object('workspace_id', w.ids[2 + (g - 1) % 10]),
		       CASE WHEN g % 4 = 0 THEN 'email' ELSE 'default' END, ARRAY[jsonb_build_object('error', 'boom')]
		FROM (SELECT $1::uuid[] AS ids) AS w, generate_series(1, 40) AS g`,
		// 45 pending: 30 due, 10 scheduled and 5 to retry within the hour.
		`INSERT INTO errand.river_job (state, created_at, scheduled_at, args, kind, metadata, queue)
		SELECT CASE WHEN g <= 30 THEN 'available' WHEN g <= 40 THEN 'scheduled' ELSE 'retryable' END::errand.river_job_state,
		       now() - interval '1 minute', CASE WHEN g <= 30 THEN now() - g * interval '1 second' ELSE now() + interval '1 hour' END,
		       '{}', 'ping', jsonb_build_object('workspace_id', w.ids[2 + g % 299]), 'watch_idle'
		FROM (SELECT $1::uuid[] AS ids) AS w, generate_series(1, 45) AS g`,
		// 5 running.
		`INSERT INTO errand.river_job (state, attempt, attempted_at, attempted_by, created_at, scheduled_at, args, kind, metadata, queue)
		SELECT 'running', 1, now(), '{nobody}', now(), now(), '{}', 'ping', jsonb_build_object('workspace_id', w.ids[2 + g % 299]), 'watch_idle'
		FROM (SELECT $1::uuid[] AS ids) AS w, generate_series(1, 5) AS g`,
	} {
		if _, err := db.Exec(ctx, sql, ids); err != nil {
			t.Fatal(err)
		}
	}
	// Statistics as autovacuum would leave them. At this size ANALYZE reads
	// every row, so they are the same on every run.
	if _, err := db.Exec(ctx, `ANALYZE errand.river_job`); err != nil {
		t.Fatal(err)
	}
	return ids[0], ids[1]
}

// captured is the statement a store function sent, caught by recorder.
type captured struct {
	sql  string
	args []any
}

var errCaptured = errors.New("captured, not run")

// recorder is a store.DB that records the statement instead of running it,
// so the test explains exactly the SQL a store function sends.
type recorder struct{ got *captured }

func (r recorder) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	*r.got = captured{sql, args}
	return pgconn.CommandTag{}, errCaptured
}

func (r recorder) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	*r.got = captured{sql, args}
	return nil, errCaptured
}

func (r recorder) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	*r.got = captured{sql, args}
	return errRow{}
}

func (r recorder) Begin(context.Context) (pgx.Tx, error) { return nil, errCaptured }

type errRow struct{}

func (errRow) Scan(...any) error { return errCaptured }

func capture(t *testing.T, call func(db store.DB) error) captured {
	t.Helper()
	var got captured
	if err := call(recorder{&got}); !errors.Is(err, errCaptured) {
		t.Fatalf("the store function returned %v before sending its query", err)
	}
	return got
}

// literal writes a captured argument into SQL (EXECUTE takes values, not
// parameters). The test's arguments are strings and integers only.
func literal(t *testing.T, v any) string {
	t.Helper()
	switch v := v.(type) {
	case string:
		return "'" + strings.ReplaceAll(v, "'", "''") + "'"
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	}
	t.Fatalf("no literal for %T", v)
	return ""
}

// planNode is what the checks read of a plan node in EXPLAIN's JSON.
type planNode struct {
	Type      string     `json:"Node Type"`
	Relation  string     `json:"Relation Name"`
	Index     string     `json:"Index Name"`
	IndexCond string     `json:"Index Cond"`
	Plans     []planNode `json:"Plans"`
}

func (n planNode) walk(fn func(planNode)) {
	fn(n)
	for _, c := range n.Plans {
		c.walk(fn)
	}
}

func (n planNode) String() string {
	var b strings.Builder
	var line func(planNode, int)
	line = func(n planNode, depth int) {
		fmt.Fprintf(&b, "%s%s %s %s %s\n", strings.Repeat("  ", depth), n.Type, n.Relation, n.Index, n.IndexCond)
		for _, c := range n.Plans {
			line(c, depth+1)
		}
	}
	line(n, 0)
	return b.String()
}

// explain plans q as a prepared statement (as drivers send it) with the
// given plan cache mode: force_custom_plan plans for the arguments' values,
// force_generic_plan as PostgreSQL may after a statement's fifth run.
func explain(t *testing.T, conn *pgx.Conn, q captured, mode string) planNode {
	t.Helper()
	ctx := context.Background()
	args := make([]string, len(q.args))
	for i, a := range q.args {
		args[i] = literal(t, a)
	}
	exec := "EXECUTE watch_q"
	if len(args) > 0 {
		exec += "(" + strings.Join(args, ", ") + ")"
	}
	var out []byte
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = "+mode); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "PREPARE watch_q AS "+q.sql); err != nil {
			return err
		}
		defer tx.Exec(ctx, "DEALLOCATE watch_q") //nolint:errcheck // the transaction's end is the test's
		return tx.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+exec).Scan(&out)
	})
	if err != nil {
		t.Fatalf("explain %s: %v", q.sql, err)
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(out, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("explain %s: %v in %s", q.sql, err, out)
	}
	return plans[0].Plan
}

// statusExpr is how errand.jobs.status (and errand.job_status, inlined)
// appears in a plan.
const statusExpr = "CASE state WHEN 'running'"

// checkPlan reports what is wrong with plan: a sequential scan of
// river_job, or no index scan of one of indexes; with status, also an index
// scan whose condition does not bound the status.
func checkPlan(plan planNode, indexes []string, status bool) error {
	var problems []string
	used := false
	plan.walk(func(n planNode) {
		switch n.Type {
		case "Seq Scan":
			if n.Relation == "river_job" {
				problems = append(problems, "a Seq Scan on river_job")
			}
		case "Index Scan", "Index Only Scan", "Bitmap Index Scan":
			if slices.Contains(indexes, n.Index) && (!status || strings.Contains(n.IndexCond, statusExpr)) {
				used = true
			}
		}
	})
	if !used {
		what := "no index scan on " + strings.Join(indexes, " or ")
		if status {
			what += " with the status in its condition"
		}
		problems = append(problems, what)
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

const (
	wsIdx       = "river_job_workspace_status_idx"
	statusIdx   = "river_job_status_idx"
	kindIdx     = "river_job_kind_status_idx"
	primaryKey  = "river_job_pkey"
	watchDueSQL = `SELECT count(*) FROM errand.jobs WHERE status = 'pending' AND run_at <= now()`
)

type watchQuery struct {
	name string
	call func(db store.DB) error
	// indexes that may serve it (the intended one first); status: the
	// status must be one of the index's conditions.
	indexes []string
	status  bool
	// generic, when set, replaces indexes for the generic plan.
	generic []string
}

func watchQueries(big, small string) []watchQuery {
	ctx := context.Background()
	jobs := func(f store.JobFilter) func(store.DB) error {
		return func(db store.DB) error { _, err := store.Jobs(ctx, db, f); return err }
	}
	return []watchQuery{
		// The README's first query. The workspace with half of the jobs
		// finds its latest 50 at once walking the primary key backwards.
		{"a big workspace's latest jobs", jobs(store.JobFilter{WorkspaceID: big}), []string{primaryKey, wsIdx}, false, nil},
		// Planned for its workspace, a small one reads its own rows. A
		// generic plan cannot know the workspace is small and may walk the
		// primary key as for the big one (PostgreSQL keeps planning this
		// statement for its arguments: docs/scale.md).
		{"a small workspace's latest jobs", jobs(store.JobFilter{WorkspaceID: small}), []string{wsIdx}, false, []string{wsIdx, primaryKey}},
		{"the next page of a small workspace's jobs", jobs(store.JobFilter{WorkspaceID: small, BeforeID: 30000, Limit: 20}), []string{wsIdx}, false, []string{wsIdx, primaryKey}},
		// With few failed jobs the planner may start from the status index;
		// either way the status bounds the scan.
		{"a big workspace's failed jobs (it has none)", jobs(store.JobFilter{WorkspaceID: big, Status: store.StatusFailed}), []string{wsIdx, statusIdx}, true, nil},
		{"a small workspace's failed jobs", jobs(store.JobFilter{WorkspaceID: small, Status: store.StatusFailed}), []string{wsIdx}, true, nil},
		{"a small workspace's completed jobs", jobs(store.JobFilter{WorkspaceID: small, Status: store.StatusCompleted}), []string{wsIdx}, true, nil},
		{"every workspace's failed jobs", jobs(store.JobFilter{Status: store.StatusFailed}), []string{statusIdx}, true, nil},
		{"every workspace's pending jobs", jobs(store.JobFilter{Status: store.StatusPending}), []string{statusIdx}, true, nil},
		{"every workspace's processing jobs", jobs(store.JobFilter{Status: store.StatusProcessing}), []string{statusIdx}, true, nil},
		{"a kind's failed jobs", jobs(store.JobFilter{Kind: "email.send", Status: store.StatusFailed}), []string{kindIdx}, true, nil},
		// Most pending jobs are pings: the status index serves as well.
		{"a kind's pending jobs", jobs(store.JobFilter{Kind: "ping", Status: store.StatusPending}), []string{kindIdx, statusIdx}, true, nil},
		{"the backlog per queue", func(db store.DB) error { _, err := store.PendingByQueue(ctx, db); return err }, []string{statusIdx}, true, nil},
		{"the workspaces with the most pending jobs", func(db store.DB) error { _, err := store.PendingByWorkspace(ctx, db, 10); return err }, []string{statusIdx}, true, nil},
		{"a big workspace's backlog", func(db store.DB) error { _, err := store.WorkspacePending(ctx, db, big); return err }, []string{wsIdx}, true, nil},
		{"the due count (KEDA)", func(db store.DB) error { var n int64; return db.QueryRow(ctx, watchDueSQL).Scan(&n) }, []string{statusIdx}, true, nil},
		// An app's own query with the status as a parameter: the workspace
		// index holds every status, so a generic plan uses it too.
		{"a workspace's jobs by a status parameter", func(db store.DB) error {
			_, err := db.Query(ctx, `SELECT id FROM errand.jobs WHERE workspace_id = $1::uuid AND status = $2 ORDER BY id DESC LIMIT 50`, big, "failed")
			return err
		}, []string{wsIdx, statusIdx}, true, []string{wsIdx}},
	}
}

// Every query the README's "Watch" section and store/watch.go give reads an
// index that bounds its filters, never the whole table, whether PostgreSQL
// plans it for its arguments or generically (as it may for a driver's
// prepared statement after five runs).
func TestWatchQueriesUseTheirIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.NewDatabase(t, true)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	big, small := watchData(t, conn)

	for _, q := range watchQueries(big, small) {
		stmt := capture(t, q.call)
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			indexes := q.indexes
			if mode == "force_generic_plan" && q.generic != nil {
				indexes = q.generic
			}
			plan := explain(t, conn, stmt, mode)
			if err := checkPlan(plan, indexes, q.status); err != nil {
				t.Errorf("%s (%s): %v\nSQL: %s\nplan:\n%s", q.name, mode, err, stmt.sql, plan)
			}
		}
	}

	// The README's own copies of these queries, as a reader pastes them,
	// and the plain count of pending jobs.
	for _, sql := range append(readmeWatchSQL(t), `SELECT count(*) FROM errand.jobs WHERE status = 'pending'`) {
		var args []any
		if strings.Contains(sql, "$1") {
			args = []any{big}
		}
		indexes := []string{statusIdx}
		if strings.Contains(sql, "workspace_id = $1") {
			indexes = []string{wsIdx, statusIdx}
		}
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			plan := explain(t, conn, captured{sql: sql, args: args}, mode)
			if err := checkPlan(plan, indexes, true); err != nil {
				t.Errorf("the README's query (%s): %v\nSQL: %s\nplan:\n%s", mode, err, sql, plan)
			}
		}
	}

	// Deleting a workspace fails its pending jobs through the workspace
	// index, not by reading everything it ever finished.
	plan := explain(t, conn, captured{sql: `UPDATE errand.river_job SET state = 'cancelled', finalized_at = now()
		WHERE (metadata ->> 'workspace_id')::uuid = $1::uuid AND errand.job_status(state) = 'pending'`, args: []any{big}}, "force_generic_plan")
	if err := checkPlan(plan, []string{wsIdx}, true); err != nil {
		t.Errorf("workspace_deleted's update: %v\nplan:\n%s", err, plan)
	}
}

// The plan check fails when the indexes are missing, so the test above can
// fail: without them the same statements read the whole table.
func TestWatchPlanCheckFailsWithoutTheIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.NewDatabase(t, true)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	big, small := watchData(t, conn)
	if _, err := conn.Exec(ctx, `DROP INDEX errand.river_job_status_idx, errand.river_job_kind_status_idx, errand.river_job_workspace_status_idx`); err != nil {
		t.Fatal(err)
	}
	for _, q := range watchQueries(big, small) {
		if slices.Contains(q.indexes, primaryKey) {
			continue // River's own index stays
		}
		plan := explain(t, conn, capture(t, q.call), "force_custom_plan")
		if err := checkPlan(plan, q.indexes, q.status); err == nil {
			t.Errorf("%s: the check passed without the status indexes\nplan:\n%s", q.name, plan)
		}
	}
}

// What the backlog queries return, on a handful of jobs.
func TestWatchBacklogCounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.NewDatabase(t, true)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var a, b string
	if err := conn.QueryRow(ctx, `
		WITH ws AS (INSERT INTO errand.workspaces (name, slug) VALUES ('A', 'watch-a'), ('B', 'watch-b') RETURNING id, slug)
		SELECT (SELECT id::text FROM ws WHERE slug = 'watch-a'), (SELECT id::text FROM ws WHERE slug = 'watch-b')`).Scan(&a, &b); err != nil {
		t.Fatal(err)
	}
	// A: 3 due (the oldest due for 90 s), 1 scheduled for later, 1 running,
	// 1 completed, 1 failed; B: 1 due in another queue.
	_, err = conn.Exec(ctx, `
		INSERT INTO errand.river_job (state, attempt, attempted_at, attempted_by, finalized_at, scheduled_at, args, kind, metadata, queue, errors)
		VALUES
		  ('available', 0, NULL, NULL, NULL, now() - interval '90 seconds', '{}', 'ping', jsonb_build_object('workspace_id', $1::uuid), 'q1', NULL),
		  ('available', 0, NULL, NULL, NULL, now() - interval '10 seconds', '{}', 'ping', jsonb_build_object('workspace_id', $1::uuid), 'q1', NULL),
		  ('retryable', 1, now(), '{r}', NULL, now() - interval '5 seconds', '{}', 'ping', jsonb_build_object('workspace_id', $1::uuid), 'q1', NULL),
		  ('scheduled', 0, NULL, NULL, NULL, now() + interval '1 hour', '{}', 'ping', jsonb_build_object('workspace_id', $1::uuid), 'q1', NULL),
		  ('running', 1, now(), '{r}', NULL, now(), '{}', 'ping', jsonb_build_object('workspace_id', $1::uuid), 'q1', NULL),
		  ('completed', 1, now(), '{r}', now(), now(), '{}', 'ping', jsonb_build_object('workspace_id', $1::uuid), 'q1', NULL),
		  ('discarded', 3, now(), '{r}', now(), now(), '{}', 'email.send', jsonb_build_object('workspace_id', $1::uuid), 'q1', ARRAY['{"error": "boom"}'::jsonb]),
		  ('available', 0, NULL, NULL, NULL, now() - interval '1 second', '{}', 'ping', jsonb_build_object('workspace_id', $2::uuid), 'q2', NULL)`, a, b)
	if err != nil {
		t.Fatal(err)
	}

	near := func(got, want time.Duration) bool { return got >= want && got < want+30*time.Second }
	queues, err := store.PendingByQueue(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(queues) != 2 || queues[0].Queue != "q1" || queues[1].Queue != "q2" {
		t.Fatalf("PendingByQueue = %+v, want q1 and q2", queues)
	}
	if q := queues[0].Backlog; q.Pending != 4 || q.Due != 3 || q.Processing != 1 || !near(q.OldestDue, 90*time.Second) {
		t.Errorf("q1 backlog %+v, want 4 pending, 3 due, 1 processing, oldest due about 90s", q)
	}
	if q := queues[1].Backlog; q.Pending != 1 || q.Due != 1 || q.Processing != 0 {
		t.Errorf("q2 backlog %+v, want 1 pending and due", q)
	}
	// Startable: available and due (the retry due 5 s ago waits for River's
	// scheduler to make it available); no cap is set.
	if q := queues[0]; q.Startable != 2 || !near(q.OldestStartable, 90*time.Second) {
		t.Errorf("q1 startable %d, oldest %v; want 2, about 90s", q.Startable, q.OldestStartable)
	}
	if q := queues[1]; q.Startable != 1 || !near(q.OldestStartable, time.Second) {
		t.Errorf("q2 startable %d, oldest %v; want 1, about 1s", q.Startable, q.OldestStartable)
	}

	top, err := store.PendingByWorkspace(ctx, conn, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(top) != 1 || top[0].WorkspaceID != a || top[0].Pending != 4 {
		t.Errorf("PendingByWorkspace(1) = %+v, want A with 4 pending", top)
	}
	bl, err := store.WorkspacePending(ctx, conn, b)
	if err != nil {
		t.Fatal(err)
	}
	if bl.Pending != 1 || bl.Due != 1 || bl.Processing != 0 || !near(bl.OldestDue, time.Second) {
		t.Errorf("WorkspacePending(B) = %+v, want 1 pending and due for about 1s", bl)
	}
	none, err := store.WorkspacePending(ctx, conn, "00000000-0000-0000-0000-000000000000")
	if err != nil || none != (store.Backlog{}) {
		t.Errorf("WorkspacePending of a workspace without jobs = %+v, %v; want zero", none, err)
	}

	failed, err := store.Jobs(ctx, conn, store.JobFilter{WorkspaceID: a, Status: store.StatusFailed})
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 1 || failed[0].Kind != "email.send" || failed[0].LastError != "boom" || failed[0].FinishedAt == nil {
		t.Errorf("A's failed jobs = %+v, want the email.send with last_error boom", failed)
	}
	all, err := store.Jobs(ctx, conn, store.JobFilter{WorkspaceID: a, Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[0].ID < all[1].ID || all[1].ID < all[2].ID {
		t.Fatalf("A's latest 3 jobs = %+v, want 3 newest first", all)
	}
	next, err := store.Jobs(ctx, conn, store.JobFilter{WorkspaceID: a, BeforeID: all[2].ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(next) != 4 || next[0].ID >= all[2].ID {
		t.Errorf("the page after id %d = %d jobs starting at %v, want A's other 4", all[2].ID, len(next), next)
	}
}

// The due jobs a worker may start now leave out what a workspace's cap holds
// back, as the fair fetch admits them: a plan's concurrency, else the
// default the replicas publish, nothing with fairness off; errand's own
// jobs have no cap. KEDA's errand.startable_jobs sums the queues but those
// it is told to skip, up to its limit.
func TestStartableJobsLeaveOutWhatACapHoldsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := testdb.Pool(t, testdb.NewDatabase(t, true))
	var free, pro, open string
	if err := conn.QueryRow(ctx, `
		WITH p AS (INSERT INTO errand.plans (plan, concurrency) VALUES ('free', 1), ('pro', 3), ('open', NULL) RETURNING plan),
		ws AS (INSERT INTO errand.workspaces (name, slug, plan) VALUES ('F', 'cap-f', 'free'), ('P', 'cap-p', 'pro'), ('O', 'cap-o', 'open')
		       RETURNING id, slug)
		SELECT (SELECT id::text FROM ws WHERE slug = 'cap-f'), (SELECT id::text FROM ws WHERE slug = 'cap-p'),
		       (SELECT id::text FROM ws WHERE slug = 'cap-o')`).Scan(&free, &pro, &open); err != nil {
		t.Fatal(err)
	}
	// F (cap 1): 1 running, 5 due an hour ago: none may start. P (cap 3):
	// 1 running, 4 due 30 minutes ago: its first 2 may. O (no plan cap): 3
	// due 10 minutes ago. errand's own tick: 1 due. Email: 2 of O's.
	if _, err := conn.Exec(ctx, `
		INSERT INTO errand.river_job (state, attempt, attempted_at, attempted_by, scheduled_at, args, kind, metadata, queue)
		SELECT s::errand.river_job_state, CASE WHEN s = 'running' THEN 1 ELSE 0 END, CASE WHEN s = 'running' THEN now() END,
		       CASE WHEN s = 'running' THEN '{r}'::text[] END, now() - ago * interval '1 minute' + g * interval '1 second', '{}', k,
		       CASE WHEN ws IS NULL THEN '{}' ELSE jsonb_build_object('workspace_id', ws) END, q
		FROM (VALUES ('running', $1::uuid, 60, 1, 'ping', 'default'), ('available', $1, 60, 5, 'ping', 'default'),
		             ('running', $2, 30, 1, 'ping', 'default'), ('available', $2, 30, 4, 'ping', 'default'),
		             ('available', $3, 10, 3, 'ping', 'default'), ('available', NULL, 5, 1, 'schedule.tick', 'default'),
		             ('available', $3, 10, 2, 'email.send', 'email')) AS v(s, ws, ago, n, k, q),
		     generate_series(1, v.n) AS g`, free, pro, open); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name       string
		fairness   bool
		defaultCap int
		want       int64
		oldest     time.Duration
	}{
		{"plan caps only", true, 0, 0 + 2 + 3 + 1, 30 * time.Minute},
		{"a default cap of 2 for workspaces whose plan sets none", true, 2, 0 + 2 + 2 + 1, 30 * time.Minute},
		{"fairness off: no caps", false, 7, 5 + 4 + 3 + 1, time.Hour},
	}
	for _, c := range cases {
		if err := store.PublishWorkspaceCaps(ctx, conn, c.fairness, c.defaultCap); err != nil {
			t.Fatal(err)
		}
		queues, err := store.PendingByQueue(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(queues, func(q store.QueueBacklog) bool { return q.Queue == "default" })
		if i < 0 {
			t.Fatalf("%s: no default queue in %+v", c.name, queues)
		}
		q := queues[i]
		if q.Due != 13 || q.Startable != c.want || q.OldestStartable < c.oldest-2*time.Minute || q.OldestStartable > c.oldest+2*time.Minute {
			t.Errorf("%s: due %d, startable %d, oldest startable %v; want 13, %d, about %v", c.name, q.Due, q.Startable, q.OldestStartable, c.want, c.oldest)
		}
		var keda, capped int64
		var nullSkipped int64
		if err := conn.QueryRow(ctx, `SELECT errand.startable_jobs(600, ARRAY['email']), errand.startable_jobs(4),
			errand.startable_jobs(600, ARRAY['email', NULL])`).Scan(&keda, &capped, &nullSkipped); err != nil {
			t.Fatal(err)
		}
		if keda != c.want || capped != 4 || nullSkipped != c.want {
			t.Errorf("%s: startable_jobs(600, email skipped) = %d, startable_jobs(4) = %d, with a NULL in the skip list %d; want %d, 4 and %d",
				c.name, keda, capped, nullSkipped, c.want, c.want)
		}
	}
}

// A limit KEDA's query cannot mean is refused, not read as no limit.
func TestStartableJobsRefusesALimitThatIsNotPositive(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := testdb.Pool(t, testdb.NewDatabase(t, true))
	for name, limit := range map[string]any{"a limit of zero": 0, "a negative limit": -5, "no limit (NULL)": nil} {
		var n int64
		err := conn.QueryRow(ctx, `SELECT errand.startable_jobs($1::bigint)`, limit).Scan(&n)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "22023" || !strings.Contains(pgErr.Message, "startable_jobs needs a positive limit") {
			t.Errorf("%s: got %d, %v; want 22023 naming the limit", name, n, err)
		}
	}
}

func TestJobsRefusesABadFilter(t *testing.T) {
	cases := map[string]store.JobFilter{
		"a status that is River's, not errand's": {Status: "discarded"},
		"a status in capitals":                   {Status: "Failed"},
		"a negative limit":                       {Limit: -1},
		"a limit over 1000":                      {Limit: 1001},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			var got captured
			_, err := store.Jobs(context.Background(), recorder{&got}, f)
			if err == nil || errors.Is(err, errCaptured) {
				t.Errorf("Jobs(%+v) = %v, want it refused before any query", f, err)
			}
		})
	}
}

// readmeWatchSQL is every statement of the README's "Watch" block (the sql
// block after "These queries stay fast"), comments dropped.
func readmeWatchSQL(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	at := strings.Index(readme, "These queries stay fast")
	start := strings.Index(readme[max(at, 0):], "```sql\n")
	if at < 0 || start < 0 {
		t.Fatal("README: no sql block after \"These queries stay fast\"")
	}
	block := readme[at+start+len("```sql\n"):]
	block = block[:strings.Index(block, "```")]
	var lines []string
	for _, l := range strings.Split(block, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			lines = append(lines, l)
		}
	}
	var stmts []string
	for _, st := range strings.Split(strings.Join(lines, "\n"), ";") {
		if st = strings.TrimSpace(st); st != "" {
			stmts = append(stmts, st)
		}
	}
	if len(stmts) < 3 {
		t.Fatalf("README's Watch block has %d statements, want at least 3:\n%s", len(stmts), block)
	}
	return stmts
}

// errand's own jobs (a schedule's tick) belong to no workspace: listings
// and a job's detail show them with none, and the per-workspace backlog
// leaves them out, instead of failing on their NULL workspace. A job
// cancelled while its workspace was paused is not shown as held.
func TestErrandsOwnJobsAreListedWithoutAWorkspace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t, testdb.NewDatabase(t, true))
	var ws string
	if err := pool.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('A', 'own-a') RETURNING id::text`).Scan(&ws); err != nil {
		t.Fatal(err)
	}
	var tick, tickDone, held, cancelled int64
	if err := pool.QueryRow(ctx, `
		WITH j AS (
			INSERT INTO errand.river_job (state, attempt, attempted_at, finalized_at, scheduled_at, args, kind, metadata, queue)
			VALUES ('available', 0, NULL, NULL, now(), '{}', 'schedules.tick', '{}', 'default'),
			       ('completed', 1, now(), now(), now(), '{}', 'schedules.tick', '{}', 'default'),
			       ('pending', 0, NULL, NULL, now(), '{}', 'ping', jsonb_build_object('workspace_id', $1::uuid, 'errand:paused', true), 'default'),
			       ('cancelled', 0, NULL, now(), now(), '{}', 'ping', jsonb_build_object('workspace_id', $1::uuid, 'errand:paused', true), 'default')
			RETURNING id)
		SELECT min(id), min(id) + 1, min(id) + 2, min(id) + 3 FROM j`, ws).Scan(&tick, &tickDone, &held, &cancelled); err != nil {
		t.Fatal(err)
	}

	list, err := store.Jobs(ctx, pool, store.JobFilter{})
	if err != nil {
		t.Fatalf("listing every job with errand's own among them: %v", err)
	}
	if len(list) != 4 || list[3].ID != tick || list[3].WorkspaceID != "" || list[2].ID != tickDone || list[2].WorkspaceID != "" || list[1].WorkspaceID != ws {
		t.Errorf("Jobs = %+v, want the two ticks with no workspace and the two pings in %s", list, ws)
	}
	done, err := store.Jobs(ctx, pool, store.JobFilter{Status: store.StatusCompleted})
	if err != nil || len(done) != 1 || done[0].ID != tickDone {
		t.Errorf("completed jobs = %+v, %v; want the completed tick", done, err)
	}
	d, err := store.GetJob(ctx, pool, tick)
	if err != nil || d.WorkspaceID != "" || d.Kind != "schedules.tick" {
		t.Errorf("GetJob(tick) = %+v, %v; want the tick with no workspace", d, err)
	}
	top, err := store.PendingByWorkspace(ctx, pool, 10)
	if err != nil || len(top) != 1 || top[0].WorkspaceID != ws || top[0].Pending != 1 {
		t.Errorf("PendingByWorkspace with a tick pending = %+v, %v; want only %s with its held ping", top, err, ws)
	}
	if d, err := store.GetJob(ctx, pool, held); err != nil || !d.Paused {
		t.Errorf("GetJob(a job held by its paused workspace) = %+v, %v; want paused", d, err)
	}
	if d, err := store.GetJob(ctx, pool, cancelled); err != nil || d.Paused {
		t.Errorf("GetJob(a job cancelled while its workspace was paused) = %+v, %v; want not paused (it is not held)", d, err)
	}
}

// KEDA's errand.startable_jobs and the backlog per queue (which joins
// errand.queue_startable) are PL/pgSQL, so EXPLAIN shows a function scan
// only: auto_explain reports each nested statement's plan with its actual
// rows. Beside 20,000 retained jobs, ten thousand of them the workspace
// whose jobs wait, no statement may read the retained jobs, with caps (the
// walk over the workspaces) or without. With the fair fetch's index dropped
// the same check fails, so it can.
func TestStartableCountsReadNoRetainedJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.NewDatabase(t, true)
	pool := testdb.Pool(t, url)
	big, _ := watchData(t, pool)
	// The big workspace: 3 running and 20 due in queue default, where its
	// 9,000 retained pings are.
	if _, err := pool.Exec(ctx, `
		INSERT INTO errand.river_job (state, attempt, attempted_at, attempted_by, scheduled_at, args, kind, metadata, queue)
		SELECT CASE WHEN g <= 3 THEN 'running' ELSE 'available' END::errand.river_job_state, CASE WHEN g <= 3 THEN 1 ELSE 0 END,
		       CASE WHEN g <= 3 THEN now() END, CASE WHEN g <= 3 THEN '{r}'::text[] END, now() - g * interval '1 second',
		       '{}', 'ping', jsonb_build_object('workspace_id', $1::uuid), 'default'
		FROM generate_series(1, 23) AS g`, big); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE errand.river_job`); err != nil {
		t.Fatal(err)
	}
	conn, plans, resetPlans := testdb.ExplainedConn(t, url)
	read := regexp.MustCompile(`(?m)^.*on river_job\b.*actual time=[0-9.]+\.\.[0-9.]+ rows=(\d+) loops=\d+.*$`)
	removed := regexp.MustCompile(`Rows Removed by Filter: (\d+)`)
	// check runs the two counts and returns what read 1,000 rows or more.
	check := func(db pgx.Tx) (problems []string) {
		resetPlans()
		var keda int64
		if err := db.QueryRow(ctx, `SELECT errand.startable_jobs(600)`).Scan(&keda); err != nil {
			t.Fatal(err)
		}
		queues, err := store.PendingByQueue(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if keda == 0 || len(queues) == 0 {
			t.Fatalf("startable_jobs = %d, backlog %+v: want the due jobs counted", keda, queues)
		}
		for _, p := range plans() {
			for _, m := range read.FindAllStringSubmatch(p, -1) {
				if n, _ := strconv.Atoi(m[1]); n >= 1000 {
					problems = append(problems, fmt.Sprintf("%d rows of river_job read: %s", n, p))
				}
			}
			for _, m := range removed.FindAllStringSubmatch(p, -1) {
				if n, _ := strconv.Atoi(m[1]); n >= 1000 {
					problems = append(problems, fmt.Sprintf("%d rows of river_job filtered out: %s", n, p))
				}
			}
		}
		return problems
	}
	for _, c := range []struct {
		name       string
		fairness   bool
		defaultCap int
	}{{"caps: the walk over the workspaces", true, 2}, {"no caps", false, 0}} {
		if err := store.PublishWorkspaceCaps(ctx, pool, c.fairness, c.defaultCap); err != nil {
			t.Fatal(err)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range check(tx) {
			t.Errorf("%s: %s", c.name, p)
		}
		if _, err := tx.Exec(ctx, `DROP INDEX errand.river_job_fair_fetch_idx`); err != nil {
			t.Fatal(err)
		}
		if len(check(tx)) == 0 {
			t.Errorf("%s: without the fair fetch's index no statement read the retained jobs; the check cannot fail", c.name)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
