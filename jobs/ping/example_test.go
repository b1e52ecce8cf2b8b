package ping_test

import (
	"context"
	"fmt"

	"github.com/errand-dev/errand/errandtest"
)

// A ping asked to fail once: its first attempt fails, the retry (after the
// backoff, 20 ms here) completes, and the first failure stays visible.
func Example() {
	run, err := errandtest.StartExample(nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer run.Stop()
	ws, _ := run.Workspace("Acme", "acme")

	var id int64
	_ = run.Conn.QueryRow(context.Background(),
		`INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', '{"sleep_ms": 5, "fail_times": 1}') RETURNING id`, ws).Scan(&id)

	status, attempt, lastError, err := run.Wait(id)
	fmt.Println(status, "on attempt", attempt, err)
	fmt.Println(lastError)
	// Output:
	// completed on attempt 2 <nil>
	// attempt 1 of 1: ping failed as asked by fail_times
}
