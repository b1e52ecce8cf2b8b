package store

import (
	"context"
	"fmt"
	"time"
)

// ReserveSlot takes the next request slot of the rate limit called name,
// slots being interval apart, for every replica sharing the database (a
// GCRA-style schedule kept in errand.rate_limits, by the database's clock, so
// replicas' clocks need not agree; errand.rate_limit_slot, migration 058).
//
// A slot starting within maxWait is reserved: reserved is true and wait is
// how long until it starts (0 when it is free now). A later one is left
// alone, so that a caller who would rather not wait that long (and snoozes)
// does not push everyone else back: reserved is false and wait is how long
// until the caller's turn in the line of those waiting (one interval apart
// after the slots already taken), when it should ask again.
func ReserveSlot(ctx context.Context, db DB, name string, interval, maxWait time.Duration) (wait time.Duration, reserved bool, err error) {
	if interval <= 0 {
		return 0, true, nil
	}
	err = db.QueryRow(ctx, `SELECT wait, reserved FROM errand.rate_limit_slot($1, $2, $3)`,
		name, interval, max(maxWait, 0)).Scan(&wait, &reserved)
	if err != nil {
		return 0, false, fmt.Errorf("reserve %s rate limit slot: %w", name, err)
	}
	return wait, reserved, nil
}
