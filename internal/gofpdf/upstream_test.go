package gofpdf_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	upstream "github.com/jung-kurt/gofpdf"

	"github.com/errand-dev/errand/internal/gofpdf"
)

// pdf is the part of gofpdf's API the documents below use, which both the
// patched copy and upstream's release have.
type pdf interface {
	SetCreationDate(time.Time)
	SetModificationDate(time.Time)
	SetCatalogSort(bool)
	AliasNbPages(string)
	AddUTF8FontFromBytes(family, style string, b []byte)
	SetFont(family, style string, size float64)
	AddPage()
	MultiCell(w, h float64, txt, border, align string, fill bool)
	CellFormat(w, h float64, txt, border string, ln int, align string, fill bool, link int, linkStr string)
	PageNo() int
	Output(io.Writer) error
}

var font = func() []byte {
	b, err := os.ReadFile("../../jobs/invoice/fonts/DejaVuSans.ttf")
	if err != nil {
		panic(err)
	}
	return b
}()

// texts differ in the characters they use, so each document's font subset,
// glyph numbering and width table differ too.
var texts = []string{
	"Zoë Ørsted, Müller & Søn GmbH, Hauptstraße 1, 10115 Berlin",
	"Ελληνική Εταιρεία — Αθήνα, τιμολόγιο αρ. 42",
	"ООО Ромашка, Москва, счёт № 7; Łódź, Kraków; Þórsmörk",
	"plain ASCII only: invoice 2026-0001, total 1,234.56",
	"€ £ ¥ ₽ ₹ ₩ • … “quotes” ‘single’ ½ ¼ ¾ © ® ™ \uFFFD",
}

// document writes doc i: a few pages of texts, in two families (the same
// bytes under two names) and with "Page x of y".
func document(p pdf, i int) {
	day := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	p.SetCreationDate(day)
	p.SetModificationDate(day)
	p.SetCatalogSort(true)
	p.AliasNbPages("")
	p.AddUTF8FontFromBytes("dejavu", "", bytes.Clone(font))
	if i%2 == 1 {
		p.AddUTF8FontFromBytes("other", "", bytes.Clone(font))
	}
	for page := 0; page <= i%3; page++ {
		p.AddPage()
		p.SetFont("dejavu", "", 10)
		for j := 0; j <= i; j++ {
			p.MultiCell(0, 5, texts[(i+j)%len(texts)], "", "L", false)
		}
		if i%2 == 1 {
			p.SetFont("other", "", 8)
			p.MultiCell(0, 5, strings.Repeat(texts[i%len(texts)]+" ", 3), "", "L", false)
		}
		p.CellFormat(0, 5, fmt.Sprintf("Page %d of {nb}", p.PageNo()), "", 1, "R", false, 0, "")
	}
}

func render(p pdf, i int) ([]byte, error) {
	document(p, i)
	var buf bytes.Buffer
	if err := p.Output(&buf); err != nil {
		return nil, fmt.Errorf("document %d: %w", i, err)
	}
	return buf.Bytes(), nil
}

// The patches (PATCHES.md) change how much work a document costs, never
// its bytes: every document, whether it parses the font or takes it from
// the cache, is byte for byte what upstream's release writes.
func TestPatchedCopyWritesWhatUpstreamWrites(t *testing.T) {
	const docs = 12
	want := make([][]byte, docs)
	for i := range docs {
		var err error
		if want[i], err = render(upstream.New("P", "mm", "A4", ""), i); err != nil {
			t.Fatal(err)
		}
	}
	check := func(i int, got []byte, err error) {
		switch {
		case err != nil:
			t.Error(err)
		case !bytes.Equal(got, want[i]):
			t.Errorf("document %d: %d bytes differ from upstream's %d", i, len(got), len(want[i]))
		}
	}
	// In turn: the first parses, the rest take the cache.
	for i := range docs {
		got, err := render(gofpdf.New("P", "mm", "A4", ""), i)
		check(i, got, err)
	}
	// At once, twice over (go test -race checks the shared font state).
	var wg sync.WaitGroup
	for n := range 2 * docs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := n % docs
			got, err := render(gofpdf.New("P", "mm", "A4", ""), i)
			check(i, got, err)
		}()
	}
	wg.Wait()
}

// A font upstream accepts when it is added but cannot cut (here its glyph
// offsets point past its end) makes every document that uses it panic at
// Output, upstream's and the patched copy's alike: the shared tables must
// not turn the second document's panic into a PDF without a font.
func TestAFontTheCutCannotReadPanicsInEveryDocumentAsUpstream(t *testing.T) {
	bad := bytes.Clone(font)
	for i := range int(binary.BigEndian.Uint16(bad[4:])) {
		rec := 12 + 16*i
		if string(bad[rec:rec+4]) == "loca" {
			binary.BigEndian.PutUint32(bad[rec+8:], uint32(len(bad)+1000))
		}
	}
	panics := func(p pdf) (panicked bool) {
		defer func() { panicked = recover() != nil }()
		p.AddUTF8FontFromBytes("broken", "", bytes.Clone(bad))
		p.SetFont("broken", "", 10)
		p.AddPage()
		p.MultiCell(0, 5, texts[0], "", "L", false)
		_ = p.Output(io.Discard)
		return false
	}
	for i := range 3 {
		if !panics(upstream.New("P", "mm", "A4", "")) {
			t.Fatalf("document %d: upstream did not panic; the test's font is not broken the way it means", i)
		}
		if !panics(gofpdf.New("P", "mm", "A4", "")) {
			t.Errorf("document %d with the broken font did not panic", i)
		}
	}
}
