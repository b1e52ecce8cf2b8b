package schedules

// The table's queries, on errand.schedule_runs (migration 013_schedules.sql):
// errand's own bookkeeping, never tenant data.

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/store"
)

// claimRun records that job runs the entry's period; false when the period
// has run (or is running in a transaction that then commits).
func claimRun(ctx context.Context, tx pgx.Tx, name string, period time.Time, jobID int64) (bool, error) {
	tag, err := tx.Exec(ctx, `
		INSERT INTO errand.schedule_runs (name, period, job_id) VALUES ($1, $2, $3)
		ON CONFLICT (name, period) DO NOTHING`, name, period, jobID)
	if err != nil {
		return false, fmt.Errorf("claim schedule %s period %s: %w", name, period.Format(time.RFC3339), err)
	}
	return tag.RowsAffected() == 1, nil
}

func recordEnqueued(ctx context.Context, tx pgx.Tx, name string, period time.Time, n int) error {
	_, err := tx.Exec(ctx, `UPDATE errand.schedule_runs SET enqueued = $3 WHERE name = $1 AND period = $2`, name, period, n)
	if err != nil {
		return fmt.Errorf("record schedule %s: %w", name, err)
	}
	return nil
}

// runs reports whether the entry's period has run, and whether any earlier
// period has.
func runs(ctx context.Context, db store.DB, name string, period time.Time) (ran, ranBefore bool, err error) {
	err = db.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM errand.schedule_runs WHERE name = $1 AND period = $2),
		       EXISTS (SELECT 1 FROM errand.schedule_runs WHERE name = $1 AND period < $2)`, name, period).Scan(&ran, &ranBefore)
	if err != nil {
		return false, false, fmt.Errorf("read schedule %s runs: %w", name, err)
	}
	return ran, ranBefore, nil
}
