package webhook_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/internal/testdb"
)

// errand's role may be a plain owner: no superuser, no BYPASSRLS, no
// CREATEROLE (an administrator created its tenant role), and forced row
// level security scopes errand itself. Webhooks work there end to end, and the SQL
// functions (which run as that owner and so see no row until they know its
// workspace) rotate and replay for an unscoped caller.
func TestWebhooksUnderAPlainOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ownerURL := testdb.PlainOwnerDatabase(t, false)
	var out bytes.Buffer
	if err := errand.Main(ctx, []string{"migrate"}, errandtest.Env(map[string]string{"DATABASE_URL": ownerURL}), &out, &out); err != nil {
		t.Fatalf("migrate as a plain owner: %v\n%s", err, out.String())
	}
	// What the README asks an administrator to do once for such a role.
	testdb.CreateTenantRole(t, ownerURL)
	pool := errandtest.Pool(t, ownerURL)
	rc := newReceiver(t, nil)
	errandtest.StartDaemon(t, ownerURL, env(nil))

	ws := errandtest.NewWorkspace(t, pool, "acme")
	// The owner, like an app's role, writes tenant rows in a scoped
	// transaction.
	var ep string
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', $1, true)`, ws); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, $2) RETURNING id::text`, ws, rc.URL).Scan(&ep)
	})
	if err != nil {
		t.Fatal(err)
	}
	dispatchID := errandtest.Enqueue(t, pool, ws, "webhook.dispatch", `{"event_type": "a.b", "payload": {"n": 1}}`)
	errandtest.WaitJob(t, pool, dispatchID, 30*time.Second, "completed")
	waitFor(t, "the delivery", func() bool { return len(rc.received()) == 1 })
	msg := rc.received()[0].header.Get("webhook-id")

	// Unscoped, the owner sees no tenant row at all...
	var visible int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.webhook_endpoints`).Scan(&visible); err != nil {
		t.Fatal(err)
	}
	if visible != 0 {
		t.Fatalf("an unscoped plain owner sees %d endpoints: row level security is not forced", visible)
	}
	// ...yet rotation and replay work for it.
	var secret string
	if err := pool.QueryRow(ctx, `SELECT errand.webhook_rotate_secret($1)`, ep).Scan(&secret); err != nil || secret == "" {
		t.Fatalf("rotate: %q %v", secret, err)
	}
	var replayed int64
	if err := pool.QueryRow(ctx, `SELECT errand.webhook_replay($1)`, msg).Scan(&replayed); err != nil {
		t.Fatalf("replay: %v", err)
	}
	errandtest.WaitJob(t, pool, replayed, 30*time.Second, "completed")
	if reqs := rc.received(); len(reqs) != 2 || reqs[1].header.Get("webhook-id") != msg {
		t.Errorf("requests %d, want the delivery and its replay", len(reqs))
	}
}
