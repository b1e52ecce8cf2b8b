package webhook_test

import (
	"context"
	"testing"

	"github.com/errand-dev/errand/errandtest"
)

// Every delivery inserts a lease into errand.webhook_inflight and deletes
// it, so between two vacuums an endpoint's index range holds an entry for
// each lease since. Taking a slot counts the endpoint's live leases: the
// first count after the leases went steps over their entries once and
// marks them dead, and a count after it reads no more of them (migration
// 037: no bitmap scan, which reads them all on every call). Here 20,000
// leases of ten endpoints (the statistics say so: they were analyzed
// before they went), then two takes for one endpoint.
func TestTakingASlotDoesNotReadEveryLeaseSinceTheLastVacuum(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	run := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	run(`ALTER TABLE errand.webhook_inflight SET (autovacuum_enabled = false)`)
	run(`INSERT INTO errand.webhook_inflight (job_id, attempt, workspace_id, endpoint_id, expires_at)
		SELECT i, 1, $1, ('00000000-0000-4000-8000-00000000000' || (i % 10))::uuid, now() + interval '1 minute'
		FROM generate_series(1, 20000) AS i`, ws)
	run(`ANALYZE errand.webhook_inflight`)
	run(`DELETE FROM errand.webhook_inflight`)

	const ep = "00000000-0000-4000-8000-000000000003"
	// entriesRead is how many entries of the endpoint index scans have
	// returned so far, with this session's counts flushed first.
	entriesRead := func() int64 {
		t.Helper()
		run(`SELECT pg_stat_force_next_flush()`)
		var n int64
		if err := conn.QueryRow(ctx, `SELECT idx_tup_read FROM pg_stat_user_indexes
			WHERE schemaname = 'errand' AND indexrelname = 'webhook_inflight_endpoint_idx'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	take := func(jobID int64) {
		t.Helper()
		var taken bool
		if err := conn.QueryRow(ctx, `SELECT taken FROM errand.webhook_take_slots(ARRAY[$1::bigint], ARRAY[1], ARRAY[$2::uuid], $3::uuid, 10, interval '1 minute')`,
			jobID, ep, ws).Scan(&taken); err != nil {
			t.Fatal(err)
		}
		if !taken {
			t.Fatalf("job %d found endpoint %s full with no live lease", jobID, ep)
		}
	}
	take(100001)
	before := entriesRead()
	take(100002)
	if read := entriesRead() - before; read > 100 {
		t.Fatalf("a slot taken after 2,000 of the endpoint's leases went (and after a take that saw them gone) read %d index entries; want the live ones only", read)
	}
}
