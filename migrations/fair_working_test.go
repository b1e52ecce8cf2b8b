package migrations_test

import (
	"context"
	"testing"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/migrations"
)

// Upgrading to 033 while the previous release's replicas run jobs: the
// migration seeds a row of counts per queue and replica from River's
// running jobs, so this release's replicas count those jobs before their
// replicas fetch again (a busy one fetches only when a worker frees).
func TestUpgradeTo033CountsTheJobsAtWorkOnThePreviousRelease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.NewDatabase(t, false)
	pool := testdb.Pool(t, url)
	migrateBelow(t, pool, 33)
	const a, b = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
	for _, j := range []struct{ state, queue, ws, by string }{
		{"running", "default", a, "{old-1}"},
		{"running", "default", a, "{old-2,old-1}"}, // rescued from old-2, now old-1's
		{"running", "default", b, "{old-1}"},
		{"running", "email", a, "{old-2}"},
		{"completed", "default", a, "{old-2}"},
		{"available", "default", b, "{}"},
	} {
		if _, err := pool.Exec(ctx, `INSERT INTO errand.river_job (state, attempt, max_attempts, attempted_at, attempted_by, args, kind, queue, metadata, finalized_at)
			VALUES ($1::errand.river_job_state, 1, 5, now(), $4::text[], '{}', 'ping', $2, jsonb_build_object('workspace_id', $3::text),
			        CASE WHEN $1 = 'completed' THEN now() END)`, j.state, j.queue, j.ws, j.by); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := migrations.Up(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, `
		SELECT w.queue || ' ' || w.client || ' ' || x.ws || '=' || x.n
		FROM errand.fair_working w CROSS JOIN LATERAL unnest(w.workspaces, w.counts) AS x(ws, n)
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"default old-1 " + a + "=2",
		"default old-1 " + b + "=1",
		"email old-2 " + a + "=1",
	}
	if len(got) != len(want) {
		t.Fatalf("counts after the upgrade %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("counts after the upgrade %v, want %v", got, want)
		}
	}
}

// Upgrading to 034: every row there is (the upgrade's seed, a replica of the
// previous release) is marked to be counted live, and a row whose arrays do
// not pair up is refused.
func TestUpgradeTo034MarksEveryRowAndRefusesUnpairedArrays(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.NewDatabase(t, false)
	pool := testdb.Pool(t, url)
	migrateBelow(t, pool, 34)
	const a = "11111111-1111-1111-1111-111111111111"
	if _, err := pool.Exec(ctx, `INSERT INTO errand.fair_working (queue, client, workspaces, counts)
		VALUES ('default', 'old-1', ARRAY[$1::uuid], '{2}'), ('email', 'old-2', ARRAY[$1::uuid], '{1}')`, a); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	var marked, all int
	if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE recount), count(*) FROM errand.fair_working`).Scan(&marked, &all); err != nil {
		t.Fatal(err)
	}
	if all != 2 || marked != 2 {
		t.Errorf("after the upgrade %d of %d rows are marked to be counted live, want 2 of 2", marked, all)
	}
	// A pilot's own write unmarks its row.
	if _, err := pool.Exec(ctx, `SELECT errand.fair_working_put('default', 'old-1', ARRAY[$1::uuid], '{1}', NULL)`, a); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE recount) FROM errand.fair_working`).Scan(&marked); err != nil {
		t.Fatal(err)
	}
	if marked != 1 {
		t.Errorf("after a pilot rewrote its row %d rows are marked, want 1", marked)
	}
	_, err := pool.Exec(ctx, `INSERT INTO errand.fair_working (queue, client, workspaces, counts) VALUES ('default', 'bad', ARRAY[$1::uuid], '{1,2}')`, a)
	if err == nil {
		t.Error("a row with two counts for one workspace was accepted")
	}
}
