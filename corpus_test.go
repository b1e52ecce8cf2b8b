package errand_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

// badInput is one malformed input a user can send. In sql, $1 is a live
// workspace and $2 a deleted one. Either the INSERT is refused (code and
// message) and nothing is enqueued, or the job fails on its first attempt
// with failed in last_error.
type badInput struct {
	name    string
	sql     string
	code    string
	message string
	failed  string
}

const insertJob = `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES `

// contractCorpus: what the SQL contract refuses for every kind.
var contractCorpus = []badInput{
	{name: "an unknown kind", sql: insertJob + `($1, 'pingg', '{}')`, code: "22023", message: `unknown job kind "pingg" (known kinds: `},
	{name: "a kind in the wrong case", sql: insertJob + `($1, 'PING', '{}')`, code: "22023", message: `unknown job kind "PING"`},
	{name: "a kind with a trailing space", sql: insertJob + `($1, 'ping ', '{}')`, code: "22023", message: `unknown job kind "ping "`},
	{name: "an empty kind", sql: insertJob + `($1, '', '{}')`, code: "22023", message: `unknown job kind ""`},
	{name: "kind left out", sql: `INSERT INTO errand.jobs (workspace_id, args) VALUES ($1, '{}')`, code: "23502", message: "kind is required"},
	{name: "kind set to NULL", sql: insertJob + `($1, NULL, '{}')`, code: "23502", message: "kind is required"},
	{name: "NULL workspace_id", sql: insertJob + `(NULL, 'ping', '{}')`, code: "23502", message: `workspace_id is required for kind "ping"`},
	{name: "workspace_id left out", sql: `INSERT INTO errand.jobs (kind, args) VALUES ('ping', '{}')`, code: "23502", message: "workspace_id is required"},
	{name: "a workspace that never existed", sql: insertJob + `('00000000-0000-0000-0000-000000000001', 'ping', '{}')`, code: "23503", message: "workspace 00000000-0000-0000-0000-000000000001 does not exist"},
	{name: "a deleted workspace", sql: insertJob + `($2, 'ping', '{}')`, code: "23503", message: "does not exist in errand.workspaces"},
	{name: "a workspace slug instead of its id", sql: insertJob + `('acme', 'ping', '{}')`, code: "22P02", message: "invalid input syntax for type uuid"},
	{name: "args that are an array", sql: insertJob + `($1, 'ping', '[1, 2]')`, code: "22023", message: "args must be a JSON object, got array"},
	{name: "args that are a string", sql: insertJob + `($1, 'ping', '"hello"')`, code: "22023", message: "args must be a JSON object, got string"},
	{name: "args that are a number", sql: insertJob + `($1, 'ping', '42')`, code: "22023", message: "args must be a JSON object, got number"},
	{name: "args that are JSON null", sql: insertJob + `($1, 'ping', 'null')`, code: "22023", message: "args must be a JSON object, got null"},
	{name: "args set to SQL NULL", sql: insertJob + `($1, 'ping', NULL)`, code: "22023", message: "args must be a JSON object, got NULL"},
	{name: "args that are not JSON", sql: insertJob + `($1, 'ping', '{sleep_ms: 1}')`, code: "22P02", message: "invalid input syntax for type json"},
	{name: "args over the size limit", sql: insertJob + `($1, 'ping', jsonb_build_object('pad', repeat('x', 1048576)))`, code: "54000", message: "over the limit of 1048576 bytes (ERRAND_MAX_ARGS_BYTES)"},
	{name: "args missing a required field", sql: insertJob + `($1, 'test.scoped', '{"fail": false}')`, code: "22023", message: `args for kind "test.scoped" are missing required field(s): note`},
	{name: "a required field set to null", sql: insertJob + `($1, 'test.scoped', '{"note": null}')`, code: "22023", message: "missing required field(s): note"},
	{name: "priority 5", sql: `INSERT INTO errand.jobs (workspace_id, kind, priority) VALUES ($1, 'ping', 5)`, code: "23514", message: "priority must be between 1 and 4, got 5"},
	{name: "priority 0", sql: `INSERT INTO errand.jobs (workspace_id, kind, priority) VALUES ($1, 'ping', 0)`, code: "23514", message: "priority must be between 1 and 4, got 0"},
	{name: "a negative priority", sql: `INSERT INTO errand.jobs (workspace_id, kind, priority) VALUES ($1, 'ping', -1)`, code: "23514", message: "got -1"},
	{name: "max_attempts 0", sql: `INSERT INTO errand.jobs (workspace_id, kind, max_attempts) VALUES ($1, 'ping', 0)`, code: "23514", message: "max_attempts must be between 1 and 1000, got 0"},
	{name: "max_attempts over 1000", sql: `INSERT INTO errand.jobs (workspace_id, kind, max_attempts) VALUES ($1, 'ping', 100000)`, code: "23514", message: "got 100000"},
	{name: "an empty idempotency_key", sql: `INSERT INTO errand.jobs (workspace_id, kind, idempotency_key) VALUES ($1, 'ping', '')`, code: "23514", message: "idempotency_key must be 1 to 255 characters, got 0"},
	{name: "an idempotency_key of 300 characters", sql: `INSERT INTO errand.jobs (workspace_id, kind, idempotency_key) VALUES ($1, 'ping', repeat('k', 300))`, code: "23514", message: "got 300"},
	{name: "run_at that is not a time", sql: `INSERT INTO errand.jobs (workspace_id, kind, run_at) VALUES ($1, 'ping', 'tomorrow-ish')`, code: "22007", message: "invalid input syntax for type timestamp"},
	{name: "one bad row among good ones", sql: insertJob + `($1, 'ping', '{}'), ($1, 'ping', '[]'), ($1, 'ping', '{}')`, code: "22023", message: "args must be a JSON object"},
	{name: "enqueue() with an unknown kind", sql: `SELECT errand.enqueue(workspace_id => $1, kind => 'nope')`, code: "22023", message: `unknown job kind "nope"`},
	{name: "enqueue() with NULL args", sql: `SELECT errand.enqueue(workspace_id => $1, kind => 'ping', args => NULL)`, code: "22023", message: "got NULL"},
	{name: "enqueue() with a parameter that does not exist", sql: `SELECT errand.enqueue(workspace_id => $1, kind => 'ping', queue => 'email')`, code: "42883", message: "function errand.enqueue"},
}

// pingCorpus: what only the worker can tell, failed at once.
var pingCorpus = []badInput{
	{name: "sleep_ms as a string", sql: insertJob + `($1, 'ping', '{"sleep_ms": "100"}')`, failed: "decode args: json: cannot unmarshal string"},
	{name: "sleep_ms with a fraction", sql: insertJob + `($1, 'ping', '{"sleep_ms": 1.5}')`, failed: "decode args: json: cannot unmarshal number 1.5"},
	{name: "sleep_ms as an object", sql: insertJob + `($1, 'ping', '{"sleep_ms": {"ms": 1}}')`, failed: "decode args"},
	{name: "a negative sleep_ms", sql: insertJob + `($1, 'ping', '{"sleep_ms": -1}')`, failed: "sleep_ms must be between 0 and 30000, got -1"},
	{name: "sleep_ms over 30 s", sql: insertJob + `($1, 'ping', '{"sleep_ms": 30001}')`, failed: "sleep_ms must be between 0 and 30000, got 30001"},
	{name: "sleep_ms beyond int64", sql: insertJob + `($1, 'ping', '{"sleep_ms": 1e30}')`, failed: "decode args"},
	{name: "fail_times negative", sql: insertJob + `($1, 'ping', '{"fail_times": -2}')`, failed: "fail_times must not be negative, got -2"},
	{name: "fail_times as a boolean", sql: insertJob + `($1, 'ping', '{"fail_times": true}')`, failed: "decode args: json: cannot unmarshal bool"},
	{name: "a tenant kind whose note is a number", sql: insertJob + `($1, 'test.scoped', '{"note": 7}')`, failed: "decode args: json: cannot unmarshal number"},
}

// TestBadInputCorpus runs every malformed input against one daemon: each is
// refused or fails at once with its reason, nothing retries, and the daemon
// stays healthy throughout.
func TestBadInputCorpus(t *testing.T) {
	corpus := append(append([]badInput{}, contractCorpus...), pingCorpus...)
	if len(corpus) < 40 {
		t.Fatalf("corpus has %d inputs, want at least 40", len(corpus))
	}
	url, pool := errandtest.MigratedDB(t, errand.WithKinds(errandtest.ScopedKind()))
	ws := errandtest.NewWorkspace(t, pool, "acme")
	gone := errandtest.NewWorkspace(t, pool, "gone")
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `DELETE FROM errand.workspaces WHERE id = $1`, gone); err != nil {
		t.Fatal(err)
	}
	d := errandtest.StartDaemon(t, url, nil, errand.WithKinds(errandtest.ScopedKind()))

	for _, tc := range corpus {
		t.Run(tc.name, func(t *testing.T) {
			before := errandtest.CountJobs(t, pool)
			sql := strings.NewReplacer("$1", "'"+ws+"'", "$2", "'"+gone+"'").Replace(tc.sql)
			if tc.code != "" {
				_, err := pool.Exec(ctx, sql)
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) {
					t.Fatalf("want a PostgreSQL error, got %v", err)
				}
				if pgErr.Code != tc.code || !strings.Contains(pgErr.Message, tc.message) {
					t.Errorf("got %s %q, want %s containing %q", pgErr.Code, pgErr.Message, tc.code, tc.message)
				}
				if after := errandtest.CountJobs(t, pool); after != before {
					t.Errorf("%d jobs enqueued by a refused insert", after-before)
				}
				return
			}
			var id int64
			if err := pool.QueryRow(ctx, sql+" RETURNING id").Scan(&id); err != nil {
				t.Fatalf("insert refused (%v), want it accepted and failed by the worker", err)
			}
			j := errandtest.WaitJob(t, pool, id, 30*time.Second, "failed", "completed")
			if j.Status != "failed" || j.Attempt != 1 || !strings.Contains(j.LastError, tc.failed) {
				t.Errorf("got %+v, want failed on attempt 1 with %q", j, tc.failed)
			}
		})
	}

	resp, err := http.Get("http://" + d.Addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("daemon not ready after the corpus: %d", resp.StatusCode)
	}
	var retried int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.jobs WHERE attempt > 1`).Scan(&retried); err != nil {
		t.Fatal(err)
	}
	if retried != 0 {
		t.Errorf("%d hopeless jobs were retried", retried)
	}
	if strings.Contains(d.Logs.String(), "panic") {
		t.Errorf("a panic was logged:\n%s", d.Logs.String())
	}
}
