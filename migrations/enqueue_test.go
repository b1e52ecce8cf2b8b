package migrations_test

import (
	"context"
	"errors"
	"fmt"
	neturl "net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/internal/testdb"
)

// many is one errand.enqueue_many call; a nil slice is a NULL parameter.
type many struct {
	workspaceID    []*string
	kind           []*string
	args           []*string
	runAt          []*time.Time
	priority       []*int
	maxAttempts    []*int
	idempotencyKey []*string
}

func (m many) call(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) ([]int64, error) {
	rows, err := q.Query(ctx, `SELECT id FROM errand.enqueue_many(
		workspace_id => $1::uuid[], kind => $2::text[], args => $3::json[], run_at => $4::timestamptz[],
		priority => $5::int[], max_attempts => $6::int[], idempotency_key => $7::text[])`,
		m.workspaceID, m.kind, m.args, m.runAt, m.priority, m.maxAttempts, m.idempotencyKey)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

func ptr[T any](v T) *T { return &v }

func strs(vs ...string) []*string {
	out := make([]*string, len(vs))
	for i := range vs {
		out[i] = &vs[i]
	}
	return out
}

func jobCount(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM errand.river_job`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEnqueueManyReturnsEveryIDInOrder(t *testing.T) {
	t.Parallel()
	_, pool, ws := wakeDB(t)
	ctx := context.Background()

	const n = 5
	m := many{workspaceID: make([]*string, n), kind: make([]*string, n), args: make([]*string, n)}
	for i := range n {
		m.workspaceID[i], m.kind[i], m.args[i] = &ws, ptr("ping"), ptr(fmt.Sprintf(`{"n": %d}`, i+1))
	}
	ids, err := m.call(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != n || !slices.IsSorted(ids) {
		t.Fatalf("ids %v, want %d in increasing order", ids, n)
	}
	for i, id := range ids {
		var got int
		if err := pool.QueryRow(ctx, `SELECT (args->>'n')::int FROM errand.jobs WHERE id = $1`, id).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != i+1 {
			t.Errorf("row %d: id %d holds n %d", i+1, id, got)
		}
	}

	// No rows, no ids.
	ids, err = many{workspaceID: []*string{}, kind: []*string{}}.call(ctx, pool)
	if err != nil || len(ids) != 0 {
		t.Errorf("empty call: ids %v, %v; want none", ids, err)
	}
}

// A job enqueued in bulk is the job the single-row INSERT makes from the
// same input, defaults included.
func TestEnqueueManyMakesTheSameJobsAsInsert(t *testing.T) {
	t.Parallel()
	_, pool, ws := wakeDB(t)
	ctx := context.Background()
	later := time.Now().Add(time.Hour).Truncate(time.Microsecond)

	type input struct {
		kind, args     string
		runAt          *time.Time
		priority, max  *int
		idempotencyKey *string
	}
	inputs := []input{
		{kind: "ping", args: `{}`},
		{kind: "test.note", args: `{"note": "hi"}`, priority: ptr(3), max: ptr(7)},
		{kind: "test.mail", args: `{"to": "a@example.com", "template": "invite"}`, runAt: &later, idempotencyKey: ptr("k1")},
	}
	m := many{}
	var singles []int64
	for _, in := range inputs {
		m.workspaceID = append(m.workspaceID, &ws)
		m.kind = append(m.kind, ptr(in.kind))
		m.args = append(m.args, ptr(in.args))
		m.runAt = append(m.runAt, in.runAt)
		m.priority = append(m.priority, in.priority)
		m.maxAttempts = append(m.maxAttempts, in.max)
		m.idempotencyKey = append(m.idempotencyKey, in.idempotencyKey)
		key := in.idempotencyKey
		if key != nil {
			key = ptr("single-" + *key)
		}
		var id int64
		err := pool.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, run_at, priority, max_attempts, idempotency_key)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`, ws, in.kind, in.args, in.runAt, in.priority, in.max, key).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		singles = append(singles, id)
	}
	ids, err := m.call(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	const row = `SELECT kind, args::text, queue, state::text, priority, max_attempts, attempt, metadata - 'idempotency_key',
		metadata ? 'idempotency_key', unique_states::text, tags::text,
		CASE WHEN scheduled_at > now() + interval '1 minute' THEN scheduled_at END
		FROM errand.river_job WHERE id = $1`
	for i := range inputs {
		var a, b [12]any
		pa, pb := make([]any, 12), make([]any, 12)
		for j := range 12 {
			pa[j], pb[j] = &a[j], &b[j]
		}
		if err := pool.QueryRow(ctx, row, singles[i]).Scan(pa...); err != nil {
			t.Fatal(err)
		}
		if err := pool.QueryRow(ctx, row, ids[i]).Scan(pb...); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("row %d (%s):\n INSERT       %v\n enqueue_many %v", i+1, inputs[i].kind, a, b)
		}
	}
}

// Every input the single-row contract refuses is refused in bulk with the
// same SQLSTATE and message, naming the row; nothing is enqueued.
func TestEnqueueManyRefusesABadRowNamingIt(t *testing.T) {
	t.Parallel()
	_, pool, ws := wakeDB(t)
	ctx := context.Background()
	var gone string
	if err := pool.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('Gone', 'gone') RETURNING id::text`).Scan(&gone); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `DELETE FROM errand.workspaces WHERE id = $1`, gone); err != nil {
		t.Fatal(err)
	}
	// good is three good rows; each case spoils what it names.
	good := func() many {
		return many{
			workspaceID: strs(ws, ws, ws),
			kind:        strs("ping", "test.note", "test.mail"),
			args:        strs(`{}`, `{"note": "x"}`, `{"to": "a@example.com", "template": "custom"}`),
		}
	}
	known := "known kinds: ping, test.mail, test.note"
	cases := []struct {
		name    string
		spoil   func(m *many)
		code    string
		message string
	}{
		{"an unknown kind", func(m *many) { m.kind[1] = ptr("pingg") }, "22023", `errand: unknown job kind "pingg" (` + known + `) (row 2)`},
		{"a kind in the wrong case", func(m *many) { m.kind[2] = ptr("PING") }, "22023", `errand: unknown job kind "PING" (` + known + `) (row 3)`},
		{"a NULL kind", func(m *many) { m.kind[1] = nil }, "23502", "errand: kind is required (row 2)"},
		{"kind left out", func(m *many) { m.kind = nil }, "23502", "errand: kind is required (row 1)"},
		{"a NULL workspace_id", func(m *many) { m.workspaceID[1] = nil }, "23502", `errand: workspace_id is required for kind "test.note" (row 2)`},
		{"workspace_id left out", func(m *many) { m.workspaceID = nil }, "23502", `errand: workspace_id is required for kind "ping" (row 1)`},
		{"a workspace that never existed", func(m *many) { m.workspaceID[1] = ptr("00000000-0000-0000-0000-000000000001") }, "23503",
			"errand: workspace 00000000-0000-0000-0000-000000000001 does not exist in errand.workspaces (row 2)"},
		{"a deleted workspace", func(m *many) { m.workspaceID[2] = &gone }, "23503", "errand: workspace " + gone + " does not exist in errand.workspaces (row 3)"},
		{"args that are an array", func(m *many) { m.args[1] = ptr(`[1, 2]`) }, "22023", "errand: args must be a JSON object, got array (row 2)"},
		{"args that are a string", func(m *many) { m.args[0] = ptr(`"hello"`) }, "22023", "errand: args must be a JSON object, got string (row 1)"},
		{"args that are a number", func(m *many) { m.args[0] = ptr(`42`) }, "22023", "errand: args must be a JSON object, got number (row 1)"},
		{"args that are JSON null", func(m *many) { m.args[0] = ptr(`null`) }, "22023", "errand: args must be a JSON object, got null (row 1)"},
		{"args set to SQL NULL", func(m *many) { m.args[2] = nil }, "22023", "errand: args must be a JSON object, got NULL (row 3)"},
		{"args over the size limit", func(m *many) { m.args[1] = ptr(`{"note": "` + strings.Repeat("x", 1048576) + `"}`) }, "54000",
			"errand: args are 1048588 bytes, over the limit of 1048576 bytes (ERRAND_MAX_ARGS_BYTES) (row 2)"},
		{"args missing a required field", func(m *many) { m.args[1] = ptr(`{"fail": false}`) }, "22023",
			`errand: args for kind "test.note" are missing required field(s): note (row 2)`},
		{"a required field set to null", func(m *many) { m.args[1] = ptr(`{"note": null}`) }, "22023",
			`errand: args for kind "test.note" are missing required field(s): note (row 2)`},
		{"an args field outside its allowed values", func(m *many) { m.args[2] = ptr(`{"to": "a@example.com", "template": "welcome"}`) }, "22023",
			`errand: args field "template" of kind "test.mail" must be one of: invite, custom, got "welcome" (row 3)`},
		{"priority 5", func(m *many) { m.priority = []*int{nil, ptr(5), nil} }, "23514", "errand: priority must be between 1 and 4, got 5 (row 2)"},
		{"priority 0", func(m *many) { m.priority = []*int{ptr(0), nil, nil} }, "23514", "errand: priority must be between 1 and 4, got 0 (row 1)"},
		{"a negative priority", func(m *many) { m.priority = []*int{nil, nil, ptr(-1)} }, "23514", "errand: priority must be between 1 and 4, got -1 (row 3)"},
		{"max_attempts 0", func(m *many) { m.maxAttempts = []*int{nil, ptr(0), nil} }, "23514", "errand: max_attempts must be between 1 and 1000, got 0 (row 2)"},
		{"max_attempts over 1000", func(m *many) { m.maxAttempts = []*int{ptr(100000), nil, nil} }, "23514", "errand: max_attempts must be between 1 and 1000, got 100000 (row 1)"},
		{"an empty idempotency_key", func(m *many) { m.idempotencyKey = []*string{nil, ptr(""), nil} }, "23514", "errand: idempotency_key must be 1 to 255 characters, got 0 (row 2)"},
		{"an idempotency_key of 300 characters", func(m *many) { m.idempotencyKey = []*string{nil, nil, ptr(strings.Repeat("k", 300))} }, "23514",
			"errand: idempotency_key must be 1 to 255 characters, got 300 (row 3)"},
		{"two bad rows: the first is reported", func(m *many) { m.args[2] = ptr(`[]`); m.kind[1] = ptr("nope") }, "22023", `errand: unknown job kind "nope" (` + known + `) (row 2)`},
		{"two problems in one row: the single-row order decides", func(m *many) { m.kind[0] = ptr("nope"); m.workspaceID[0] = nil }, "22023",
			`errand: unknown job kind "nope" (` + known + `) (row 1)`},
		{"a parameter shorter than the others", func(m *many) { m.args = strs(`{}`) }, "22023", "errand: enqueue_many: args has 1 elements, another parameter has 3"},
		{"a parameter longer than the others", func(m *many) { m.priority = []*int{nil, nil, nil, nil} }, "22023", "errand: enqueue_many: workspace_id has 3 elements, another parameter has 4"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := jobCount(t, pool)
			m := good()
			tc.spoil(&m)
			_, err := m.call(ctx, pool)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				t.Fatalf("want a PostgreSQL error, got %v", err)
			}
			if pgErr.Code != tc.code || pgErr.Message != tc.message {
				t.Errorf("got %s %q\nwant %s %q", pgErr.Code, pgErr.Message, tc.code, tc.message)
			}
			if after := jobCount(t, pool); after != before {
				t.Errorf("%d jobs enqueued by a refused call", after-before)
			}
		})
	}
	// The unknown kind keeps the single-row hint.
	m := good()
	m.kind[0] = ptr("nope")
	_, err := m.call(ctx, pool)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || !strings.Contains(pgErr.Hint, "kinds are published by errand migrate") {
		t.Errorf("unknown kind: hint %q, want the single-row one", pgErr.Hint)
	}
}

func TestEnqueueManyIdempotencyKeys(t *testing.T) {
	t.Parallel()
	_, pool, ws := wakeDB(t)
	ctx := context.Background()

	existing := enqueueOneKeyed(t, pool, ws, "old")
	ids, err := many{
		workspaceID:    strs(ws, ws, ws, ws),
		kind:           strs("ping", "ping", "ping", "ping"),
		args:           strs(`{"n": 1}`, `{"n": 2}`, `{"n": 3}`, `{"n": 4}`),
		idempotencyKey: []*string{ptr("a"), ptr("old"), ptr("a"), nil},
	}.call(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 4 || ids[1] != existing || ids[2] != ids[0] || ids[3] == ids[0] {
		t.Fatalf("ids %v: want row 2 the existing job %d, row 3 row 1's", ids, existing)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT (args->>'n')::int FROM errand.jobs WHERE id = $1`, ids[0]).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("key given twice: the job holds n %d, want the first row's 1", n)
	}
	if c := jobCount(t, pool); c != 3 {
		t.Errorf("%d jobs, want 3 (old, a, and the row without a key)", c)
	}
}

func enqueueOneKeyed(t *testing.T, pool *pgxpool.Pool, ws, key string) int64 {
	t.Helper()
	var id int64
	err := pool.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, idempotency_key) VALUES ($1, 'ping', $2) RETURNING id`, ws, key).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Concurrent calls (and single-row inserts) with the same keys get one job
// per key, and each caller gets its id.
func TestEnqueueManyConcurrentDuplicatesGetOneJob(t *testing.T) {
	t.Parallel()
	_, pool, ws := wakeDB(t)
	ctx := context.Background()
	const callers, keys = 8, 20

	results := make([][]int64, callers)
	errs := make([]error, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			<-start
			m := many{}
			for k := range keys {
				// Every caller has its own order of the keys.
				key := fmt.Sprintf("key-%d", (k*7+c*3)%keys)
				m.workspaceID = append(m.workspaceID, &ws)
				m.kind = append(m.kind, ptr("ping"))
				m.idempotencyKey = append(m.idempotencyKey, &key)
			}
			if c%2 == 1 {
				// And some come one row at a time.
				for _, key := range m.idempotencyKey {
					var id int64
					if errs[c] = pool.QueryRow(ctx, `SELECT errand.enqueue(workspace_id => $1, kind => 'ping', idempotency_key => $2)`, ws, *key).Scan(&id); errs[c] != nil {
						return
					}
					results[c] = append(results[c], id)
				}
				return
			}
			results[c], errs[c] = m.call(ctx, pool)
		})
	}
	close(start)
	wg.Wait()
	byKey := map[string]int64{}
	for c := range callers {
		if errs[c] != nil {
			t.Fatalf("caller %d: %v", c, errs[c])
		}
		for k, id := range results[c] {
			key := fmt.Sprintf("key-%d", (k*7+c*3)%keys)
			if prev, ok := byKey[key]; ok && prev != id {
				t.Errorf("%s: caller %d got job %d, another got %d", key, c, id, prev)
			}
			byKey[key] = id
		}
	}
	if n := jobCount(t, pool); n != keys {
		t.Errorf("%d jobs for %d keys", n, keys)
	}
}

// A bulk enqueue wakes each queue with available jobs once, at commit; jobs
// for later wake nobody.
func TestEnqueueManyWakesEachQueueOnce(t *testing.T) {
	t.Parallel()
	url, pool, ws := wakeDB(t)
	l := listen(t, url, pool)
	ctx := context.Background()
	later := time.Now().Add(time.Hour)

	_, err := many{
		workspaceID: strs(ws, ws, ws, ws, ws),
		kind:        strs("ping", "test.mail", "ping", "test.note", "test.mail"),
		args:        strs(`{}`, `{"to": "a@example.com"}`, `{}`, `{"note": "x"}`, `{"to": "b@example.com"}`),
		runAt:       []*time.Time{nil, &later, nil, nil, &later},
	}.call(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.drain(); !slices.Equal(got, []string{wakeDefault}) {
		t.Errorf("bulk with available jobs in default only: wake-ups %q, want one for default", got)
	}
	_, err = many{workspaceID: strs(ws, ws), kind: strs("test.mail", "test.mail"), args: strs(`{"to": "a@example.com"}`, `{"to": "b@example.com"}`)}.call(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.drain(); !slices.Equal(got, []string{`{"queue" : "mail"}`}) {
		t.Errorf("bulk into the idle mail queue: wake-ups %q, want one for mail", got)
	}

	// The first keyed job of a bulk is the one watched for; when it turns
	// out to be a duplicate, the queue is woken for the others anyway.
	enqueueOneKeyed(t, pool, ws, "taken")
	l.drain()
	ids, err := many{workspaceID: strs(ws, ws), kind: strs("ping", "ping"), idempotencyKey: strs("taken", "fresh")}.call(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.drain(); !slices.Equal(got, []string{wakeDefault}) {
		t.Errorf("bulk whose watched keyed job is a duplicate (ids %v): wake-ups %q, want one for default", ids, got)
	}
}

// errand.enqueue_many runs as its owner, so it is granted like INSERT on
// errand.jobs, to the roles that may enqueue.
func TestEnqueueManyNeedsItsGrant(t *testing.T) {
	t.Parallel()
	url, pool, ws := wakeDB(t)
	ctx := context.Background()
	role := fmt.Sprintf("errand_bulk_%d", time.Now().UnixNano())
	for _, sql := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`GRANT USAGE ON SCHEMA errand TO ` + role,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `DROP OWNED BY `+role)
		_, _ = pool.Exec(context.Background(), `DROP ROLE `+role)
	})
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = neturl.User(role)
	app, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	m := many{workspaceID: strs(ws), kind: strs("ping")}
	_, err = m.call(ctx, app)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("without the grant: %v, want permission denied", err)
	}
	if _, err := pool.Exec(ctx, `GRANT EXECUTE ON FUNCTION errand.enqueue_many TO `+role); err != nil {
		t.Fatal(err)
	}
	if ids, err := m.call(ctx, app); err != nil || len(ids) != 1 {
		t.Fatalf("with the grant: ids %v, %v", ids, err)
	}
}

// Like the contract's trigger, errand.enqueue_many checks the workspace and
// writes as its owner whatever the caller's scope. It matters for a plain
// owner (no superuser), on whom row level security of the directory tables
// is forced: an app session scoped to B for its own row level security may
// enqueue for A, and its scope is B again afterwards.
func TestEnqueueManyDoesNotDependOnTheCallersScope(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t, testdb.PlainOwnerDatabase(t, true))
	if _, err := pool.Exec(ctx, `INSERT INTO errand.kinds (kind, queue) VALUES ('ping', 'default')`); err != nil {
		t.Fatal(err)
	}
	var a, b string
	if err := pool.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('A', 'a') RETURNING id::text`).Scan(&a); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('B', 'b') RETURNING id::text`).Scan(&b); err != nil {
		t.Fatal(err)
	}

	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', $1, true)`, b); err != nil {
			return err
		}
		if _, err := (many{workspaceID: strs(a, b), kind: strs("ping", "ping")}).call(ctx, tx); err != nil {
			return fmt.Errorf("scoped to B, enqueue for A and B: %w", err)
		}
		var scope string
		if err := tx.QueryRow(ctx, `SELECT current_setting('app.current_workspace_id')`).Scan(&scope); err != nil {
			return err
		}
		if scope != b {
			t.Errorf("after the call the caller's scope is %q, want B's %s", scope, b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', $1, true)`, b); err != nil {
			return err
		}
		_, err := (many{workspaceID: strs(a, "6f1c2a3e-0000-4000-8000-000000000001"), kind: strs("ping", "ping")}).call(ctx, tx)
		return err
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23503" || !strings.HasSuffix(pgErr.Message, "(row 2)") {
		t.Errorf("scoped to B, a workspace that does not exist: %v, want 23503 naming row 2", err)
	}
}

// A duplicate idempotent enqueue inside a transaction that stays open must
// not lock the existing job: River's fetch would skip it and a completer
// batch holding it would stall until the app's transaction ended.
func TestDuplicateEnqueueInAnOpenTransactionLeavesTheJobUnlocked(t *testing.T) {
	t.Parallel()
	_, pool, ws := wakeDB(t)
	ctx := context.Background()
	existing := enqueueOneKeyed(t, pool, ws, "held")

	for _, via := range []string{"INSERT", "enqueue_many"} {
		t.Run(via, func(t *testing.T) {
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			var got int64
			if via == "INSERT" {
				err = tx.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, idempotency_key) VALUES ($1, 'ping', 'held') RETURNING id`, ws).Scan(&got)
			} else {
				var ids []int64
				ids, err = many{workspaceID: strs(ws), kind: strs("ping"), idempotencyKey: strs("held")}.call(ctx, tx)
				if len(ids) == 1 {
					got = ids[0]
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != existing {
				t.Fatalf("duplicate got id %d, want the existing job's %d", got, existing)
			}
			// What River's fetch and completer do to the job, from another
			// session while the duplicate's transaction is still open.
			other, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer other.Rollback(ctx)
			var locked int64
			err = other.QueryRow(ctx, `SELECT id FROM errand.river_job WHERE id = $1 FOR UPDATE NOWAIT`, existing).Scan(&locked)
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
				t.Fatalf("the existing job is row-locked by the open transaction that enqueued its duplicate: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
