package migrations_test

import (
	"context"
	"fmt"
	"io"
	neturl "net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/jackc/pgx/v5"
)

func TestContractInsertReturnsIDAndListsThePendingJob(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()

	id := errandtest.Enqueue(t, pool, ws, "ping", `{}`)
	var gotWS, kind, status string
	var attempt, maxAttempts int
	var runAt, createdAt time.Time
	var startedAt, finishedAt *time.Time
	err := pool.QueryRow(ctx, `SELECT workspace_id::text, kind, status, attempt, max_attempts, run_at, created_at, started_at, finished_at
		FROM errand.jobs WHERE id = $1`, id).Scan(&gotWS, &kind, &status, &attempt, &maxAttempts, &runAt, &createdAt, &startedAt, &finishedAt)
	if err != nil {
		t.Fatal(err)
	}
	if gotWS != ws || kind != "ping" || status != "pending" || attempt != 0 || maxAttempts != 25 || startedAt != nil || finishedAt != nil {
		t.Errorf("got workspace %s kind %s status %s attempt %d max %d started %v finished %v", gotWS, kind, status, attempt, maxAttempts, startedAt, finishedAt)
	}

	// Multi-row INSERT ... SELECT returns one id per row.
	rows, err := pool.Query(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args)
		SELECT $1::uuid, 'ping', jsonb_build_object('sleep_ms', g) FROM generate_series(1, 5) g RETURNING id`, ws)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 5 {
		t.Fatalf("multi-row insert returned %d ids, want 5", len(ids))
	}
	for i, id := range ids {
		var sleep int
		if err := pool.QueryRow(ctx, "SELECT (args->>'sleep_ms')::int FROM errand.jobs WHERE id = $1", id).Scan(&sleep); err != nil {
			t.Fatal(err)
		}
		if sleep != i+1 {
			t.Errorf("row %d: returned id %d holds sleep_ms %d", i, id, sleep)
		}
	}
}

func TestContractOptionalColumnsAndEnqueueFunction(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	runAt := time.Now().Add(time.Hour).Truncate(time.Millisecond)

	var id int64
	err := pool.QueryRow(ctx, `SELECT errand.enqueue(workspace_id => $1, kind => 'ping', args => '{"sleep_ms": 5}',
		run_at => $2, priority => 3, max_attempts => 7)`, ws, runAt).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	var gotRunAt time.Time
	var priority, maxAttempts int
	var state string
	err = pool.QueryRow(ctx, "SELECT run_at, priority, max_attempts, river_state FROM errand.jobs WHERE id = $1", id).Scan(&gotRunAt, &priority, &maxAttempts, &state)
	if err != nil {
		t.Fatal(err)
	}
	if !gotRunAt.Equal(runAt) || priority != 3 || maxAttempts != 7 || state != "scheduled" {
		t.Errorf("got run_at %v priority %d max_attempts %d state %s; want %v 3 7 scheduled", gotRunAt, priority, maxAttempts, state, runAt)
	}
}

func TestContractStatusMapsRiverStates(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	want := map[string]string{
		"available": "pending", "scheduled": "pending", "retryable": "pending", "pending": "pending",
		"running": "processing", "completed": "completed", "discarded": "failed", "cancelled": "failed",
	}
	for river, status := range want {
		id := errandtest.Enqueue(t, pool, ws, "ping", `{}`)
		finalized := "NULL"
		if status == "completed" || status == "failed" {
			finalized = "now()"
		}
		if _, err := pool.Exec(ctx, "UPDATE errand.river_job SET state = $1, finalized_at = "+finalized+" WHERE id = $2", river, id); err != nil {
			t.Fatal(err)
		}
		if got := errandtest.GetJob(t, pool, id).Status; got != status {
			t.Errorf("river state %s: status %q, want %q", river, got, status)
		}
	}
}

// A limit below the database's is set by `errand migrate`; replicas with
// the same limit keep it (`errand run` only raises it).
func TestContractMaxArgsBytesComesFromConfiguration(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	migrate := map[string]string{"DATABASE_URL": url, "ERRAND_MAX_ARGS_BYTES": "64"}
	if err := errand.Main(context.Background(), []string{"migrate"}, errandtest.Env(migrate), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	errandtest.StartDaemon(t, url, map[string]string{"ERRAND_MAX_ARGS_BYTES": "64"})
	_, err := pool.Exec(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', $2)`,
		ws, `{"pad": "`+strings.Repeat("x", 80)+`"}`)
	if err == nil || !strings.Contains(err.Error(), "over the limit of 64 bytes") {
		t.Fatalf("want the 64-byte limit published by errand migrate to refuse the insert, got %v", err)
	}
}

func TestContractIdempotencyKeyReturnsTheExistingJob(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	other := errandtest.NewWorkspace(t, pool, "other")
	ctx := context.Background()
	insert := func(ws, kind, args string) int64 {
		var id int64
		err := pool.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, idempotency_key) VALUES ($1, $2, $3, 'invite-42') RETURNING id`, ws, kind, args).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	first := insert(ws, "ping", `{"sleep_ms": 1}`)
	if again := insert(ws, "ping", `{"sleep_ms": 2}`); again != first {
		t.Errorf("same key again: id %d, want the first job's %d", again, first)
	}
	var sleep int
	if err := pool.QueryRow(ctx, "SELECT (args->>'sleep_ms')::int FROM errand.jobs WHERE id = $1", first).Scan(&sleep); err != nil {
		t.Fatal(err)
	}
	if sleep != 1 {
		t.Errorf("args of the first job were replaced: sleep_ms %d", sleep)
	}
	// The key is per workspace (and kind): another tenant's same key is its own job.
	if o := insert(other, "ping", `{}`); o == first {
		t.Error("another workspace's job with the same key got the first workspace's job id")
	}
	// Any status counts while the job exists: a finished job still holds its key.
	if _, err := pool.Exec(ctx, "UPDATE errand.river_job SET state = 'completed', finalized_at = now() WHERE id = $1", first); err != nil {
		t.Fatal(err)
	}
	if again := insert(ws, "ping", `{}`); again != first {
		t.Errorf("key of a completed job: id %d, want %d", again, first)
	}
	// RETURNING shows the existing job, not the refused duplicate.
	var status, args string
	err := pool.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, idempotency_key) VALUES ($1, 'ping', '{"sleep_ms": 9}', 'invite-42')
		RETURNING status, args::text`, ws).Scan(&status, &args)
	if err != nil {
		t.Fatal(err)
	}
	if status != "completed" || args != `{"sleep_ms": 1}` {
		t.Errorf("duplicate RETURNING status %q args %s, want the existing job's completed and {\"sleep_ms\": 1}", status, args)
	}
	// The function returns the same id.
	var viaFunc int64
	if err := pool.QueryRow(ctx, `SELECT errand.enqueue(workspace_id => $1, kind => 'ping', idempotency_key => 'invite-42')`, ws).Scan(&viaFunc); err != nil {
		t.Fatal(err)
	}
	if viaFunc != first {
		t.Errorf("enqueue(): id %d, want %d", viaFunc, first)
	}
}

func TestContractConcurrentDuplicatesGetOneJob(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	const n = 10
	ids := make([]int64, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = pool.QueryRow(ctx, `SELECT errand.enqueue(workspace_id => $1, kind => 'ping', idempotency_key => 'same')`, ws).Scan(&ids[i])
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("insert %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Errorf("insert %d got id %d, insert 0 got %d", i, ids[i], ids[0])
		}
	}
	if c := errandtest.CountJobs(t, pool); c != 1 {
		t.Errorf("%d jobs for one key, want 1", c)
	}
}

// The wake-up: one notification per transaction and queue, at commit, none on
// rollback.
func TestContractNotifiesOncePerQueueAtCommitAndNotOnRollback(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	listener, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, `LISTEN "errand.river_insert"`); err != nil {
		t.Fatal(err)
	}
	// collect returns what the listener got before a marker notified after
	// everything above it committed: PostgreSQL delivers a channel's
	// notifications in commit order, so no time window decides.
	markers := 0
	collect := func() []string {
		t.Helper()
		markers++
		marker := fmt.Sprintf("marker %d", markers)
		if _, err := pool.Exec(ctx, `SELECT pg_notify('errand.river_insert', $1)`, marker); err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			n, err := listener.WaitForNotification(wctx)
			cancel()
			if err != nil {
				t.Fatalf("no %s within 30s (got %q): %v", marker, got, err)
			}
			if n.Payload == marker {
				return got
			}
			got = append(got, n.Payload)
		}
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind) SELECT $1::uuid, 'ping' FROM generate_series(1, 100)`, ws); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind) VALUES ($1, 'ping')`, ws); err != nil {
		t.Fatal(err)
	}
	if got := collect(); len(got) != 0 {
		t.Fatalf("notified before commit: %v", got)
	}
	// PostgreSQL would fold repeated notifications anyway; the point is
	// not to call pg_notify per row, which the trigger records here.
	var notified string
	if err := tx.QueryRow(ctx, `SELECT current_setting('errand.notified_queues', true)`).Scan(&notified); err != nil {
		t.Fatal(err)
	}
	if notified != ",default," {
		t.Errorf("queues notified in this transaction: %q, want one entry for default", notified)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := collect(); len(got) != 1 || got[0] != `{"queue" : "default"}` {
		t.Errorf("after commit of 101 rows: notifications %q, want exactly one for queue default", got)
	}

	tx, err = pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind) VALUES ($1, 'ping')`, ws); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := collect(); len(got) != 0 {
		t.Errorf("rollback woke someone: %v", got)
	}

	// A job scheduled for later wakes nobody now.
	if _, err := pool.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, run_at) VALUES ($1, 'ping', now() + interval '1 hour')`, ws); err != nil {
		t.Fatal(err)
	}
	if got := collect(); len(got) != 0 {
		t.Errorf("future job notified: %v", got)
	}
}

// An app server's own role, with only the grants the README lists, enqueues
// and reads jobs; it needs no rights on River's tables.
func TestContractWorksForAnAppRoleWithTheDocumentedGrants(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	role := fmt.Sprintf("errand_app_%d", time.Now().UnixNano())
	for _, sql := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`GRANT USAGE ON SCHEMA errand TO ` + role,
		`GRANT SELECT, INSERT ON errand.jobs TO ` + role,
		`GRANT EXECUTE ON FUNCTION errand.enqueue TO ` + role,
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
	var id, viaFunc int64
	if err := app.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', '{}') RETURNING id`, ws).Scan(&id); err != nil {
		t.Fatalf("app role INSERT: %v", err)
	}
	if err := app.QueryRow(ctx, `SELECT errand.enqueue(workspace_id => $1, kind => 'ping')`, ws).Scan(&viaFunc); err != nil {
		t.Fatalf("app role enqueue(): %v", err)
	}
	var status string
	if err := app.QueryRow(ctx, `SELECT status FROM errand.jobs WHERE id = $1`, id).Scan(&status); err != nil || status != "pending" {
		t.Errorf("app role reads status %q, %v", status, err)
	}
	if _, err := app.Exec(ctx, `DELETE FROM errand.river_job`); err == nil {
		t.Error("app role could write River's table directly")
	}
}
