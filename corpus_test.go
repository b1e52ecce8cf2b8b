package errand_test

import (
	"testing"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

const insertJob = `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES `

// contractCorpus: what the SQL contract refuses for every kind ($1 a live
// workspace, $2 a deleted one). Each kind's own bad input is in its
// package's corpus_test.go (jobs/webhook, jobs/invoice, jobs/email,
// jobs/digest).
var contractCorpus = []errandtest.BadInput{
	{Name: "an unknown kind", SQL: insertJob + `($1, 'pingg', '{}')`, Code: "22023", Message: `unknown job kind "pingg" (known kinds: `},
	{Name: "a kind in the wrong case", SQL: insertJob + `($1, 'PING', '{}')`, Code: "22023", Message: `unknown job kind "PING"`},
	{Name: "a kind with a trailing space", SQL: insertJob + `($1, 'ping ', '{}')`, Code: "22023", Message: `unknown job kind "ping "`},
	{Name: "an empty kind", SQL: insertJob + `($1, '', '{}')`, Code: "22023", Message: `unknown job kind ""`},
	{Name: "kind left out", SQL: `INSERT INTO errand.jobs (workspace_id, args) VALUES ($1, '{}')`, Code: "23502", Message: "kind is required"},
	{Name: "kind set to NULL", SQL: insertJob + `($1, NULL, '{}')`, Code: "23502", Message: "kind is required"},
	{Name: "NULL workspace_id", SQL: insertJob + `(NULL, 'ping', '{}')`, Code: "23502", Message: `workspace_id is required for kind "ping"`},
	{Name: "workspace_id left out", SQL: `INSERT INTO errand.jobs (kind, args) VALUES ('ping', '{}')`, Code: "23502", Message: "workspace_id is required"},
	{Name: "a workspace that never existed", SQL: insertJob + `('00000000-0000-0000-0000-000000000001', 'ping', '{}')`, Code: "23503", Message: "workspace 00000000-0000-0000-0000-000000000001 does not exist"},
	{Name: "a deleted workspace", SQL: insertJob + `($2, 'ping', '{}')`, Code: "23503", Message: "does not exist in errand.workspaces"},
	{Name: "a workspace slug instead of its id", SQL: insertJob + `('acme', 'ping', '{}')`, Code: "22P02", Message: "invalid input syntax for type uuid"},
	{Name: "args that are an array", SQL: insertJob + `($1, 'ping', '[1, 2]')`, Code: "22023", Message: "args must be a JSON object, got array"},
	{Name: "args that are a string", SQL: insertJob + `($1, 'ping', '"hello"')`, Code: "22023", Message: "args must be a JSON object, got string"},
	{Name: "args that are a number", SQL: insertJob + `($1, 'ping', '42')`, Code: "22023", Message: "args must be a JSON object, got number"},
	{Name: "args that are JSON null", SQL: insertJob + `($1, 'ping', 'null')`, Code: "22023", Message: "args must be a JSON object, got null"},
	{Name: "args set to SQL NULL", SQL: insertJob + `($1, 'ping', NULL)`, Code: "22023", Message: "args must be a JSON object, got NULL"},
	{Name: "args that are not JSON", SQL: insertJob + `($1, 'ping', '{sleep_ms: 1}')`, Code: "22P02", Message: "invalid input syntax for type json"},
	{Name: "args over the size limit", SQL: insertJob + `($1, 'ping', jsonb_build_object('pad', repeat('x', 1048576)))`, Code: "54000", Message: "over the limit of 1048576 bytes (ERRAND_MAX_ARGS_BYTES)"},
	{Name: "args missing a required field", SQL: insertJob + `($1, 'test.scoped', '{"fail": false}')`, Code: "22023", Message: `args for kind "test.scoped" are missing required field(s): note`},
	{Name: "a required field set to null", SQL: insertJob + `($1, 'test.scoped', '{"note": null}')`, Code: "22023", Message: "missing required field(s): note"},
	{Name: "priority 5", SQL: `INSERT INTO errand.jobs (workspace_id, kind, priority) VALUES ($1, 'ping', 5)`, Code: "23514", Message: "priority must be between 1 and 4, got 5"},
	{Name: "priority 0", SQL: `INSERT INTO errand.jobs (workspace_id, kind, priority) VALUES ($1, 'ping', 0)`, Code: "23514", Message: "priority must be between 1 and 4, got 0"},
	{Name: "a negative priority", SQL: `INSERT INTO errand.jobs (workspace_id, kind, priority) VALUES ($1, 'ping', -1)`, Code: "23514", Message: "got -1"},
	{Name: "max_attempts 0", SQL: `INSERT INTO errand.jobs (workspace_id, kind, max_attempts) VALUES ($1, 'ping', 0)`, Code: "23514", Message: "max_attempts must be between 1 and 1000, got 0"},
	{Name: "max_attempts over 1000", SQL: `INSERT INTO errand.jobs (workspace_id, kind, max_attempts) VALUES ($1, 'ping', 100000)`, Code: "23514", Message: "got 100000"},
	{Name: "an empty idempotency_key", SQL: `INSERT INTO errand.jobs (workspace_id, kind, idempotency_key) VALUES ($1, 'ping', '')`, Code: "23514", Message: "idempotency_key must be 1 to 255 characters, got 0"},
	{Name: "an idempotency_key of 300 characters", SQL: `INSERT INTO errand.jobs (workspace_id, kind, idempotency_key) VALUES ($1, 'ping', repeat('k', 300))`, Code: "23514", Message: "got 300"},
	{Name: "run_at that is not a time", SQL: `INSERT INTO errand.jobs (workspace_id, kind, run_at) VALUES ($1, 'ping', 'tomorrow-ish')`, Code: "22007", Message: "invalid input syntax for type timestamp"},
	{Name: "run_at infinity", SQL: `INSERT INTO errand.jobs (workspace_id, kind, run_at) VALUES ($1, 'ping', 'infinity')`, Code: "22023", Message: "errand: run_at must be a finite time, got infinity"},
	{Name: "run_at -infinity", SQL: `INSERT INTO errand.jobs (workspace_id, kind, run_at) VALUES ($1, 'ping', '-infinity')`, Code: "22023", Message: "errand: run_at must be a finite time, got -infinity"},
	{Name: "enqueue_many with run_at -infinity in its second row", SQL: `SELECT errand.enqueue_many(ARRAY[$1, $1]::uuid[], '{ping,ping}', run_at => ARRAY[now(), '-infinity'])`, Code: "22023", Message: "errand: run_at must be a finite time, got -infinity (row 2)"},
	{Name: "enqueue_many with kinds indexed from 0", SQL: `SELECT errand.enqueue_many(ARRAY[$1, $1]::uuid[], '[0:1]={ping,pingg}')`, Code: "22023", Message: "errand: enqueue_many: kind must be a one-dimensional array starting at 1, got [0:1]"},
	{Name: "enqueue_many with a two-dimensional array", SQL: `SELECT errand.enqueue_many(ARRAY[$1, $1]::uuid[], '{{ping},{ping}}')`, Code: "22023", Message: "errand: enqueue_many: kind must be a one-dimensional array starting at 1, got [1:2][1:1]"},
	{Name: "a kind named with a slash", SQL: `INSERT INTO errand.kinds (kind, queue) VALUES ('report/pdf', 'reports')`, Code: "23514", Message: `violates check constraint "kind_without_slash"`},
	{Name: "one bad row among good ones", SQL: insertJob + `($1, 'ping', '{}'), ($1, 'ping', '[]'), ($1, 'ping', '{}')`, Code: "22023", Message: "args must be a JSON object"},
	{Name: "enqueue() with an unknown kind", SQL: `SELECT errand.enqueue(workspace_id => $1, kind => 'nope')`, Code: "22023", Message: `unknown job kind "nope"`},
	{Name: "enqueue() with NULL args", SQL: `SELECT errand.enqueue(workspace_id => $1, kind => 'ping', args => NULL)`, Code: "22023", Message: "got NULL"},
	{Name: "enqueue() with a parameter that does not exist", SQL: `SELECT errand.enqueue(workspace_id => $1, kind => 'ping', queue => 'email')`, Code: "42883", Message: "function errand.enqueue"},
	// Tracing (migrations/017_traceparent.sql).
	{Name: "a traceparent that is not W3C trace context", SQL: `INSERT INTO errand.jobs (workspace_id, kind, args, traceparent) VALUES ($1, 'ping', '{}', 'trace-123')`, Code: "22023", Message: `traceparent must be a W3C trace context traceparent such as 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01, got "trace-123"`},
	{Name: "a traceparent with an all-zero trace id", SQL: `INSERT INTO errand.jobs (workspace_id, kind, args, traceparent) VALUES ($1, 'ping', '{}', '00-00000000000000000000000000000000-00f067aa0ba902b7-01')`, Code: "22023", Message: "traceparent must be a W3C trace context traceparent"},
	{Name: "a traceparent in upper case", SQL: `INSERT INTO errand.jobs (workspace_id, kind, args, traceparent) VALUES ($1, 'ping', '{}', '00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01')`, Code: "22023", Message: "traceparent must be a W3C trace context traceparent"},
	{Name: "a traceparent of the invalid version ff", SQL: `INSERT INTO errand.jobs (workspace_id, kind, args, traceparent) VALUES ($1, 'ping', '{}', 'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')`, Code: "22023", Message: "traceparent must be a W3C trace context traceparent"},
}

// pingCorpus: what only the worker can tell, failed at once.
var pingCorpus = []errandtest.BadInput{
	{Name: "sleep_ms as a string", SQL: insertJob + `($1, 'ping', '{"sleep_ms": "100"}')`, Failed: "decode args: json: cannot unmarshal string"},
	{Name: "sleep_ms with a fraction", SQL: insertJob + `($1, 'ping', '{"sleep_ms": 1.5}')`, Failed: "decode args: json: cannot unmarshal number 1.5"},
	{Name: "sleep_ms as an object", SQL: insertJob + `($1, 'ping', '{"sleep_ms": {"ms": 1}}')`, Failed: "decode args"},
	{Name: "a negative sleep_ms", SQL: insertJob + `($1, 'ping', '{"sleep_ms": -1}')`, Failed: "sleep_ms must be between 0 and 30000, got -1"},
	{Name: "sleep_ms over 30 s", SQL: insertJob + `($1, 'ping', '{"sleep_ms": 30001}')`, Failed: "sleep_ms must be between 0 and 30000, got 30001"},
	{Name: "sleep_ms beyond int64", SQL: insertJob + `($1, 'ping', '{"sleep_ms": 1e30}')`, Failed: "decode args"},
	{Name: "fail_times negative", SQL: insertJob + `($1, 'ping', '{"fail_times": -2}')`, Failed: "fail_times must not be negative, got -2"},
	{Name: "fail_times as a boolean", SQL: insertJob + `($1, 'ping', '{"fail_times": true}')`, Failed: "decode args: json: cannot unmarshal bool"},
	{Name: "a tenant kind whose note is a number", SQL: insertJob + `($1, 'test.scoped', '{"note": 7}')`, Failed: "decode args: json: cannot unmarshal number"},
}

// TestBadInputCorpus runs the contract's corpus against one daemon: each
// input is refused or fails at once with its reason, nothing retries, and
// the daemon stays healthy throughout.
func TestBadInputCorpus(t *testing.T) {
	errandtest.RunCorpus(t, append(append([]errandtest.BadInput{}, contractCorpus...), pingCorpus...), errand.WithKinds(errandtest.ScopedKind()))
}
