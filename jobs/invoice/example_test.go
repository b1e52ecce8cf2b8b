package invoice_test

import (
	"context"
	"fmt"

	"github.com/errand-dev/errand/errandtest"
)

// An app writes an invoice and its lines with plain SQL, in minor units,
// and asks for its PDF with one more INSERT; errand stores the PDF as
// version 1 of the invoice's documents.
func Example_render() {
	run, err := errandtest.StartExample(nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer run.Stop()
	ctx := context.Background()
	ws, _ := run.Workspace("Müller & Søn GmbH", "mueller")

	var invoiceID string
	_ = run.Conn.QueryRow(ctx, `
		INSERT INTO errand.invoices (workspace_id, number, customer_name, customer_address, currency, issued_at, due_at)
		VALUES ($1, 'INV-2026-0042', 'Zoë Ørsted', E'Ελληνική Εταιρεία\nΑθήνα', 'EUR', '2026-03-01', '2026-03-31')
		RETURNING id`, ws).Scan(&invoiceID)
	_, _ = run.Conn.Exec(ctx, `
		INSERT INTO errand.invoice_items (invoice_id, workspace_id, description, quantity, unit_amount, tax_rate) VALUES
			($1, $2, 'Consulting (hours)', 2.5, 12000, 20),  -- 2.5 × 120.00 EUR at 20 %
			($1, $2, 'Travel', 1, 4550, 7)`, invoiceID, ws)

	var id int64
	_ = run.Conn.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args)
		VALUES ($1, 'invoice.render', jsonb_build_object('invoice_id', $2::text)) RETURNING id`, ws, invoiceID).Scan(&id)
	status, _, _, err := run.Wait(id)
	fmt.Println(status, err)

	var version, pages int
	var intact bool
	_ = run.Conn.QueryRow(ctx, `SELECT version, pages, sha256 = sha256(pdf) AND size_bytes = length(pdf)
		FROM errand.invoice_documents WHERE invoice_id = $1`, invoiceID).Scan(&version, &pages, &intact)
	fmt.Printf("version %d, %d page, sha256 and size check: %v\n", version, pages, intact)
	// Output:
	// completed <nil>
	// version 1, 1 page, sha256 and size check: true
}
