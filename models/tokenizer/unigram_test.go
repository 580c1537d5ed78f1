package tokenizer

import (
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
)

func wave3(t testing.TB) string { return golden.Wave(t, "golden-wave3") }

func sd3Unigram(t testing.TB) *Unigram {
	t.Helper()
	u, err := LoadUnigram(filepath.Join(wave3(t), "sd3-mini", "tokenizer_3"))
	require.NoError(t, err)
	return u
}

// The T5 ids stored with the SD3 goldens (sentencepiece's encode + </s>,
// <pad> padding to 256) come out id for id, and so do the pieces the
// sidecar lists.
func TestUnigramGoldenIDs(t *testing.T) {
	u := sd3Unigram(t)
	assert.Equal(t, 342, u.VocabSize())
	assert.Equal(t, int32(1), u.EOS)
	assert.Equal(t, int32(0), u.Pad)
	assert.Equal(t, int32(2), u.Unk)
	g := golden.Open(t, filepath.Join(wave3(t), "sd3_text_encoders.safetensors"))
	want := g.I64("input_ids_3")
	prompts := []string{"a photograph of an astronaut riding a horse", "low quality, blurry, watermark", "",
		"a red sports car on a mountain road"}
	for i, p := range prompts {
		ids, cut := u.EncodePadded(p, 256)
		assert.False(t, cut)
		require.Len(t, ids, 256)
		for j, id := range ids {
			if !assert.Equal(t, want[i*256+j], int64(id), "prompt %q token %d", p, j) {
				break
			}
		}
	}
	assert.Equal(t, []string{"\u2581a", "\u2581photograph", "\u2581", "of", "\u2581an", "\u2581a", "str", "on", "aut",
		"\u2581", "rid", "ing", "\u2581a", "\u2581horse"}, u.Pieces(prompts[0]))
	// The e2e golden's prompt and negative prompt ids.
	e2e := golden.Open(t, filepath.Join(wave3(t), "sd3_e2e_flowmatch_seed42.safetensors"))
	for name, p := range map[string]string{"prompt_ids_3": prompts[0], "negative_prompt_ids_3": prompts[1]} {
		ids, _ := u.EncodePadded(p, 256)
		w := e2e.I64(name)
		for j := range ids {
			require.Equal(t, w[j], int64(ids[j]), "%s token %d", name, j)
		}
	}
}

// Normalisation: leading, trailing and repeated spaces go, a dummy-prefix
// space is added, the precompiled NFKC map folds compatibility forms, and
// characters no piece covers become one <unk> per run.
func TestUnigramNormalize(t *testing.T) {
	u := sd3Unigram(t)
	require.NotNil(t, u.cm, "sd3-mini's spiece.model has nmt_nfkc's precompiled map")
	assert.Equal(t, "\u2581a\u2581horse", u.Normalize("  a    horse  "))
	assert.Equal(t, "", u.Normalize("   "))
	// Full-width letters and the "fi" ligature are NFKC-folded by the map.
	assert.Equal(t, "\u2581ABC\u2581fi", u.Normalize("\uff21\uff22\uff23 \ufb01"))
	assert.Equal(t, u.Encode("a horse"), u.Encode(" a\u3000horse "), "ideographic space folds to a space")
	ids := u.Encode("a \u65e5\u672c horse")
	assert.Contains(t, ids, u.Unk)
	n := 0
	for _, id := range ids {
		if id == u.Unk {
			n++
		}
	}
	assert.Equal(t, 1, n, "a run of unknown characters is one <unk>: %v", ids)
	// Truncation keeps n-1 pieces and the </s>.
	long, cut := u.EncodePadded("a horse a horse a horse a horse", 4)
	assert.True(t, cut)
	assert.Equal(t, []int32{u.Encode("a")[0], u.Encode("horse")[0], u.Encode("a")[0], u.EOS}, long)
	assert.Equal(t, "<extra_id_0>", u.Piece(341))
	assert.Equal(t, "</s>", u.Piece(1))
}

// A file that is not a SentencePiece model is refused with its name and
// the problem.
func TestUnigramBadFiles(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(wave3(t), "sd3-mini", "tokenizer_3", "spiece.model"))
	require.NoError(t, err)
	for name, data := range map[string][]byte{
		"empty":     {},
		"truncated": good[:len(good)/2],
		"text":      []byte("{\"model\": {\"type\": \"Unigram\"}}"),
		"bad wire":  {0x0f, 0x01},
	} {
		_, err := ParseUnigram("x/spiece.model", data)
		if assert.Error(t, err, name) {
			assert.Contains(t, err.Error(), "x/spiece.model", name)
		}
	}
	_, err = LoadUnigram(filepath.Join(t.TempDir(), "spiece.model"))
	assert.ErrorContains(t, err, "spiece.model")
}

// FuzzParseUnigram: any bytes parse or fail cleanly; a model that parses
// encodes any text to ids inside its vocabulary.
func FuzzParseUnigram(f *testing.F) {
	good, err := os.ReadFile(filepath.Join(wave3(f), "sd3-mini", "tokenizer_3", "spiece.model"))
	if err == nil {
		f.Add(good, "a photograph of an astronaut")
		f.Add(good[:len(good)-7], "x")
		f.Add(good[:2000], "\uff21 \ufb01")
	}
	// One piece "\u2581a" (normal), <unk>, </s>, <pad>; model type 1.
	piece := func(text string, typ byte) []byte {
		b := append([]byte{0x0a, byte(len(text))}, text...)
		b = append(b, 0x15, 0, 0, 0x80, 0xbf, 0x18, typ) // score -1.0, type
		return append([]byte{0x0a, byte(len(b))}, b...)
	}
	var tiny []byte
	for _, p := range [][]byte{piece("<pad>", 3), piece("</s>", 3), piece("<unk>", 2), piece("\u2581a", 1)} {
		tiny = append(tiny, p...)
	}
	tiny = append(tiny, 0x12, 0x03, 0xc0, 0x02, 0x02) // trainer_spec.unk_id = 2
	f.Add(tiny, "a a b")
	f.Add([]byte{0x1a, 0x05, 0x12, 0x03, 0xff, 0xff, 0xff}, "")
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		u, err := ParseUnigram("fuzz", data)
		if err != nil {
			return
		}
		if !utf8.ValidString(u.Normalize(text)) && utf8.ValidString(text) {
			t.Fatalf("Normalize(%q) is not UTF-8", text)
		}
		ids, _ := u.EncodePadded(text, 16)
		require.Len(t, ids, 16)
		for _, id := range ids {
			if id < 0 || int(id) >= u.VocabSize() {
				t.Fatalf("Encode(%q) gave id %d of %d", text, id, u.VocabSize())
			}
		}
	})
}
