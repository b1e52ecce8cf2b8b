// Package invoice is kind "invoice.render" (queue documents): it renders an
// invoice the app keeps in errand.invoices and errand.invoice_items as a
// PDF with gofpdf, stores it as a version in errand.invoice_documents and,
// when asked, emails it with email.send's template invoice_receipt, both
// in the transaction that completes the job. The kind brings its
// configuration (config.go), its queries (queries.go), its money
// arithmetic (money.go), its font (font.go, fonts/) and its layout
// (render.go); its tables are in migrations/012_invoices.sql. Decisions:
// docs/invoices.md.
package invoice

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/jobs/email"
)

// Name is the kind's name in errand.jobs.
const Name = "invoice.render"

// ReceiptTemplate is the email.send template of the receipt.
const ReceiptTemplate = "invoice_receipt"

// Args are the args of kind "invoice.render".
type Args struct {
	// InvoiceID is an invoice of the job's workspace.
	InvoiceID string `json:"invoice_id" errand:"required"`
	// EmailTo, one address or an array of them, gets the PDF with the
	// invoice_receipt email.
	EmailTo Recipients `json:"email_to,omitempty"`
}

// Recipients is one address or an array of them in JSON.
type Recipients []string

// UnmarshalJSON accepts "a@x.com" as well as ["a@x.com", ...]; null is
// no recipient, as leaving email_to out is.
func (r *Recipients) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		*r = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*r = Recipients{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New(`"email_to" must be an address or an array of addresses`)
	}
	*r = many
	return nil
}

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// maxRecipients is email.send's limit.
const maxRecipients = 50

// Validate checks what the SQL contract cannot: the job fails at once.
func (a Args) Validate() error {
	var problems []error
	if !uuidPattern.MatchString(a.InvoiceID) {
		problems = append(problems, fmt.Errorf("invoice_id %q is not a uuid", a.InvoiceID))
	}
	if len(a.EmailTo) > maxRecipients {
		problems = append(problems, fmt.Errorf("email_to: %d recipients, at most %d", len(a.EmailTo), maxRecipients))
	}
	// email.send's own check: an address it would refuse fails the render
	// now, not its receipt after the PDF is stored.
	for _, addr := range a.EmailTo {
		if err := email.CheckAddress(addr); err != nil {
			problems = append(problems, fmt.Errorf("email_to: %w", err))
		}
	}
	return errors.Join(problems...)
}

// Kind is kind "invoice.render". Build it once per daemon (errand.Main
// does): its configuration is read when the daemon starts it.
func Kind() jobs.Kind {
	k := &renderKind{logger: slog.New(slog.DiscardHandler), cfg: config{paper: PaperA4}}
	return jobs.Define(Name, jobs.QueueDocuments, k.work,
		jobs.WithStrictArgs(),
		jobs.WithTimeout(2*time.Minute),
		jobs.WithEnv(envVars()...),
		jobs.WithSetup(func(ctx context.Context, s *jobs.Setup) error {
			cfg, err := loadConfig(s.Env)
			if err != nil {
				return err
			}
			if _, err := fontRunes(); err != nil {
				return fmt.Errorf("invoice font: %w", err)
			}
			k.cfg, k.logger = cfg, s.Logger
			return nil
		}),
		jobs.WithDescription("renders an invoice as a PDF into errand.invoice_documents, and emails it when asked"))
}

type renderKind struct {
	cfg    config
	logger *slog.Logger
}

// badInvoice is an invoice that cannot be rendered as it is: retrying
// cannot help, the job fails at once.
type badInvoice struct{ err error }

func (b *badInvoice) Error() string { return b.err.Error() }
func (b *badInvoice) Unwrap() error { return b.err }

// work reads, renders and stores the invoice, and enqueues its receipt,
// all in the transaction that completes the job: a crash or a retry before
// the commit leaves nothing, and nothing is stored or sent twice.
func (k *renderKind) work(ctx context.Context, job *jobs.Job, args Args) error {
	err := job.CompleteInWorkspace(ctx, func(tx pgx.Tx) error {
		doc, found, err := loadDocument(ctx, tx, args.InvoiceID)
		if err != nil {
			return err
		}
		if !found {
			return &badInvoice{fmt.Errorf("invoice %s does not exist in workspace %s", args.InvoiceID, job.WorkspaceID)}
		}
		r, err := Render(doc, k.cfg.paper)
		if err != nil {
			return &badInvoice{fmt.Errorf("render invoice %s: %w", args.InvoiceID, err)}
		}
		if len(r.Missing) > 0 {
			k.logger.Warn("invoice text has characters the font cannot draw; they are printed as the placeholder U+FFFD",
				slog.Int64("job_id", job.ID), slog.String("workspace_id", job.WorkspaceID),
				slog.String("invoice_id", args.InvoiceID), slog.Int("distinct", len(r.Missing)),
				slog.String("chars", missingChars(r.Missing)))
		}
		version, err := storeDocument(ctx, tx, job.WorkspaceID, args.InvoiceID, job.ID, r)
		if err != nil {
			return err
		}
		if len(args.EmailTo) == 0 {
			return nil
		}
		receipt, err := receiptArgs(args.EmailTo, doc, r.Totals, version.PDF)
		if err != nil {
			return err
		}
		// The invoice was read under the workspace's scope; the email is
		// enqueued through the contract as errand's own role.
		if err := job.Store().Unscope(ctx, tx); err != nil {
			return err
		}
		return enqueueReceipt(ctx, tx, job.WorkspaceID, receipt)
	})
	var bad *badInvoice
	if errors.As(err, &bad) {
		return jobs.Permanent(bad)
	}
	return err
}

// maxLoggedMissing caps the characters one warning names: an invoice in a
// script the font lacks has hundreds of distinct ones.
const maxLoggedMissing = 20

// missingChars names the first maxLoggedMissing characters the font lacks,
// each once with where and how often, and says how many more there are.
func missingChars(ms []Missing) string {
	n := min(len(ms), maxLoggedMissing)
	chars := make([]string, n, n+1)
	for i, m := range ms[:n] {
		chars[i] = m.String()
	}
	if len(ms) > n {
		chars = append(chars, fmt.Sprintf("and %d more", len(ms)-n))
	}
	return strings.Join(chars, ", ")
}

// receiptArgs are the email.send args of the receipt, the PDF attached.
func receiptArgs(to Recipients, doc Document, t Totals, pdf []byte) ([]byte, error) {
	exp, err := Exponent(doc.Currency)
	if err != nil {
		return nil, err
	}
	data := email.TemplateData{
		"invoice_number": doc.Number,
		"customer_name":  doc.CustomerName,
		"total":          doc.Currency + " " + FormatAmount(t.Total, exp),
		"issued_at":      doc.IssuedAt.Format("2 January 2006"),
	}
	if !doc.DueAt.IsZero() {
		data["due_at"] = doc.DueAt.Format("2 January 2006")
	}
	return json.Marshal(email.Args{
		To:       email.Recipients(to),
		Template: ReceiptTemplate,
		Data:     data,
		Attachments: []email.Attachment{{
			Filename:      attachmentName(doc.Number),
			ContentBase64: base64.StdEncoding.EncodeToString(pdf),
			ContentType:   "application/pdf",
		}},
	})
}

// attachmentName is "invoice-<number>.pdf" with only characters every
// mail client keeps in a file name.
func attachmentName(number string) string {
	var b strings.Builder
	for _, r := range number {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	name := strings.Trim(b.String(), "-.")
	if name == "" {
		name = "document"
	}
	return "invoice-" + name + ".pdf"
}
