package termsafe

import (
	"testing"
	"unicode/utf8"

	"github.com/rivo/uniseg"
	"github.com/stretchr/testify/assert"
)

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, line, text string }{
		{"plain name.weight", "plain name.weight", "plain name.weight"},
		{"emoji 😀 and ünïcode", "emoji 😀 and ünïcode", "emoji 😀 and ünïcode"},
		{"\x1b]0;pwned\x07title", `\x1b]0;pwned\atitle`, `\x1b]0;pwned\atitle`},
		{"a\x1b[?1049lb", `a\x1b[?1049lb`, `a\x1b[?1049lb`},
		{"two\nlines\tand\rcr", `two\nlines\tand\rcr`, "two\nlines\tand\\rcr"},
		{"c1 \u009b2J csi", `c1 \u009b2J csi`, `c1 \u009b2J csi`},
		{"del\x7f", `del\x7f`, `del\x7f`},
		{"bidi \u202egnp.exe", `bidi \u202egnp.exe`, `bidi \u202egnp.exe`},
		{"bad \xff\xfe utf8", `bad \xff\xfe utf8`, `bad \xff\xfe utf8`},
		{`back\slash`, `back\slash`, `back\slash`},
		{"", "", ""},
	} {
		assert.Equal(t, tc.line, Escape(tc.in), "Escape(%q)", tc.in)
		assert.Equal(t, tc.text, Text(tc.in), "Text(%q)", tc.in)
	}
}

// FuzzEscape: the result never holds a byte a terminal acts on.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"\x1b]0;x\x07", "ok", "\u009b\u202e\xff", "a\nb\tc\r"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, out := range []string{Escape(s), Text(s)} {
			for _, r := range out {
				if r == '\n' || r == '\t' {
					continue
				}
				if unsafe(r) {
					t.Fatalf("%q escaped to %q, which holds %U", s, out, r)
				}
			}
			if !utf8.ValidString(out) {
				t.Fatalf("%q escaped to invalid UTF-8 %q", s, out)
			}
		}
		if Escape(s) != s && clean(s, false) {
			t.Fatalf("clean(%q) but Escape changed it", s)
		}
	})
}

func TestRune(t *testing.T) {
	assert.Equal(t, '␛', Rune(0x1b))
	assert.Equal(t, '␀', Rune(0))
	assert.Equal(t, '␡', Rune(0x7f))
	assert.Equal(t, '\uFFFD', Rune(0x9b))
	assert.Equal(t, 'a', Rune('a'))
	assert.Equal(t, '😀', Rune('😀'))
}

// Cells reduces the emoji sequences terminals measure differently to the
// form they all draw alike, one cluster for one.
func TestCells(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, café":       "plain text, café",
		"❤️ love":                "❤ love",   // VS16 dropped: one cell everywhere
		"👍🏽 ok":                  "👍 ok",     // skin tone dropped: two cells
		"👨\u200d👩\u200d👧 family": "👨 family", // ZWJ sequence: its first emoji
		"🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f": "🏴", // tag sequence
		"🏽":   "🏽", // a lone modifier stays
		"1️⃣": "1⃣",
	} {
		got := Cells(in)
		assert.Equal(t, want, got, "Cells(%q)", in)
		assert.Equal(t, uniseg.GraphemeClusterCount(in), uniseg.GraphemeClusterCount(got), "clusters of Cells(%q)", in)
	}
}
