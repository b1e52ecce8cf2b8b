package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReserveSlot takes the next request slot of the rate limit called name,
// slots being interval apart, for every replica sharing the database (a
// GCRA-style schedule kept in errand.rate_limits, by the database's clock, so
// replicas' clocks need not agree).
//
// A slot starting within maxWait is reserved: reserved is true and wait is
// how long until it starts (0 when it is free now). A later one is left
// alone, so that a caller who would rather not wait that long (and snoozes)
// does not push everyone else back: reserved is false and wait is how long
// until the next free slot.
func ReserveSlot(ctx context.Context, db DB, name string, interval, maxWait time.Duration) (wait time.Duration, reserved bool, err error) {
	if interval <= 0 {
		return 0, true, nil
	}
	// The slot starts at greatest(next_at, now); next_at moves one interval
	// past it. RETURNING sees the new next_at, so the slot start is
	// next_at - interval. clock_timestamp(), not now(): a statement that
	// waited for a concurrent reservation's row lock must count from when it
	// got the row, or two slots could come closer than interval. The WHERE
	// leaves a too-distant schedule untouched, and the second branch then
	// reads it (from the statement's snapshot: good enough for how long to
	// stay away).
	err = db.QueryRow(ctx, `
		WITH r AS (
			INSERT INTO errand.rate_limits AS rl (name, next_at) VALUES ($1, clock_timestamp() + $2::interval)
			ON CONFLICT (name) DO UPDATE SET next_at = greatest(rl.next_at, clock_timestamp()) + $2::interval
			WHERE rl.next_at <= clock_timestamp() + $3::interval
			RETURNING rl.next_at - $2::interval AS slot
		)
		SELECT greatest(slot - clock_timestamp(), '0'::interval), true FROM r
		UNION ALL
		SELECT greatest(rl.next_at - clock_timestamp(), '0'::interval), false FROM errand.rate_limits rl
		WHERE rl.name = $1 AND NOT EXISTS (SELECT 1 FROM r)`,
		name, interval, maxWait).Scan(&wait, &reserved)
	if errors.Is(err, pgx.ErrNoRows) {
		// Neither branch saw the row: a concurrent first reservation.
		return interval, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reserve %s rate limit slot: %w", name, err)
	}
	return wait, reserved, nil
}
