package webhook_test

import (
	"context"
	"net/http"
	"slices"
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
	newEndpoint(t, pool, limited, rc.URL+"/limited")
	newEndpoint(t, pool, free, rc.URL+"/free")

	ctx := context.Background()
	start := time.Now()
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
	// The limited workspace's requests arrived spaced by its rate. Each
	// delivery reserves a slot on the database's clock (the first no
	// earlier than the INSERT above, the next 1/5 s apart) and is sent no
	// earlier than its slot, so by the k-th arrival (0-based) k+1 slots had
	// started: it came at least k/5 s after the INSERT. A lower bound only;
	// how much later is the machine's business. (The database runs on this
	// machine's clock.)
	var arrived []time.Time
	for _, r := range rc.received() {
		if r.path == "/limited" {
			arrived = append(arrived, r.at)
		}
	}
	slices.SortFunc(arrived, time.Time.Compare)
	if len(arrived) != messages {
		t.Fatalf("%d requests of the limited workspace arrived, want %d", len(arrived), messages)
	}
	for k, at := range arrived {
		// A millisecond for the database's microseconds.
		if want := time.Duration(k)*time.Second/perSecond - time.Millisecond; at.Sub(start) < want {
			t.Errorf("request %d of the limited workspace arrived %s after the dispatches were inserted, want at least %s (%d a second)", k+1, at.Sub(start), want, perSecond)
		}
	}
	var freeSlots int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.rate_limits WHERE name = 'webhook:workspace:' || $1::text`, free).Scan(&freeSlots); err != nil {
		t.Fatal(err)
	}
	if freeSlots != 0 {
		t.Errorf("the workspace without a plan limit was rate limited")
	}
}
