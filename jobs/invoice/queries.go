package invoice

// The kind's queries, on its tables (migration 012_invoices.sql). The
// tenant tables are read and written only in workspace-scoped
// transactions; enqueueing the receipt is errand's own.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// loadDocument reads the invoice, its lines and its issuer in the scoped
// transaction tx, and locks the invoice's row until tx ends so two renders
// of one invoice number their versions one after the other. (FOR NO KEY
// UPDATE: the app can still add lines meanwhile.) found is false when the
// workspace has no such invoice.
func loadDocument(ctx context.Context, tx pgx.Tx, invoiceID string) (doc Document, found bool, err error) {
	var issued, due pgtype.Date
	err = tx.QueryRow(ctx, `
		SELECT w.name, i.number, i.status, i.customer_name, coalesce(i.customer_email, ''),
		       coalesce(i.customer_address, ''), i.currency, i.issued_at, i.due_at, coalesce(i.notes, '')
		FROM errand.invoices i JOIN errand.workspaces w ON w.id = i.workspace_id
		WHERE i.id = $1
		FOR NO KEY UPDATE OF i`, invoiceID).
		Scan(&doc.Issuer, &doc.Number, &doc.Status, &doc.CustomerName, &doc.CustomerEmail,
			&doc.CustomerAddress, &doc.Currency, &issued, &due, &doc.Notes)
	if errors.Is(err, pgx.ErrNoRows) {
		return Document{}, false, nil
	}
	if err != nil {
		return Document{}, false, loadError(fmt.Errorf("read invoice %s: %w", invoiceID, err))
	}
	if doc.IssuedAt, err = finiteDate(invoiceID, "issued_at", issued); err != nil {
		return Document{}, false, err
	}
	if due.Valid {
		if doc.DueAt, err = finiteDate(invoiceID, "due_at", due); err != nil {
			return Document{}, false, err
		}
	}
	rows, err := tx.Query(ctx, `
		SELECT description, quantity::text, unit_amount, tax_rate::text
		FROM errand.invoice_items WHERE invoice_id = $1
		ORDER BY position, id`, invoiceID)
	if err != nil {
		return Document{}, false, fmt.Errorf("read items of invoice %s: %w", invoiceID, err)
	}
	doc.Lines, err = pgx.CollectRows(rows, pgx.RowToStructByPos[Line])
	if err != nil {
		return Document{}, false, loadError(fmt.Errorf("read items of invoice %s: %w", invoiceID, err))
	}
	return doc, true, nil
}

// finiteDate is an invoice's date as a time. 'infinity' and '-infinity'
// have none: migration 051 refuses them, but a row stored before it may
// hold one, and reading it again will not change it.
func finiteDate(invoiceID, column string, d pgtype.Date) (time.Time, error) {
	if d.InfinityModifier != pgtype.Finite {
		fix := "a date from 0001-01-01 to 9999-12-31"
		if column == "due_at" {
			fix += " (or NULL: no due date)"
		}
		return time.Time{}, &badInvoice{fmt.Errorf("invoice %s has %s %s, which no PDF can print: set it to %s and render it again",
			invoiceID, column, d.InfinityModifier, fix)}
	}
	return d.Time, nil
}

// loadError marks err as the invoice's own when a value could not be read
// into the document (pgx.ScanArgError): the row reads the same on every
// retry, so the job fails at once. Anything else (a lost connection, a
// timeout, a lock) may pass, and is retried.
func loadError(err error) error {
	var scan pgx.ScanArgError
	if errors.As(err, &scan) {
		return &badInvoice{err}
	}
	return err
}

// stored is a version of an invoice's PDF.
type stored struct {
	Version int
	SHA256  [32]byte
	PDF     []byte
	Created bool // this render added it
}

// storeDocument adds the rendered PDF as the invoice's next version, in the
// scoped transaction tx, unless the latest version is the same bytes: then
// that one is returned.
func storeDocument(ctx context.Context, tx pgx.Tx, workspaceID, invoiceID string, jobID int64, r Rendered) (stored, error) {
	var latest stored
	var sum []byte
	err := tx.QueryRow(ctx, `
		SELECT version, sha256, pdf FROM errand.invoice_documents
		WHERE invoice_id = $1 ORDER BY version DESC LIMIT 1`, invoiceID).Scan(&latest.Version, &sum, &latest.PDF)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return stored{}, fmt.Errorf("read latest PDF of invoice %s: %w", invoiceID, err)
	}
	copy(latest.SHA256[:], sum)
	if err == nil && latest.SHA256 == r.SHA256 {
		return latest, nil
	}
	next := stored{Version: latest.Version + 1, SHA256: r.SHA256, PDF: r.PDF, Created: true}
	_, err = tx.Exec(ctx, `
		INSERT INTO errand.invoice_documents (invoice_id, workspace_id, version, pdf, sha256, size_bytes, pages, job_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		invoiceID, workspaceID, next.Version, r.PDF, r.SHA256[:], len(r.PDF), r.Pages, jobID)
	if err != nil {
		return stored{}, fmt.Errorf("store PDF of invoice %s: %w", invoiceID, err)
	}
	return next, nil
}

// enqueueReceipt enqueues the email.send of the receipt through the SQL
// contract, in tx (unscoped: errand's own role). The PDF travels in the
// args, so it counts toward ERRAND_MAX_ARGS_BYTES: an invoice too large to
// attach fails at once instead of retrying.
func enqueueReceipt(ctx context.Context, tx pgx.Tx, workspaceID string, args []byte) error {
	_, err := tx.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'email.send', $2)`, workspaceID, args)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "54000" {
		return &badInvoice{fmt.Errorf("the receipt email cannot carry the PDF: %s", pgErr.Message)}
	}
	if err != nil {
		return fmt.Errorf("enqueue the receipt email: %w", err)
	}
	return nil
}
