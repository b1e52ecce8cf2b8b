package webhook_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

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
	ctx := context.Background()
	ownerURL := testdb.PlainOwnerDatabase(t, true)
	u, err := url.Parse(ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	owner := errandtest.Pool(t, ownerURL)
	admin := errandtest.Pool(t, testdb.WithDatabase(testdb.AdminURL(t), strings.TrimPrefix(u.Path, "/")))
	wsA := errandtest.NewWorkspace(t, admin, "a")
	wsB := errandtest.NewWorkspace(t, admin, "b")
	disabledUnscoped, _ := newEndpoint(t, admin, wsA, "https://hooks.example.com/1")
	disabledScoped, _ := newEndpoint(t, admin, wsA, "https://hooks.example.com/2")
	kept, _ := newEndpoint(t, admin, wsA, "https://hooks.example.com/3")
	deleted, _ := newEndpoint(t, admin, wsB, "https://hooks.example.com/4")
	for i, ep := range []string{disabledUnscoped, disabledUnscoped, disabledScoped, kept, kept, deleted} {
		ws := wsA
		if ep == deleted {
			ws = wsB
		}
		exec(t, admin, `INSERT INTO errand.webhook_held_back (endpoint_id, job_id, workspace_id, scheduled_at) VALUES ($1, $2, $3, now())`, ep, 1000+i, ws)
	}
	notes := func(ep string) int {
		t.Helper()
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM errand.webhook_held_back WHERE endpoint_id = $1`, ep).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	exec(t, admin, `UPDATE errand.webhook_endpoints SET enabled = false WHERE id = $1`, disabledUnscoped)
	if n := notes(disabledUnscoped); n != 0 {
		t.Errorf("an endpoint disabled by an unscoped role that bypasses row level security kept %d held-back notes", n)
	}

	var scopeAfter string
	err = pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', $1, true)`, wsA); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE errand.webhook_endpoints SET enabled = false WHERE id = $1`, disabledScoped); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT current_setting('app.current_workspace_id')`).Scan(&scopeAfter)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := notes(disabledScoped); n != 0 {
		t.Errorf("an endpoint disabled in a transaction scoped to its workspace kept %d held-back notes", n)
	}
	if scopeAfter != wsA {
		t.Errorf("after disabling an endpoint the transaction's scope is %q; want its own %s back", scopeAfter, wsA)
	}

	exec(t, admin, `DELETE FROM errand.webhook_endpoints WHERE id = $1`, deleted)
	if n := notes(deleted); n != 0 {
		t.Errorf("a deleted endpoint left %d held-back notes", n)
	}
	if n := notes(kept); n != 2 {
		t.Errorf("an endpoint still enabled has %d held-back notes after the others stopped; want its 2", n)
	}
}
