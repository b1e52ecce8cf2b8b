package migrations_test

import (
	"context"
	"testing"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/store"
)

// Upgrading a database whose leader already rolls up (029) to 032: the
// watermark is a minute or two old and errand.queue_counts starts empty, so
// without the migration's backfill `errand stats` would lose the hour's
// jobs finished before the watermark (they are read from River's rows only
// after it).
func TestUpgradeTo032KeepsTheHoursFinishedJobsInStats(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.NewDatabase(t, false)
	pool := testdb.Pool(t, url)
	migrateBelow(t, pool, 32)
	for _, at := range []string{"30 minutes", "10 minutes", "5 minutes", "3 hours"} {
		if _, err := pool.Exec(ctx, `INSERT INTO errand.river_job (state, attempt, max_attempts, attempted_at, finalized_at, args, kind, queue)
			VALUES ('completed', 1, 1, now() - $1::interval, now() - $1::interval, '{}', 'ping', 'default')`, at); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `INSERT INTO errand.river_job (state, attempt, max_attempts, attempted_at, finalized_at, args, kind, queue)
		VALUES ('discarded', 1, 1, now() - interval '20 minutes', now() - interval '20 minutes', '{}', 'ping', 'email')`); err != nil {
		t.Fatal(err)
	}
	// 029's roll-up, as the leader ran it before the upgrade.
	if _, err := pool.Exec(ctx, `SELECT errand.roll_up_job_counts()`); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		list, err := store.Stats(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][2]int64{}
		for _, q := range list {
			got[q.Queue] = [2]int64{q.CompletedLastHour, q.FailedLastHour}
		}
		if len(got) != 2 || got["default"] != [2]int64{3, 0} || got["email"] != [2]int64{0, 1} {
			t.Errorf("%s: completed and failed in the hour %v; want default [3 0] and email [0 1]", when, got)
		}
	}
	check("after the upgrade")
	// River's cleaner deletes the rows; the migration's minutes keep them.
	if _, err := pool.Exec(ctx, `DELETE FROM errand.river_job WHERE finalized_at < now() - interval '2 minutes'`); err != nil {
		t.Fatal(err)
	}
	check("after the cleaner")
}
