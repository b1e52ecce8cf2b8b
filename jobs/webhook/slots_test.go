package webhook_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/errand-dev/errand/errandtest"
)

// Every delivery inserts a lease into errand.webhook_inflight and deletes
// it, so between two vacuums an endpoint's index range holds an entry for
// each lease since. Taking a slot counts the endpoint's live leases through
// that index (migration 037: no bitmap scan, which reads every entry on
// every call, and no scan of the whole table): the first count after the
// leases went steps over their entries once and marks them dead, and a
// count after it reads no more of them. Statistics as production has them
// (a hundred live leases when the table was analyzed), then 20,000 leases
// of ten endpoints come and go, then two takes for one endpoint.
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

	// The function's own settings: a CREATE OR REPLACE drops them.
	var config []string
	if err := conn.QueryRow(ctx, `SELECT coalesce(proconfig, '{}') FROM pg_proc
		WHERE oid = 'errand.webhook_take_slots(bigint[], int[], uuid[], uuid, int, interval)'::regprocedure`).Scan(&config); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(config, "enable_bitmapscan=off") || !slices.Contains(config, "enable_seqscan=off") {
		t.Errorf("errand.webhook_take_slots has settings %v; want enable_bitmapscan=off and enable_seqscan=off (migration 037)", config)
	}

	const leases = `INSERT INTO errand.webhook_inflight (job_id, attempt, workspace_id, endpoint_id, expires_at)
		SELECT i, 1, $1, ('00000000-0000-4000-8000-00000000000' || (i % 10))::uuid, now() + interval '1 minute'
		FROM generate_series($2::bigint, $3::bigint) AS i`
	run(`ALTER TABLE errand.webhook_inflight SET (autovacuum_enabled = false)`)
	run(leases, ws, 1, 100)
	run(`ANALYZE errand.webhook_inflight`)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var gone string // the transaction that deleted them
	for _, step := range []func() error{
		func() error { _, err := tx.Exec(ctx, `DELETE FROM errand.webhook_inflight`); return err },
		func() error { _, err := tx.Exec(ctx, leases, ws, 1001, 21000); return err },
		func() error { _, err := tx.Exec(ctx, `DELETE FROM errand.webhook_inflight`); return err },
		func() error { return tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(&gone) },
		func() error { return tx.Commit(ctx) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	// PostgreSQL marks an index entry dead only once no transaction older
	// than the row's delete runs on the server (in any database: the other
	// packages' tests share it).
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		var past bool
		if err := conn.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot()) > $1::xid8`, gone).Scan(&past); err != nil {
			t.Fatal(err)
		}
		if past {
			break
		}
		if time.Now().After(deadline) {
			t.Skip("a transaction older than the leases' delete still runs on this server after a minute: their index entries cannot be marked dead yet, so this cannot tell")
		}
	}

	const ep = "00000000-0000-4000-8000-000000000003"
	type counts struct{ entries, seqScans, indexScans int64 }
	// read is what the table's scans have done so far, with this
	// session's counts flushed first.
	read := func() counts {
		t.Helper()
		run(`SELECT pg_stat_force_next_flush()`)
		var c counts
		if err := conn.QueryRow(ctx, `SELECT i.idx_tup_read, t.seq_scan, t.idx_scan
			FROM pg_stat_user_indexes i JOIN pg_stat_user_tables t USING (relid)
			WHERE i.schemaname = 'errand' AND i.indexrelname = 'webhook_inflight_endpoint_idx'`).Scan(&c.entries, &c.seqScans, &c.indexScans); err != nil {
			t.Fatal(err)
		}
		return c
	}
	take := func(jobID int64) counts {
		t.Helper()
		before := read()
		var taken bool
		if err := conn.QueryRow(ctx, `SELECT taken FROM errand.webhook_take_slots(ARRAY[$1::bigint], ARRAY[1], ARRAY[$2::uuid], $3::uuid, 10, interval '1 minute')`,
			jobID, ep, ws).Scan(&taken); err != nil {
			t.Fatal(err)
		}
		if !taken {
			t.Fatalf("job %d found endpoint %s full with no live lease", jobID, ep)
		}
		after := read()
		d := counts{after.entries - before.entries, after.seqScans - before.seqScans, after.indexScans - before.indexScans}
		if d.seqScans != 0 || d.indexScans == 0 {
			t.Fatalf("taking a slot scanned webhook_inflight whole %d times and through an index %d times; want the index only", d.seqScans, d.indexScans)
		}
		return d
	}
	if first := take(100001); first.entries < 2000 {
		t.Fatalf("the first take after 2,010 of the endpoint's leases went read %d index entries; want them all, once (is the index read?)", first.entries)
	}
	if second := take(100002); second.entries > 100 {
		t.Fatalf("a take after one that stepped over the 2,010 gone leases read %d index entries; want the live ones only", second.entries)
	}
}
