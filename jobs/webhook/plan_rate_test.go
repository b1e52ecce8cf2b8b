package webhook_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/errand-dev/errand/errandtest"
)

// A workspace's plan limits its deliveries per second across replicas: the
// excess waits (sleeping for its slot, or snoozed without using an attempt)
// and nothing is dropped; a workspace whose plan sets no limit is not held.
func TestWorkspacePlanRateLimitsDeliveriesWithoutDroppingAny(t *testing.T) {
	t.Parallel()
	const perSecond, messages = 5, 15
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {})
	url, pool := errandtest.MigratedDB(t, kinds()...)
	limited := errandtest.NewWorkspace(t, pool, "limited")
	free := errandtest.NewWorkspace(t, pool, "free")
	exec(t, pool, `INSERT INTO errand.plans (plan, webhooks_per_second) VALUES ('starter', $1)`, perSecond)
	exec(t, pool, `UPDATE errand.workspaces SET plan = 'starter' WHERE id = $1`, limited)
	daemonEnv := env(nil)
	errandtest.StartDaemon(t, url, daemonEnv, kinds()...)
	errandtest.StartDaemon(t, url, daemonEnv, kinds()...)
	newEndpoint(t, pool, limited, rc.URL)
	newEndpoint(t, pool, free, rc.URL)

	ctx := context.Background()
	exec(t, pool, `INSERT INTO errand.jobs (workspace_id, kind, args)
		SELECT ws, 'webhook.dispatch', jsonb_build_object('event_type', 'a.b', 'payload', jsonb_build_object('n', n))
		FROM unnest(ARRAY[$1, $2]::uuid[]) AS ws, generate_series(1, $3) AS n`, limited, free, messages)
	waitFor(t, "every delivery completed", func() bool {
		var done, all int
		if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'completed'), count(*)
			FROM errand.jobs WHERE kind = 'webhook.deliver'`).Scan(&done, &all); err != nil {
			t.Fatal(err)
		}
		return all == 2*messages && done == all
	})
	var most int
	if err := pool.QueryRow(ctx, `SELECT max(attempt) FROM errand.jobs WHERE kind = 'webhook.deliver'`).Scan(&most); err != nil {
		t.Fatal(err)
	}
	if most != 1 {
		t.Errorf("a delivery took %d attempts, want 1 each (waiting for the plan's rate is no attempt)", most)
	}
	if n := len(rc.received()); n != 2*messages {
		t.Errorf("%d requests arrived, want %d", n, 2*messages)
	}
	// Each delivery of the limited workspace took one slot, 1/5 s apart on
	// the database's clock, starting no earlier than the first delivery's
	// start: the schedule's end is at least 15 slots past it.
	var spread time.Duration
	if err := pool.QueryRow(ctx, `
		SELECT (SELECT next_at FROM errand.rate_limits WHERE name = 'webhook:workspace:' || $1::text)
		     - (SELECT min(attempted_at) FROM errand.river_job WHERE kind = 'webhook.deliver' AND metadata ->> 'workspace_id' = $1::text)`,
		limited).Scan(&spread); err != nil {
		t.Fatal(err)
	}
	if want := messages * time.Second / perSecond; spread < want {
		t.Errorf("the limited workspace's slots end %s after its first delivery started, want at least %s", spread, want)
	}
	var freeSlots int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.rate_limits WHERE name = 'webhook:workspace:' || $1::text`, free).Scan(&freeSlots); err != nil {
		t.Fatal(err)
	}
	if freeSlots != 0 {
		t.Errorf("the workspace without a plan limit was rate limited")
	}
}
