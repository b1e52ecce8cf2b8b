package migrations_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/migrations"
)

// refusal is an input the contract must refuse with exactly this SQLSTATE
// and message, enqueuing nothing; $1 in sql is a live workspace.
type refusal struct {
	name    string
	sql     string
	code    string
	message string
}

func expectRefusals(t *testing.T, pool *pgxpool.Pool, ws string, cases []refusal) {
	t.Helper()
	ctx := context.Background()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := jobCount(t, pool)
			_, err := pool.Exec(ctx, strings.ReplaceAll(tc.sql, "$1", "'"+ws+"'"))
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
}

// A job at 'infinity' or '-infinity' has no time Go can read: the fair
// fetch failed after marking a batch running, River's rescuer and metrics
// and `errand jobs list` failed too. Both paths refuse it (migration 040).
func TestContractRefusesARunAtThatIsNotAFiniteTime(t *testing.T) {
	t.Parallel()
	_, pool, ws := wakeDB(t)
	expectRefusals(t, pool, ws, []refusal{
		{"run_at infinity", `INSERT INTO errand.jobs (workspace_id, kind, run_at) VALUES ($1, 'ping', 'infinity')`,
			"22023", "errand: run_at must be a finite time, got infinity"},
		{"run_at -infinity", `INSERT INTO errand.jobs (workspace_id, kind, run_at) VALUES ($1, 'ping', '-infinity')`,
			"22023", "errand: run_at must be a finite time, got -infinity"},
		{"run_at -infinity with an idempotency key", `INSERT INTO errand.jobs (workspace_id, kind, run_at, idempotency_key) VALUES ($1, 'ping', '-infinity', 'k')`,
			"22023", "errand: run_at must be a finite time, got -infinity"},
		{"enqueue() with run_at infinity", `SELECT errand.enqueue(workspace_id => $1, kind => 'ping', run_at => 'infinity')`,
			"22023", "errand: run_at must be a finite time, got infinity"},
		{"enqueue_many with run_at -infinity in one row", `SELECT errand.enqueue_many(ARRAY[$1, $1, $1]::uuid[], '{ping,ping,ping}', run_at => ARRAY[NULL, '-infinity', now()]::timestamptz[])`,
			"22023", "errand: run_at must be a finite time, got -infinity (row 2)"},
		{"enqueue_many with run_at infinity in the first row", `SELECT errand.enqueue_many(ARRAY[$1, $1]::uuid[], '{ping,ping}', run_at => '{infinity,NULL}')`,
			"22023", "errand: run_at must be a finite time, got infinity (row 1)"},
	})

	// The hint says what to do instead.
	_, err := pool.Exec(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, run_at) VALUES ($1, 'ping', '-infinity')`, ws)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Hint != "leave run_at NULL (or out) to run the job now" {
		t.Errorf("run_at -infinity: %v, want the hint on how to run the job now", err)
	}
}

// enqueue_many numbers rows from 1 and reads a bad one back by subscript:
// an array starting elsewhere blamed the wrong row ('[0:1]={ping,pingg}'
// said "kind is required (row 2)"), so such arrays are refused.
func TestEnqueueManyRefusesArraysThatDoNotStartAtOne(t *testing.T) {
	t.Parallel()
	_, pool, ws := wakeDB(t)
	const hint = "build it with ARRAY[...] or '{...}', which start at 1"
	expectRefusals(t, pool, ws, []refusal{
		{"kinds starting at 0", `SELECT errand.enqueue_many(ARRAY[$1, $1]::uuid[], '[0:1]={ping,pingg}')`,
			"22023", "errand: enqueue_many: kind must be a one-dimensional array starting at 1, got [0:1]"},
		{"good kinds starting at 0", `SELECT errand.enqueue_many(ARRAY[$1, $1]::uuid[], '[0:1]={ping,ping}')`,
			"22023", "errand: enqueue_many: kind must be a one-dimensional array starting at 1, got [0:1]"},
		{"workspace ids starting at 2", `SELECT errand.enqueue_many(('[2:3]={' || $1 || ',' || $1 || '}')::uuid[], '{ping,ping}')`,
			"22023", "errand: enqueue_many: workspace_id must be a one-dimensional array starting at 1, got [2:3]"},
		{"a two-dimensional args array", `SELECT errand.enqueue_many(ARRAY[$1, $1, $1, $1]::uuid[], '{ping,ping,ping,ping}', args => ARRAY[ARRAY['{}', '{}'], ARRAY['{}', '[]']]::json[])`,
			"22023", "errand: enqueue_many: args must be a one-dimensional array starting at 1, got [1:2][1:2]"},
		{"run_at starting at 0", `SELECT errand.enqueue_many(ARRAY[$1]::uuid[], '{ping}', run_at => '[0:0]={2030-01-01}')`,
			"22023", "errand: enqueue_many: run_at must be a one-dimensional array starting at 1, got [0:0]"},
		{"idempotency keys starting at -1", `SELECT errand.enqueue_many(ARRAY[$1, $1]::uuid[], '{ping,ping}', idempotency_key => '[-1:0]={a,b}')`,
			"22023", "errand: enqueue_many: idempotency_key must be a one-dimensional array starting at 1, got [-1:0]"},
	})
	_, err := pool.Exec(context.Background(), `SELECT errand.enqueue_many(ARRAY[$1, $1]::uuid[], '[0:1]={ping,ping}')`, ws)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Hint != hint {
		t.Errorf("kinds starting at 0: %v, want the hint %q", err, hint)
	}
	// Arrays from 1 work as before, a slice of one included.
	ids, err := many{workspaceID: strs(ws, ws), kind: strs("ping", "ping")}.call(context.Background(), pool)
	if err != nil || len(ids) != 2 {
		t.Errorf("arrays from 1: ids %v, %v", ids, err)
	}
}

// An idempotency key is hashed from workspace/kind/key, so a kind name with
// a '/' would share keys with another kind ('report' with key 'pdf/x' is
// 'report/pdf' with key 'x'): errand.kinds refuses such a name however it
// is written.
func TestKindsRefuseANameWithASlash(t *testing.T) {
	t.Parallel()
	_, pool, _ := wakeDB(t)
	_, err := pool.Exec(context.Background(), `INSERT INTO errand.kinds (kind, queue) VALUES ('report/pdf', 'reports')`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23514" || pgErr.ConstraintName != "kind_without_slash" {
		t.Fatalf("a kind named report/pdf: %v, want refused by check kind_without_slash", err)
	}
	_, err = pool.Exec(context.Background(), `UPDATE errand.kinds SET kind = 'ping/v2' WHERE kind = 'ping'`)
	if !errors.As(err, &pgErr) || pgErr.ConstraintName != "kind_without_slash" {
		t.Errorf("a kind renamed to ping/v2: %v, want refused by check kind_without_slash", err)
	}
}

// A database that already has a kind with a '/' still migrates: the check
// holds for new names only, and the kind stays until its binary renames it.
func TestUpgradeTo040KeepsAKindWithASlash(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t, testdb.NewDatabase(t, false))
	migrateBelow(t, pool, 40)
	if _, err := pool.Exec(ctx, `INSERT INTO errand.kinds (kind, queue) VALUES ('report/pdf', 'reports'), ('report', 'reports')`); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(ctx, pool, nil); err != nil {
		t.Fatalf("upgrade with a kind named report/pdf: %v", err)
	}
	var validated bool
	if err := pool.QueryRow(ctx, `SELECT convalidated FROM pg_constraint WHERE conrelid = 'errand.kinds'::regclass AND conname = 'kind_without_slash'`).Scan(&validated); err != nil {
		t.Fatal(err)
	}
	if validated {
		t.Error("kind_without_slash is validated beside an existing report/pdf")
	}
	_, err := pool.Exec(ctx, `INSERT INTO errand.kinds (kind, queue) VALUES ('report/csv', 'reports')`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.ConstraintName != "kind_without_slash" {
		t.Errorf("a new kind named report/csv after the upgrade: %v, want refused", err)
	}
}
