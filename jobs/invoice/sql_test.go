package invoice_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs/invoice"
)

// What could never render is refused at INSERT (or UPDATE) with a clear
// error. In sql, $1 is the workspace, $2 another one, $3 an invoice of $1,
// $4 a deleted workspace.
func TestInvoiceTablesRefuseWhatCouldNeverRender(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	other := errandtest.NewWorkspace(t, pool, "globex")
	gone := errandtest.NewWorkspace(t, pool, "gone")
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `DELETE FROM errand.workspaces WHERE id = $1`, gone); err != nil {
		t.Fatal(err)
	}
	inv := newInvoice(t, pool, ws, "INV-1", "EUR")
	theirs := newInvoice(t, pool, other, "G-1", "EUR")
	const newInv = `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency) VALUES `
	const newDated = `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, issued_at, due_at) VALUES `
	const newItem = `INSERT INTO errand.invoice_items (invoice_id, workspace_id, description, quantity, unit_amount, tax_rate) VALUES `
	for _, tc := range []struct{ name, sql, code, message string }{
		{"an unknown currency", newInv + `($1, 'X-1', 'Ann', 'EUX')`, "22023", `invoice currency 'EUX' is not an ISO 4217 code errand knows`},
		{"a currency written as a symbol", newInv + `($1, 'X-1', 'Ann', '€')`, "22023", `invoice currency '€' is not an ISO 4217 code`},
		{"a currency of two letters", newInv + `($1, 'X-1', 'Ann', 'EU')`, "22023", `invoice currency 'EU' is not an ISO 4217 code`},
		{"the no-currency code XXX", newInv + `($1, 'X-1', 'Ann', 'XXX')`, "22023", `'XXX' is not an ISO 4217 code errand knows`},
		{"no currency", newInv + `($1, 'X-1', 'Ann', NULL)`, "23502", "invoice currency is required"},
		{"no invoice number", newInv + `($1, '  ', 'Ann', 'EUR')`, "23502", "invoice number is required"},
		{"no customer name", newInv + `($1, 'X-1', NULL, 'EUR')`, "23502", "invoice customer_name is required"},
		// Nothing the PDF would show (migration 042).
		{"a customer name that is a tab", newInv + `($1, 'X-1', E'\t', 'EUR')`, "23502", "errand: invoice customer_name is required: it has no visible character, only U+0009"},
		{"a customer name of no-break spaces and a soft hyphen", newInv + `($1, 'X-1', E'\u00a0\u00ad\u00a0', 'EUR')`, "23502", "customer_name is required: it has no visible character, only U+00A0 U+00AD U+00A0"},
		{"an invoice number that is a line break", newInv + `($1, E'\n', 'Ann', 'EUR')`, "23502", "errand: invoice number is required: it has no visible character, only U+000A"},
		{"an invoice number that is a zero-width space", newInv + `($1, E'\u200b', 'Ann', 'EUR')`, "23502", "errand: invoice number is required: it has no visible character, only U+200B"},
		{"an invoice number of ten direction marks", newInv + `($1, repeat(E'\u200e', 10), 'Ann', 'EUR')`, "23502", "only U+200E U+200E U+200E U+200E U+200E U+200E U+200E U+200E …"},
		{"an invoice number of a tag character", newInv + `($1, E'\U000E0041', 'Ann', 'EUR')`, "23502", "only U+E0041"},
		{"an invoice number updated to a zero-width space", `UPDATE errand.invoices SET number = E'\u200b' WHERE id = $3`, "23502", "errand: invoice number is required: it has no visible character, only U+200B"},
		{"a customer name updated to a line break", `UPDATE errand.invoices SET customer_name = E'\r\n' WHERE id = $3`, "23502", "customer_name is required: it has no visible character, only U+000D U+000A"},
		{"a number used twice in a workspace", newInv + `($1, 'INV-1', 'Ann', 'EUR')`, "23505", "invoices_number_key"},
		{"a status errand does not know", `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, status) VALUES ($1, 'X-1', 'Ann', 'EUR', 'sent')`, "23514", "invoice status must be one of: draft, open, paid, void, uncollectible, got 'sent'"},
		{"a due date before the issue date", `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, issued_at, due_at) VALUES ($1, 'X-1', 'Ann', 'EUR', '2026-03-01', '2026-02-01')`, "23514", "invoice due_at 2026-02-01 is before issued_at 2026-03-01"},
		// Dates no PDF can print (migration 051).
		{"an issue date of infinity", newDated + `($1, 'X-1', 'Ann', 'EUR', 'infinity', NULL)`, "22023", "errand: invoice issued_at must be a date, got infinity"},
		{"an issue date of -infinity", newDated + `($1, 'X-1', 'Ann', 'EUR', '-infinity', NULL)`, "22023", "errand: invoice issued_at must be a date, got -infinity"},
		{"a due date of infinity for no due date", newDated + `($1, 'X-1', 'Ann', 'EUR', '2026-03-01', 'infinity')`, "22023", "errand: invoice due_at must be a date, got infinity"},
		{"a due date of -infinity", newDated + `($1, 'X-1', 'Ann', 'EUR', '2026-03-01', '-infinity')`, "22023", "errand: invoice due_at must be a date, got -infinity"},
		{"an issue date in 44 BC", newDated + `($1, 'X-1', 'Ann', 'EUR', '0044-03-15 BC', NULL)`, "22023", "errand: invoice issued_at must be from 0001-01-01 to 9999-12-31 (a PDF's dates have four-digit years), got 0044-03-15 BC"},
		{"an issue date on the last day BC", newDated + `($1, 'X-1', 'Ann', 'EUR', '0001-12-31 BC', NULL)`, "22023", "got 0001-12-31 BC"},
		{"an issue date in year 10000", newDated + `($1, 'X-1', 'Ann', 'EUR', '10000-01-01', NULL)`, "22023", "errand: invoice issued_at must be from 0001-01-01 to 9999-12-31 (a PDF's dates have four-digit years), got 10000-01-01"},
		{"a due date in year 10000", newDated + `($1, 'X-1', 'Ann', 'EUR', '2026-03-01', '10000-01-01')`, "22023", "errand: invoice due_at must be from 0001-01-01 to 9999-12-31"},
		{"an issue date updated to infinity", `UPDATE errand.invoices SET issued_at = 'infinity' WHERE id = $3`, "22023", "errand: invoice issued_at must be a date, got infinity"},
		{"a due date updated to year 10000", `UPDATE errand.invoices SET due_at = '10000-01-01' WHERE id = $3`, "22023", "errand: invoice due_at must be from 0001-01-01 to 9999-12-31"},
		{"an invoice without a workspace", newInv + `(NULL, 'X-1', 'Ann', 'EUR')`, "23502", "invoice workspace_id is required"},
		{"an invoice of a deleted workspace", newInv + `($4, 'X-1', 'Ann', 'EUR')`, "23503", "does not exist in errand.workspaces"},
		{"an invoice moved to another workspace", `UPDATE errand.invoices SET workspace_id = $2 WHERE id = $3`, "23514", "an invoice cannot move to another workspace"},
		{"a negative quantity", newItem + `($3, $1, 'Refund', -1, 500, 0)`, "23514", "invoice item quantity must not be negative, got -1 (credit with a negative unit_amount)"},
		{"a quantity with 7 decimals", newItem + `($3, $1, 'Dust', 0.0000001, 500, 0)`, "23514", "at most 6 decimals"},
		{"a quantity of a billion", newItem + `($3, $1, 'Lots', 1000000000, 500, 0)`, "23514", "must be below 1000000000"},
		{"an item in another workspace than its invoice", newItem + `($3, $2, 'Tea', 1, 500, 0)`, "23503", "invoice item's workspace_id " + other + " is not its invoice's"},
		{"an item put on another workspace's invoice", newItem + `($5, $1, 'Tea', 1, 500, 0)`, "23503", "invoice item's workspace_id " + ws + " is not its invoice's"},
		{"an item of an invoice that does not exist", newItem + `('00000000-0000-0000-0000-000000000001', $1, 'Tea', 1, 500, 0)`, "23503", "invoice 00000000-0000-0000-0000-000000000001 does not exist"},
		{"an item without an invoice", newItem + `(NULL, $1, 'Tea', 1, 500, 0)`, "23502", "invoice item invoice_id is required"},
		{"an item without a workspace", newItem + `($3, NULL, 'Tea', 1, 500, 0)`, "23502", "invoice item workspace_id is required"},
		{"an item without an amount", newItem + `($3, $1, 'Tea', 1, NULL, 0)`, "23502", "invoice item unit_amount is required (in minor units"},
		{"an amount written as text with decimals", newItem + `($3, $1, 'Tea', 1, '4.99', 0)`, "22P02", `invalid input syntax for type bigint: "4.99"`},
		{"a tax rate over 100", newItem + `($3, $1, 'Tea', 1, 500, 120)`, "23514", "invoice item tax_rate is a percentage from 0 to 100 with at most 4 decimals (20 is 20 %), got 120"},
		{"a tax rate as a fraction", newItem + `($3, $1, 'Tea', 1, 500, -0.2)`, "23514", "got -0.2"},
		{"an item's quantity updated below zero", `UPDATE errand.invoice_items SET quantity = -2 WHERE invoice_id = $3`, "23514", "quantity must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "an item's quantity updated below zero" {
				if _, err := pool.Exec(ctx, newItem[:len(newItem)-8]+` VALUES ($1, $2, 'Tea', 1, 500, 0)`, inv, ws); err != nil {
					t.Fatal(err)
				}
			}
			sql := strings.NewReplacer("$1", "'"+ws+"'", "$2", "'"+other+"'", "$3", "'"+inv+"'", "$4", "'"+gone+"'", "$5", "'"+theirs+"'").Replace(tc.sql)
			_, err := pool.Exec(ctx, sql)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				t.Fatalf("want a PostgreSQL error, got %v", err)
			}
			if pgErr.Code != tc.code || !strings.Contains(pgErr.Message, tc.message) {
				t.Errorf("got %s %q, want %s containing %q", pgErr.Code, pgErr.Message, tc.code, tc.message)
			}
		})
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.invoices`); n != 2 {
		t.Errorf("%d invoices, want the 2 made above", n)
	}
}

func TestLowercaseCurrencyIsStoredInCapitals(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	id := newInvoice(t, pool, ws, "INV-1", "eur")
	var cur string
	if err := pool.QueryRow(context.Background(), `SELECT currency FROM errand.invoices WHERE id = $1`, id).Scan(&cur); err != nil || cur != "EUR" {
		t.Errorf("currency %q, %v", cur, err)
	}
}

// Codes ISO 4217 introduced after x/text's CLDR 32 data are accepted.
func TestCurrenciesNewerThanCLDR32AreAccepted(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	for _, code := range []string{"MRU", "ves", "SLE"} {
		id := newInvoice(t, pool, ws, "INV-"+code, code)
		var cur string
		var exp int
		if err := pool.QueryRow(context.Background(), `
			SELECT i.currency, c.exponent FROM errand.invoices i JOIN errand.invoice_currencies c ON c.code = i.currency
			WHERE i.id = $1`, id).Scan(&cur, &exp); err != nil || cur != strings.ToUpper(code) || exp != 2 {
			t.Errorf("%s: currency %q exponent %d, %v", code, cur, exp, err)
		}
	}
}

// errand.invoice_currencies, which the INSERT check reads, is exactly the
// table the renderer formats with: invoice.Exponent, x/text's codes with
// ISO 4217's exponents.
func TestCurrencyTableIsExponents(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	rows, err := pool.Query(context.Background(), `SELECT code, exponent FROM errand.invoice_currencies ORDER BY code`)
	if err != nil {
		t.Fatal(err)
	}
	type cur struct {
		Code     string
		Exponent int16
	}
	inDB, err := pgx.CollectRows(rows, pgx.RowToStructByPos[cur])
	if err != nil {
		t.Fatal(err)
	}
	var inGo []cur
	for a := 'A'; a <= 'Z'; a++ {
		for b := 'A'; b <= 'Z'; b++ {
			for c := 'A'; c <= 'Z'; c++ {
				code := string([]rune{a, b, c})
				if exp, err := invoice.Exponent(code); err == nil {
					inGo = append(inGo, cur{code, int16(exp)})
				}
			}
		}
	}
	if fmt.Sprint(inDB) != fmt.Sprint(inGo) {
		t.Errorf("errand.invoice_currencies has %d codes, invoice.Exponent %d; they differ:\ndb %v\ngo %v", len(inDB), len(inGo), inDB, inGo)
	}
}

// Row level security: a scoped transaction sees its own workspace's
// invoices, lines and documents only.
func TestInvoiceTablesAreTenantScoped(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	other := errandtest.NewWorkspace(t, pool, "globex")
	errandtest.StartDaemon(t, url, nil)
	mine := newInvoice(t, pool, ws, "A-1", "EUR", item{"Tea", "1", 500, "0"})
	theirs := newInvoice(t, pool, other, "G-1", "EUR", item{"Coffee", "1", 500, "0"})
	for _, id := range []string{mine, theirs} {
		w := ws
		if id == theirs {
			w = other
		}
		if j := render(t, pool, w, renderArgs(id, "")); j.Status != "completed" {
			t.Fatalf("render: %+v", j)
		}
	}
	ctx := context.Background()
	var role string
	if err := pool.QueryRow(ctx, `SELECT value FROM errand.settings WHERE name = 'tenant_role'`).Scan(&role); err != nil {
		t.Fatal(err)
	}
	// Unscoped, as a role other than errand's: told it has no scope, the
	// same for an invoice of its workspace, another's and none (row level
	// security would refuse the row anyway), so nothing about the invoice.
	for _, tc := range []struct{ name, invoice, workspace string }{
		{"its own invoice", mine, ws},
		{"another workspace's invoice", theirs, ws},
		{"an invoice that does not exist", "00000000-0000-0000-0000-000000000001", ws},
	} {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('role', $1, true)`, role); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO errand.invoice_items (invoice_id, workspace_id, description, quantity, unit_amount, tax_rate) VALUES ($1, $2, 'Tea', 1, 500, 0)`, tc.invoice, tc.workspace)
			var pgErr *pgconn.PgError
			want := "errand: no workspace scope: role " + role + " may add or change invoice items only in a transaction scoped to their workspace (app.current_workspace_id is not set)"
			if !errors.As(err, &pgErr) || pgErr.Code != "42501" || pgErr.Message != want {
				t.Errorf("an item on %s, unscoped as the tenant role: %v, want 42501 %q", tc.name, err, want)
			}
			return errRolledBack
		})
		if !errors.Is(err, errRolledBack) {
			t.Fatal(err)
		}
	}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', $1, true), set_config('role', $2, true)`, ws, role); err != nil {
			return err
		}
		// An item put on another workspace's invoice (a guessed or leaked
		// id): the scoped transaction learns nothing about that invoice.
		if _, err := tx.Exec(ctx, `SAVEPOINT s`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO errand.invoice_items (invoice_id, workspace_id, description, quantity, unit_amount, tax_rate) VALUES ($1, $2, 'Tea', 1, 500, 0)`, theirs, ws)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23503" || pgErr.Message != "errand: invoice "+theirs+" does not exist" {
			t.Errorf("an item on another workspace's invoice, scoped: %v, want 23503 \"invoice %s does not exist\"", err, theirs)
		}
		if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT s`); err != nil {
			return err
		}
		for _, table := range []string{"errand.invoices", "errand.invoice_items", "errand.invoice_documents"} {
			var n int
			var all bool
			if err := tx.QueryRow(ctx, `SELECT count(*), bool_and(workspace_id = $1) FROM `+table, ws).Scan(&n, &all); err != nil {
				return err
			}
			if n != 1 || !all {
				t.Errorf("%s: the scoped transaction sees %d rows (all its own: %v), want its 1", table, n, all)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// errRolledBack ends a transaction the test expects to fail.
var errRolledBack = errors.New("rolled back on purpose")

// errand.has_visible_text, which refuses an invoice number or customer name
// that would print as nothing, agrees with the renderer on every code
// point: render.go's clean prints white space as a space and drops control
// and format characters; everything else shows (a character the font
// lacks as the placeholder).
func TestVisibleTextIsWhatThePDFShows(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	rows, err := pool.Query(context.Background(), `
		SELECT c FROM generate_series(1, 1114111) AS c
		WHERE c NOT BETWEEN 55296 AND 57343 AND NOT errand.has_visible_text(chr(c)) ORDER BY c`)
	if err != nil {
		t.Fatal(err)
	}
	invisible, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	var want []int32
	for c := rune(1); c <= unicode.MaxRune; c++ {
		if unicode.IsSpace(c) || unicode.IsControl(c) || unicode.Is(unicode.Cf, c) {
			want = append(want, c)
		}
	}
	if !slices.Equal(invisible, want) {
		t.Errorf("invisible to errand.has_visible_text:\n%U\nto the renderer (Unicode %s):\n%U", invisible, unicode.Version, want)
	}
}

// Visible text with invisible characters in it is fine, and an invoice
// stored before migration 042 with a number that shows nothing can still
// be updated (marked paid); only a new invisible number is refused.
func TestInvisibleCharactersAmongVisibleOnesAreAccepted(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	var id string
	if err := pool.QueryRow(ctx, `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency)
		VALUES ($1, E'\u200bINV-1\t', E'Ann\u00a0Lee\u200d', 'EUR') RETURNING id`, ws).Scan(&id); err != nil {
		t.Fatalf("visible text among invisible characters: %v", err)
	}
	// As 012 let it in: the triggers off for one statement.
	var old string
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('session_replication_role', 'replica', true)`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency)
			VALUES ($1, E'\u200b', E'\t', 'EUR') RETURNING id`, ws).Scan(&old)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE errand.invoices SET status = 'paid' WHERE id = $1`, old); err != nil {
		t.Errorf("marking paid an invoice stored before 042: %v", err)
	}
	_, err = pool.Exec(ctx, `UPDATE errand.invoices SET number = E'\u200b\u200b' WHERE id = $1`, old)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23502" || !strings.Contains(pgErr.Message, "number is required: it has no visible character") {
		t.Errorf("a new invisible number: %v, want it refused", err)
	}
}

// The first and last days a PDF date can carry are accepted, and an
// invoice stored before migration 051 with a date no PDF can print can
// still be updated (marked paid); only a new such date is refused.
func TestInvoiceDatesFromYear1To9999AreAccepted(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, issued_at, due_at)
		VALUES ($1, 'INV-1', 'Ann', 'EUR', '0001-01-01', '9999-12-31')`, ws); err != nil {
		t.Errorf("issued 0001-01-01, due 9999-12-31: %v, want it accepted", err)
	}
	// As 042 let it in: the triggers off for one statement.
	var old string
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('session_replication_role', 'replica', true)`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, issued_at, due_at)
			VALUES ($1, 'INV-2', 'Ann', 'EUR', '2026-03-01', 'infinity') RETURNING id`, ws).Scan(&old)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE errand.invoices SET status = 'paid' WHERE id = $1`, old); err != nil {
		t.Errorf("marking paid an invoice stored before 051 with due_at infinity: %v", err)
	}
	if _, err := pool.Exec(ctx, `UPDATE errand.invoices SET due_at = NULL WHERE id = $1`, old); err != nil {
		t.Errorf("correcting its due_at to NULL: %v", err)
	}
	_, err = pool.Exec(ctx, `UPDATE errand.invoices SET due_at = '-infinity' WHERE id = $1`, old)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22023" || !strings.Contains(pgErr.Message, "due_at must be a date, got -infinity") {
		t.Errorf("a new infinite due date: %v, want it refused", err)
	}
}
