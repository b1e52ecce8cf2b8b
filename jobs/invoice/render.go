package invoice

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/errand-dev/errand/internal/gofpdf"
	"golang.org/x/text/unicode/norm"
)

// Document is what an invoice's PDF shows: the invoice and its lines as
// stored, and the workspace that issues it.
type Document struct {
	Issuer          string // the workspace's name
	Number          string
	Status          string
	CustomerName    string
	CustomerEmail   string
	CustomerAddress string // lines separated by line breaks
	Currency        string
	IssuedAt        time.Time // a date
	DueAt           time.Time // a date; zero when there is none
	Notes           string
	Lines           []Line
}

// Rendered is a document's PDF and what is known about it.
type Rendered struct {
	PDF    []byte
	SHA256 [32]byte
	Pages  int
	Totals Totals
	// Missing are the characters the font could not draw, each printed as
	// the placeholder U+FFFD: each character once, in the order first met.
	Missing []Missing
}

// Missing is a character shown as the placeholder: the field it is first
// met in, how many fields have it and how often it occurs in all.
type Missing struct {
	Char   rune
	Field  string
	Fields int
	Count  int
}

// String is "U+8336 '茶' in line 1 description", then "(3 times)" when it
// occurs more than once and "and 2 other fields" when elsewhere too.
func (m Missing) String() string {
	s := fmt.Sprintf("%U %q in %s", m.Char, m.Char, m.Field)
	if m.Fields > 1 {
		s += fmt.Sprintf(" and %d other field%s", m.Fields-1, plural(m.Fields-1))
	}
	if m.Count > 1 {
		s += fmt.Sprintf(" (%d times)", m.Count)
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// Paper sizes gofpdf knows, as ERRAND_INVOICE_PAPER names them.
const (
	PaperA4     = "A4"
	PaperLetter = "Letter"
)

// Layout, in millimetres and points.
const (
	margin      = 18.0
	footerSpace = 16.0 // kept free at the bottom of every page for the footer
	rowPad      = 1.2  // above and below a table row's text
	lineHeight  = 4.4  // of 9 pt text
	bodySize    = 9.0
	fontName    = "dejavu"
)

// Render lays out the invoice as a PDF. The same document always gives the
// same bytes: the PDF's dates are the issue date, its catalog is sorted,
// and nothing random goes in.
func Render(doc Document, paper string) (Rendered, error) {
	runes, err := fontRunes()
	if err != nil {
		return Rendered{}, fmt.Errorf("invoice font: %w", err)
	}
	exp, err := Exponent(doc.Currency)
	if err != nil {
		return Rendered{}, err
	}
	if err := printableDate("issued_at", doc.IssuedAt); err != nil {
		return Rendered{}, err
	}
	if !doc.DueAt.IsZero() {
		if err := printableDate("due_at", doc.DueAt); err != nil {
			return Rendered{}, err
		}
	}
	totals, err := Compute(doc.Lines)
	if err != nil {
		return Rendered{}, err
	}
	r := &renderer{runes: runes, exp: exp, seen: map[rune]int{}}
	if paper == "" {
		paper = PaperA4
	}
	f := gofpdf.New("P", "mm", paper, "")
	r.f = f
	day := time.Date(doc.IssuedAt.Year(), doc.IssuedAt.Month(), doc.IssuedAt.Day(), 0, 0, 0, 0, time.UTC)
	if day.IsZero() {
		// 1 January of year 1 is Go's zero time, for which gofpdf writes
		// the time of the render. A nanosecond later is the same date to
		// the second, all a PDF date holds.
		day = day.Add(time.Nanosecond)
	}
	f.SetCreationDate(day)
	f.SetModificationDate(day)
	f.SetCatalogSort(true)
	f.SetProducer("errand", false)
	f.SetCreator("errand invoice.render", false)
	// Each field is cleaned once, so a character the font lacks is counted
	// once per occurrence; the title keeps the whole number, which the
	// page may have to cut.
	r.number = r.clean(doc.Number, "number", false)
	r.issuer = r.clean(doc.Issuer, "issuer", false)
	f.SetTitle("Invoice "+r.number, true)
	f.SetAuthor(r.issuer, true)
	// A copy for each document: gofpdf pads the font's tables with append,
	// which writes into the bytes it was given (past a table's end), so a
	// shared slice would be written by every render at once.
	f.AddUTF8FontFromBytes(fontName, "", bytes.Clone(dejaVuSans))
	f.SetMargins(margin, margin, margin)
	// Rows are placed by hand so a line is never split across pages and
	// the table's header starts every page it continues on.
	f.SetAutoPageBreak(false, footerSpace)
	f.AddPage()
	r.header(doc)
	r.table(doc, totals)
	r.totals(doc, totals)
	r.notes(doc)
	r.footers()
	var out bytes.Buffer
	if err := f.Output(&out); err != nil {
		return Rendered{}, fmt.Errorf("render PDF: %w", err)
	}
	return Rendered{PDF: out.Bytes(), SHA256: sha256.Sum256(out.Bytes()), Pages: f.PageCount(), Totals: totals, Missing: r.missing}, nil
}

// printableDate refuses a date a PDF cannot carry: a PDF date's year has
// four digits (D:YYYYMMDD), and PostgreSQL's dates run from 4713 BC to
// 5874897 AD. Migration 051 refuses such dates at INSERT; an invoice stored
// before it fails its render here.
func printableDate(column string, d time.Time) error {
	y := d.Year()
	if y >= 1 && y <= 9999 {
		return nil
	}
	// As PostgreSQL shows it: Go's year 0 is 1 BC.
	shown := d.Format("2006-01-02")
	if y < 1 {
		shown = fmt.Sprintf("%04d-%02d-%02d BC", 1-y, d.Month(), d.Day())
	}
	return fmt.Errorf("%s %s is not from 0001-01-01 to 9999-12-31, the dates a PDF can print: correct it and render the invoice again",
		column, shown)
}

type renderer struct {
	f              *gofpdf.Fpdf
	runes          map[rune]bool
	exp            int
	number, issuer string // cleaned
	missing        []Missing
	seen           map[rune]int // index in missing: one lookup per character, however many
	lastField      []string     // of each missing character, to count its fields
}

// clean makes text safe to draw: composed (NFC, so "e" and a combining
// diaeresis print as the one "ë" the font has), without control
// characters, and with every character the font cannot draw replaced by
// the placeholder and remembered. Scripts that need right-to-left layout
// or shaping, which gofpdf does not do, count as missing too: a garbled
// name is worse than a visible gap.
func (r *renderer) clean(s, field string, multiline bool) string {
	s = norm.NFC.String(s)
	var b strings.Builder
	for _, c := range s {
		switch {
		case c == '\n' && multiline:
			b.WriteRune('\n')
		case c == '\r':
		case c == '\t' || c == '\n' || unicode.IsSpace(c):
			b.WriteRune(' ')
		case unicode.IsControl(c) || unicode.Is(unicode.Cf, c):
			// Invisible: zero-width joiners, direction marks, soft hyphens.
		case c > 0xFFFF || !r.runes[c] || unicode.In(c, unicode.Arabic, unicode.Hebrew, unicode.Syriac, unicode.Thaana, unicode.Nko):
			b.WriteRune(placeholder)
			r.note(c, field)
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}

// note counts a character the font lacks. A field is cleaned once, so a
// character's fields are counted by the field changing.
func (r *renderer) note(c rune, field string) {
	i, ok := r.seen[c]
	if !ok {
		r.seen[c] = len(r.missing)
		r.missing = append(r.missing, Missing{Char: c, Field: field, Fields: 1, Count: 1})
		r.lastField = append(r.lastField, field)
		return
	}
	r.missing[i].Count++
	if r.lastField[i] != field {
		r.missing[i].Fields++
		r.lastField[i] = field
	}
}

func (r *renderer) money(minor int64) string { return FormatAmount(minor, r.exp) }

func (r *renderer) width() float64 {
	w, _ := r.f.GetPageSize()
	return w - 2*margin
}

func (r *renderer) bottom() float64 {
	_, h := r.f.GetPageSize()
	return h - footerSpace - 4
}

// bold draws with a stroke around the glyphs: one face (see font.go),
// and headings still stand out.
func (r *renderer) bold(draw func()) {
	r.f.SetLineWidth(0.18)
	r.f.SetTextRenderingMode(2)
	draw()
	r.f.SetTextRenderingMode(0)
	r.f.SetLineWidth(0.2)
}

// fit draws one line of text in a cell of width w, shrinking the font for
// text that would not fit (a very large amount) instead of overflowing.
func (r *renderer) fit(w, h float64, s, align string, size float64) {
	r.f.SetFontSize(size)
	if sw := r.f.GetStringWidth(s); sw > w-2 {
		r.f.SetFontSize(max(size*(w-2)/sw, 4))
	}
	r.f.CellFormat(w, h, s, "", 0, align, false, 0, "")
	r.f.SetFontSize(size)
}

// fitText is fit for text that may be cut (an invoice number of any
// length): it shrinks to 6 pt at most, then ends with "…" where it fits.
func (r *renderer) fitText(w, h float64, s, align string, size float64) {
	r.f.SetFontSize(size)
	if sw := r.f.GetStringWidth(s); sw > w-2 {
		r.f.SetFontSize(max(size*(w-2)/sw, min(size, 6)))
	}
	r.f.CellFormat(w, h, r.cut(s, w-2), "", 0, align, false, 0, "")
	r.f.SetFontSize(size)
}

// cut returns s, or its longest start followed by "…" that is at most w
// millimetres wide at the current font size, never ending between a
// letter and its combining marks.
func (r *renderer) cut(s string, w float64) string {
	if r.f.GetStringWidth(s) <= w {
		return s
	}
	runes := []rune(s)
	n := sort.Search(len(runes)+1, func(n int) bool {
		return r.f.GetStringWidth(string(runes[:n])+"…") > w
	}) - 1
	for n > 0 && unicode.Is(unicode.Mn, runes[n]) {
		n--
	}
	return string(runes[:max(n, 0)]) + "…"
}

// lines wraps text to width w at the current font size; never empty.
func (r *renderer) lines(s string, w float64) []string {
	var out []string
	for _, para := range strings.Split(s, "\n") {
		split := r.f.SplitText(para, w)
		if len(split) == 0 {
			split = []string{""}
		}
		out = append(out, split...)
	}
	return out
}

// capLines keeps at most n lines, ending the last kept one with "…" when
// some are dropped: the header has no page to overflow onto.
func capLines(lines []string, n int) []string {
	if len(lines) <= n {
		return lines
	}
	if n <= 0 {
		return nil
	}
	out := append([]string(nil), lines[:n]...)
	out[n-1] += " …"
	return out
}

func (r *renderer) header(doc Document) {
	f := r.f
	w := r.width()
	left := margin
	f.SetTextColor(20, 20, 20)
	f.SetFont(fontName, "", 16)
	for _, l := range capLines(r.lines(r.issuer, w*0.6), 3) {
		f.SetX(left)
		r.bold(func() { f.CellFormat(w*0.6, 7.5, l, "", 2, "L", false, 0, "") })
	}
	issuerBottom := f.GetY()
	top := margin
	f.SetXY(left+w*0.6, top)
	f.SetFont(fontName, "", 20)
	title := "Invoice"
	r.bold(func() { f.CellFormat(w*0.4, 9, title, "", 2, "R", false, 0, "") })
	if doc.Status != "" && doc.Status != "open" {
		f.SetX(left + w*0.6)
		f.SetFont(fontName, "", 11)
		f.SetTextColor(170, 40, 40)
		r.bold(func() { f.CellFormat(w*0.4, 6, strings.ToUpper(doc.Status), "", 2, "R", false, 0, "") })
		f.SetTextColor(20, 20, 20)
	}
	metaY := max(f.GetY(), issuerBottom, top+16) + 2
	f.SetFont(fontName, "", bodySize)
	meta := [][2]string{
		{"Invoice number", r.number},
		{"Issue date", doc.IssuedAt.Format("2 January 2006")},
	}
	if !doc.DueAt.IsZero() {
		meta = append(meta, [2]string{"Due date", doc.DueAt.Format("2 January 2006")})
	}
	meta = append(meta, [2]string{"Currency", doc.Currency})
	y := metaY
	for _, m := range meta {
		f.SetXY(left+w*0.5, y)
		f.SetTextColor(110, 110, 110)
		f.CellFormat(w*0.2, lineHeight+0.6, m[0], "", 0, "L", false, 0, "")
		f.SetTextColor(20, 20, 20)
		r.fitText(w*0.3, lineHeight+0.6, m[1], "R", bodySize)
		y += lineHeight + 0.6
	}

	// Bill to, beside the details.
	f.SetXY(left, metaY)
	f.SetTextColor(110, 110, 110)
	f.CellFormat(w*0.45, lineHeight+0.6, "Bill to", "", 2, "L", false, 0, "")
	f.SetTextColor(20, 20, 20)
	bill := []string{r.clean(doc.CustomerName, "customer_name", false)}
	if doc.CustomerEmail != "" {
		bill = append(bill, r.clean(doc.CustomerEmail, "customer_email", false))
	}
	if doc.CustomerAddress != "" {
		bill = append(bill, r.clean(doc.CustomerAddress, "customer_address", true))
	}
	budget := 14 // lines: the block must leave the page room for the table
	for i, part := range bill {
		lines := capLines(r.lines(part, w*0.45), budget)
		budget -= len(lines)
		for _, l := range lines {
			f.SetX(left)
			if i == 0 {
				r.bold(func() { f.CellFormat(w*0.45, lineHeight+0.6, l, "", 2, "L", false, 0, "") })
				continue
			}
			f.CellFormat(w*0.45, lineHeight+0.6, l, "", 2, "L", false, 0, "")
		}
	}
	f.SetY(max(f.GetY(), y) + 8)
}

// columns of the line table: description, quantity, unit price, tax, amount.
func (r *renderer) columns() [5]float64 {
	w := r.width()
	return [5]float64{w - 18 - 30 - 16 - 32, 18, 30, 16, 32}
}

func (r *renderer) tableHeader() {
	f := r.f
	cols := r.columns()
	f.SetFont(fontName, "", bodySize)
	f.SetFillColor(238, 238, 238)
	f.SetX(margin)
	for i, h := range []string{"Description", "Qty", "Unit price", "Tax", "Amount"} {
		align := "R"
		if i == 0 {
			align = "L"
		}
		r.bold(func() { f.CellFormat(cols[i], lineHeight+2*rowPad, h, "", 0, align, true, 0, "") })
	}
	f.Ln(-1)
}

// space makes sure h millimetres fit above the footer, starting a new page
// (with the table's header when inTable) when they do not.
func (r *renderer) space(h float64, inTable bool) {
	if r.f.GetY()+h <= r.bottom() {
		return
	}
	r.f.AddPage()
	if inTable {
		r.tableHeader()
	}
}

func (r *renderer) table(doc Document, totals Totals) {
	f := r.f
	cols := r.columns()
	r.space(3*(lineHeight+2*rowPad), false)
	r.tableHeader()
	if len(doc.Lines) == 0 {
		f.SetX(margin)
		f.SetTextColor(110, 110, 110)
		f.CellFormat(r.width(), lineHeight+2*rowPad, "No items", "", 1, "L", false, 0, "")
		f.SetTextColor(20, 20, 20)
	}
	f.SetDrawColor(220, 220, 220)
	for i, l := range doc.Lines {
		desc := r.lines(r.clean(l.Description, fmt.Sprintf("line %d description", i+1), true), cols[0])
		h := float64(len(desc))*lineHeight + 2*rowPad
		if h > r.bottom()-margin-2*(lineHeight+2*rowPad) {
			// A description longer than a page: cut, never lose the row.
			keep := int((r.bottom() - margin - 3*(lineHeight+2*rowPad)) / lineHeight)
			desc = append(desc[:keep-1], desc[keep-1]+" …")
			h = float64(len(desc))*lineHeight + 2*rowPad
		}
		r.space(h, true)
		y := f.GetY()
		f.SetFontSize(bodySize)
		for k, dl := range desc {
			f.SetXY(margin, y+rowPad+float64(k)*lineHeight)
			f.CellFormat(cols[0], lineHeight, dl, "", 0, "L", false, 0, "")
		}
		q, _ := parseDecimal(l.Quantity)
		rate, _ := parseDecimal(l.TaxRate)
		x := margin + cols[0]
		f.SetXY(x, y+rowPad)
		r.fit(cols[1], lineHeight, formatDecimal(q), "R", bodySize)
		r.fit(cols[2], lineHeight, r.money(l.UnitAmount), "R", bodySize)
		r.fit(cols[3], lineHeight, formatDecimal(rate)+" %", "R", bodySize)
		r.fit(cols[4], lineHeight, r.money(totals.Lines[i]), "R", bodySize)
		f.Line(margin, y+h, margin+r.width(), y+h)
		f.SetY(y + h)
	}
}

func (r *renderer) totals(doc Document, t Totals) {
	f := r.f
	w := r.width()
	rows := [][2]string{{"Subtotal", r.money(t.Subtotal)}}
	for _, tax := range t.Taxes {
		rows = append(rows, [2]string{fmt.Sprintf("Tax %s %% on %s", tax.Rate, r.money(tax.Base)), r.money(tax.Tax)})
	}
	h := lineHeight + 1.6
	// The block stays together when a page can hold it; one taller than a
	// page (dozens of tax rates) continues row by row on the next ones.
	if block := float64(len(rows)+1)*h + 6; block <= r.bottom()-margin {
		r.space(block, false)
	}
	f.Ln(3)
	labelW, amountW := w*0.35, w*0.2
	for _, row := range rows {
		r.space(h, false)
		f.SetX(margin + w - labelW - amountW)
		f.SetTextColor(80, 80, 80)
		r.fit(labelW, h, row[0], "L", bodySize)
		f.SetTextColor(20, 20, 20)
		r.fit(amountW, h, row[1], "R", bodySize)
		f.Ln(h)
	}
	r.space(h+1.5, false)
	f.SetDrawColor(120, 120, 120)
	f.Line(margin+w-labelW-amountW, f.GetY(), margin+w, f.GetY())
	f.SetX(margin + w - labelW - amountW)
	f.SetFont(fontName, "", 11)
	r.bold(func() {
		f.CellFormat(labelW, h+1.5, "Total "+doc.Currency, "", 0, "L", false, 0, "")
		r.fit(amountW, h+1.5, r.money(t.Total), "R", 11)
	})
	f.Ln(h + 1.5)
	f.SetFont(fontName, "", bodySize)
}

func (r *renderer) notes(doc Document) {
	if strings.TrimSpace(doc.Notes) == "" {
		return
	}
	f := r.f
	r.space(2*lineHeight+8, false)
	f.Ln(6)
	f.SetX(margin)
	f.SetTextColor(110, 110, 110)
	f.CellFormat(r.width(), lineHeight, "Notes", "", 2, "L", false, 0, "")
	f.SetTextColor(20, 20, 20)
	for _, l := range r.lines(r.clean(doc.Notes, "notes", true), r.width()) {
		r.space(lineHeight, false)
		f.SetX(margin)
		f.CellFormat(r.width(), lineHeight, l, "", 2, "L", false, 0, "")
	}
}

// footers writes "Invoice <number>" and "Page x of y" on every page, once
// the number of pages is known.
func (r *renderer) footers() {
	f := r.f
	_, h := f.GetPageSize()
	n := f.PageCount()
	for p := 1; p <= n; p++ {
		f.SetPage(p)
		// gofpdf writes a font change only when the font changes: say it
		// again on this page, whatever the last page ended with.
		f.SetFont(fontName, "", 7.5)
		f.SetFont(fontName, "", 8)
		f.SetTextColor(110, 110, 110)
		f.SetXY(margin, h-margin+4)
		// A number too long for half the line is cut: the title has it whole.
		f.CellFormat(r.width()/2, 5, r.cut("Invoice "+r.number, r.width()/2-2), "", 0, "L", false, 0, "")
		f.CellFormat(r.width()/2, 5, fmt.Sprintf("Page %d of %d", p, n), "", 0, "R", false, 0, "")
	}
}
