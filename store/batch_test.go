package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/store"
)

// A pipeline sent by InWorkspaceBatch is scoped like InWorkspace's
// transactions (one workspace's rows, the tenant role), commits, and leaves
// the connection unscoped for its next user.
func TestInWorkspaceBatchSeesOnlyTheScopedWorkspaceAndCommits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testdb.URL(t)
	admin := testdb.Pool(t, dbURL)
	a := newWorkspace(t, admin, "batch-a-"+randomHex(t))
	b := newWorkspace(t, admin, "batch-b-"+randomHex(t))
	addMembers(t, admin, a, 2)
	addMembers(t, admin, b, 3)
	tenant, err := store.TenantRole(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	// One connection, so the check afterwards runs where the batch ran.
	st, err := store.Open(ctx, dbURL, store.Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	batch := &pgx.Batch{}
	batch.Queue(`SELECT current_user::text, (SELECT count(*) FROM errand.workspace_members)`)
	batch.Queue(`INSERT INTO errand.workspace_members (workspace_id, user_id) VALUES ($1, gen_random_uuid())`, a)
	var user string
	var seen int
	err = st.InWorkspaceBatch(ctx, a, batch, func(br pgx.BatchResults) error {
		return br.QueryRow().Scan(&user, &seen)
	})
	if err != nil {
		t.Fatalf("InWorkspaceBatch: %v", err)
	}
	if user != tenant {
		t.Errorf("the batch ran as %q, want the tenant role %s", user, tenant)
	}
	if seen != 2 {
		t.Errorf("a count without WHERE saw %d members, want workspace A's 2", seen)
	}
	if n := countMembers(t, admin, a); n != 3 {
		t.Errorf("workspace A has %d members after the batch, want 3 (its insert committed)", n)
	}

	var after, scope string
	if err := st.QueryRow(ctx, `SELECT current_user::text, coalesce(current_setting('app.current_workspace_id', true), '')`).Scan(&after, &scope); err != nil {
		t.Fatal(err)
	}
	if after == tenant || scope != "" {
		t.Errorf("after the batch the connection runs as %q scoped to %q, want errand's own role and no workspace", after, scope)
	}
}

// A workspace that cannot be scoped to stops the whole pipeline: nothing
// after the scope runs (a statement that would write as errand's own role,
// which sees every workspace, included), and the error is
// ErrWorkspaceNotFound, as InWorkspace's is.
func TestInWorkspaceBatchRefusesBadWorkspaceID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testdb.URL(t)
	admin := testdb.Pool(t, dbURL)
	st := openStore(t, dbURL)
	existing, cases := badWorkspaceIDs(t, admin, "batch-bad")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			batch := &pgx.Batch{}
			batch.Queue(`INSERT INTO errand.workspace_members (workspace_id, user_id) VALUES ($1, gen_random_uuid())`, existing)
			called := false
			err := st.InWorkspaceBatch(ctx, tc.workspaceID, batch, func(pgx.BatchResults) error {
				called = true
				return nil
			})
			if !errors.Is(err, store.ErrWorkspaceNotFound) {
				t.Fatalf("InWorkspaceBatch = %v, want ErrWorkspaceNotFound", err)
			}
			if called {
				t.Error("read ran for a workspace that cannot be scoped to")
			}
			if n := countMembers(t, admin, existing); n != 0 {
				t.Errorf("the batch's insert ran: workspace %s has %d members, want 0", existing, n)
			}
		})
	}
}

// An error in any statement rolls back the ones before it: the pipeline is
// one transaction.
func TestInWorkspaceBatchRollsBackEveryStatementOnAnError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testdb.URL(t)
	admin := testdb.Pool(t, dbURL)
	st := openStore(t, dbURL)
	a := newWorkspace(t, admin, "batch-rb-a-"+randomHex(t))
	b := newWorkspace(t, admin, "batch-rb-b-"+randomHex(t))

	batch := &pgx.Batch{}
	batch.Queue(`INSERT INTO errand.workspace_members (workspace_id, user_id) VALUES ($1, gen_random_uuid())`, a)
	// Another workspace's row: refused by row level security.
	batch.Queue(`INSERT INTO errand.workspace_members (workspace_id, user_id) VALUES ($1, gen_random_uuid())`, b)
	err := st.InWorkspaceBatch(ctx, a, batch, nil)
	assertPgCode(t, err, sqlInsufficientPrivilege, "a batch that writes another workspace's row")
	if n := countMembers(t, admin, a); n != 0 {
		t.Errorf("workspace A has %d members, want 0: the first insert was not rolled back", n)
	}
	if n := countMembers(t, admin, b); n != 0 {
		t.Errorf("workspace B has %d members, want 0", n)
	}
}
