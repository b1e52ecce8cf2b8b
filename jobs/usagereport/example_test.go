package usagereport_test

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

// An app records usage with one INSERT per event; on Monday 08:00 UTC (here
// driven by `errand schedules tick --at`) each workspace gets its report
// for the week that ended, stored in errand.usage_reports and emailed to
// its owners and admins.
func Example_usageReport() {
	run, err := errandtest.StartExample(map[string]string{"ERRAND_FETCH_POLL_INTERVAL": "50ms",
		"ERRAND_SCHEDULES": "digests=off;usage_reports=off"}) // time moves only with the ticks below
	if err != nil {
		fmt.Println(err)
		return
	}
	defer run.Stop()
	ctx := context.Background()
	ws, _ := run.Workspace("Acme", "acme")
	_, _ = run.Conn.Exec(ctx, `INSERT INTO errand.usage_events (workspace_id, metric, quantity, occurred_at, idempotency_key)
		VALUES ($1, 'api_calls', 120, '2030-01-08T10:00:00Z', 'req-1'), ($1, 'api_calls', 30, '2030-01-09T10:00:00Z', 'req-2')`, ws)

	_ = errand.Main(ctx, []string{"schedules", "tick", "--future", "--at", "2030-01-14T08:00:00Z", "--schedule", "usage_reports"},
		errandtest.Env(map[string]string{"DATABASE_URL": run.Conn.Config().ConnString()}), io.Discard, io.Discard)

	var total string
	for deadline := time.Now().Add(time.Minute); total == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		_ = run.Conn.QueryRow(ctx, `SELECT week || ': ' || (summary -> 'metrics' -> 0 ->> 'total') FROM errand.usage_reports WHERE workspace_id = $1`, ws).Scan(&total)
	}
	fmt.Println(total)
	// Output:
	// 2030-W02: 150
}
