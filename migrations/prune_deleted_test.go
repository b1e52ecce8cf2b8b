package migrations_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/migrations"
)

// Upgrading to 041 under a plain owner finds the workspaces deleted before
// it in the log tables, lifting their forced row level security for its
// transaction. Behind a transaction that holds one of those tables it
// gives up after 5 s, nothing of it applied, instead of holding every
// enqueue behind it (in an upgrade from before 040, whose lock on
// errand.kinds is taken by then);
// once that transaction has ended it succeeds and notes the deleted
// workspace, whose logs retention can then reach.
func TestUpgradeTo041FindsWorkspacesDeletedBeforeItAndGivesUpBehindALongTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	owner := testdb.Pool(t, testdb.PlainOwnerDatabase(t, false))
	migrateBelow(t, owner, 41)
	var gone string
	if err := owner.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('Gone', 'gone') RETURNING id::text`).Scan(&gone); err != nil {
		t.Fatal(err)
	}
	err := pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', $1, true)`, gone); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO errand.emails (workspace_id, template, status) VALUES ($1, 'invite', 'sent')`, gone)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(ctx, `DELETE FROM errand.workspaces WHERE id = $1`, gone); err != nil {
		t.Fatal(err)
	}

	report, err := owner.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer report.Rollback(ctx)
	if _, err := report.Exec(ctx, `SELECT count(*) FROM errand.emails`); err != nil {
		t.Fatal(err)
	}
	_, err = migrations.Up(ctx, owner, nil)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "55P03" || !strings.Contains(pgErr.Message, "041") || !strings.Contains(pgErr.Hint, "errand migrate again") {
		t.Fatalf("upgrading to 041 beside a transaction holding errand.emails: %v; want lock_not_available naming 041, with a hint to migrate again", err)
	}
	var applied bool
	if err := owner.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM errand.errand_migrations WHERE version >= 41)`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied {
		t.Fatal("after the refused upgrade 041 or later is recorded; want nothing applied")
	}
	if err := report.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(ctx, owner, nil); err != nil {
		t.Fatalf("upgrading once the transaction has ended: %v", err)
	}
	var noted bool
	if err := owner.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM errand.deleted_workspaces WHERE id = $1)`, gone).Scan(&noted); err != nil {
		t.Fatal(err)
	}
	var forced int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE oid IN ('errand.emails'::regclass, 'errand.webhook_messages'::regclass,
		'errand.webhook_attempts'::regclass, 'errand.invoice_documents'::regclass) AND relforcerowsecurity`).Scan(&forced); err != nil {
		t.Fatal(err)
	}
	if !noted || forced != 4 {
		t.Errorf("after 041: workspace deleted before it noted %v, %d of 4 log tables with forced row level security; want noted, 4", noted, forced)
	}
}
