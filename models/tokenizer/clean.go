package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clean is the text clean-up CLIPTokenizer applies before BPE when ftfy is
// installed: whitespace_clean(ftfy.fix_text(text)).lower(), with Python's
// definitions of whitespace and lower-casing. Invalid UTF-8 bytes become
// U+FFFD first.
func Clean(text string) string {
	if !utf8.ValidString(text) {
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	return pyLower(whitespaceClean(FixText(text)))
}

// isPySpace reports whether Python's str.isspace (and re's \s) holds for r.
func isPySpace(r rune) bool {
	switch {
	case r >= '\t' && r <= '\r', r == ' ', r >= 0x1C && r <= 0x1F, r == 0x85, r == 0xA0,
		r == 0x1680, r >= 0x2000 && r <= 0x200A, r == 0x2028, r == 0x2029,
		r == 0x202F, r == 0x205F, r == 0x3000:
		return true
	}
	return false
}

// whitespaceClean collapses runs of whitespace into one space and trims
// both ends (CLIP's whitespace_clean).
func whitespaceClean(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range s {
		if isPySpace(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}

// pyLower is Python's str.lower: full lower-case mapping (U+0130 becomes
// "i̇") and the Final_Sigma rule for U+03A3.
func pyLower(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(s)
	}
	rs := []rune(s)
	var b strings.Builder
	b.Grow(len(s))
	for i, r := range rs {
		switch r {
		case 0x130:
			b.WriteString("i\u0307")
		case 0x3A3:
			if finalSigma(rs, i) {
				b.WriteRune(0x3C2)
			} else {
				b.WriteRune(0x3C3)
			}
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// finalSigma reports whether the capital sigma at rs[i] ends a word:
// preceded by a cased letter and not followed by one, skipping
// case-ignorable characters both ways.
func finalSigma(rs []rune, i int) bool {
	j := i - 1
	for j >= 0 && caseIgnorable(rs[j]) {
		j--
	}
	if j < 0 || !cased(rs[j]) {
		return false
	}
	j = i + 1
	for j < len(rs) && caseIgnorable(rs[j]) {
		j++
	}
	return j == len(rs) || !cased(rs[j])
}

func cased(r rune) bool {
	return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) ||
		unicode.Is(unicode.Other_Lowercase, r) || unicode.Is(unicode.Other_Uppercase, r)
}

func caseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', 0xB7, 0x387, 0x55F, 0x5F4, 0x2018, 0x2019, 0x2024, 0x2027,
		0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// pretokenize splits cleaned text the way CLIP's pattern
//
//	<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//
// (case-insensitive) does, calling fn with each match in order.
func pretokenize(s string, fn func(tok string)) {
	for i := 0; i < len(s); {
		rest := s[i:]
		if rest[0] == '<' {
			if strings.HasPrefix(rest, bosText) {
				fn(bosText)
				i += len(bosText)
				continue
			}
			if strings.HasPrefix(rest, eosText) {
				fn(eosText)
				i += len(eosText)
				continue
			}
		}
		if rest[0] == '\'' {
			if n := contraction(rest[1:]); n > 0 {
				fn(rest[:1+n])
				i += 1 + n
				continue
			}
		}
		r, size := utf8.DecodeRuneInString(rest)
		switch {
		case unicode.IsLetter(r):
			j := size
			for j < len(rest) {
				r2, sz := utf8.DecodeRuneInString(rest[j:])
				if !unicode.IsLetter(r2) {
					break
				}
				j += sz
			}
			fn(rest[:j])
			i += j
		case unicode.IsNumber(r):
			fn(rest[:size])
			i += size
		case isPySpace(r):
			i += size
		default:
			j := size
			for j < len(rest) {
				r2, sz := utf8.DecodeRuneInString(rest[j:])
				if isPySpace(r2) || unicode.IsLetter(r2) || unicode.IsNumber(r2) {
					break
				}
				j += sz
			}
			fn(rest[:j])
			i += j
		}
	}
}

// contraction returns the byte length of the contraction suffix (after the
// apostrophe) that CLIP's pattern matches at the start of s, or 0. Matching
// is case-insensitive with simple case folding, so "ſ" counts as "s".
func contraction(s string) int {
	fold := func(i int) (rune, int) {
		if i >= len(s) {
			return 0, 0
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == 0x17F {
			return 's', n
		}
		return unicode.ToLower(r), n
	}
	r, n := fold(0)
	var want rune // second letter of 're, 've, 'll
	switch r {
	case 's', 't', 'm', 'd':
		return n
	case 'r', 'v':
		want = 'e'
	case 'l':
		want = 'l'
	default:
		return 0
	}
	if r2, n2 := fold(n); n2 > 0 && r2 == want {
		return n + n2
	}
	return 0
}
