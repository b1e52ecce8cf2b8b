package webhook_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/errand-dev/errand/errandtest"
)

// A delivery held back by its endpoint's cap that had to snooze (no room to
// wait in its replica) is woken by the next slot its endpoint gives back,
// not by its snooze's end. Three deliveries to an endpoint capped at 1,
// with a held-back wait of a minute (a snooze of 48 s or more) and River's poll at a
// minute: the first is held by the receiver, the second waits in the
// replica, the third snoozes. Once the receiver lets go, all three complete
// on their first attempt within seconds; without the wake-up the third
// sleeps past the test's 30 s and the test fails.
func TestHeldBackDeliveryIsWokenByTheSlotItsEndpointGivesBack(t *testing.T) {
	t.Parallel()
	rc := newHoldingReceiver(t, func(n int) bool { return n == 0 })
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, env(map[string]string{
		"ERRAND_WEBHOOK_ENDPOINT_CONCURRENCY": "1",
		"ERRAND_WEBHOOK_HELD_BACK_WAIT":       "1m",
		"ERRAND_FETCH_POLL_INTERVAL":          "1m",
		"ERRAND_QUEUES":                       "webhooks=4",
	}), kinds()...)
	ep, _ := newEndpoint(t, pool, ws, rc.URL)
	ctx := context.Background()
	var msgs []string
	for i := range 3 {
		m, _ := dispatch(t, pool, ws, fmt.Sprintf(`{"event_type": "a.b", "payload": {"n": %d}}`, i))
		msgs = append(msgs, m)
	}

	waitFor(t, "one request held by the receiver, one delivery waiting in the replica, one snoozed and noted as held back", func() bool {
		inFlight, _ := rc.counts()
		var snoozed, held int
		if err := pool.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM errand.river_job WHERE kind = 'webhook.deliver' AND state = 'scheduled'),
			       (SELECT count(*) FROM errand.webhook_held_back h JOIN errand.river_job j ON j.id = h.job_id
			        WHERE h.endpoint_id = $1 AND j.state = 'scheduled')`, ep).Scan(&snoozed, &held); err != nil {
			t.Fatal(err)
		}
		return inFlight == 1 && snoozed == 1 && held == 1 &&
			strings.Contains(scrape(t, d.Addr), "\nerrand_webhook_waiting_deliveries 1\n")
	})
	rc.letGo()
	var snoozes int
	for _, msg := range msgs {
		for _, id := range deliveries(t, pool, msg) {
			j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed")
			if j.Status != "completed" || j.Attempt != 1 {
				t.Errorf("delivery %+v, want completed on its first attempt (held back is no attempt)", j)
			}
			var n int
			if err := pool.QueryRow(ctx, `SELECT coalesce((metadata ->> 'snoozes')::int, 0) FROM errand.river_job WHERE id = $1`, id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			snoozes += n
		}
	}
	if snoozes == 0 {
		t.Error("no delivery was snoozed: the test did not hold one back")
	}
	if _, most := rc.counts(); most != 1 {
		t.Errorf("%d requests were in flight at once, want 1", most)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.webhook_held_back`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d held-back rows left after every delivery completed", left)
	}
}

// errand.webhook_wake_held wakes, per slot given back, the oldest snoozed
// held-back delivery of that endpoint in the caller's workspace, at its old
// place in the queue (snoozed to scheduled, or available for later); it
// skips deliveries still running, drops rows of finished jobs, and never
// touches another workspace's.
func TestWakeHeldWakesTheOldestSnoozedDeliveryOfTheScopedWorkspaceOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, pool := errandtest.MigratedDB(t, kinds()...)
	wsA := errandtest.NewWorkspace(t, pool, "a")
	wsB := errandtest.NewWorkspace(t, pool, "b")
	epA, _ := newEndpoint(t, pool, wsA, "https://hooks.example.com/a")
	epB, _ := newEndpoint(t, pool, wsB, "https://hooks.example.com/b")
	// Deliveries snoozed an hour ahead (no daemon runs here), then one of
	// A's cancelled (its endpoint was disabled, say) and one running.
	job := func(ws, ep string) int64 {
		t.Helper()
		return laterJob(t, pool, ws, "webhook.deliver", deliverArgs(ep), "1 hour")
	}
	cancelled, running, oldest, soon, next := job(wsA, epA), job(wsA, epA), job(wsA, epA), job(wsA, epA), job(wsA, epA)
	other := job(wsB, epB)
	exec(t, pool, `UPDATE errand.river_job SET state = 'cancelled', finalized_at = now() WHERE id = $1`, cancelled)
	exec(t, pool, `UPDATE errand.river_job SET state = 'running', attempt = 1, attempted_at = now() WHERE id = $1`, running)
	// River makes a snooze shorter than its scheduler's interval available
	// at once, for later.
	exec(t, pool, `UPDATE errand.river_job SET state = 'available', scheduled_at = now() + interval '1 hour' WHERE id = $1`, soon)
	// Their rows, as a delivery about to snooze writes them (the test's
	// pool is a superuser's: row level security does not apply).
	exec(t, pool, `INSERT INTO errand.webhook_held_back (endpoint_id, job_id, workspace_id, scheduled_at)
		SELECT (args ->> 'endpoint_id')::uuid, id, (metadata ->> 'workspace_id')::uuid,
		       CASE WHEN id = $2 THEN timestamptz '2000-01-01 00:00:00Z' ELSE created_at + id * interval '1 second' END
		FROM errand.river_job WHERE id = ANY ($1)`, []int64{cancelled, running, oldest, soon, next, other}, next)

	wake := func(scope string, endpoints ...string) int {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', $1, true)`, scope); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT errand.webhook_wake_held($1::text[]::uuid[])`, endpoints).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// state is the job's state, and where in the queue an available job is:
	// the place noted in its row (its creation plus its id in seconds), or
	// its creation (a noted place before it is clamped).
	state := func(id int64) string {
		t.Helper()
		var s string
		if err := pool.QueryRow(ctx, `
			SELECT CASE WHEN state = 'available' AND scheduled_at = created_at + id * interval '1 second' THEN 'available at its place'
			            WHEN state = 'available' AND scheduled_at = created_at THEN 'available at its creation'
			            ELSE state::text END
			FROM errand.river_job WHERE id = $1`, id).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	if n := wake("", epA); n != 0 {
		t.Errorf("unscoped: woke %d, want 0", n)
	}
	if n := wake(wsA, epB); n != 0 {
		t.Errorf("scoped to A with B's endpoint: woke %d, want 0", n)
	}
	if n := wake(wsA, epA, epB); n != 1 {
		t.Errorf("scoped to A, one slot of A's endpoint and one of B's: woke %d, want 1", n)
	}
	want := map[int64]string{
		cancelled: "cancelled",
		running:   "running",
		oldest:    "available at its place",
		soon:      "available",
		next:      "scheduled",
		other:     "scheduled",
	}
	for id, w := range want {
		if got := state(id); got != w {
			t.Errorf("job %d is %s, want %s", id, got, w)
		}
	}
	rows := int64s(t, pool, `SELECT job_id FROM errand.webhook_held_back ORDER BY job_id`)
	if fmt.Sprint(rows) != fmt.Sprint([]int64{running, soon, next, other}) {
		t.Errorf("held-back rows %v, want %v (the cancelled job's dropped, the woken one's gone)", rows, []int64{running, soon, next, other})
	}
	if n := wake(wsA, epA, epA, epA); n != 2 {
		t.Errorf("three slots of A's endpoint with two snoozed deliveries left: woke %d, want 2", n)
	}
	if got := state(soon); got != "available at its place" {
		t.Errorf("job %d (available for later) is %s after the second wake, want available at its place", soon, got)
	}
	if got := state(next); got != "available at its creation" {
		t.Errorf("job %d (noted with a place before its creation) is %s after the second wake, want available at its creation", next, got)
	}
}

// The rows of errand.webhook_held_back are the tenant's to write, and the
// wake runs as errand's owner: a row naming another workspace's job, or a
// job of another kind, or a delivery to another endpoint, wakes nothing.
func TestWakeHeldTrustsNoRowATenantWrote(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, pool := errandtest.MigratedDB(t, kinds()...)
	wsA := errandtest.NewWorkspace(t, pool, "a")
	wsB := errandtest.NewWorkspace(t, pool, "b")
	epA, _ := newEndpoint(t, pool, wsA, "https://hooks.example.com/a")
	epA2, _ := newEndpoint(t, pool, wsA, "https://hooks.example.com/a2")
	epB, _ := newEndpoint(t, pool, wsB, "https://hooks.example.com/b")
	foreign := laterJob(t, pool, wsB, "webhook.deliver", deliverArgs(epB), "1 week")
	ping := laterJob(t, pool, wsA, "ping", `{}`, "1 week")
	otherEndpoint := laterJob(t, pool, wsA, "webhook.deliver", deliverArgs(epA2), "1 week")

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var role string
	if err := tx.QueryRow(ctx, `SELECT errand.tenant_role()`).Scan(&role); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', $1, true)`, wsA); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL ROLE %q`, role)); err != nil {
		t.Fatal(err)
	}
	// Rows a tenant scoped to A may write: its own workspace, anything else.
	if _, err := tx.Exec(ctx, `INSERT INTO errand.webhook_held_back (endpoint_id, job_id, workspace_id, scheduled_at)
		VALUES ($1, $2, $4, '-infinity'), ($1, $3, $4, '-infinity'), ($1, $5, $4, '-infinity')`,
		epA, foreign, ping, wsA, otherEndpoint); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRow(ctx, `SELECT errand.webhook_wake_held(ARRAY[$1, $1, $1]::uuid[])`, epA).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("woke %d jobs through rows naming another workspace's delivery, a ping and a delivery to another endpoint, want 0", n)
	}
	for _, id := range []int64{foreign, ping, otherEndpoint} {
		var state string
		var ahead bool
		if err := pool.QueryRow(ctx, `SELECT state::text, scheduled_at > now() + interval '6 days' FROM errand.river_job WHERE id = $1`, id).Scan(&state, &ahead); err != nil {
			t.Fatal(err)
		}
		if state != "scheduled" || !ahead {
			t.Errorf("job %d is %s (still a week ahead: %v), want scheduled a week ahead", id, state, ahead)
		}
	}
}
