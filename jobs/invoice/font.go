package invoice

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// DejaVu Sans (fonts/LICENSE): Latin, Greek and Cyrillic, and more, in one
// regular face. One face keeps a render cheap: gofpdf parses and subsets
// every font it embeds, for every document.
//
//go:embed fonts/DejaVuSans.ttf
var dejaVuSans []byte

// placeholder stands for a character the font has no glyph for (or one
// gofpdf cannot encode: outside the Basic Multilingual Plane). DejaVu
// Sans draws it as a diamond with a question mark.
const placeholder = '\uFFFD'

// fontRunes is the set of characters the embedded font can draw, read
// once from its cmap table.
var fontRunes = sync.OnceValues(func() (map[rune]bool, error) { return cmapRunes(dejaVuSans) })

// cmapRunes reads the characters a TrueType font maps to a glyph, from its
// Windows Unicode BMP cmap subtable (platform 3, encoding 1, format 4):
// the one gofpdf reads too.
func cmapRunes(ttf []byte) (map[rune]bool, error) {
	u16 := func(off int) int {
		if off < 0 || off+2 > len(ttf) {
			return -1
		}
		return int(binary.BigEndian.Uint16(ttf[off:]))
	}
	u32 := func(off int) int {
		if off < 0 || off+4 > len(ttf) {
			return -1
		}
		return int(binary.BigEndian.Uint32(ttf[off:]))
	}
	cmap := -1
	for i, n := 0, u16(4); i < n; i++ {
		rec := 12 + 16*i
		if rec+16 > len(ttf) {
			break
		}
		if string(ttf[rec:rec+4]) == "cmap" {
			cmap = u32(rec + 8)
		}
	}
	if cmap < 0 {
		return nil, errors.New("font has no cmap table")
	}
	sub := -1
	for i, n := 0, u16(cmap+2); i < n; i++ {
		rec := cmap + 4 + 8*i
		if u16(rec) == 3 && u16(rec+2) == 1 {
			sub = cmap + u32(rec+4)
		}
	}
	if sub < 0 || u16(sub) != 4 {
		return nil, errors.New("font has no format 4 Windows Unicode cmap")
	}
	segs := u16(sub+6) / 2
	ends, starts := sub+14, sub+16+2*segs
	deltas, offsets := starts+2*segs, starts+4*segs
	out := map[rune]bool{}
	for s := 0; s < segs; s++ {
		end, start := u16(ends+2*s), u16(starts+2*s)
		delta, rangeOffset := u16(deltas+2*s), u16(offsets+2*s)
		if end < 0 || start < 0 || delta < 0 || rangeOffset < 0 {
			return nil, fmt.Errorf("font cmap segment %d is cut short", s)
		}
		for c := start; c <= end && c != 0xFFFF; c++ {
			glyph := 0
			if rangeOffset == 0 {
				glyph = (c + delta) & 0xFFFF
			} else if g := u16(offsets + 2*s + rangeOffset + 2*(c-start)); g > 0 {
				glyph = (g + delta) & 0xFFFF
			}
			if glyph > 0 {
				out[rune(c)] = true
			}
		}
	}
	if !out[placeholder] {
		return nil, errors.New("font has no glyph for U+FFFD, the placeholder")
	}
	return out, nil
}
