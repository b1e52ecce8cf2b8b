package gofpdf_test

import (
	"testing"

	"github.com/errand-dev/errand/internal/gofpdf"
)

// A combining mark left after NFC (Yoruba's ọ́, a Russian stress mark) is a
// zero-width glyph, width 65535 in the font's table: SplitText counts it as
// nothing, as GetStringWidth does, so text as wide as it measures stays on
// one line.
func TestSplitTextGivesCombiningMarksNoWidth(t *testing.T) {
	f := gofpdf.New("P", "mm", "A4", "")
	f.AddUTF8FontFromBytes("dejavu", "", font)
	f.SetFont("dejavu", "", 9)
	f.AddPage()
	for _, s := range []string{"Ọlọ́run Adébáyọ̀", "консульта́ция", "q̃ ṩ n̈"} {
		w := f.GetStringWidth(s) + 2*f.GetCellMargin() + 0.01
		if lines := f.SplitText(s, w); len(lines) != 1 || lines[0] != s {
			t.Errorf("%q split into %d lines at its own width %.2f mm: %q", s, len(lines), w, lines)
		}
	}
}
