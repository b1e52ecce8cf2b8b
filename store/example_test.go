package store_test

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/store"
)

// A transaction scoped to one workspace sees only that workspace's rows,
// though the query says nothing about workspaces: row level security adds
// the filter. Outside a scope, tenant tables show nothing at all.
func ExampleStore_InWorkspace() {
	ctx := context.Background()
	url, drop, err := testdb.Fresh(true) // a migrated database of its own
	if err != nil {
		fmt.Println(err)
		return
	}
	defer drop()
	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()

	acme, _ := store.EnsureWorkspace(ctx, st, "Acme", "acme")
	globex, _ := store.EnsureWorkspace(ctx, st, "Globex", "globex")
	for _, ws := range []store.Workspace{acme, acme, globex} {
		err := st.InWorkspace(ctx, ws.ID, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO errand.workspace_members (workspace_id, user_id)
				VALUES (current_setting('app.current_workspace_id')::uuid, gen_random_uuid())`)
			return err
		})
		if err != nil {
			fmt.Println(err)
			return
		}
	}

	count := func(tx pgx.Tx) (n int) {
		_ = tx.QueryRow(ctx, `SELECT count(*) FROM errand.workspace_members`).Scan(&n)
		return n
	}
	_ = st.InWorkspace(ctx, acme.ID, func(tx pgx.Tx) error {
		fmt.Println("Acme sees", count(tx), "members")
		return nil
	})
	_ = st.InWorkspace(ctx, globex.ID, func(tx pgx.Tx) error {
		fmt.Println("Globex sees", count(tx), "member")
		return nil
	})
	err = st.InWorkspace(ctx, "00000000-0000-0000-0000-000000000000", func(pgx.Tx) error { return nil })
	fmt.Println(err)
	// Output:
	// Acme sees 2 members
	// Globex sees 1 member
	// workspace 00000000-0000-0000-0000-000000000000: workspace not found
}
