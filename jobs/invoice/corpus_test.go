package invoice_test

import (
	"testing"

	"github.com/errand-dev/errand/errandtest"
)

const insertJob = `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES `

// Invoices and their lines as an app inserts them; invoiceThen makes
// invoice ...c001 in $1 first, in the same implicit transaction.
const (
	insertInvoice = `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency) VALUES `
	insertItem    = `INSERT INTO errand.invoice_items (invoice_id, workspace_id, quantity, unit_amount, tax_rate) VALUES `
	invoiceThen   = `INSERT INTO errand.invoices (id, workspace_id, number, customer_name, currency) VALUES ('00000000-0000-0000-0000-00000000c001', $1, 'C-9', 'Ann', 'EUR'); `
)

// corpus: what an app can get wrong about invoices, refused by SQL or
// failed at once by the worker ($1 a live workspace, $2 a deleted one).
var corpus = []errandtest.BadInput{
	// Invoices (migrations/012_invoices.sql): what could never render.
	{Name: "invoice.render without invoice_id", SQL: insertJob + `($1, 'invoice.render', '{"email_to": "ann@example.com"}')`, Code: "22023", Message: `args for kind "invoice.render" are missing required field(s): invoice_id`},
	{Name: "an invoice in an unknown currency", SQL: insertInvoice + `($1, 'C-1', 'Ann', 'EUX')`, Code: "22023", Message: "invoice currency 'EUX' is not an ISO 4217 code errand knows"},
	{Name: "an invoice without a currency", SQL: insertInvoice + `($1, 'C-1', 'Ann', NULL)`, Code: "23502", Message: "invoice currency is required"},
	{Name: "an invoice number that is a zero-width space", SQL: insertInvoice + `($1, E'\u200b', 'Ann', 'EUR')`, Code: "23502", Message: "it has no visible character, only U+200B"},
	{Name: "an invoice customer name that is a tab", SQL: insertInvoice + `($1, 'C-1', E'\t', 'EUR')`, Code: "23502", Message: "invoice customer_name is required"},
	{Name: "an invoice of a deleted workspace", SQL: insertInvoice + `($2, 'C-1', 'Ann', 'EUR')`, Code: "23503", Message: "does not exist in errand.workspaces"},
	// Dates no PDF can print (migrations/051_invoice_printable_dates.sql).
	{Name: "an invoice issued at infinity", SQL: `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, issued_at) VALUES ($1, 'C-1', 'Ann', 'EUR', 'infinity')`, Code: "22023", Message: "errand: invoice issued_at must be a date, got infinity"},
	{Name: "an invoice due at infinity for no due date", SQL: `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, due_at) VALUES ($1, 'C-1', 'Ann', 'EUR', 'infinity')`, Code: "22023", Message: "errand: invoice due_at must be a date, got infinity"},
	{Name: "an invoice issued at -infinity", SQL: `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, issued_at) VALUES ($1, 'C-1', 'Ann', 'EUR', '-infinity')`, Code: "22023", Message: "errand: invoice issued_at must be a date, got -infinity"},
	{Name: "an invoice issued before year 1", SQL: `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, issued_at) VALUES ($1, 'C-1', 'Ann', 'EUR', '0001-12-31 BC')`, Code: "22023", Message: "issued_at must be from 0001-01-01 to 9999-12-31 (a PDF's dates have four-digit years), got 0001-12-31 BC"},
	{Name: "an invoice due in year 10000", SQL: `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, due_at) VALUES ($1, 'C-1', 'Ann', 'EUR', '10000-01-01')`, Code: "22023", Message: "due_at must be from 0001-01-01 to 9999-12-31"},
	{Name: "an invoice item with a negative quantity", SQL: invoiceThen + insertItem + `('00000000-0000-0000-0000-00000000c001', $1, -1, 500, 0)`, Code: "23514", Message: "invoice item quantity must not be negative, got -1"},
	{Name: "an invoice item in another workspace than its invoice", SQL: invoiceThen + insertItem + `('00000000-0000-0000-0000-00000000c001', $2, 1, 500, 0)`, Code: "23503", Message: "is not its invoice's"},
	{Name: "an invoice item of an invoice that does not exist", SQL: insertItem + `('00000000-0000-0000-0000-00000000c002', $1, 1, 500, 0)`, Code: "23503", Message: "invoice 00000000-0000-0000-0000-00000000c002 does not exist"},
	{Name: "an invoice item with a tax rate over 100", SQL: invoiceThen + insertItem + `('00000000-0000-0000-0000-00000000c001', $1, 1, 500, 120)`, Code: "23514", Message: "tax_rate is a percentage from 0 to 100"},
	{Name: "invoice.render with an invoice_id that is not a uuid", SQL: insertJob + `($1, 'invoice.render', '{"invoice_id": "INV-1"}')`, Failed: `invoice_id "INV-1" is not a uuid`},
	{Name: "invoice.render of an invoice that does not exist", SQL: insertJob + `($1, 'invoice.render', '{"invoice_id": "00000000-0000-0000-0000-00000000c003"}')`, Failed: "invoice 00000000-0000-0000-0000-00000000c003 does not exist in workspace"},
	{Name: "invoice.render with email_to that is a number", SQL: insertJob + `($1, 'invoice.render', '{"invoice_id": "00000000-0000-0000-0000-00000000c003", "email_to": 7}')`, Failed: `"email_to" must be an address or an array of addresses`},
	{Name: "invoice.render with email_to hiding a control character", SQL: insertJob + `($1, 'invoice.render', '{"invoice_id": "00000000-0000-0000-0000-00000000c003", "email_to": "Ann\u0085 <a@example.com>"}')`, Failed: "has a control character"},
	{Name: "invoice.render with a field it does not have", SQL: insertJob + `($1, 'invoice.render', '{"invoice_id": "00000000-0000-0000-0000-00000000c003", "emailTo": "a@example.com"}')`, Failed: `unknown field "emailTo"`},
	{Name: "invoice.render with email_to that is no address", SQL: insertJob + `($1, 'invoice.render', '{"invoice_id": "00000000-0000-0000-0000-00000000c003", "email_to": "ann at example"}')`, Failed: `email_to: "ann at example" is not an email address`},
}

// TestBadInputCorpus runs the invoice corpus against one daemon: each input
// is refused or fails at once with its reason, nothing retries, and the
// daemon stays healthy throughout.
func TestBadInputCorpus(t *testing.T) { errandtest.RunCorpus(t, corpus) }
