package invoice

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pdftotext is poppler's text extraction (Debian: poppler-utils; .ci/run
// installs it): what a reader's PDF viewer finds when searching the PDF.
func pdftotext(t testing.TB, pdf []byte, args ...string) string {
	t.Helper()
	cmd := exec.Command("pdftotext", append(append([]string{"-enc", "UTF-8"}, args...), "-", "-")...)
	cmd.Stdin = bytes.NewReader(pdf)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pdftotext (poppler-utils) could not read the PDF: %v %s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("pdftotext complained about the PDF: %s", stderr.String())
	}
	return string(out)
}

// pdfinfo reads the PDF's metadata with poppler, e.g. "Pages".
func pdfinfo(t testing.TB, pdf []byte) map[string]string {
	t.Helper()
	cmd := exec.Command("pdfinfo", "-")
	cmd.Stdin = bytes.NewReader(pdf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pdfinfo: %v %s", err, out)
	}
	info := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			info[k] = strings.TrimSpace(v)
		}
	}
	if strings.Contains(string(out), "Syntax Error") {
		t.Errorf("pdfinfo found errors:\n%s", out)
	}
	return info
}

func date(s string) time.Time {
	d, err := time.Parse("2006-01-02", s)
	if err != nil {
		panic(err)
	}
	return d
}

func sample() Document {
	return Document{
		Issuer:          "Müller & Søn GmbH",
		Number:          "INV-2026-0042",
		Status:          "open",
		CustomerName:    "Zoë Ørsted",
		CustomerEmail:   "zoe@example.com",
		CustomerAddress: "Ελληνική Εταιρεία\nООО Ромашка\nул. Ленина 1, Москва",
		Currency:        "EUR",
		IssuedAt:        date("2026-03-01"),
		DueAt:           date("2026-03-31"),
		Notes:           "Thank you for your business.\nPay by bank transfer.",
		Lines: []Line{
			{Description: "Consulting (hours)", Quantity: "2.5", UnitAmount: 12000, TaxRate: "20"},
			{Description: "Travel", Quantity: "1", UnitAmount: 4550, TaxRate: "7"},
			{Description: "Discount", Quantity: "1", UnitAmount: -1000, TaxRate: "20"},
		},
	}
}

func render(t testing.TB, doc Document) Rendered {
	t.Helper()
	r, err := Render(doc, PaperA4)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPDFTextHasEverythingTheInvoiceSays(t *testing.T) {
	r := render(t, sample())
	text := pdftotext(t, r.PDF)
	for _, want := range []string{
		"Müller & Søn GmbH", "Invoice", "INV-2026-0042", "1 March 2026", "31 March 2026",
		"Bill to", "Zoë Ørsted", "zoe@example.com", "Ελληνική Εταιρεία", "ООО Ромашка", "ул. Ленина 1, Москва",
		"Consulting (hours)", "2.5", "120.00", "300.00", "Travel", "45.50", "Discount", "-10.00",
		"Subtotal", "335.50", "Tax 7 % on 45.50", "3.19", "Tax 20 % on 290.00", "58.00", "Total EUR", "396.69",
		"Notes", "Thank you for your business.", "Pay by bank transfer.", "Invoice INV-2026-0042", "Page 1 of 1",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the PDF's text lacks %q:\n%s", want, text)
		}
	}
	if r.Pages != 1 || pdfinfo(t, r.PDF)["Pages"] != "1" {
		t.Errorf("pages %d (pdfinfo %s), want 1", r.Pages, pdfinfo(t, r.PDF)["Pages"])
	}
	if len(r.Missing) != 0 {
		t.Errorf("missing characters %v, want none", r.Missing)
	}
	if r.SHA256 != sha256.Sum256(r.PDF) {
		t.Error("SHA256 is not the PDF's")
	}
}

// Names typed on a Mac often arrive decomposed ("e" and a combining
// diaeresis): they print, and extract, as the one character.
func TestDecomposedNamesPrintComposed(t *testing.T) {
	doc := sample()
	doc.CustomerName = "Zoe\u0308 O\u0308zil"
	text := pdftotext(t, render(t, doc).PDF)
	if !strings.Contains(text, "Zoë Özil") {
		t.Errorf("the PDF's text lacks the composed name:\n%s", text)
	}
}

func TestAmountsFollowTheCurrencysDecimals(t *testing.T) {
	for _, tc := range []struct {
		currency string
		want     []string
	}{
		{"JPY", []string{"Total JPY", "12,346", "1,234,567"}},
		{"EUR", []string{"Total EUR", "123.46", "12,345.67"}},
		{"USD", []string{"Total USD", "123.46", "12,345.67"}},
		{"KWD", []string{"Total KWD", "12.346", "1,234.567"}},
		{"BHD", []string{"Total BHD", "12.346", "1,234.567"}},
		{"COP", []string{"Total COP", "123.46", "12,345.67"}},
		{"IQD", []string{"Total IQD", "12.346", "1,234.567"}},
	} {
		t.Run(tc.currency, func(t *testing.T) {
			doc := sample()
			doc.Currency = tc.currency
			doc.Lines = []Line{{Description: "Widget", Quantity: "100", UnitAmount: 12346, TaxRate: "0"}, {Description: "Gadget", Quantity: "1", UnitAmount: 1234567, TaxRate: "0"}}
			text := pdftotext(t, render(t, doc).PDF)
			for _, want := range tc.want {
				if !strings.Contains(text, want) {
					t.Errorf("lacks %q:\n%s", want, text)
				}
			}
		})
	}
}

func TestSameInvoiceSameBytes(t *testing.T) {
	first := render(t, sample())
	// Renders at once on many goroutines, as a busy replica would.
	var wg sync.WaitGroup
	got := make([]Rendered, 8)
	errs := make([]error, len(got))
	for i := range got {
		// Not render: t.Fatal must not run on another goroutine.
		wg.Go(func() { got[i], errs[i] = Render(sample(), PaperA4) })
	}
	wg.Wait()
	for i, r := range got {
		if errs[i] != nil {
			t.Fatalf("render %d: %v", i, errs[i])
		}
		if !bytes.Equal(r.PDF, first.PDF) || r.SHA256 != first.SHA256 {
			t.Fatalf("render %d differs from the first", i)
		}
	}
	info := pdfinfo(t, first.PDF)
	for _, k := range []string{"CreationDate", "ModDate"} {
		if !strings.Contains(info[k], "Mar  1 00:00:00 2026") {
			t.Errorf("%s %q, want the issue date", k, info[k])
		}
	}
	changed := sample()
	changed.Lines[1].UnitAmount++
	if render(t, changed).SHA256 == first.SHA256 {
		t.Error("a changed invoice renders the same bytes")
	}
}

// A thousand lines run over many pages: no line is lost or split, and
// every page has the table's header and "Page x of y".
func TestThousandItemsBreakAcrossPagesWithTheHeaderRepeated(t *testing.T) {
	doc := sample()
	doc.Lines = nil
	for i := 1; i <= 1000; i++ {
		desc := fmt.Sprintf("Item %04d", i)
		if i%10 == 0 {
			desc += " with a description long enough to wrap onto a second line of the description column"
		}
		doc.Lines = append(doc.Lines, Line{Description: desc, Quantity: "1", UnitAmount: int64(i), TaxRate: "20"})
	}
	r := render(t, doc)
	if r.Pages < 20 {
		t.Fatalf("%d pages for 1000 lines, want many", r.Pages)
	}
	if got := pdfinfo(t, r.PDF)["Pages"]; got != strconv.Itoa(r.Pages) {
		t.Fatalf("pdfinfo counts %s pages, the renderer %d", got, r.Pages)
	}
	all := pdftotext(t, r.PDF)
	for i := 1; i <= 1000; i++ {
		if n := strings.Count(all, fmt.Sprintf("Item %04d", i)); n != 1 {
			t.Fatalf("Item %04d appears %d times, want once", i, n)
		}
	}
	// 1..1000 is 500,500 cents; 20 % of it once.
	for _, want := range []string{"5,005.00", "1,001.00", "6,006.00"} {
		if !strings.Contains(all, want) {
			t.Errorf("totals lack %s", want)
		}
	}
	header := regexp.MustCompile(`Description\s+Qty\s+Unit price\s+Tax\s+Amount`)
	for p := 1; p <= r.Pages; p++ {
		page := pdftotext(t, r.PDF, "-layout", "-f", strconv.Itoa(p), "-l", strconv.Itoa(p))
		if !strings.Contains(page, fmt.Sprintf("Page %d of %d", p, r.Pages)) {
			t.Errorf("page %d lacks \"Page %d of %d\"", p, p, r.Pages)
		}
		// The last page may hold only the totals and notes.
		if p < r.Pages && !header.MatchString(page) {
			t.Errorf("page %d lacks the table's header:\n%s", p, page)
		}
	}
}

func TestAnInvoiceWithoutItemsRenders(t *testing.T) {
	doc := sample()
	doc.Lines = nil
	r := render(t, doc)
	text := pdftotext(t, r.PDF)
	for _, want := range []string{"No items", "Subtotal", "Total EUR", "0.00", "Page 1 of 1"} {
		if !strings.Contains(text, want) {
			t.Errorf("lacks %q:\n%s", want, text)
		}
	}
	if r.Totals.Total != 0 {
		t.Errorf("total %d", r.Totals.Total)
	}
}

// What the font cannot draw (Chinese, emoji, and scripts gofpdf cannot lay
// out) prints as the visible placeholder U+FFFD and is reported, and the
// PDF stays whole.
func TestCharactersTheFontLacksBecomePlaceholders(t *testing.T) {
	doc := sample()
	doc.CustomerName = "李 Ann 😀"
	doc.Notes = "Shukran: شكرا\x07 end"
	doc.Lines[0].Description = "Tea 茶"
	r := render(t, doc)
	text := pdftotext(t, r.PDF)
	for _, want := range []string{"\uFFFD Ann \uFFFD", "Tea \uFFFD", "Shukran: \uFFFD\uFFFD\uFFFD\uFFFD end"} {
		if !strings.Contains(text, want) {
			t.Errorf("lacks %q:\n%s", want, text)
		}
	}
	for _, gone := range []string{"李", "😀", "茶", "ش", "\x07"} {
		if strings.Contains(text, gone) {
			t.Errorf("%q reached the PDF", gone)
		}
	}
	var got []string
	for _, m := range r.Missing {
		got = append(got, m.String())
	}
	want := []string{`U+674E '李' in customer_name`, `U+1F600 '😀' in customer_name`, `U+8336 '茶' in line 1 description`,
		`U+0634 'ش' in notes`, `U+0643 'ك' in notes`, `U+0631 'ر' in notes`, `U+0627 'ا' in notes`}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("missing\n%s\nwant\n%s", strings.Join(got, "; "), strings.Join(want, "; "))
	}
	if pdfinfo(t, r.PDF)["Pages"] != "1" {
		t.Error("the PDF is not whole")
	}
}

func TestHugeAmountsStillRender(t *testing.T) {
	doc := sample()
	doc.Lines = []Line{{Description: "Everything", Quantity: "1", UnitAmount: 9_000_000_000_000_000_000, TaxRate: "0"}}
	text := pdftotext(t, render(t, doc).PDF)
	if !strings.Contains(text, "90,000,000,000,000,000.00") {
		t.Errorf("lacks the amount:\n%s", text)
	}
}

func TestLetterPaper(t *testing.T) {
	r, err := Render(sample(), PaperLetter)
	if err != nil {
		t.Fatal(err)
	}
	if got := pdfinfo(t, r.PDF)["Page size"]; !strings.Contains(got, "612 x 792") {
		t.Errorf("page size %q, want Letter", got)
	}
}

func TestArmenianAndGeorgianNamesPrint(t *testing.T) {
	doc := sample()
	doc.CustomerName = "Անի Սարգսյան"
	doc.CustomerAddress = "ნინო ბერიძე\nΦιλοσοφία ΑΕ"
	r := render(t, doc)
	text := pdftotext(t, r.PDF)
	for _, want := range []string{"Անի Սարգսյան", "ნინო ბერიძე", "Φιλοσοφία ΑΕ"} {
		if !strings.Contains(text, want) {
			t.Errorf("lacks %q:\n%s", want, text)
		}
	}
	if len(r.Missing) != 0 {
		t.Errorf("missing %v", r.Missing)
	}
}

// The header has no page to overflow onto: an address of 100 lines is
// cut, and the table still starts on page 1.
func TestAnOverlongAddressIsCut(t *testing.T) {
	doc := sample()
	doc.CustomerAddress = strings.Repeat("Line of an address\n", 100)
	doc.Issuer = strings.Repeat("A very long company name ", 20)
	r := render(t, doc)
	first := pdftotext(t, r.PDF, "-f", "1", "-l", "1")
	if !strings.Contains(first, "Line of an address …") || !strings.Contains(first, "Consulting (hours)") {
		t.Errorf("page 1:\n%s", first)
	}
	if r.Pages != 1 {
		t.Errorf("%d pages, want 1", r.Pages)
	}
}
