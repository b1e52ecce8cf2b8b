package store

import (
	"context"
	"fmt"
)

// RollUpJobCounts counts the jobs finalized since the last roll-up, up to a
// minute ago on the database's clock, into errand.job_counts (per workspace,
// day, kind and final state, for the usage reports) and errand.queue_counts
// (per queue and minute, for `errand stats`), and returns how many it
// counted (errand.roll_up_job_counts, migrations 029 and 032). It is one
// transaction, the counts and the watermark moving together; a concurrent
// roll-up is waited for, and no job is counted twice.
func RollUpJobCounts(ctx context.Context, db DB) (int64, error) {
	var n int64
	if err := db.QueryRow(ctx, `SELECT errand.roll_up_job_counts()`).Scan(&n); err != nil {
		return 0, fmt.Errorf("roll up job counts: %w", err)
	}
	return n, nil
}
