package webhook_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/errand-dev/errand/errandtest"
)

// At most ERRAND_WEBHOOK_ENDPOINT_CONCURRENCY deliveries are in flight to
// one endpoint across replicas. Two daemons with 3 webhook workers each
// (6 together, so a per-process cap of 3 would let 6 through) deliver 12
// messages to an endpoint capped at 3 that holds every request until the
// test lets go: exactly 3 arrive together, the rest are held back (snoozed,
// no attempt used), and all arrive once released.
func TestEndpointConcurrencyHoldsAcrossReplicas(t *testing.T) {
	t.Parallel()
	const limit, messages = 3, 12
	rc := newHoldingReceiver(t, func(int) bool { return true })
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	daemonEnv := env(map[string]string{
		"ERRAND_WEBHOOK_ENDPOINT_CONCURRENCY": fmt.Sprint(limit),
		"ERRAND_QUEUES":                       fmt.Sprintf("webhooks=%d", limit),
	})
	errandtest.StartDaemon(t, url, daemonEnv, kinds()...)
	errandtest.StartDaemon(t, url, daemonEnv, kinds()...)
	ep, _ := newEndpoint(t, pool, ws, rc.URL)

	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args)
		SELECT $1, 'webhook.dispatch', jsonb_build_object('event_type', 'a.b', 'payload', jsonb_build_object('n', n))
		FROM generate_series(1, $2) AS n`, ws, messages); err != nil {
		t.Fatal(err)
	}
	// Positive signals only: the cap is reached, deliveries beyond it have
	// been held back, several times each, and both replicas have worked
	// deliveries (one's in flight holding back the other's, or both's).
	waitFor(t, "3 requests in flight, the rest held back, both replicas working deliveries", func() bool {
		inFlight, over := rc.counts()
		full := inFlight == limit
		if over > limit {
			t.Fatalf("%d requests in flight at once, over the cap of %d", over, limit)
		}
		var snoozes, replicas int
		err := pool.QueryRow(ctx, `
			SELECT coalesce(sum((metadata ->> 'snoozes')::int), 0),
			       (SELECT count(DISTINCT a) FROM errand.river_job j, unnest(j.attempted_by) AS a WHERE j.kind = 'webhook.deliver')
			FROM errand.river_job WHERE kind = 'webhook.deliver'`).Scan(&snoozes, &replicas)
		if err != nil {
			t.Fatal(err)
		}
		return full && snoozes >= 2*(messages-limit) && replicas >= 2
	})
	rc.letGo()
	var jobs []int64
	rows, err := pool.Query(ctx, `SELECT id FROM errand.jobs WHERE kind = 'webhook.dispatch'`)
	if err != nil {
		t.Fatal(err)
	}
	dispatches, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range dispatches {
		errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
		var msg string
		if err := pool.QueryRow(ctx, `SELECT id::text FROM errand.webhook_messages WHERE job_id = $1`, id).Scan(&msg); err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, deliveries(t, pool, msg)...)
	}
	if len(jobs) != messages {
		t.Fatalf("%d deliveries for %d messages", len(jobs), messages)
	}
	for _, id := range jobs {
		if j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed"); j.Status != "completed" || j.Attempt != 1 {
			t.Errorf("delivery %+v, want completed on its first attempt (held back is no attempt)", j)
		}
	}
	if _, most := rc.counts(); most != limit {
		t.Errorf("%d requests were in flight at once, want %d", most, limit)
	}
	if n := len(rc.received()); n != messages {
		t.Errorf("%d requests, want %d", n, messages)
	}
	var leases int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.webhook_inflight WHERE endpoint_id = $1`, ep).Scan(&leases); err != nil {
		t.Fatal(err)
	}
	if leases != 0 {
		t.Errorf("%d delivery slots still taken after every delivery finished", leases)
	}
}

// A lease whose delivery died with its replica stops counting once it has
// expired, and is deleted when its endpoint is next found full (the
// successful attempts' log does not look for them any more).
func TestExpiredLeasesDoNotCountAndGoWhenTheEndpointIsFull(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ep, _ := newEndpoint(t, pool, ws, "https://hooks.example.com/in")
	// The test's pool is a superuser's: row level security does not apply.
	exec(t, pool, `INSERT INTO errand.webhook_inflight (job_id, attempt, workspace_id, endpoint_id, expires_at)
		VALUES (1001, 1, $1, $2, now() - interval '1 minute')`, ws, ep)
	take := func(jobID int64) bool {
		t.Helper()
		var taken bool
		if err := pool.QueryRow(ctx, `SELECT taken FROM errand.webhook_take_slots(ARRAY[$1::bigint], ARRAY[1], ARRAY[$2::uuid], $3, 1, interval '3 minutes')`,
			jobID, ep, ws).Scan(&taken); err != nil {
			t.Fatal(err)
		}
		return taken
	}
	leases := func() []int64 {
		t.Helper()
		return int64s(t, pool, `SELECT job_id FROM errand.webhook_inflight WHERE endpoint_id = $1 ORDER BY job_id`, ep)
	}

	if !take(1) {
		t.Fatal("job 1 was held back by a lease that expired a minute ago (cap 1)")
	}
	if got := leases(); fmt.Sprint(got) != "[1 1001]" {
		t.Fatalf("leases %v after job 1 took the free slot, want [1 1001] (the expired one stays while the endpoint has room)", got)
	}
	if take(2) {
		t.Fatal("job 2 took a slot while job 1 holds the only one")
	}
	if got := leases(); fmt.Sprint(got) != "[1]" {
		t.Errorf("leases %v after the endpoint was found full, want [1]: the expired lease should be gone", got)
	}
}

// A delivery that finds its endpoint full waits in its replica for the slot
// that replica's delivery in flight gives back, and takes it without a
// snooze. Two deliveries to an endpoint capped at 1, with a held-back wait
// of a minute (a snooze would hold the second one that long): the first is
// held by the receiver until the second is seen waiting
// (errand_webhook_waiting_deliveries), then both complete on their first
// attempt, never two in flight, and neither was snoozed.
func TestHeldBackDeliveryTakesTheSlotItsReplicaGivesBack(t *testing.T) {
	t.Parallel()
	rc := newHoldingReceiver(t, func(n int) bool { return n == 0 })
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, env(map[string]string{
		"ERRAND_WEBHOOK_ENDPOINT_CONCURRENCY": "1",
		"ERRAND_WEBHOOK_HELD_BACK_WAIT":       "1m",
		"ERRAND_QUEUES":                       "webhooks=4",
	}), kinds()...)
	newEndpoint(t, pool, ws, rc.URL)
	first, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {"n": 1}}`)
	second, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {"n": 2}}`)

	waitFor(t, "one request held by the receiver, one delivery waiting for its slot", func() bool {
		inFlight, _ := rc.counts()
		return inFlight == 1 && strings.Contains(scrape(t, d.Addr), "\nerrand_webhook_waiting_deliveries 1\n")
	})
	rc.letGo()
	for _, msg := range []string{first, second} {
		for _, id := range deliveries(t, pool, msg) {
			j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed")
			var snoozes int
			if err := pool.QueryRow(context.Background(), `SELECT coalesce((metadata ->> 'snoozes')::int, 0) FROM errand.river_job WHERE id = $1`, id).Scan(&snoozes); err != nil {
				t.Fatal(err)
			}
			if j.Status != "completed" || j.Attempt != 1 || snoozes != 0 {
				t.Errorf("delivery %+v snoozed %d times, want completed on its first attempt without a snooze", j, snoozes)
			}
		}
	}
	if _, most := rc.counts(); most != 1 {
		t.Errorf("%d requests were in flight at once, want 1", most)
	}
}

// An heir sends to its endpoint as the hand-over finds it: a URL changed
// and a secret rotated while it waited are what it uses, not what its own
// load read before it waited.
func TestAnHeirSendsToTheEndpointAsTheHandOverFindsIt(t *testing.T) {
	t.Parallel()
	before := newHoldingReceiver(t, func(n int) bool { return n == 0 })
	moved := newReceiver(t, nil)
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, env(map[string]string{
		"ERRAND_WEBHOOK_ENDPOINT_CONCURRENCY": "1",
		"ERRAND_WEBHOOK_HELD_BACK_WAIT":       "1m",
		"ERRAND_QUEUES":                       "webhooks=4",
	}), kinds()...)
	ep, _ := newEndpoint(t, pool, ws, before.URL)
	first, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {"n": 1}}`)
	second, body := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {"n": 2}}`)
	waitFor(t, "one request held by the receiver, one delivery waiting for its slot", func() bool {
		inFlight, _ := before.counts()
		return inFlight == 1 && strings.Contains(scrape(t, d.Addr), "\nerrand_webhook_waiting_deliveries 1\n")
	})

	exec(t, pool, `UPDATE errand.webhook_endpoints SET url = $2 WHERE id = $1`, ep, moved.URL+"/moved")
	var secret string
	if err := pool.QueryRow(context.Background(), `SELECT errand.webhook_rotate_secret($1)`, ep).Scan(&secret); err != nil {
		t.Fatal(err)
	}
	before.letGo()
	for _, msg := range []string{first, second} {
		for _, id := range deliveries(t, pool, msg) {
			if j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed"); j.Status != "completed" || j.Attempt != 1 {
				t.Errorf("delivery %+v, want completed on its first attempt", j)
			}
		}
	}
	if n := len(before.received()); n != 1 {
		t.Errorf("the old URL got %d requests, want 1 (the first delivery's, sent before the change)", n)
	}
	reqs := moved.received()
	if len(reqs) != 1 || reqs[0].path != "/moved" || string(reqs[0].body) != body {
		t.Fatalf("the new URL got %d requests (%+v), want the second message's", len(reqs), reqs)
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(reqs[0].body, reqs[0].header); err != nil {
		t.Errorf("the heir's request does not verify with the secret rotated while it waited: %v", err)
	}
}

// scrape reads the daemon's /metrics.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
