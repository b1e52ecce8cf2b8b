package gofpdf

// errand (PATCHES.md, 2): what parsing a UTF-8 TrueType font yields for a
// document, kept per process. Upstream parses the whole font (and JSON-encodes
// its 65,536-entry width table to name it) in every AddUTF8FontFromBytes
// call, that is for every document: most of a short document's rendering.

import (
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

// utf8FontCut is what GenerateCutFont reads of the whole font before it
// picks the document's glyphs: the character-to-glyph map and the glyphs'
// offsets. Read once, by the first document's cut; read only after that.
type utf8FontCut struct {
	once                 sync.Once
	ok                   bool
	charSymbolDictionary map[int]int
	symbolPosition       []int
}

// fontWideTables sets utf.charSymbolDictionary and utf.symbolPosition, as
// upstream's GenerateCutFont does with generateCMAP, parseHMTXTable and
// parseLOCATable, and reports false when the font has no Unicode cmap. The
// widths parseHMTXTable also sets are read by nothing after the cut, so a
// document that takes the shared tables does without them.
func (utf *utf8FontFile) fontWideTables(locaFormat, metricsCount, numSymbols int) bool {
	read := func() bool {
		symbolCharDictionary := utf.generateCMAP()
		if symbolCharDictionary == nil {
			return false
		}
		utf.parseHMTXTable(metricsCount, numSymbols, symbolCharDictionary, 1.0)
		utf.parseLOCATable(locaFormat, numSymbols)
		return true
	}
	c := utf.cut
	if c == nil {
		return read()
	}
	c.once.Do(func() {
		c.ok = read()
		c.charSymbolDictionary, c.symbolPosition = utf.charSymbolDictionary, utf.symbolPosition
	})
	utf.charSymbolDictionary, utf.symbolPosition = c.charSymbolDictionary, c.symbolPosition
	return c.ok
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

// storeUTF8Font keeps p for name and b while the cache has room.
func storeUTF8Font(name string, b []byte, p *utf8FontParsed) {
	k := utf8FontCacheKey(name, b)
	utf8FontMu.Lock()
	defer utf8FontMu.Unlock()
	if len(utf8FontCache) < utf8FontCacheMax {
		utf8FontCache[k] = p
	}
}
