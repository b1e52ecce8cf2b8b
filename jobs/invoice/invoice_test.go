package invoice_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs/invoice"
)

const wait = 60 * time.Second

func render(t *testing.T, pool *pgxpool.Pool, ws, args string) errandtest.Job {
	t.Helper()
	id := errandtest.Enqueue(t, pool, ws, invoice.Name, args)
	return errandtest.WaitJob(t, pool, id, wait, "completed", "failed")
}

func text(t *testing.T, pdf []byte) string {
	t.Helper()
	cmd := exec.Command("pdftotext", "-enc", "UTF-8", "-", "-")
	cmd.Stdin = bytes.NewReader(pdf)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pdftotext (poppler-utils): %v", err)
	}
	return string(out)
}

// The job renders the invoice into version 1; rendering it again unchanged
// adds nothing; a change makes version 2.
func TestRenderStoresOneVersionPerDistinctPDF(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, nil)
	id := newInvoice(t, pool, ws, "INV-1", "EUR",
		item{"Consulting", "2.5", 12000, "20"}, item{"Travel", "1", 4550, "7"})

	if j := render(t, pool, ws, renderArgs(id, "")); j.Status != "completed" {
		t.Fatalf("render: %+v", j)
	}
	docs := documents(t, pool, id)
	if len(docs) != 1 || docs[0].Version != 1 || docs[0].Pages != 1 {
		t.Fatalf("documents %+v, want version 1 of 1 page", docs)
	}
	got := text(t, docs[0].PDF)
	for _, want := range []string{"ACME", "INV-1", "Zoë Ørsted", "ООО Ромашка", "Consulting", "Total EUR", "408.69", "Page 1 of 1"} {
		if !strings.Contains(got, want) {
			t.Errorf("the stored PDF lacks %q:\n%s", want, got)
		}
	}

	if j := render(t, pool, ws, renderArgs(id, "")); j.Status != "completed" {
		t.Fatalf("re-render: %+v", j)
	}
	if docs := documents(t, pool, id); len(docs) != 1 {
		t.Fatalf("an unchanged invoice made %d versions, want 1", len(docs))
	}

	if _, err := pool.Exec(context.Background(), `UPDATE errand.invoice_items SET unit_amount = 4600 WHERE invoice_id = $1 AND description = 'Travel'`, id); err != nil {
		t.Fatal(err)
	}
	if j := render(t, pool, ws, renderArgs(id, "")); j.Status != "completed" {
		t.Fatalf("render after a change: %+v", j)
	}
	docs = documents(t, pool, id)
	if len(docs) != 2 || docs[1].Version != 2 || bytes.Equal(docs[0].SHA256, docs[1].SHA256) {
		t.Fatalf("after a change: %d versions, want 2 different ones", len(docs))
	}
	if !strings.Contains(text(t, docs[1].PDF), "46.00") {
		t.Error("version 2 does not show the new price")
	}
}

// With email_to, the receipt is an email.send job enqueued in the
// transaction that completed the render, the stored PDF attached; capture
// mode then renders it.
func TestReceiptEmailCarriesThePDF(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, nil)
	id := newInvoice(t, pool, ws, "INV/7", "JPY", item{"Tea", "3", 1200, "10"})

	if j := render(t, pool, ws, renderArgs(id, `, "email_to": ["Zoë Ørsted <zoe@example.com>", "ap@example.com"]`)); j.Status != "completed" {
		t.Fatalf("render: %+v", j)
	}
	ctx := context.Background()
	var emailJob int64
	var raw []byte
	if err := pool.QueryRow(ctx, `SELECT id, args FROM errand.jobs WHERE kind = 'email.send' AND workspace_id = $1`, ws).Scan(&emailJob, &raw); err != nil {
		t.Fatalf("no email.send job: %v", err)
	}
	var args struct {
		To          []string          `json:"to"`
		Template    string            `json:"template"`
		Data        map[string]string `json:"data"`
		Attachments []struct {
			Filename      string `json:"filename"`
			ContentBase64 string `json:"content_base64"`
			ContentType   string `json:"content_type"`
		} `json:"attachments"`
	}
	if err := json.Unmarshal(raw, &args); err != nil {
		t.Fatal(err)
	}
	if args.Template != "invoice_receipt" || len(args.To) != 2 || args.Data["total"] != "JPY 3,960" || args.Data["due_at"] != "31 March 2026" {
		t.Errorf("email args %s", raw)
	}
	if len(args.Attachments) != 1 || args.Attachments[0].Filename != "invoice-INV-7.pdf" || args.Attachments[0].ContentType != "application/pdf" {
		t.Fatalf("attachments %s", raw)
	}
	attached, err := base64.StdEncoding.DecodeString(args.Attachments[0].ContentBase64)
	if err != nil {
		t.Fatal(err)
	}
	if docs := documents(t, pool, id); len(docs) != 1 || !bytes.Equal(docs[0].PDF, attached) {
		t.Fatal("the attachment is not the stored PDF")
	}

	if j := errandtest.WaitJob(t, pool, emailJob, wait, "completed", "failed"); j.Status != "completed" {
		t.Fatalf("the receipt email: %+v", j)
	}
	var subject, body string
	if err := pool.QueryRow(ctx, `SELECT subject, text FROM errand.emails WHERE job_id = $1`, emailJob).Scan(&subject, &body); err != nil {
		t.Fatal(err)
	}
	if subject != "Invoice INV/7 from ACME" || !strings.Contains(body, "JPY 3,960, due on 31 March 2026") {
		t.Errorf("subject %q, body:\n%s", subject, body)
	}
}

// What the job cannot fix by retrying fails on its first attempt, with the
// reason, and stores nothing.
func TestBadRenderJobsFailAtOnce(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	other := errandtest.NewWorkspace(t, pool, "globex")
	errandtest.StartDaemon(t, url, nil)
	theirs := newInvoice(t, pool, other, "G-1", "USD", item{"Secret", "1", 100, "0"})
	huge := newInvoice(t, pool, ws, "H-1", "USD", item{"Everything", "999999999", 9000000000000000000, "0"})

	for _, tc := range []struct{ name, args, reason string }{
		{"an unknown invoice", renderArgs("7d1f7e0c-3a4b-4c5d-8e9f-0a1b2c3d4e5f", ""), "invoice 7d1f7e0c-3a4b-4c5d-8e9f-0a1b2c3d4e5f does not exist in workspace " + ws},
		{"an invoice of another workspace", renderArgs(theirs, ""), "invoice " + theirs + " does not exist in workspace " + ws},
		{"an invoice_id that is not a uuid", `{"invoice_id": "INV-1"}`, `invoice_id "INV-1" is not a uuid`},
		{"an invoice_id that is a number", `{"invoice_id": 42}`, "decode args"},
		{"email_to that is not an address", renderArgs(theirs, `, "email_to": "zoe at example"`), `email_to: "zoe at example" is not an email address`},
		{"email_to with a line break", renderArgs(theirs, `, "email_to": "a@example.com\nBcc: x@example.com"`), `email_to: "a@example.com\nBcc: x@example.com" has a line break`},
		// What email.send would refuse, refused before the PDF is stored.
		{"email_to with a C1 control character", renderArgs(theirs, `, "email_to": "Ann\u0085 <a@example.com>"`), `email_to: "Ann\u0085 <a@example.com>" has a control character`},
		{"email_to with a Unicode line separator", renderArgs(theirs, `, "email_to": ["ok@example.com", "a@example.com\u2028Bcc: x@example.com"]`), `email_to: "a@example.com\u2028Bcc: x@example.com" has a control character`},
		{"email_to with a line break encoded in its name", renderArgs(theirs, `, "email_to": "=?utf-8?q?Ann=0D=0ABcc=3A_x=40example.com?= <a@example.com>"`), `email_to: "=?utf-8?q?Ann=0D=0ABcc=3A_x=40example.com?= <a@example.com>" has a control character in its name`},
		{"email_to with a null among the addresses", renderArgs(theirs, `, "email_to": ["a@example.com", null]`), "email_to: empty address"},
		{"amounts beyond 64-bit minor units", renderArgs(huge, ""), "amounts do not fit in 64-bit minor units"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := render(t, pool, ws, tc.args)
			if j.Status != "failed" || j.Attempt != 1 || !strings.Contains(j.LastError, tc.reason) {
				t.Errorf("got %+v, want failed on attempt 1 with %q", j, tc.reason)
			}
		})
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.invoice_documents`); n != 0 {
		t.Errorf("%d documents stored by failed jobs", n)
	}
}

// An invoice stored before migration 051 with a date no PDF can print
// fails its render on the first attempt, saying which date and how to fix
// it: infinity cannot even be read into the document, and a year outside
// 1..9999 cannot be written as a PDF date. A retry would read the same row.
func TestAnInvoiceWithADateNoPDFCanPrintFailsItsRenderAtOnce(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, nil)
	ctx := context.Background()
	for _, tc := range []struct{ name, issued, due, reason string }{
		{"issued at infinity", "infinity", "", "has issued_at infinity, which no PDF can print: set it to a date from 0001-01-01 to 9999-12-31"},
		{"issued at -infinity", "-infinity", "", "has issued_at -infinity, which no PDF can print"},
		{"due at infinity", "2026-03-01", "infinity", "has due_at infinity, which no PDF can print: set it to a date from 0001-01-01 to 9999-12-31 (or NULL: no due date)"},
		{"issued in year 10000", "10000-01-01", "", "issued_at 10000-01-01 is not from 0001-01-01 to 9999-12-31, the dates a PDF can print"},
		{"issued in 44 BC", "0044-03-15 BC", "", "issued_at 0044-03-15 BC is not from 0001-01-01 to 9999-12-31"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// As 012 let it in: the triggers off for one statement.
			var id string
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `SELECT set_config('session_replication_role', 'replica', true)`); err != nil {
					return err
				}
				return tx.QueryRow(ctx, `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, issued_at, due_at)
					VALUES ($1, $2, 'Ann', 'EUR', $3::date, nullif($4, '')::date) RETURNING id::text`, ws, tc.name, tc.issued, tc.due).Scan(&id)
			})
			if err != nil {
				t.Fatal(err)
			}
			j := render(t, pool, ws, renderArgs(id, ""))
			if j.Status != "failed" || j.Attempt != 1 || !strings.Contains(j.LastError, tc.reason) {
				t.Errorf("got %+v, want failed on attempt 1 with %q", j, tc.reason)
			}
		})
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.invoice_documents`); n != 0 {
		t.Errorf("%d documents stored by failed jobs", n)
	}
}

// A replica that dies after rendering and storing, before the job's
// completion commits, leaves nothing: no document, no email. The database
// itself plays the crash: the completion's UPDATE of the first attempt
// kills its own connection.
func TestCrashBetweenRenderAndCompletionStoresNothing(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `
		CREATE FUNCTION public.crash_first_completion() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_terminate_backend(pg_backend_pid());
			RAISE EXCEPTION 'the replica died';
		END $$;
		CREATE TRIGGER crash_first_completion BEFORE UPDATE ON errand.river_job FOR EACH ROW
			WHEN (NEW.kind = 'invoice.render' AND NEW.state = 'completed' AND OLD.state = 'running' AND NEW.attempt = 1)
			EXECUTE FUNCTION public.crash_first_completion();`); err != nil {
		t.Fatal(err)
	}
	errandtest.StartDaemon(t, url, nil)
	id := newInvoice(t, pool, ws, "INV-9", "EUR", item{"Consulting", "1", 10000, "20"})
	withEmail := `, "email_to": "zoe@example.com"`

	// One attempt only: the crash is the end of it.
	var once int64
	if err := pool.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, max_attempts) VALUES ($1, $2, $3, 1) RETURNING id`,
		ws, invoice.Name, renderArgs(id, withEmail)).Scan(&once); err != nil {
		t.Fatal(err)
	}
	if j := errandtest.WaitJob(t, pool, once, wait, "completed", "failed"); j.Status != "failed" || !strings.Contains(j.LastError, "terminating connection") {
		t.Fatalf("the crashed job: %+v, want failed with its connection terminated", j)
	}
	if n := len(documents(t, pool, id)); n != 0 {
		t.Errorf("%d documents after the crash, want none", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.jobs WHERE kind = 'email.send'`); n != 0 {
		t.Errorf("%d receipt emails after the crash, want none", n)
	}

	// With attempts left, the retry stores the PDF and enqueues the email once.
	j := render(t, pool, ws, renderArgs(id, withEmail))
	if j.Status != "completed" || j.Attempt != 2 {
		t.Fatalf("the retried job: %+v, want completed on attempt 2", j)
	}
	if docs := documents(t, pool, id); len(docs) != 1 || docs[0].Version != 1 {
		t.Errorf("documents %+v, want exactly version 1", docs)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.jobs WHERE kind = 'email.send'`); n != 1 {
		t.Errorf("%d receipt emails, want 1", n)
	}
}

// A character the font lacks is printed as the placeholder, and the
// daemon's log says which and where.
func TestMissingCharactersAreLogged(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, nil)
	id := newInvoice(t, pool, ws, "INV-漢", "EUR", item{"Tea 茶", "1", 500, "0"})
	if j := render(t, pool, ws, renderArgs(id, "")); j.Status != "completed" {
		t.Fatalf("render: %+v", j)
	}
	docs := documents(t, pool, id)
	if len(docs) != 1 || !strings.Contains(text(t, docs[0].PDF), "Tea \uFFFD") {
		t.Fatalf("the PDF lacks the placeholder")
	}
	var warned bool
	for _, line := range strings.Split(d.Logs.String(), "\n") {
		if strings.Contains(line, "characters the font cannot draw") && strings.Contains(line, id) &&
			strings.Contains(line, `U+6F22 '漢' in number`) && strings.Contains(line, `U+8336 '茶' in line 1 description`) {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning naming the characters in the log:\n%s", d.Logs.String())
	}
}

// A thousand lines render on many pages, stored with their page count.
func TestAThousandItemsRenderOnManyPages(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, nil)
	id := newInvoice(t, pool, ws, "BIG-1", "EUR")
	if _, err := pool.Exec(context.Background(), `
		INSERT INTO errand.invoice_items (invoice_id, workspace_id, description, quantity, unit_amount, tax_rate)
		SELECT $1, $2, 'Item ' || lpad(n::text, 4, '0'), 1, n, 20 FROM generate_series(1, 1000) AS n`, id, ws); err != nil {
		t.Fatal(err)
	}
	if j := render(t, pool, ws, renderArgs(id, "")); j.Status != "completed" {
		t.Fatalf("render: %+v", j)
	}
	docs := documents(t, pool, id)
	if len(docs) != 1 || docs[0].Pages < 20 {
		t.Fatalf("documents %+v, want one of many pages", docs)
	}
	got := text(t, docs[0].PDF)
	if !strings.Contains(got, "Item 0001") || !strings.Contains(got, "Item 1000") || !strings.Contains(got, "6,006.00") {
		t.Error("the first or last line or the total is missing")
	}
}

// A receipt whose PDF would make the email's args larger than
// ERRAND_MAX_ARGS_BYTES fails the render at once, naming why, and stores
// nothing (the document and the email commit together or not at all).
func TestReceiptTooLargeForTheArgsLimitFailsAtOnce(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	// The limit is the database's (errand migrate sets it, errand run only
	// raises it); a PDF is some 20 kB, so 8 kB of args cannot carry one.
	migrate := map[string]string{"DATABASE_URL": url, "ERRAND_MAX_ARGS_BYTES": "8192"}
	if err := errand.Main(context.Background(), []string{"migrate"}, errandtest.Env(migrate), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	errandtest.StartDaemon(t, url, map[string]string{"ERRAND_MAX_ARGS_BYTES": "8192"})
	inv := newInvoice(t, pool, ws, "A-1", "EUR", item{"Tea", "1", 500, "20"})
	j := render(t, pool, ws, renderArgs(inv, `, "email_to": "zoe@example.com"`))
	if j.Status != "failed" || j.Attempt != 1 || !strings.Contains(j.LastError, "the receipt email cannot carry the PDF") {
		t.Errorf("got %+v, want failed on attempt 1: the receipt email cannot carry the PDF", j)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.invoice_documents`); n != 0 {
		t.Errorf("%d documents stored by a render whose receipt was refused", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.jobs WHERE kind = 'email.send'`); n != 0 {
		t.Errorf("%d receipt emails enqueued", n)
	}
	// Without the email, the same invoice renders.
	if j := render(t, pool, ws, renderArgs(inv, "")); j.Status != "completed" {
		t.Errorf("the same invoice without email_to: %+v", j)
	}
}

// An invoice in a script the font lacks has hundreds of distinct
// characters: the warning names each once, with where and how often, up
// to a limit, and says how many more there are.
func TestMissingCharactersAreLoggedOnceEachUpToALimit(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, nil)
	var chinese []rune
	for c := rune(0x4E00); c < 0x4E00+30; c++ {
		chinese = append(chinese, c)
	}
	line := item{string(chinese), "1", 100, "0"}
	id := newInvoice(t, pool, ws, "INV-漢", "EUR", line, line, line)
	if j := render(t, pool, ws, renderArgs(id, "")); j.Status != "completed" {
		t.Fatalf("render: %+v", j)
	}
	var warning struct {
		Msg       string
		InvoiceID string `json:"invoice_id"`
		Distinct  int
		Chars     string
	}
	for _, l := range strings.Split(d.Logs.String(), "\n") {
		if strings.Contains(l, "characters the font cannot draw") && strings.Contains(l, id) {
			if err := json.Unmarshal([]byte(l), &warning); err != nil {
				t.Fatalf("%v: %s", err, l)
			}
		}
	}
	if warning.InvoiceID != id || warning.Distinct != 31 {
		t.Fatalf("warning %+v, want one of invoice %s with 31 distinct characters; the log:\n%s", warning, id, d.Logs.String())
	}
	// 漢 and the first 19 of the 30; the other 11 are only counted.
	for _, want := range []string{`U+6F22 '漢' in number`, `U+4E00 '一' in line 1 description and 2 other fields (3 times)`,
		`U+4E12 '丒' in line 1 description and 2 other fields (3 times)`, "and 11 more"} {
		if n := strings.Count(warning.Chars, want); n != 1 {
			t.Errorf("the warning names %q %d times, want once:\n%s", want, n, warning.Chars)
		}
	}
	if strings.Contains(warning.Chars, "U+4E13") {
		t.Errorf("the warning names more than 20 characters:\n%s", warning.Chars)
	}
}

// "email_to": null is no receipt, as leaving email_to out is: the invoice
// renders and no email is enqueued.
func TestEmailToNullSendsNoReceipt(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, nil)
	id := newInvoice(t, pool, ws, "INV-1", "EUR", item{"Tea", "1", 500, "0"})
	if j := render(t, pool, ws, renderArgs(id, `, "email_to": null`)); j.Status != "completed" {
		t.Fatalf("render with email_to null: %+v, want completed", j)
	}
	if n := len(documents(t, pool, id)); n != 1 {
		t.Errorf("%d documents, want 1", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.jobs WHERE kind = 'email.send'`); n != 0 {
		t.Errorf("%d receipt emails enqueued, want none", n)
	}
}
