package tokenizer

import (
	"html"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// This file re-implements the parts of ftfy 6.1's fix_text (default
// settings) that change prompts: HTML entity decoding, mojibake repair,
// C1 control characters, Latin ligatures, full-width characters, curly
// quotes, line breaks, terminal escapes, control characters, then NFC.
// ftfy does not apply NFKC: "½", "²", "①" and "Ⅷ" survive, "ﬁ" and
// full-width letters do not.

// FixText applies ftfy.fix_text's default fixes to text. Like ftfy it works
// line by line, repeating the fixes on each line until nothing changes, and
// it stops decoding HTML entities from the first line that contains a
// literal '<' onwards.
func FixText(text string) string {
	unescape := true
	var b strings.Builder
	for pos := 0; pos < len(text); {
		end := strings.IndexByte(text[pos:], '\n')
		if end < 0 {
			end = len(text)
		} else {
			end += pos + 1
		}
		seg := text[pos:end]
		if strings.Contains(seg, "<") {
			unescape = false
		}
		b.WriteString(fixSegment(seg, unescape))
		pos = end
	}
	return b.String()
}

func fixSegment(s string, unescape bool) string {
	// ftfy loops until a fixed point; each pass can only shorten or
	// normalise, but bound it anyway.
	for pass := 0; pass < 16; pass++ {
		orig := s
		if unescape {
			s = unescapeHTML(s)
		}
		s = fixEncoding(s)
		s = fixC1Controls(s)
		s = fixLatinLigatures(s)
		s = fixCharacterWidth(s)
		s = uncurlQuotes(s)
		s = fixLineBreaks(s)
		s = removeTerminalEscapes(s)
		s = removeControlChars(s)
		s = nfc(s)
		if s == orig {
			break
		}
	}
	return s
}

// nfc is Python's unicodedata.normalize("NFC"). Go's norm package follows
// the Stream-Safe Text Format and inserts U+034F after 30 combining marks;
// Python does not, so such insertions are taken out again.
func nfc(s string) string {
	out := norm.NFC.String(s)
	if strings.ContainsRune(out, 0x34F) && !strings.ContainsRune(s, 0x34F) {
		out = strings.ReplaceAll(out, "\u034f", "")
	}
	return out
}

var htmlEntityRE = regexp.MustCompile(`&#?[0-9A-Za-z]{1,24};`)

// unescapeHTML decodes "&name;" (HTML5 names, plus the all-capitals form
// of all-lower-case names, e.g. "&EACUTE;") and "&#N;"/"&#xN;" references,
// leaving anything else as it is.
func unescapeHTML(s string) string {
	if !strings.Contains(s, "&") {
		return s
	}
	return htmlEntityRE.ReplaceAllStringFunc(s, func(m string) string {
		if m[1] == '#' {
			return numericEntity(m)
		}
		if v, ok := namedEntity(m); ok {
			return v
		}
		// The all-capitals alias of an all-lower-case name counts only
		// where HTML itself decodes no part of it ("&LTIMES;" starts with
		// the legacy "&LT").
		name := m[1 : len(m)-1]
		lower := strings.ToLower(name)
		if name == strings.ToUpper(lower) && lower != name && html.UnescapeString(m) == m {
			if v, ok := namedEntity("&" + lower + ";"); ok {
				return pyUpper(v)
			}
		}
		return m
	})
}

// namedEntity resolves "&name;" only when the whole name, semicolon
// included, is an HTML5 entity.
func namedEntity(m string) (string, bool) {
	v := html.UnescapeString(m)
	if v == m || (strings.HasSuffix(v, ";") && m != "&semi;") {
		return "", false
	}
	return v, true
}

// numericEntity decodes "&#N;" / "&#xN;" with Python html.unescape's rules
// for invalid code points.
func numericEntity(m string) string {
	body := m[2 : len(m)-1]
	base := 10
	if body[0] == 'x' || body[0] == 'X' {
		base, body = 16, body[1:]
	}
	if body == "" {
		return m
	}
	for _, c := range body {
		if !(c >= '0' && c <= '9' || base == 16 && (c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F')) {
			return m
		}
	}
	n, err := strconv.ParseUint(body, base, 64)
	if err != nil || n > 0x10FFFF {
		return "\uFFFD"
	}
	switch {
	case n == 0:
		return "\uFFFD"
	case n == 0x0D:
		return "\r"
	case n >= 0x80 && n <= 0x9F:
		if r := cp1252[n-0x80]; r != 0 {
			return string(r)
		}
		return string(rune(n))
	case n >= 0xD800 && n <= 0xDFFF:
		return "\uFFFD"
	case n >= 0x1 && n <= 0x8, n == 0xB, n >= 0xE && n <= 0x1F, n == 0x7F,
		n >= 0xFDD0 && n <= 0xFDEF, n&0xFFFE == 0xFFFE:
		return ""
	}
	return string(rune(n))
}

// pyUpper is Python's str.upper for the characters HTML entities produce.
func pyUpper(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case 'ß':
			b.WriteString("SS")
		case 0xFB00:
			b.WriteString("FF")
		case 0xFB01:
			b.WriteString("FI")
		case 0xFB02:
			b.WriteString("FL")
		case 0xFB03:
			b.WriteString("FFI")
		case 0xFB04:
			b.WriteString("FFL")
		case 0x149:
			b.WriteString("\u02BCN")
		default:
			b.WriteRune(unicode.ToUpper(r))
		}
	}
	return b.String()
}

// fixC1Controls reads C1 control characters (U+0080..U+009F) as the
// Windows-1252 bytes they were meant to be.
func fixC1Controls(s string) string {
	if !strings.ContainsFunc(s, isC1) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if isC1(r) {
			if m := cp1252[r-0x80]; m != 0 {
				return m
			}
		}
		return r
	}, s)
}

func isC1(r rune) bool { return r >= 0x80 && r <= 0x9F }

var ligatures = strings.NewReplacer(
	"Ĳ", "IJ", "ĳ", "ij", "ŉ", "ʼn",
	"Ǆ", "DŽ", "ǅ", "Dž", "ǆ", "dž", "Ǉ", "LJ", "ǈ", "Lj", "ǉ", "lj",
	"Ǌ", "NJ", "ǋ", "Nj", "ǌ", "nj", "Ǳ", "DZ", "ǲ", "Dz", "ǳ", "dz",
	"ﬀ", "ff", "ﬁ", "fi", "ﬂ", "fl", "ﬃ", "ffi", "ﬄ", "ffl", "ﬅ", "ſt", "ﬆ", "st",
)

// fixLatinLigatures spells out single-character Latin ligatures.
func fixLatinLigatures(s string) string {
	for _, r := range s {
		if r >= 0x132 && r <= 0x1F3 || r >= 0xFB00 && r <= 0xFB06 {
			return ligatures.Replace(s)
		}
	}
	return s
}

// fixCharacterWidth maps full-width and half-width forms (U+FF01..U+FFEF)
// to their NFKC equivalents and U+3000 to a space.
func fixCharacterWidth(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r == 0x3000 || r >= 0xFF01 && r <= 0xFFEF }) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == 0x3000:
			b.WriteByte(' ')
		case r >= 0xFF01 && r <= 0xFFEF:
			b.WriteString(norm.NFKC.String(string(r)))
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// uncurlQuotes replaces curly single and double quotation marks (and
// U+02BC) with ASCII quotes.
func uncurlQuotes(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == 0x2BC || r >= 0x2018 && r <= 0x201B:
			return '\''
		case r >= 0x201C && r <= 0x201F:
			return '"'
		}
		return r
	}, s)
}

var lineBreaks = strings.NewReplacer("\r\n", "\n", "\r", "\n", "\u2028", "\n", "\u2029", "\n", "\u0085", "\n")

func fixLineBreaks(s string) string { return lineBreaks.Replace(s) }

var ansiRE = regexp.MustCompile("\x1b\\[[0-9;]*[a-zA-Z]")

func removeTerminalEscapes(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	return ansiRE.ReplaceAllString(s, "")
}

// removeControlChars drops the control characters ftfy removes: C0 except
// tab, LF, FF and CR; DEL; U+206A..U+206F; the BOM; U+FFF9..U+FFFC.
func removeControlChars(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r <= 0x08, r == 0x0B, r >= 0x0E && r <= 0x1F, r == 0x7F,
			r >= 0x206A && r <= 0x206F, r == 0xFEFF, r >= 0xFFF9 && r <= 0xFFFC:
			return -1
		}
		return r
	}, s)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
