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
