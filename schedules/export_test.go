package schedules

import (
	"context"
	"time"

	"github.com/errand-dev/errand/store"
)

// Due is the leader's decision (see due), for tests that drive its clock.
func (t *Table) Due(ctx context.Context, db store.DB, name string, now time.Time) (time.Time, bool, error) {
	e, _ := t.Lookup(name)
	return t.due(ctx, db, e, now)
}

// Asked is when the leader asks about the entry after t: the next n times
// of the schedule River is given for it.
func (t *Table) Asked(name string, after time.Time, n int) []time.Time {
	e, _ := t.Lookup(name)
	var out []time.Time
	for range n {
		after = e.asked().Next(after)
		out = append(out, after)
	}
	return out
}
