package digest_test

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

// An app stores a user's digest preference and writes notifications, each
// with one SQL statement; when the user's local 08:00 has passed, the
// digests tick (here driven by `errand schedules tick --at`, normally the
// leader every ERRAND_DIGEST_TICK) enqueues one digest.send, which emails
// everything new through email.send (captured in errand.emails here).
func Example_digest() {
	run, err := errandtest.StartExample(map[string]string{"ERRAND_FETCH_POLL_INTERVAL": "50ms",
		"ERRAND_SCHEDULES": "digests=off;usage_reports=off"}) // time moves only with the ticks below
	if err != nil {
		fmt.Println(err)
		return
	}
	defer run.Stop()
	ctx := context.Background()
	ws, _ := run.Workspace("Acme", "acme")
	var user string
	_ = run.Conn.QueryRow(ctx, `INSERT INTO errand.users (email, name) VALUES ('ann@example.com', 'Ann') RETURNING id`).Scan(&user)
	_, _ = run.Conn.Exec(ctx, `INSERT INTO errand.workspace_members (workspace_id, user_id) VALUES ($1, $2)`, ws, user)

	// Ann wants a daily digest at 08:00 Berlin time.
	_, _ = run.Conn.Exec(ctx, `INSERT INTO errand.notification_preferences (workspace_id, user_id, frequency, timezone, hour)
		VALUES ($1, $2, 'daily', 'Europe/Berlin', 8)`, ws, user)
	// tick evaluates the digests schedule as of at and waits for its jobs.
	tick := func(at string) {
		_ = errand.Main(ctx, []string{"schedules", "tick", "--future", "--at", at, "--schedule", "digests"},
			errandtest.Env(map[string]string{"DATABASE_URL": run.Conn.Config().ConnString()}), io.Discard, io.Discard)
		busy := 1
		for deadline := time.Now().Add(time.Minute); busy > 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			_ = run.Conn.QueryRow(ctx, `SELECT count(*) FROM errand.jobs WHERE status IN ('pending', 'processing')`).Scan(&busy)
		}
	}
	tick("2030-01-09T12:00:00Z") // brings the schedule to 2030

	_, _ = run.Conn.Exec(ctx, `INSERT INTO errand.notifications (workspace_id, user_id, kind, title, url)
		VALUES ($1, $2, 'comment', 'Bob commented on Q4 plan', 'https://app.example.com/c/1'),
		       ($1, $2, 'mention', 'Cleo mentioned you', 'https://app.example.com/c/2')`, ws, user)
	tick("2030-01-10T07:00:00Z") // 08:00 in Berlin

	var subject string
	_ = run.Conn.QueryRow(ctx, `SELECT subject FROM errand.emails WHERE template = 'digest'`).Scan(&subject)
	fmt.Println(subject)
	// Output:
	// 2 new in Acme (2030-01-10)
}
