package invoice_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/internal/testdb"
)

// errand's role may be a plain owner (no superuser, no BYPASSRLS, no
// CREATEROLE) with a tenant role an administrator created, and forced row
// level security scopes errand itself. The checks still see the invoice of an item (through
// errand.invoice_owners) and the job renders and stores.
func TestInvoicesUnderAPlainOwner(t *testing.T) {
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
	errandtest.StartDaemon(t, ownerURL, nil)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	other := errandtest.NewWorkspace(t, pool, "globex")

	// The owner, like an app's role, writes tenant rows in a scoped transaction.
	scoped := func(w string, fn func(tx pgx.Tx) error) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', $1, true)`, w); err != nil {
				return err
			}
			return fn(tx)
		})
	}
	var inv string
	err := scoped(ws, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency) VALUES ($1, 'INV-1', 'Zoë', 'EUR') RETURNING id::text`, ws).Scan(&inv); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO errand.invoice_items (invoice_id, workspace_id, description, unit_amount, tax_rate) VALUES ($1, $2, 'Tea', 500, 20)`, inv, ws)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Scoped to another workspace, the invoice does not exist.
	err = scoped(other, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO errand.invoice_items (invoice_id, workspace_id, unit_amount) VALUES ($1, $2, 1)`, inv, other)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "invoice "+inv+" does not exist") {
		t.Errorf("an item of another workspace's invoice: %v", err)
	}

	if j := render(t, pool, ws, renderArgs(inv, "")); j.Status != "completed" {
		t.Fatalf("render: %+v", j)
	}
	var pages int
	err = scoped(ws, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT pages FROM errand.invoice_documents WHERE invoice_id = $1 AND sha256 = sha256(pdf)`, inv).Scan(&pages)
	})
	if err != nil || pages != 1 {
		t.Fatalf("stored document: %d pages, %v", pages, err)
	}
}
