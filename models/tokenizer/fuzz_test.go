package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
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
			require.True(t, id >= 0 && id < VocabSize, "Encode(%q) produced id %d", s, id)
		}
		c := Clean(s)
		require.True(t, utf8.ValidString(c), "Clean(%q) = %q is not valid UTF-8", s, c)
		p := Pad77(ids)
		require.Len(t, p, ContextLen, "Pad77 of %q", s)
		require.Equal(t, int32(BOS), int32(p[0]), "Pad77 of %q starts with BOS", s)
		require.Equal(t, int32(EOS), int32(p[ContextLen-1]), "Pad77 of %q ends with EOS", s)
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
			require.ErrorContains(t, err, "prompt weight", "ParseWeights(%q): the error names the weight", s)
			_, err2 := tok.EncodeWeighted(s)
			require.Error(t, err2, "EncodeWeighted(%q) accepted what ParseWeights rejects (%v)", s, err)
			return
		}
		require.NotEmpty(t, frags, "ParseWeights(%q) returned no fragments", s)
		e, err := tok.EncodeWeighted(s)
		require.NoError(t, err, "EncodeWeighted(%q) after ParseWeights succeeded", s)
		require.NotEmpty(t, e.Chunks, "EncodeWeighted(%q): no chunks", s)
		require.Equal(t, len(e.Chunks), len(e.Weights), "EncodeWeighted(%q): chunks and weight rows", s)
		for i, c := range e.Chunks {
			require.Len(t, c, ContextLen, "EncodeWeighted(%q): chunk %d", s, i)
			require.Len(t, e.Weights[i], ContextLen, "EncodeWeighted(%q): weights %d", s, i)
			require.True(t, c[0] == BOS && c[ContextLen-1] == EOS, "EncodeWeighted(%q): malformed chunk %d %v", s, i, c)
			for _, id := range c {
				require.True(t, id >= 0 && id < VocabSize, "EncodeWeighted(%q): id %d", s, id)
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
			require.True(t, tg.Start >= last && tg.End <= len(s) && tg.Start < tg.End, "ExtraNetworks(%q): tag %+v out of order", s, tg)
			require.Equal(t, s[tg.Start:tg.End], tg.Text(), "ExtraNetworks(%q): tag at %d..%d", s, tg.Start, tg.End)
			require.NotEmpty(t, tg.Kind, "ExtraNetworks(%q): bad tag %+v", s, tg)
			require.NotEmpty(t, tg.Items, "ExtraNetworks(%q): bad tag %+v", s, tg)
			require.LessOrEqual(t, len(tg.Positional())+len(tg.Named()), len(tg.Items), "ExtraNetworks(%q): bad tag %+v", s, tg)
			b.WriteString(s[last:tg.Start])
			last = tg.End
		}
		b.WriteString(s[last:])
		require.Equal(t, b.String(), rest, "ExtraNetworks(%q): the text left", s)
		if len(tags) == 0 {
			require.Equal(t, s, rest, "ExtraNetworks(%q) changed a prompt without tags", s)
		}
	})
}
