package gofpdf

// errand (PATCHES.md, 2): what parsing a UTF-8 TrueType font yields for a
// document, kept per process. Upstream parses the whole font (and JSON-encodes
// its 65,536-entry width table to name it) in every AddUTF8FontFromBytes
// call, that is for every document: most of a short document's rendering.

import (
	"bytes"
	"hash/maphash"
	"sync"
)

// utf8FontParsed is what a document needs of a parsed font besides the
// file itself.
type utf8FontParsed struct {
	desc   FontDescType
	up, ut int
	// cw is read only: every document with the font shares it.
	cw  []int
	id  string
	cut *utf8FontCut
}

// utf8FontKey names a font by its key (family and style, which the id
// covers) and its bytes' content, so a caller may pass the same font in a
// new slice, or new contents in an old one.
type utf8FontKey struct {
	name string
	sum  uint64
	size int
}

// utf8FontCacheMax bounds the cache: a program that adds fonts from an
// unbounded set parses the ones beyond it every time, as upstream does.
const utf8FontCacheMax = 32

var (
	utf8FontSeed  = maphash.MakeSeed()
	utf8FontMu    sync.Mutex
	utf8FontCache = map[utf8FontKey]*utf8FontParsed{}
)

func utf8FontCacheKey(name string, b []byte) utf8FontKey {
	return utf8FontKey{name: name, sum: maphash.Bytes(utf8FontSeed, b), size: len(b)}
}

// cachedUTF8Font returns the parsed font stored for name and b, if any.
func cachedUTF8Font(name string, b []byte) (*utf8FontParsed, bool) {
	k := utf8FontCacheKey(name, b)
	utf8FontMu.Lock()
	defer utf8FontMu.Unlock()
	p, ok := utf8FontCache[k]
	return p, ok
}

// storeUTF8Font keeps p for name and b while the cache has room, with a
// copy of b from which its documents' cuts read the font-wide tables once.
// A font that finds no room goes without: its documents cut as upstream's.
func storeUTF8Font(name string, b []byte, p *utf8FontParsed) {
	k := utf8FontCacheKey(name, b)
	utf8FontMu.Lock()
	defer utf8FontMu.Unlock()
	if _, ok := utf8FontCache[k]; !ok && len(utf8FontCache) < utf8FontCacheMax {
		p.cut = &utf8FontCut{data: bytes.Clone(b)}
		utf8FontCache[k] = p
	}
}

// utf8FontCut is what GenerateCutFont reads of the whole font before it
// picks the document's glyphs: the character-to-glyph map and the glyphs'
// offsets. Read once, from the font's own copy of its bytes (taken when the
// font was first added, so a caller that later changes its slice spoils
// only its own document, as with upstream), and read only after that.
type utf8FontCut struct {
	once                 sync.Once
	data                 []byte // the font, until the tables are read
	ok                   bool
	panicked             any // what reading the tables panicked with, for every document
	charSymbolDictionary map[int]int
	symbolPosition       []int
}

// fontWideTables sets utf.charSymbolDictionary and utf.symbolPosition, as
// upstream's GenerateCutFont does with generateCMAP, parseHMTXTable and
// parseLOCATable, and reports false when the font has no Unicode cmap. The
// widths parseHMTXTable also sets are read by nothing after the cut, so the
// shared tables are read without them. A font whose tables make the reading
// panic panics in every document that uses it, as upstream's does.
func (utf *utf8FontFile) fontWideTables(locaFormat, metricsCount, numSymbols int) bool {
	c := utf.cut
	if c == nil {
		symbolCharDictionary := utf.generateCMAP()
		if symbolCharDictionary == nil {
			return false
		}
		utf.parseHMTXTable(metricsCount, numSymbols, symbolCharDictionary, 1.0)
		utf.parseLOCATable(locaFormat, numSymbols)
		return true
	}
	c.once.Do(func() {
		defer func() {
			if r := recover(); r != nil {
				c.panicked = r
			}
		}()
		// GenerateCutFont's first steps, on the font's own copy.
		t := newUTF8Font(&fileReader{array: c.data})
		c.data = nil
		t.skip(4)
		t.generateTableDescriptions()
		t.SeekTable("head")
		t.skip(50)
		loca := t.readUint16()
		t.SeekTable("maxp")
		t.skip(4)
		n := t.readUint16()
		if t.generateCMAP() == nil {
			return
		}
		t.parseLOCATable(loca, n)
		c.ok, c.charSymbolDictionary, c.symbolPosition = true, t.charSymbolDictionary, t.symbolPosition
	})
	if c.panicked != nil {
		panic(c.panicked)
	}
	utf.charSymbolDictionary, utf.symbolPosition = c.charSymbolDictionary, c.symbolPosition
	return c.ok
}
