package invoice

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
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

// An invoice issued on 1 January of year 1 (at midnight UTC, Go's zero
// time) keeps that date in the PDF: gofpdf replaces a zero date with the
// time of the render, which made every render of it different bytes.
func TestAnInvoiceIssuedOnGosZeroTimeRendersTheSameBytes(t *testing.T) {
	doc := sample()
	doc.IssuedAt = time.Date(1, time.January, 1, 0, 0, 0, 0, time.UTC)
	doc.DueAt = time.Time{}
	first := render(t, doc)
	for _, k := range []string{"/CreationDate", "/ModDate"} {
		if want := k + " (D:00010101000000)"; !bytes.Contains(first.PDF, []byte(want)) {
			t.Errorf("the PDF lacks %q: its date is not the issue date", want)
		}
	}
	if !strings.Contains(pdftotext(t, first.PDF), "1 January 0001") {
		t.Error("the PDF does not show the issue date 1 January 0001")
	}
	if again := render(t, doc); !bytes.Equal(again.PDF, first.PDF) {
		t.Error("a second render of the invoice issued on 0001-01-01 differs from the first")
	}
}

// Dates a PDF cannot carry (its dates have four-digit years) are refused
// by Render, for an invoice stored before migration 051 refused them, and
// the job fails at once.
func TestDatesOutsideFourDigitYearsAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name        string
		issued, due time.Time
		want        string
	}{
		{"an issue date in year 10000", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}, "issued_at 10000-01-01 is not from 0001-01-01 to 9999-12-31"},
		{"an issue date in 44 BC", time.Date(-43, 3, 15, 0, 0, 0, 0, time.UTC), time.Time{}, "issued_at 0044-03-15 BC is not from 0001-01-01 to 9999-12-31"},
		{"an issue date in 1 BC", time.Date(0, 12, 31, 0, 0, 0, 0, time.UTC), time.Time{}, "issued_at 0001-12-31 BC is not"},
		{"a due date in year 10000", date("2026-03-01"), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), "due_at 10000-01-01 is not from 0001-01-01 to 9999-12-31"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := sample()
			doc.IssuedAt, doc.DueAt = tc.issued, tc.due
			_, err := Render(doc, PaperA4)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
	doc := sample()
	doc.IssuedAt, doc.DueAt = date("0001-01-01"), date("9999-12-31")
	if _, err := Render(doc, PaperA4); err != nil {
		t.Errorf("issued 0001-01-01, due 9999-12-31: %v, want it rendered", err)
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

// A combining mark with no composed form left after NFC (Yoruba's ọ́, a
// Russian stress mark) is a zero-width glyph: the name and the description
// stay on one line each.
func TestCombiningMarksDoNotBreakTheLine(t *testing.T) {
	doc := sample()
	doc.CustomerName = "Ọlọ́run Adébáyọ̀"
	doc.Lines[0].Description = "Ọlọ́run Adébáyọ̀ — консульта́ция"
	lines := strings.Split(pdftotext(t, render(t, doc).PDF), "\n")
	for _, want := range []string{"Ọlọ́run Adébáyọ̀", "Ọlọ́run Adébáyọ̀ — консульта́ция"} {
		if !slices.Contains(lines, want) {
			t.Errorf("no line is %q:\n%s", want, strings.Join(lines, "\n"))
		}
	}
}

// Eighty tax rates make a totals block taller than a page: it continues on
// the next pages, and every rate and the total are printed.
func TestTotalsTallerThanAPageContinueOnTheNextPages(t *testing.T) {
	doc := sample()
	doc.Lines = nil
	for i := range 80 {
		doc.Lines = append(doc.Lines, Line{Description: fmt.Sprintf("Item %d", i), Quantity: "1", UnitAmount: 1000, TaxRate: fmt.Sprintf("%d.5", i)})
	}
	r := render(t, doc)
	text := pdftotext(t, r.PDF)
	for i := range 80 {
		row := regexp.MustCompile(fmt.Sprintf(`Tax %d\.5 %% on 10\.00\s+%d\.%02d\b`, i, (i*10+5)/100, (i*10+5)%100))
		if n := len(row.FindAllString(text, -1)); n != 1 {
			t.Errorf("the row of rate %d.5 %% is printed %d times, want once", i, n)
		}
	}
	// 80 × 10.00 and 0.5 % + 1.5 % + … + 79.5 % of 10.00 (320.00).
	if !regexp.MustCompile(`Total EUR\s+1,120\.00`).MatchString(text) {
		t.Errorf("the total is not printed:\n%s", text)
	}
	last := pdftotext(t, r.PDF, "-f", strconv.Itoa(r.Pages), "-l", strconv.Itoa(r.Pages))
	if !strings.Contains(last, "Total EUR") || !strings.Contains(last, fmt.Sprintf("Page %d of %d", r.Pages, r.Pages)) {
		t.Errorf("the last page lacks the total or its footer:\n%s", last)
	}
}

// box is a word's place on its page, as pdftotext -bbox reads it (points).
type box struct {
	word                   string
	xMin, yMin, xMax, yMax float64
}

var (
	bboxPage = regexp.MustCompile(`<page width="([0-9.]+)" height="([0-9.]+)">`)
	bboxWord = regexp.MustCompile(`<word xMin="([0-9.-]+)" yMin="([0-9.-]+)" xMax="([0-9.-]+)" yMax="([0-9.-]+)">([^<]*)</word>`)
)

// wordBoxes are the words of each page with the page's size.
func wordBoxes(t *testing.T, pdf []byte) (pages [][]box, width, height float64) {
	t.Helper()
	num := func(s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, l := range strings.Split(pdftotext(t, pdf, "-bbox"), "\n") {
		if m := bboxPage.FindStringSubmatch(l); m != nil {
			pages = append(pages, nil)
			width, height = num(m[1]), num(m[2])
		} else if m := bboxWord.FindStringSubmatch(l); m != nil && len(pages) > 0 {
			pages[len(pages)-1] = append(pages[len(pages)-1], box{m[5], num(m[1]), num(m[2]), num(m[3]), num(m[4])})
		}
	}
	return pages, width, height
}

// An invoice number of any length stays in its place, in the details and
// in every footer: cut with "…" where it does not fit, whole in the PDF's
// title.
func TestALongInvoiceNumberIsCutNotOverlapping(t *testing.T) {
	doc := sample()
	doc.Number = strings.Repeat("INV-2026-", 20) + "END"
	r := render(t, doc)
	pages, width, height := wordBoxes(t, r.PDF)
	if len(pages) != 1 || len(pages[0]) < 20 {
		t.Fatalf("pdftotext -bbox found %d pages, want 1 with the invoice's words", len(pages))
	}
	const slack = 0.5 // points: glyph boxes of neighbours may touch
	words := pages[0]
	for i, a := range words {
		if a.xMin < -slack || a.yMin < -slack || a.xMax > width+slack || a.yMax > height+slack {
			t.Errorf("%q (%.1f, %.1f)-(%.1f, %.1f) passes the page's edge (%.0f × %.0f)", a.word, a.xMin, a.yMin, a.xMax, a.yMax, width, height)
		}
		for _, b := range words[i+1:] {
			if a.xMin < b.xMax-slack && b.xMin < a.xMax-slack && a.yMin < b.yMax-slack && b.yMin < a.yMax-slack {
				t.Errorf("%q and %q overlap", a.word, b.word)
			}
		}
	}
	text := pdftotext(t, r.PDF)
	if strings.Contains(text, "END") || !strings.Contains(text, "INV-2026-INV-2026-") || strings.Count(text, "…") != 2 {
		t.Errorf("want the number cut with \"…\" in the details and the footer:\n%s", text)
	}
	if got := pdfinfo(t, r.PDF)["Title"]; got != "Invoice "+doc.Number {
		t.Errorf("title %q, want the whole number", got)
	}
}

// A character the font lacks is listed once however often it occurs, with
// the field it is first met in, how many fields have it and how often:
// a hundred lines of the same two hundred Chinese characters list two
// hundred, and the number (drawn in the details, the footer and the title)
// counts once per occurrence.
func TestMissingCharactersAreListedOnceEach(t *testing.T) {
	doc := sample()
	doc.Number = "INV-茶茶"
	var chinese []rune
	for c := rune(0x4E00); c < 0x4E00+200; c++ {
		chinese = append(chinese, c)
	}
	doc.Lines = nil
	for range 100 {
		doc.Lines = append(doc.Lines, Line{Description: string(chinese), Quantity: "1", UnitAmount: 100, TaxRate: "0"})
	}
	r := render(t, doc)
	if len(r.Missing) != 201 {
		t.Fatalf("%d missing characters listed, want 201 (茶 and 200 others)", len(r.Missing))
	}
	if got, want := r.Missing[0], (Missing{Char: '茶', Field: "number", Fields: 1, Count: 2}); got != want {
		t.Errorf("first %+v, want %+v", got, want)
	}
	for i, c := range chinese {
		if got, want := r.Missing[i+1], (Missing{Char: c, Field: "line 1 description", Fields: 100, Count: 100}); got != want {
			t.Fatalf("%d: %+v, want %+v", i+1, got, want)
		}
	}
	for m, want := range map[Missing]string{
		r.Missing[0]: `U+8336 '茶' in number (2 times)`,
		r.Missing[1]: `U+4E00 '一' in line 1 description and 99 other fields (100 times)`,
		{Char: 'ش', Field: "notes", Fields: 1, Count: 1}: `U+0634 'ش' in notes`,
		{Char: 'ش', Field: "notes", Fields: 2, Count: 2}: `U+0634 'ش' in notes and 1 other field (2 times)`,
	} {
		if got := m.String(); got != want {
			t.Errorf("%q, want %q", got, want)
		}
	}
}
