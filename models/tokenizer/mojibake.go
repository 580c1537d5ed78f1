package tokenizer

import (
	"regexp"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
)

// Mojibake repair after ftfy 6's fix_encoding: when text "looks bad" (the
// badness pattern below finds an unlikely character sequence), try to
// re-encode it whole in each single-byte encoding, in ftfy's order, and
// decode the bytes as UTF-8; failing that, fix UTF-8 sequences embedded in
// otherwise good text one by one, then Latin-1 read for Windows-1252, then
// lone C1 controls.

// singleByte is a single-byte encoding as ftfy uses it. The "sloppy"
// variants decode undefined bytes to the code point of the same number and
// use byte 0x1A for U+FFFD.
type singleByte struct {
	name   string
	sloppy bool
	dec    [256]rune
	enc    map[rune]byte
}

func newSingleByte(name string, cm *charmap.Charmap, sloppy bool) *singleByte {
	e := &singleByte{name: name, sloppy: sloppy, enc: make(map[rune]byte, 256)}
	for b := 0; b < 256; b++ {
		var r rune
		switch {
		case cm == nil || b < 0x80:
			r = rune(b)
		default:
			r = cm.DecodeByte(byte(b))
			if r == utf8.RuneError && sloppy {
				r = rune(b)
			}
		}
		if b == 0x1A && sloppy {
			r = utf8.RuneError
		}
		e.dec[b] = r
		if r != utf8.RuneError || b == 0x1A {
			if _, dup := e.enc[r]; !dup {
				e.enc[r] = byte(b)
			}
		}
	}
	return e
}

// encode returns s in this encoding, or false when some character has no byte.
func (e *singleByte) encode(s string) ([]byte, bool) {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r < 0x80 && r != 0x1A {
			out = append(out, byte(r))
			continue
		}
		b, ok := e.enc[r]
		if !ok {
			return nil, false
		}
		out = append(out, b)
	}
	return out, true
}

var (
	latin1      = newSingleByte("latin-1", nil, false)
	sloppy1252  = newSingleByte("sloppy-windows-1252", charmap.Windows1252, true)
	charmapEncs = []*singleByte{
		latin1,
		sloppy1252,
		newSingleByte("sloppy-windows-1251", charmap.Windows1251, true),
		newSingleByte("sloppy-windows-1250", charmap.Windows1250, true),
		newSingleByte("sloppy-windows-1253", charmap.Windows1253, true),
		newSingleByte("sloppy-windows-1254", charmap.Windows1254, true),
		newSingleByte("sloppy-windows-1257", charmap.Windows1257, true),
		newSingleByte("iso-8859-2", charmap.ISO8859_2, false),
		newSingleByte("macroman", charmap.Macintosh, false),
		newSingleByte("cp437", charmap.CodePage437, false),
	}
	// cp1252 maps C1 code points to Windows-1252's characters (0: undefined).
	cp1252 = func() (t [32]rune) {
		for b := 0x80; b < 0xA0; b++ {
			if r := charmap.Windows1252.DecodeByte(byte(b)); r != utf8.RuneError {
				t[b-0x80] = r
			}
		}
		return t
	}()
)

// Character classes of ftfy's badness heuristic (the characters that occur
// in UTF-8 mojibake, grouped by how they behave).
const (
	mjCommon   = "\u00a0\u00ad\u00b7\u00b4\u2013\u2014\u2015\u2026\u2019"
	mjC1       = "\u0080-\u009f"
	mjBad      = "\u00a6\u00a4\u00a8\u00ac\u00af\u00b6\u00a7\u00b8\u0192\u02c6\u02c7\u02d8\u02db\u02dc\u2020\u2021\u2030\u2310\u25ca\ufffd\u00aa\u00ba"
	mjCurrency = "\u00a2\u00a3\u00a5\u20a7\u20ac"
	mjStart    = "\u00a1\u00ab\u00bf\u00a9\u0384\u0385\u2018\u201a\u201c\u201e\u2022\u2039\uf8ff"
	mjEnd      = "\u00ae\u00bb\u02dd\u201d\u203a\u2122"
	mjNumeric  = "\u00b2\u00b3\u00b9\u00b1\u00bc\u00bd\u00be\u00d7\u00b5\u00f7\u2044\u2202\u2206\u220f\u2211\u221a\u221e\u2229\u222b\u2248\u2260\u2261\u2264\u2265\u2116"
	mjKaomoji  = "\u00d2-\u00d6\u00d9-\u00dc\u00f2-\u00f6\u00f8-\u00fc\u0150\u00b0"
	mjUpperAcc = "\u00c0-\u00d1\u00d8\u00dc\u00dd\u0102\u0104\u0106\u010c\u010e\u0110\u0118\u011a\u011e\u0130\u0139\u013d\u0141\u0143\u0147\u0152\u0158\u015a\u015e\u0160\u0162\u0164\u016e\u0170\u0178\u0179\u017b\u017d\u0490"
	mjLowerAcc = "\u00df\u00e0-\u00f1\u0103\u0105\u0107\u010d\u010f\u0111\u0119\u011b\u011f\u013a\u013e\u0142\u0153\u0155\u015b\u015f\u0161\u0165\u00fc\u017a\u017c\u017e\u0491\ufb01\ufb02"
	mjUpperCom = "\u00de\u0391-\u03a9\u0386\u0388\u0389\u038a\u038c\u038e\u038f\u03aa\u03ab\u0401-\u042f"
	mjLowerCom = "\u03b1-\u03c9\u03ac\u03ad\u03ae\u03af\u03b0\u0430-\u045f"
	mjBox      = "\u2502\u250c\u2510\u2518\u251c\u2524\u252c\u253c\u2550-\u256c\u2580\u2584\u2588\u258c\u2590\u2591\u2592\u2593"
	pySpace    = `\t-\r\x{1c}-\x{1f} \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}`
	pyWord     = `\p{L}\p{N}_`
)

func cls(parts ...string) string { return "[" + strings.Join(parts, "") + "]" }

var badnessRE = regexp.MustCompile(strings.Join([]string{
	cls(mjC1),
	cls(mjBad, mjLowerAcc, mjUpperAcc, mjBox, mjStart, mjEnd, mjCurrency, mjNumeric) + cls(mjBad),
	"[a-zA-Z]" + cls(mjLowerCom, mjUpperCom) + cls(mjBad),
	cls(mjBad) + cls(mjLowerAcc, mjUpperAcc, mjBox, mjStart, mjEnd, mjCurrency, mjNumeric),
	cls(mjLowerAcc, mjLowerCom, mjBox, mjEnd, mjCurrency, mjNumeric) + cls(mjUpperAcc),
	cls(mjBox, mjEnd, mjCurrency, mjNumeric) + cls(mjLowerAcc),
	cls(mjLowerAcc, mjBox, mjEnd) + cls(mjCurrency),
	cls(pySpace) + cls(mjUpperAcc) + cls(mjCurrency),
	cls(mjUpperAcc, mjBox) + cls(mjNumeric),
	cls(mjLowerAcc, mjUpperAcc, mjBox, mjCurrency, mjEnd) + cls(mjStart) + cls(mjNumeric),
	cls(mjLowerAcc, mjUpperAcc, mjCurrency, mjNumeric, mjBox) + cls(mjEnd) + cls(mjStart),
	cls(mjCurrency, mjNumeric, mjBox) + cls(mjStart),
	"[a-z]" + cls(mjUpperAcc) + cls(mjStart, mjCurrency),
	cls(mjBox) + cls(mjKaomoji),
	cls(mjLowerAcc, mjUpperAcc, mjCurrency, mjNumeric, mjStart, mjEnd) + cls(mjBox),
	cls(mjBox) + cls(mjEnd),
	cls(mjLowerAcc, mjUpperAcc) + cls(mjEnd) + cls(pyWord),
	"[\u0152\u0153][^A-Za-z]",
	"[\u00c2\u00c3\u00ce\u00d0]" + cls("\u20ac\u0160\u0161\u00a2\u00a3\u0178\u017e\u00a0\u00ad\u00ae\u00a9\u00b0\u00b7\u00bb", mjStart, mjEnd, "\u2013\u2014\u00b4"),
	"\u00d7[\u00b2\u00b3]",
	"[\u00d8\u00d9]" + cls(mjCommon, mjCurrency, mjBad, mjNumeric, mjStart, "\u0178\u0160\u00ae\u00b0\u00b5\u00bb") +
		"[\u00d8\u00d9]" + cls(mjCommon, mjCurrency, mjBad, mjNumeric, mjStart, "\u0178\u0160\u00ae\u00b0\u00b5\u00bb"),
	"\u00e0[\u00b2\u00b5\u00b9\u00bc\u00bd\u00be]",
	"\u221a[\u00b1\u2202\u2020\u2260\u00ae\u2122\u00b4\u2264\u2265\u00a5\u00b5\u00f8]",
	"\u2248[\u00b0\u00a2]",
	"\u201a\u00c4[\u00ec\u00ee\u00ef\u00f2\u00f4\u00fa\u00f9\u00fb\u2020\u00b0\u00a2\u03c0]",
	"\u201a[\u00e2\u00f3][\u00e0\u00e4\u00b0\u00ea]",
	"\u0432\u0402",
	"[\u0412\u0413\u0420\u0421]" + cls(mjC1, mjBad, mjStart, mjEnd, mjCurrency, "\u00b0\u00b5") + "[\u0412\u0413\u0420\u0421]",
	"\u0413\u045e\u0412\u0402\u0412.[A-Za-z ]",
	"\u00c3[\u00a0\u00a1]",
	"[a-z]" + cls(pySpace) + "?[\u00c3\u00c2] ",
	"^[\u00c3\u00c2] ",
	"[a-z.,?!" + mjEnd + "]\u00c2[ " + mjStart + mjEnd + "]",
	"\u03b2\u20ac[\u2122\u00a0\u0386\u00ad\u00ae\u00b0]",
	"[\u0392\u0393\u039e\u039f]" + cls(mjC1, mjBad, mjStart, mjEnd, mjCurrency, "\u00b0") + "[\u0392\u0393\u039e\u039f]",
}, "|"))

// isBad reports whether text contains a sequence that is far likelier to be
// mojibake than intended text.
func isBad(s string) bool { return badnessRE.MatchString(s) }

// fixEncoding re-decodes mojibake until the text stops changing.
func fixEncoding(s string) string {
	for i := 0; i < 8; i++ {
		next := fixEncodingStep(s)
		if next == s {
			break
		}
		s = next
	}
	return s
}

func fixEncodingStep(s string) string {
	if s == "" || isASCII(s) || !isBad(s) {
		return s
	}
	latin1OK := false
	for _, enc := range charmapEncs {
		b, ok := enc.encode(s)
		if !ok {
			continue
		}
		if enc == latin1 {
			latin1OK = true
		}
		b = restoreByteA0(b)
		if enc.sloppy {
			b = replaceLossy(b)
		}
		if fixed, ok := decodeUTF8Variants(b); ok {
			return fixed
		}
	}
	if hasUTF8Run(s) {
		if fixed := decodeInconsistentUTF8(s); fixed != s {
			return fixed
		}
	}
	if latin1OK {
		// Latin-1 that was meant as (strict) Windows-1252.
		b, _ := latin1.encode(s)
		var out strings.Builder
		ok := true
		for _, c := range b {
			switch {
			case c >= 0x80 && c < 0xA0:
				if r := cp1252[c-0x80]; r != 0 {
					out.WriteRune(r)
				} else {
					ok = false
				}
			default:
				out.WriteRune(rune(c))
			}
		}
		if ok && out.String() != s {
			return out.String()
		}
	}
	if strings.ContainsFunc(s, isC1) {
		return fixC1Controls(s)
	}
	return s
}

// decodeUTF8Variants decodes UTF-8, also accepting the CESU-8 encoding of
// supplementary characters and Java's C0 80 for NUL (ftfy's utf-8-variants).
func decodeUTF8Variants(b []byte) (string, bool) {
	if utf8.Valid(b) {
		return string(b), true
	}
	var out strings.Builder
	for i := 0; i < len(b); {
		if b[i] == 0xC0 && i+1 < len(b) && b[i+1] == 0x80 {
			out.WriteByte(0)
			i += 2
			continue
		}
		if b[i] == 0xED && i+5 < len(b) && b[i+1] >= 0xA0 && b[i+1] <= 0xAF && b[i+2] >= 0x80 && b[i+2] <= 0xBF &&
			b[i+3] == 0xED && b[i+4] >= 0xB0 && b[i+4] <= 0xBF && b[i+5] >= 0x80 && b[i+5] <= 0xBF {
			hi := 0xD000 | rune(b[i+1]&0x3F)<<6 | rune(b[i+2]&0x3F)
			lo := 0xD000 | rune(b[i+4]&0x3F)<<6 | rune(b[i+5]&0x3F)
			out.WriteRune(0x10000 + (hi-0xD800)<<10 + (lo - 0xDC00))
			i += 6
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return "", false
		}
		out.WriteRune(r)
		i += n
	}
	return out.String(), true
}

// restoreByteA0 puts back byte 0xA0 where a program replaced it with a
// space inside a UTF-8 sequence whose lead byte forms a likely character
// (ftfy's ALTERED_UTF8_RE), first turning "Ã " that stands for the word "à"
// back into its bytes. It changes nothing when no altered sequence exists.
func restoreByteA0(b []byte) []byte {
	if !containsByte(b, ' ') || !hasAlteredUTF8(b) {
		return b
	}
	out := make([]byte, 0, len(b)+4)
	for i := 0; i < len(b); i++ {
		if b[i] == 0xC3 && i+1 < len(b) && b[i+1] == ' ' && !aGraveException(b[i+2:]) {
			out = append(out, 0xC3, 0xA0)
			continue
		}
		out = append(out, b[i])
	}
	b = out
	out = make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		if n := alteredAt(b[i:]); n > 0 {
			for _, c := range b[i : i+n] {
				if c == ' ' {
					c = 0xA0
				}
				out = append(out, c)
			}
			i += n
			continue
		}
		out = append(out, b[i])
		i++
	}
	return out
}

// aGraveException lists what may follow "Ã " without it being "à ".
func aGraveException(rest []byte) bool {
	for _, p := range []string{" ", "quele", "quela", "quilo", "s "} {
		if strings.HasPrefix(string(rest), p) {
			return true
		}
	}
	return false
}

func hasAlteredUTF8(b []byte) bool {
	for i := range b {
		if alteredAt(b[i:]) > 0 {
			return true
		}
	}
	return false
}

// alteredAt returns the length of a UTF-8 sequence with one space in place
// of 0xA0 starting at b[0], or 0.
func alteredAt(b []byte) int {
	cont := func(c byte) bool { return c >= 0x80 && c <= 0xBF }
	cont3 := func(c byte) bool { return cont(c) && c != 0x85 && c != 0xA0 }
	switch c := b[0]; {
	case c == 0xC2 || c == 0xC3 || c == 0xC5 || c == 0xCE || c == 0xD0 || c == 0xD9:
		if len(b) >= 2 && b[1] == ' ' {
			return 2
		}
	case c >= 0xE0 && c <= 0xE3:
		if len(b) >= 3 && (c >= 0xE2 && b[1] == ' ' && cont3(b[2]) || cont3(b[1]) && b[2] == ' ') {
			return 3
		}
	case c == 0xF0:
		if len(b) >= 4 {
			spaces, conts := 0, 0
			for _, x := range b[1:4] {
				if x == ' ' {
					spaces++
				} else if cont(x) {
					conts++
				}
			}
			if spaces == 1 && conts == 2 {
				return 4
			}
		}
	}
	return 0
}

// replaceLossy replaces UTF-8 sequences that lost bytes to U+FFFD (byte
// 0x1A in the sloppy encodings, sometimes '?') with the UTF-8 of U+FFFD
// (ftfy's LOSSY_UTF8_RE).
func replaceLossy(b []byte) []byte {
	if !containsByte(b, 0x1A) && !containsByte(b, '?') {
		return b
	}
	var out []byte
	for i := 0; i < len(b); {
		if n := lossyAt(b[i:]); n > 0 {
			out = append(out, "\uFFFD"...)
			i += n
			continue
		}
		out = append(out, b[i])
		i++
	}
	return out
}

func lossyAt(b []byte) int {
	in := func(c byte, lo, hi byte) bool { return c >= lo && c <= hi }
	sub := func(c byte) bool { return c == 0x1A }                       // [\x1a]
	subQ := func(c byte) bool { return c == 0x1A || c == '?' }          // [\x1a?]
	cont := func(c byte) bool { return c == 0x1A || in(c, 0x80, 0xBF) } // [\x1a\x80-\xbf]
	contQ := func(c byte) bool { return c == '?' || cont(c) }           // [\x1a?\x80-\xbf]
	n := len(b)
	c := b[0]
	switch {
	case c == 0x1A:
		return 1
	case in(c, 0xC2, 0xDF):
		if n >= 2 && (sub(b[1]) || c <= 0xC3 && b[1] == '?') {
			return 2
		}
	case in(c, 0xE0, 0xEF):
		if c == 0xED && n >= 6 && in(b[1], 0xA0, 0xAF) && b[3] == 0xED && in(b[4], 0xB0, 0xBF) &&
			(subQ(b[2]) && contQ(b[5]) || contQ(b[2]) && subQ(b[5])) {
			return 6
		}
		if n >= 3 && (subQ(b[1]) && cont(b[2]) || cont(b[1]) && subQ(b[2])) {
			return 3
		}
	case in(c, 0xF0, 0xF4):
		if n >= 4 && (subQ(b[1]) && cont(b[2]) && cont(b[3]) ||
			cont(b[1]) && subQ(b[2]) && cont(b[3]) ||
			cont(b[1]) && cont(b[2]) && subQ(b[3])) {
			return 4
		}
	}
	return 0
}

func containsByte(b []byte, c byte) bool {
	for _, x := range b {
		if x == c {
			return true
		}
	}
	return false
}

// Characters that single-byte encodings (Latin-1, Windows-1250/1251/1253/
// 1254/1257) produce for UTF-8 lead and continuation bytes (ftfy's
// UTF8_CLUES).
const (
	clueFirstOf2 = "ĂÂÄĀÅÃÆĆČÇĎĐÉĚÊËĖÈĒĘÐĞĢÍÎÏİÌĪĶĹĻŁŃŇŅÑÓÔÖŐÒŌØÕŘŚŠŞŢÞÚÛÜŰÙŪŲŮÝŹŽŻß×" +
		"ΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩΪΫάέήίВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"
	clueFirstOf3 = "áăâäàāąåãæćčçďéěêëėèēęģíîïìīįķĺļŕźΰαβγδεζηθικλμνξοабвгдежзийклмноп"
	clueFirstOf4 = "đðğóšπσру"
	// Continuations beyond U+0080..U+00BF; the strict set leaves out those
	// that often stand for themselves next to mojibake (dashes, quotes,
	// bullet, ellipsis) and the space that may stand for U+00A0.
	clueContStrict = "ĄÆĽŁØŖŚŠŞŤŸŹŽŻŒąæƒľłøŗśšşťźžżœˆˇ˘˛˜˝΄΅ΆΈΉΊΌΎΏЁЂЃЄЅІЇЈЉЊЋЌЎЏ" +
		"ёђѓєѕіїјљњћќўџҐґ†‡‰‹›€№™"
	clueContLoose = " –—―‘’‚“”„•…"
)

type runeSet map[rune]bool

func newRuneSet(s string) runeSet {
	m := runeSet{}
	for _, r := range s {
		m[r] = true
	}
	return m
}

var (
	clue2, clue3, clue4 = newRuneSet(clueFirstOf2), newRuneSet(clueFirstOf3), newRuneSet(clueFirstOf4)
	clueStrictSet       = newRuneSet(clueContStrict)
	clueLooseSet        = newRuneSet(clueContLoose)
)

func isContStrict(r rune) bool { return r >= 0x80 && r <= 0xBF || clueStrictSet[r] }
func isCont(r rune) bool       { return isContStrict(r) || clueLooseSet[r] }

// utf8SeqAt returns how many runes of rs[i:] form one would-be UTF-8
// sequence (lead plus continuations), or 0.
func utf8SeqAt(rs []rune, i int) int {
	n := 0
	switch r := rs[i]; {
	case clue2[r]:
		n = 2
	case clue3[r]:
		n = 3
	case clue4[r]:
		n = 4
	default:
		return 0
	}
	if i+n > len(rs) {
		return 0
	}
	for _, r := range rs[i+1 : i+n] {
		if !isCont(r) {
			return 0
		}
	}
	return n
}

// utf8Runs finds maximal runs of would-be UTF-8 sequences that do not
// directly follow a strict continuation character (ftfy's
// UTF8_DETECTOR_RE), as rune index ranges.
func utf8Runs(rs []rune) [][2]int {
	var runs [][2]int
	for i := 0; i < len(rs); {
		if i > 0 && isContStrict(rs[i-1]) {
			i++
			continue
		}
		j := i
		for j < len(rs) {
			n := utf8SeqAt(rs, j)
			if n == 0 {
				break
			}
			j += n
		}
		if j == i {
			i++
			continue
		}
		runs = append(runs, [2]int{i, j})
		i = j
	}
	return runs
}

func hasUTF8Run(s string) bool {
	if isASCII(s) {
		return false
	}
	return len(utf8Runs([]rune(s))) > 0
}

// decodeInconsistentUTF8 fixes mojibake runs one at a time in text whose
// other characters are fine.
func decodeInconsistentUTF8(s string) string {
	rs := []rune(s)
	runs := utf8Runs(rs)
	if len(runs) == 0 {
		return s
	}
	var b strings.Builder
	last := 0
	for _, r := range runs {
		b.WriteString(string(rs[last:r[0]]))
		sub := string(rs[r[0]:r[1]])
		if r[1]-r[0] < len(rs) && isBad(sub) {
			sub = fixEncoding(sub)
		}
		b.WriteString(sub)
		last = r[1]
	}
	b.WriteString(string(rs[last:]))
	return b.String()
}
