package webhook_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/internal/testdb"
)

// A disabled or deleted endpoint's held-back notes go with its cancelled
// deliveries (migration 038), whoever stops it: an app's role that bypasses
// row level security, unscoped; errand's own role scoped to the workspace
// (whose scope the trigger gives back); a delete. Under a plain owner, so
// the trigger (which runs as that owner, with row level security forced on
// it) sees the notes only by scoping itself.
func TestAStoppedEndpointTakesItsHeldBackNotesWithIt(t *testing.T) {
	t.Parallel()
	owner, admin := ownerAndAdmin(t)
	wsA := errandtest.NewWorkspace(t, admin, "a")
	wsB := errandtest.NewWorkspace(t, admin, "b")
	disabledUnscoped, _ := newEndpoint(t, admin, wsA, "https://hooks.example.com/1")
	disabledScoped, _ := newEndpoint(t, admin, wsA, "https://hooks.example.com/2")
	kept, _ := newEndpoint(t, admin, wsA, "https://hooks.example.com/3")
	deleted, _ := newEndpoint(t, admin, wsB, "https://hooks.example.com/4")
	disabledFromB, _ := newEndpoint(t, admin, wsA, "https://hooks.example.com/5")
	for i, ep := range []string{disabledUnscoped, disabledUnscoped, disabledScoped, kept, kept, deleted, disabledFromB} {
		ws := wsA
		if ep == deleted {
			ws = wsB
		}
		exec(t, admin, `INSERT INTO errand.webhook_held_back (endpoint_id, job_id, workspace_id, scheduled_at) VALUES ($1, $2, $3, now())`, ep, 1000+i, ws)
	}

	// disable stops ep in a transaction of pool scoped to scope ("": none)
	// and returns the transaction's scope after it.
	disable := func(pool *pgxpool.Pool, scope, ep string) string {
		t.Helper()
		return scopeAfter(t, pool, scope, `UPDATE errand.webhook_endpoints SET enabled = false WHERE id = $1`, ep)
	}
	if after := disable(admin, "", disabledUnscoped); after != "" {
		t.Errorf("after an unscoped transaction disabled an endpoint its scope is %q; want none", after)
	}
	if n := heldNotes(t, admin, disabledUnscoped); n != 0 {
		t.Errorf("an endpoint disabled by an unscoped role that bypasses row level security kept %d held-back notes", n)
	}
	if after := disable(owner, wsA, disabledScoped); after != wsA {
		t.Errorf("after disabling an endpoint the transaction's scope is %q; want its own %s back", after, wsA)
	}
	if n := heldNotes(t, admin, disabledScoped); n != 0 {
		t.Errorf("an endpoint disabled in a transaction scoped to its workspace kept %d held-back notes", n)
	}
	// A role that bypasses row level security, scoped to another workspace.
	if after := disable(admin, wsB, disabledFromB); after != wsB {
		t.Errorf("after disabling workspace A's endpoint in a transaction scoped to B the scope is %q; want B's %s back", after, wsB)
	}
	if n := heldNotes(t, admin, disabledFromB); n != 0 {
		t.Errorf("an endpoint disabled from a transaction scoped to another workspace kept %d held-back notes", n)
	}

	exec(t, admin, `DELETE FROM errand.webhook_endpoints WHERE id = $1`, deleted)
	if n := heldNotes(t, admin, deleted); n != 0 {
		t.Errorf("a deleted endpoint left %d held-back notes", n)
	}
	if n := heldNotes(t, admin, kept); n != 2 {
		t.Errorf("an endpoint still enabled has %d held-back notes after the others stopped; want its 2", n)
	}
}

// A delivery waiting in its replica for a slot of an endpoint that is then
// disabled: should its held-back note be written just after the disable's
// trigger deleted the endpoint's notes (it read the endpoint enabled in a
// snapshot taken before the disable committed), its next load, which finds
// the endpoint disabled and fails it, deletes the note. The note's late
// write is put back by hand here, after the disable, to make that moment.
func TestADeliveryThatFindsItsEndpointDisabledTakesItsNoteWithIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rc := newHoldingReceiver(t, func(n int) bool { return n == 0 })
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, env(map[string]string{
		"ERRAND_WEBHOOK_ENDPOINT_CONCURRENCY": "1",
		"ERRAND_WEBHOOK_HELD_BACK_WAIT":       "1m",
		"ERRAND_QUEUES":                       "webhooks=4",
	}), kinds()...)
	ep, _ := newEndpoint(t, pool, ws, rc.URL)
	first, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {"n": 1}}`)
	second, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {"n": 2}}`)
	held, waiting := deliveries(t, pool, first)[0], deliveries(t, pool, second)[0]
	waitFor(t, "the first delivery's request held by the receiver and the second waiting in the replica with a note", func() bool {
		inFlight, _ := rc.counts()
		var noted bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM errand.webhook_held_back h JOIN errand.river_job j ON j.id = h.job_id
			WHERE h.endpoint_id = $1 AND h.job_id = $2 AND j.state = 'running')`, ep, waiting).Scan(&noted); err != nil {
			t.Fatal(err)
		}
		return inFlight == 1 && noted
	})
	exec(t, pool, `UPDATE errand.webhook_endpoints SET enabled = false WHERE id = $1`, ep)
	exec(t, pool, `INSERT INTO errand.webhook_held_back (endpoint_id, job_id, workspace_id, scheduled_at) VALUES ($1, $2, $3, now())`, ep, waiting, ws)
	rc.letGo()
	if j := errandtest.WaitJob(t, pool, held, 30*time.Second, "completed", "failed"); j.Status != "completed" {
		t.Errorf("the delivery in flight when its endpoint was disabled: %+v, want completed", j)
	}
	if j := errandtest.WaitJob(t, pool, waiting, 30*time.Second, "completed", "failed"); j.Status != "failed" {
		t.Errorf("the delivery waiting for a slot of the disabled endpoint: %+v, want failed", j)
	}
	if notes := heldNotes(t, pool, ep); notes != 0 {
		t.Errorf("%d held-back notes left of the disabled endpoint after its waiting delivery failed", notes)
	}
}

// A deleted workspace's webhook leases and held-back notes go with it
// (migration 039), whoever deletes it: the app's plain owner role,
// unscoped (row level security forced on it, so the trigger sees them only
// by scoping itself), or a role that bypasses row level security, scoped
// to another workspace (whose scope the trigger gives back). Another
// workspace's rows stay.
func TestADeletedWorkspaceTakesItsWebhookLeasesAndNotesWithIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	owner, admin := ownerAndAdmin(t)
	wsA := errandtest.NewWorkspace(t, admin, "a")
	wsB := errandtest.NewWorkspace(t, admin, "b")
	wsC := errandtest.NewWorkspace(t, admin, "c")
	eps := map[string]string{}
	for i, ws := range []string{wsA, wsB, wsC} {
		eps[ws], _ = newEndpoint(t, admin, ws, "https://hooks.example.com/"+ws)
		exec(t, admin, `INSERT INTO errand.webhook_held_back (endpoint_id, job_id, workspace_id, scheduled_at) VALUES ($1, $2, $3, now())`, eps[ws], 1000+i, ws)
		exec(t, admin, `INSERT INTO errand.webhook_inflight (job_id, attempt, workspace_id, endpoint_id, expires_at) VALUES ($1, 1, $2, $3, now() + interval '3 minutes')`, 2000+i, ws, eps[ws])
	}
	leases := func(ws string) int {
		t.Helper()
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM errand.webhook_inflight WHERE workspace_id = $1`, ws).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// remove deletes ws in a transaction of pool scoped to scope ("": none)
	// and returns the transaction's scope after it.
	remove := func(pool *pgxpool.Pool, scope, ws string) string {
		t.Helper()
		return scopeAfter(t, pool, scope, `DELETE FROM errand.workspaces WHERE id = $1`, ws)
	}

	if after := remove(owner, "", wsA); after != "" {
		t.Errorf("after an unscoped transaction deleted a workspace its scope is %q; want none", after)
	}
	if notes, leases := heldNotes(t, admin, eps[wsA]), leases(wsA); notes != 0 || leases != 0 {
		t.Errorf("a workspace deleted by its plain owner, unscoped, left %d held-back notes and %d leases", notes, leases)
	}
	if after := remove(admin, wsB, wsC); after != wsB {
		t.Errorf("after deleting workspace C in a transaction scoped to B the scope is %q; want B's %s back", after, wsB)
	}
	if notes, leases := heldNotes(t, admin, eps[wsC]), leases(wsC); notes != 0 || leases != 0 {
		t.Errorf("a workspace deleted from a transaction scoped to another workspace left %d held-back notes and %d leases", notes, leases)
	}
	if notes, leases := heldNotes(t, admin, eps[wsB]), leases(wsB); notes != 1 || leases != 1 {
		t.Errorf("the workspace still there has %d held-back notes and %d leases; want its 1 and 1", notes, leases)
	}
}

// ownerAndAdmin are pools of a database migrated by a plain owner (row
// level security forced on it): as that owner, and as the administrator,
// who bypasses row level security.
func ownerAndAdmin(t *testing.T) (owner, admin *pgxpool.Pool) {
	t.Helper()
	ownerURL := testdb.PlainOwnerDatabase(t, true)
	u, err := url.Parse(ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	return errandtest.Pool(t, ownerURL), errandtest.Pool(t, testdb.WithDatabase(testdb.AdminURL(t), strings.TrimPrefix(u.Path, "/")))
}

// scopeAfter runs sql, which must change one row, in a transaction of pool
// scoped to scope ("": none) and returns the transaction's scope after it.
func scopeAfter(t *testing.T, pool *pgxpool.Pool, scope, sql string, args ...any) string {
	t.Helper()
	ctx := context.Background()
	var after string
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', $1, true)`, scope); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, sql, args...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("%s changed %d rows, want 1", sql, tag.RowsAffected())
		}
		return tx.QueryRow(ctx, `SELECT coalesce(current_setting('app.current_workspace_id', true), '')`).Scan(&after)
	})
	if err != nil {
		t.Fatal(err)
	}
	return after
}
