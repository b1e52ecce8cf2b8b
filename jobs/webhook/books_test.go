package webhook

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/store"
)

// One batch holding deliveries of three workspaces runs their transactions
// side by side: each delivery reads its own workspace's message and
// endpoint and takes a slot; one that names another workspace's message
// finds nothing (row level security scopes each transaction); and the next
// batch logs the attempts in the right workspaces and gives every slot
// back.
func TestBatchOfSeveralWorkspacesKeepsEachInItsOwn(t *testing.T) {
	ctx := context.Background()
	st := bookStore(t)
	var tenants []tenant
	for i := range 3 {
		tenants = append(tenants, newTenant(t, st, i))
	}
	d := &deliverer{cfg: config{concurrency: 10}}
	d.books.book = d.book
	// do runs the calls at once, as concurrent deliveries would.
	do := func(ins []book) ([]delivery, []error) {
		outs, errs := make([]delivery, len(ins)), make([]error, len(ins))
		var wg sync.WaitGroup
		for i, in := range ins {
			wg.Go(func() { outs[i], errs[i] = d.books.do(in) })
		}
		wg.Wait()
		return outs, errs
	}
	var loads []book
	for i, tn := range tenants {
		for j := range 2 {
			loads = append(loads, book{store: st, workspaceID: tn.ws,
				load: &wanted{jobID: int64(10*i + j + 1), attempt: 1, messageID: tn.message, endpointID: tn.endpoint}})
		}
	}
	// Workspace 0 asks for workspace 1's message.
	loads = append(loads, book{store: st, workspaceID: tenants[0].ws,
		load: &wanted{jobID: 99, attempt: 1, messageID: tenants[1].message, endpointID: tenants[0].endpoint}})
	outs, errs := do(loads)
	for i := range len(loads) - 1 {
		tn := tenants[i/2]
		if errs[i] != nil {
			t.Fatalf("delivery %d of workspace %d: %v", i, i/2, errs[i])
		}
		if o := outs[i]; !o.found || o.url != tn.url || string(o.body) != tn.body || !o.enabled || !o.slot {
			t.Errorf("delivery %d of workspace %d read %+v, want its own endpoint %s and message %s, with a slot", i, i/2, o, tn.url, tn.body)
		}
	}
	if o, err := outs[len(loads)-1], errs[len(loads)-1]; err != nil || o.found || o.slot {
		t.Errorf("a delivery naming another workspace's message read %+v (error %v), want nothing found and no slot", o, err)
	}

	var done []book
	for _, l := range loads[:len(loads)-1] {
		w := l.load
		done = append(done, book{store: st, workspaceID: l.workspaceID,
			done: &attemptRow{workspaceID: l.workspaceID, messageID: w.messageID, endpointID: w.endpointID, jobID: w.jobID, attempt: w.attempt, status: 204}})
	}
	if _, errs := do(done); errors.Join(errs...) != nil {
		t.Fatal(errors.Join(errs...))
	}
	var wrong, logged, leases int
	if err := st.Pool().QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE a.workspace_id <> m.workspace_id OR a.workspace_id <> e.workspace_id), count(*),
		       (SELECT count(*) FROM errand.webhook_inflight)
		FROM errand.webhook_attempts a JOIN errand.webhook_messages m ON m.id = a.message_id JOIN errand.webhook_endpoints e ON e.id = a.endpoint_id`).Scan(&wrong, &logged, &leases); err != nil {
		t.Fatal(err)
	}
	if logged != 6 || wrong != 0 || leases != 0 {
		t.Errorf("%d attempts logged (%d in another workspace than their message's or endpoint's), %d slots still taken; want 6, 0, 0", logged, wrong, leases)
	}
	if n := len(d.books.groups); n != 0 {
		t.Errorf("%d batching groups left with no delivery using them", n)
	}
}

// A workspace whose bookkeeping waits for a lock (an app's transaction
// holding its endpoint's row while the first success there marks it
// healthy) does not hold up another workspace's deliveries; it goes on
// when the lock goes.
func TestBookkeepingWaitingForALockHoldsUpOnlyItsOwn(t *testing.T) {
	ctx := context.Background()
	st := bookStore(t)
	a, b := newTenant(t, st, 0), newTenant(t, st, 1)
	d := &deliverer{cfg: config{concurrency: 10}}
	d.books.book = d.book

	app, err := st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Rollback(ctx)
	if _, err := app.Exec(ctx, `SELECT 1 FROM errand.webhook_endpoints WHERE id = $1 FOR UPDATE`, a.endpoint); err != nil {
		t.Fatal(err)
	}
	logged := make(chan error, 1)
	go func() {
		_, err := d.books.do(book{store: st, workspaceID: a.ws,
			done: &attemptRow{workspaceID: a.ws, messageID: a.message, endpointID: a.endpoint, jobID: 1, attempt: 1, status: 204}})
		logged <- err
	}()
	waitUntil(t, "the log of workspace A's success waiting for the app's lock", func() bool {
		var n int
		if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	out, err := d.books.do(book{store: st, workspaceID: b.ws, load: &wanted{jobID: 10, attempt: 1, messageID: b.message, endpointID: b.endpoint}})
	if err != nil || !out.slot {
		t.Fatalf("workspace B's delivery, while workspace A's log waits for a lock: %+v, %v; want a slot", out, err)
	}
	select {
	case err := <-logged:
		t.Fatalf("workspace A's log ended (%v) while the app still held the lock", err)
	default:
	}
	if err := app.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-logged; err != nil {
		t.Fatalf("workspace A's log after the lock went: %v", err)
	}
}

// When the transaction of a batch holding both ends fails, neither end's
// failure fails the other's deliveries: a log that cannot be written
// (here, an attempt of a message id that is no uuid) fails only its own
// call, and the deliveries prepared beside it still get their slots; a
// successful log beside a bad read is still written.
func TestOneEndsFailureDoesNotFailTheOthers(t *testing.T) {
	ctx := context.Background()
	st := bookStore(t)
	tn := newTenant(t, st, 0)
	ws, endpoint, message := tn.ws, tn.endpoint, tn.message
	d := &deliverer{cfg: config{concurrency: 10}}
	calls := []*call[book, delivery]{
		{in: book{store: st, workspaceID: ws, done: &attemptRow{workspaceID: ws, messageID: "not-a-uuid", endpointID: endpoint, jobID: 1, attempt: 1, status: 204}}},
		{in: book{store: st, workspaceID: ws, load: &wanted{jobID: 2, attempt: 1, messageID: message, endpointID: endpoint}}},
	}
	d.book(ctx, bookKey{store: st, workspaceID: ws}, calls)
	if calls[0].err == nil {
		t.Error("a log of a message id that is no uuid succeeded")
	}
	if calls[1].err != nil || !calls[1].out.slot {
		t.Errorf("a delivery prepared beside a failed log: %+v, %v; want a slot", calls[1].out, calls[1].err)
	}

	calls = []*call[book, delivery]{
		{in: book{store: st, workspaceID: ws, done: &attemptRow{workspaceID: ws, messageID: message, endpointID: endpoint, jobID: 2, attempt: 1, status: 204}}},
		{in: book{store: st, workspaceID: ws, load: &wanted{jobID: 3, attempt: 1, messageID: "not-a-uuid", endpointID: endpoint}}},
	}
	d.book(ctx, bookKey{store: st, workspaceID: ws}, calls)
	if calls[0].err != nil {
		t.Errorf("a log beside a bad read failed: %v", calls[0].err)
	}
	if calls[1].err == nil {
		t.Error("a read of a message id that is no uuid succeeded")
	}
	var logged, leases int
	if err := st.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM errand.webhook_attempts WHERE job_id = 2), (SELECT count(*) FROM errand.webhook_inflight)`).Scan(&logged, &leases); err != nil {
		t.Fatal(err)
	}
	if logged != 1 || leases != 0 {
		t.Errorf("%d attempts of job 2 logged, %d slots taken; want 1 and 0", logged, leases)
	}
}

// waitUntil polls cond for up to 30 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
	}
}

// bookStore is a store on a migrated database of the test's own.
func bookStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), testdb.NewDatabase(t, true), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// tenant is a workspace with one endpoint and one message.
type tenant struct{ ws, endpoint, message, url, body string }

// newTenant makes workspace number i with an endpoint and a message.
func newTenant(t *testing.T, st *store.Store, i int) tenant {
	t.Helper()
	ctx := context.Background()
	w, err := store.EnsureWorkspace(ctx, st, fmt.Sprintf("W%d", i), fmt.Sprintf("w%d", i))
	if err != nil {
		t.Fatal(err)
	}
	tn := tenant{ws: w.ID, url: fmt.Sprintf("https://hooks%d.example.com/in", i), body: fmt.Sprintf(`{"n": %d}`, i)}
	if err := st.Pool().QueryRow(ctx, `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, $2) RETURNING id::text`, tn.ws, tn.url).Scan(&tn.endpoint); err != nil {
		t.Fatal(err)
	}
	if err := st.Pool().QueryRow(ctx, `INSERT INTO errand.webhook_messages (workspace_id, event_type, body) VALUES ($1, 'a.b', $2) RETURNING id::text`, tn.ws, tn.body).Scan(&tn.message); err != nil {
		t.Fatal(err)
	}
	return tn
}

// A logged success hands its live lease to its heir in the same
// transaction (the endpoint's count of leases unchanged, the heir's
// held-back row gone), and hands nothing over when its lease has expired:
// an expired lease no longer counts, so another delivery may hold that slot
// by then, and handing it over would put the endpoint over its cap.
func TestALoggedSuccessHandsOnlyALiveSlotToItsHeir(t *testing.T) {
	ctx := context.Background()
	st := bookStore(t)
	tn := newTenant(t, st, 0)
	const limit = 1
	load := func(job int64) delivery {
		t.Helper()
		out, _, err := bookDeliveries(ctx, st, tn.ws, nil, []wanted{{jobID: job, attempt: 1, messageID: tn.message, endpointID: tn.endpoint}}, limit, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return out[0]
	}
	logWithHeir := func(job, heir int64) bool {
		t.Helper()
		_, handed, err := bookDeliveries(ctx, st, tn.ws, []attemptRow{{workspaceID: tn.ws, messageID: tn.message, endpointID: tn.endpoint,
			jobID: job, attempt: 1, status: 204, heirJobID: heir, heirAttempt: 1}}, nil, limit, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return handed[0] != nil
	}
	leases := func() string {
		t.Helper()
		return fmt.Sprint(int64sOf(t, st, `SELECT job_id FROM errand.webhook_inflight ORDER BY job_id`))
	}

	if !load(1).slot || load(2).slot {
		t.Fatal("with a cap of 1, job 1 should take the slot and job 2 find the endpoint full")
	}
	if held := fmt.Sprint(int64sOf(t, st, `SELECT job_id FROM errand.webhook_held_back`)); held != "[2]" {
		t.Fatalf("held-back rows %s after job 2 found the endpoint full, want [2]", held)
	}
	if !logWithHeir(1, 2) {
		t.Fatal("job 1's live slot was not handed to job 2")
	}
	if got := leases(); got != "[2]" {
		t.Errorf("leases %s after the hand-over, want [2]", got)
	}
	if held := fmt.Sprint(int64sOf(t, st, `SELECT job_id FROM errand.webhook_held_back`)); held != "[]" {
		t.Errorf("held-back rows %s after job 2 was handed the slot, want none", held)
	}

	// Job 2's replica stalls past its lease; job 3 takes the slot.
	if _, err := st.Pool().Exec(ctx, `UPDATE errand.webhook_inflight SET expires_at = clock_timestamp() - interval '1 second' WHERE job_id = 2`); err != nil {
		t.Fatal(err)
	}
	if !load(3).slot {
		t.Fatal("job 3 was held back by an expired lease")
	}
	if logWithHeir(2, 4) {
		t.Error("job 2 handed over a lease that had expired")
	}
	if got := leases(); got != "[3]" {
		t.Errorf("leases %s after job 2 logged its attempt, want [3]: one slot, job 3's", got)
	}
}

// int64sOf is a query's one bigint column, read through the store's pool.
func int64sOf(t *testing.T, st *store.Store, sql string) []int64 {
	t.Helper()
	rows, err := st.Pool().Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
