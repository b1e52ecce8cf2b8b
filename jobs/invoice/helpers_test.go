package invoice_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// item is a line as the app inserts it.
type item struct {
	description string
	quantity    string
	unitAmount  int64
	taxRate     string
}

// newInvoice inserts an invoice and its lines as an app would (the test's
// superuser pool is not subject to row level security) and returns its id.
func newInvoice(t *testing.T, pool *pgxpool.Pool, ws, number, currency string, items ...item) string {
	t.Helper()
	ctx := context.Background()
	var id string
	err := pool.QueryRow(ctx, `
		INSERT INTO errand.invoices (workspace_id, number, customer_name, customer_email, customer_address, currency, issued_at, due_at, notes)
		VALUES ($1, $2, 'Zoë Ørsted', 'zoe@example.com', E'ООО Ромашка\nул. Ленина 1', $3, '2026-03-01', '2026-03-31', 'Thank you.')
		RETURNING id::text`, ws, number, currency).Scan(&id)
	if err != nil {
		t.Fatalf("insert invoice %s: %v", number, err)
	}
	for _, it := range items {
		if _, err := pool.Exec(ctx, `
			INSERT INTO errand.invoice_items (invoice_id, workspace_id, description, quantity, unit_amount, tax_rate)
			VALUES ($1, $2, $3, $4::numeric, $5, $6::numeric)`, id, ws, it.description, it.quantity, it.unitAmount, it.taxRate); err != nil {
			t.Fatalf("insert item %v: %v", it, err)
		}
	}
	return id
}

// document is a row of errand.invoice_documents.
type document struct {
	Version   int
	PDF       []byte
	SHA256    []byte
	SizeBytes int
	Pages     int
	JobID     int64
}

func documents(t *testing.T, pool *pgxpool.Pool, invoiceID string) []document {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT version, pdf, sha256, size_bytes, pages, coalesce(job_id, 0) FROM errand.invoice_documents
		WHERE invoice_id = $1 ORDER BY version`, invoiceID)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[document])
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if sum := sha256.Sum256(d.PDF); string(sum[:]) != string(d.SHA256) || d.SizeBytes != len(d.PDF) {
			t.Errorf("version %d: sha256 or size_bytes is not its PDF's", d.Version)
		}
	}
	return docs
}

func renderArgs(invoiceID string, extra string) string {
	return fmt.Sprintf(`{"invoice_id": %q%s}`, invoiceID, extra)
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
