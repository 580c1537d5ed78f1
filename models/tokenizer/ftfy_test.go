package tokenizer

import (
	"strings"
	"testing"
)

// Examples from ftfy's documentation and docstrings (input -> fix_text).
func TestFixText(t *testing.T) {
	cases := []struct{ in, want string }{
		{"u\u00cc\u02c6nicode", "\u00fcnicode"},
		{"Broken text&hellip; it&#x2019;s \ufb02ubberi\ufb01c!", "Broken text\u2026 it's flubberific!"},
		{"HTML entities &lt;3", "HTML entities <3"},
		{"<em>HTML entities &lt;3</em>", "<em>HTML entities &lt;3</em>"},
		{"\x01\x1b[36;44mI&#x92;m blue, da ba dee da ba doo&#133;\x1b[0m", "I'm blue, da ba dee da ba doo\u2026"},
		{"\ufeffParty like\nit&rsquo;s 1999!", "Party like\nit's 1999!"},
		{"\u00c3\u00banico", "\u00fanico"},
		{"This text is fine already :\u00fe", "This text is fine already :\u00fe"},
		{"This \u00e2\u20ac\u201d should be an em dash", "This \u2014 should be an em dash"},
		{"This text is sad .\u00e2\u0081\u201d.", "This text is sad .\u2054."},
		{"\u00c3\u00a0\u00c2\u00b2\u00c2\u00a0_\u00c3\u00a0\u00c2\u00b2\u00c2\u00a0", "\u0ca0_\u0ca0"},
		{"not such a fan of Charlotte Bront\u00eb\u2026\u201d", "not such a fan of Charlotte Bront\u00eb\u2026\""},
		{"AH\u00c5\u2122, the new sofa from IKEA\u00ae", "AH\u00c5\u2122, the new sofa from IKEA\u00ae"},
		{"This text was never UTF-8 at all\u0085", "This text was never UTF-8 at all\u2026"},
		{"&macr;\\_(\u00e3\u0083\u0084)_/&macr;", "\u00af\\_(\u30c4)_/\u00af"},
		{"\uff26\uff35\uff2c\uff2c\uff37\uff29\uff24\uff34\uff28", "FULLWIDTH"},
		{"\u2167 \u00bd \u00b2 \u2460", "\u2167 \u00bd \u00b2 \u2460"},
		{"&EACUTE;t&eacute; &amp;amp; &#0; &#xZZ; &ampx;", "\u00c9t\u00e9 & \ufffd &#xZZ; &ampx;"},
		{"line\r\nbreak\u2028sep", "line\nbreak\nsep"},
		{"The more you know \u00f0\u0178\u0152 ", "The more you know \U0001f320"},
		{"BUNDESSTRA&SZLIG;E &ntilde; &Ntilde; &NTILDE; &nTILDE; &LTIMES; &ltimes;", "BUNDESSTRASSE \u00f1 \u00d1 \u00d1 &nTILDE; &LTIMES; \u22c9"},
		{"&Jscr;ohn &HilbertSpace;ancock &checkmark;", "\U0001d4a5ohn \u210bancock \u2713"},
		{"&amp;\n<b>&amp;</b>\n&amp;", "&\n<b>&amp;</b>\n&amp;"},
		// A byte A0 that became a space ("à" as a word), lossy mojibake,
		// and mojibake next to text that no single-byte encoding covers.
		{"\u00c3 perturber la r\u00c3\u00a9flexion", "\u00e0 perturber la r\u00e9flexion"},
		{"\u00e2\u20ac\u0153 like this \u00e2\u20ac\ufffd", "\" like this \ufffd"},
		{"caf\u00c3\u00a9 \u65e5\u672c", "caf\u00e9 \u65e5\u672c"},
		{"\u00d0\u00bf\u00d1\u20ac\u00d0\u00b8\u00d0\u00b2\u00d0\u00b5\u00d1\u201a", "\u043f\u0440\u0438\u0432\u0435\u0442"},
	}
	// 40 combining marks: no U+034F (Go's stream-safe marker) may appear.
	zalgo := "a" + strings.Repeat("\u0301", 40)
	cases = append(cases, struct{ in, want string }{zalgo, "\u00e1" + strings.Repeat("\u0301", 39)})
	for _, c := range cases {
		if got := FixText(c.in); got != c.want {
			t.Errorf("FixText(%+q) = %+q, want %+q", c.in, got, c.want)
		}
	}
}

func TestCleanPythonRules(t *testing.T) {
	cases := []struct{ in, want string }{
		{"  A\u00a0B\u2003C\t\nD  ", "a b c d"},
		{"\u039f\u0394\u039f\u03a3 \u03a3\u039f\u03a6\u0399\u0391", "\u03bf\u03b4\u03bf\u03c2 \u03c3\u03bf\u03c6\u03b9\u03b1"},
		{"\u0130stanbul", "i\u0307stanbul"},
		{"zero\u200bwidth", "zero\u200bwidth"},
		{"bad\xffbyte", "bad\ufffdbyte"},
	}
	for _, c := range cases {
		if got := Clean(c.in); got != c.want {
			t.Errorf("Clean(%+q) = %+q, want %+q", c.in, got, c.want)
		}
	}
}

// The splits of CLIP's pre-tokenizing pattern (leftmost alternative wins).
func TestPretokenize(t *testing.T) {
	cases := map[string][]string{
		"it's they're":                 {"it", "'s", "they", "'re"},
		"''s":                          {"''", "s"},
		"!<|endoftext|>":               {"!<|", "endoftext", "|>"},
		"<|endoftext|>!":               {"<|endoftext|>", "!"},
		"a1b22":                        {"a", "1", "b", "2", "2"},
		"'\u017ft":                     {"'\u017f", "t"},
		"x'll'd 've":                   {"x", "'ll", "'d", "'ve"},
		"caf\u00e9\u0301 \u65e5\u672c": {"caf\u00e9", "\u0301", "\u65e5\u672c"},
	}
	for in, want := range cases {
		var got []string
		pretokenize(in, func(s string) { got = append(got, s) })
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("pretokenize(%q) = %q, want %q", in, got, want)
		}
	}
}
