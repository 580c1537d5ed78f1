package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzEncode(f *testing.F) {
	for _, s := range []string{
		"a photograph of an astronaut riding a horse", "", "<|startoftext|>x<|endoftext|>",
		"caf\u00c3\u00a9 \u00e2\u20ac\u0153q\u00e2\u20ac\u009d", "&amp;lt; &#x1F600; &EACUTE;", "\xff\xfe\xc3",
		"\u65e5\u672c\u8a9e \U0001f431\U0001f3fd", "it's they'RE \u017f'\u017f", "\u00c3 \u00c2\u00a0 \ufb01",
	} {
		f.Add(s)
	}
	tok := Default()
	f.Fuzz(func(t *testing.T, s string) {
		ids := tok.Encode(s)
		for _, id := range ids {
			if id < 0 || id >= VocabSize {
				t.Fatalf("Encode(%q) produced id %d", s, id)
			}
		}
		if c := Clean(s); !utf8.ValidString(c) {
			t.Fatalf("Clean(%q) = %q is not valid UTF-8", s, c)
		}
		if p := Pad77(ids); len(p) != ContextLen || p[0] != BOS || p[ContextLen-1] != EOS {
			t.Fatalf("Pad77 of %q = %v", s, p)
		}
	})
}

func FuzzParseWeights(f *testing.F) {
	for _, s := range []string{
		"a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", `\(x\) \\ \`, "((((", "]]))",
		"a BREAK b BREAKBREAK BREAK", "(x:1e5) (y:-2) (z:..)", "(:1)", "",
	} {
		f.Add(s)
	}
	tok := Default()
	f.Fuzz(func(t *testing.T, s string) {
		frags, err := ParseWeights(s)
		if err != nil {
			if !strings.Contains(err.Error(), "prompt weight") {
				t.Fatalf("ParseWeights(%q): error does not name the weight: %v", s, err)
			}
			if _, err2 := tok.EncodeWeighted(s); err2 == nil {
				t.Fatalf("EncodeWeighted(%q) accepted what ParseWeights rejects (%v)", s, err)
			}
			return
		}
		if len(frags) == 0 {
			t.Fatalf("ParseWeights(%q) returned no fragments", s)
		}
		e, err := tok.EncodeWeighted(s)
		if err != nil {
			t.Fatalf("EncodeWeighted(%q) failed after ParseWeights succeeded: %v", s, err)
		}
		if len(e.Chunks) == 0 || len(e.Chunks) != len(e.Weights) {
			t.Fatalf("EncodeWeighted(%q): %d chunks, %d weight rows", s, len(e.Chunks), len(e.Weights))
		}
		for i, c := range e.Chunks {
			if len(c) != ContextLen || len(e.Weights[i]) != ContextLen || c[0] != BOS || c[ContextLen-1] != EOS {
				t.Fatalf("EncodeWeighted(%q): malformed chunk %d %v", s, i, c)
			}
			for _, id := range c {
				if id < 0 || id >= VocabSize {
					t.Fatalf("EncodeWeighted(%q): id %d", s, id)
				}
			}
		}
	})
}

func FuzzExtraNetworks(f *testing.F) {
	for _, s := range []string{
		"a cat <lora:cat_v2:0.8>, <lora:style:1:0.5> (x:1.2)", "<lora:a>", "<lora::>", "<<lora:a:1>lora:b:1>",
		"<hypernet:h:1><lyco:l:te=0.5:unet=1>", "<lora:a:1", "<:a:1>", "<lora:\n:1>", "<日本:語:1>", "<lora:a:b=c=d>",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rest, tags := ExtraNetworks(s)
		var b strings.Builder
		last := 0
		for _, tg := range tags {
			if tg.Start < last || tg.End > len(s) || tg.Start >= tg.End {
				t.Fatalf("ExtraNetworks(%q): tag %+v out of order", s, tg)
			}
			if s[tg.Start:tg.End] != tg.Text() {
				t.Fatalf("ExtraNetworks(%q): tag at %d..%d is %q, Text() %q", s, tg.Start, tg.End, s[tg.Start:tg.End], tg.Text())
			}
			if tg.Kind == "" || len(tg.Items) == 0 || len(tg.Positional())+len(tg.Named()) > len(tg.Items) {
				t.Fatalf("ExtraNetworks(%q): bad tag %+v", s, tg)
			}
			b.WriteString(s[last:tg.Start])
			last = tg.End
		}
		b.WriteString(s[last:])
		if b.String() != rest {
			t.Fatalf("ExtraNetworks(%q) left %q, want %q", s, rest, b.String())
		}
		if len(tags) == 0 && rest != s {
			t.Fatalf("ExtraNetworks(%q) changed a prompt without tags", s)
		}
	})
}
