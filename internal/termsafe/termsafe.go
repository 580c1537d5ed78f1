// Package termsafe makes text that came from a file (a tensor name, a
// config's _class_name, a PNG's parameters, a preset or style name, an error
// quoting any of them) safe to print on a terminal: control characters,
// which a terminal would obey (ESC sequences retitle it, clear it, leave the
// alternate screen), are shown escaped instead.
//
// It is the one helper every display path uses: the CLI's errors and
// `stepwise info`, and the studio's status line, lists and fields.
package termsafe

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/rivo/uniseg"
)

// Escape returns s with every control character escaped as Go writes it in
// a quoted string (\x1b, \n, \t, \u009b, \u202e), invalid UTF-8 bytes as
// \xNN and backslashes left alone; printable text, spaces included, is kept.
// The result is a single line.
func Escape(s string) string { return escape(s, false) }

// Text is Escape for multi-line messages: newlines and tabs are kept (a
// carriage return, which could overwrite the line, is still escaped).
func Text(s string) string { return escape(s, true) }

func escape(s string, lines bool) string {
	if clean(s, lines) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case lines && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case unsafe(r):
			q := fmt.Sprintf("%+q", string(r)) // "\x1b", "\n", "\u009b"
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// clean reports whether s needs no escaping (the common case, no copy).
func clean(s string, lines bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			if lines && (c == '\n' || c == '\t') {
				continue
			}
			return false
		}
		if c >= 0x80 {
			for _, r := range s[i:] {
				if r == utf8.RuneError || unsafe(r) {
					return false
				}
			}
			return utf8.ValidString(s[i:])
		}
	}
	return true
}

// unsafe reports the runes a terminal may act on or that reorder or hide
// text: C0 and C1 controls, DEL, and the Unicode format characters that
// change text direction (bidi overrides and isolates).
func unsafe(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		return true
	}
	return false
}

// Rune returns a printable stand-in for a rune that Escape would escape:
// the Unicode control picture for C0 controls and DEL (␛ for ESC, ␀ for
// NUL), U+FFFD for the others; any other rune is returned as it is. It is
// for editors that lay text out one cell per rune and must keep positions.
func Rune(r rune) rune {
	switch {
	case r < 0x20:
		return 0x2400 + r
	case r == 0x7f:
		return 0x2421
	case unsafe(r):
		return utf8.RuneError
	}
	return r
}

// Cells returns s with the emoji sequences whose width terminals disagree
// on reduced to what every terminal draws alike: variation selectors
// (U+FE0E, U+FE0F: "❤️" is two cells to lipgloss and one to a wcwidth
// terminal such as tmux), skin-tone modifiers (U+1F3FB..U+1F3FF) and tag
// characters (U+E0020..U+E007F) are dropped, and a zero-width-joiner
// sequence keeps its first emoji (a family is one emoji to some terminals,
// three to others). A cluster made only of such runes keeps its first.
// Each grapheme cluster of s stays one cluster, so an editor's cursor
// positions hold. It is for display only: the text itself is unchanged.
func Cells(s string) string {
	if !needsCells(s) {
		return s
	}
	var b strings.Builder
	g := uniseg.NewGraphemes(s)
	for g.Next() {
		b.WriteString(string(cellsCluster(g.Runes())))
	}
	return b.String()
}

// CellsCluster is Cells for one grapheme cluster.
func CellsCluster(c []rune) []rune {
	if !needsCells(string(c)) {
		return c
	}
	return cellsCluster(c)
}

func cellsCluster(c []rune) []rune {
	out := make([]rune, 0, len(c))
	for _, r := range c {
		if r == 0x200d {
			break
		}
		if !widthAmbiguous(r) {
			out = append(out, r)
		}
	}
	if len(out) == 0 && len(c) > 0 {
		out = append(out, c[0])
	}
	return out
}

func widthAmbiguous(r rune) bool {
	return r == 0xfe0e || r == 0xfe0f || (r >= 0x1f3fb && r <= 0x1f3ff) || (r >= 0xe0020 && r <= 0xe007f)
}

func needsCells(s string) bool {
	for _, r := range s {
		if r == 0x200d || widthAmbiguous(r) {
			return true
		}
	}
	return false
}
