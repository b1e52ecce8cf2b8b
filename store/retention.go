package store

import (
	"context"
	"fmt"
	"time"
)

// PruneLogs deletes at most batch rows of each of errand's log tables older
// than keep (errand.prune_logs, migrations/015_retention.sql), keeping what
// is still in use, and returns how many it deleted per table.
func PruneLogs(ctx context.Context, db DB, keep time.Duration, batch int) (map[string]int64, error) {
	rows, err := db.Query(ctx, `SELECT table_name, deleted FROM errand.prune_logs(make_interval(secs => $1), $2)`, keep.Seconds(), batch)
	if err != nil {
		return nil, fmt.Errorf("prune logs: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var table string
		var n int64
		if err := rows.Scan(&table, &n); err != nil {
			return nil, fmt.Errorf("prune logs: %w", err)
		}
		out[table] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("prune logs: %w", err)
	}
	return out, nil
}
