package migrations_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/migrations"
)

// Upgrading to 036 drops River's GIN indexes. Behind a transaction that
// holds River's table (a report reading errand.jobs) it gives up after 5 s
// instead of queueing every statement on the table behind it for as long
// as that transaction lasts: the upgrade stops with an error that says so,
// nothing of it applied, and succeeds once the transaction has ended.
func TestUpgradeTo036GivesUpBehindALongTransactionAndAppliesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.NewDatabase(t, false)
	pool := testdb.Pool(t, url)
	migrateBelow(t, pool, 36)
	gin := func() []string {
		t.Helper()
		var names []string
		if err := pool.QueryRow(ctx, `SELECT coalesce(array_agg(indexname ORDER BY indexname), '{}') FROM pg_indexes
			WHERE schemaname = 'errand' AND indexname IN ('river_job_args_index', 'river_job_metadata_index')`).Scan(&names); err != nil {
			t.Fatal(err)
		}
		return names
	}
	if got := gin(); !slices.Equal(got, []string{"river_job_args_index", "river_job_metadata_index"}) {
		t.Fatalf("before 036, River's GIN indexes = %v", got)
	}

	report, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer report.Rollback(ctx)
	if _, err := report.Exec(ctx, `SELECT count(*) FROM errand.jobs`); err != nil {
		t.Fatal(err)
	}
	_, err = migrations.Up(ctx, pool, nil)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "55P03" || !strings.Contains(pgErr.Message, "036") || !strings.Contains(pgErr.Hint, "errand migrate again") {
		t.Fatalf("upgrading to 036 beside a transaction holding river_job: %v; want lock_not_available naming 036, with a hint to migrate again", err)
	}
	var applied bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM errand.errand_migrations WHERE version >= 36)`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if got := gin(); applied || len(got) != 2 {
		t.Fatalf("after the refused upgrade: 036 or later recorded %v, GIN indexes %v; want nothing applied", applied, got)
	}

	if err := report.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(ctx, pool, nil); err != nil {
		t.Fatalf("upgrading to 036 once the transaction ended: %v", err)
	}
	if got := gin(); len(got) != 0 {
		t.Fatalf("after 036, River's GIN indexes = %v; want none", got)
	}
}
