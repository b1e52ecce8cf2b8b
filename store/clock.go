package store

import (
	"context"
	"fmt"
	"time"
)

// Now is the database's clock: now(), the start of db's transaction (or
// of the statement, outside one). A time compared with what the database
// stamps (a tick's --at, a report's week) is compared with this, not with
// time.Now: a replica's clock may be off, and the leader's ticks read this
// one too.
func Now(ctx context.Context, db DB) (time.Time, error) {
	var now time.Time
	if err := db.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
		return time.Time{}, fmt.Errorf("read the database's clock: %w", err)
	}
	return now, nil
}
