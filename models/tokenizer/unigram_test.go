package tokenizer

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
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

// sd3TokenizerJSON writes sd3-mini's spiece.model as a Hugging Face
// tokenizer.json laid out as T5TokenizerFast's (special added tokens,
// Sequence[Precompiled, Replace] normaliser, Metaspace, Unigram vocab).
func sd3TokenizerJSON(t *testing.T) []byte {
	data, err := os.ReadFile(filepath.Join(wave3(t), "sd3-mini", "tokenizer_3", "spiece.model"))
	require.NoError(t, err)
	m, err := parseSPM(data)
	require.NoError(t, err)
	type added struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	}
	var adds []added
	var vocab [][2]any
	for i, p := range m.pieces {
		vocab = append(vocab, [2]any{p.text, p.score})
		if p.typ == pieceControl || p.typ == pieceUnknown {
			adds = append(adds, added{i, p.text, true})
		}
	}
	for i := 0; i < 100; i++ {
		adds = append(adds, added{len(m.pieces) + 99 - i, fmt.Sprintf("<extra_id_%d>", i), true})
	}
	out, err := json.Marshal(map[string]any{
		"added_tokens": adds,
		"normalizer": map[string]any{"type": "Sequence", "normalizers": []any{
			map[string]any{"type": "Precompiled", "precompiled_charsmap": base64.StdEncoding.EncodeToString(m.charsmap)},
			map[string]any{"type": "Replace", "pattern": map[string]string{"String": " {2,}"}, "content": " "}}},
		"pre_tokenizer": map[string]any{"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": true},
		"model":         map[string]any{"type": "Unigram", "unk_id": m.unkID, "vocab": vocab},
	})
	require.NoError(t, err)
	return out
}

// A tokenizer.json (T5TokenizerFast's file) gives the spiece.model's ids,
// the golden ones included; a folder with only tokenizer.json loads it;
// other models and broken vocabularies are refused by name.
func TestUnigramTokenizerJSON(t *testing.T) {
	js := sd3TokenizerJSON(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), js, 0o644))
	uj, err := LoadUnigram(dir)
	require.NoError(t, err)
	us := sd3Unigram(t)
	assert.Equal(t, us.VocabSize(), uj.VocabSize())
	assert.Equal(t, "<extra_id_0>", uj.Piece(341))
	g := golden.Open(t, filepath.Join(wave3(t), "sd3_text_encoders.safetensors"))
	want := g.I64("input_ids_3")
	for i, p := range []string{"a photograph of an astronaut riding a horse", "low quality, blurry, watermark", "",
		"a red sports car on a mountain road"} {
		ids, _ := uj.EncodePadded(p, 256)
		for j, id := range ids {
			require.Equal(t, want[i*256+j], int64(id), "prompt %q token %d", p, j)
		}
	}
	for _, s := range []string{"\uff21\uff22\uff23 \ufb01", "a \u65e5\u672c horse", "  spaced   out  "} {
		assert.Equal(t, us.Encode(s), uj.Encode(s), s)
	}
	for name, bad := range map[string]string{
		"bpe":       `{"model": {"type": "BPE", "vocab": {}}}`,
		"no unk":    `{"model": {"type": "Unigram", "vocab": [["a", -1]]}}`,
		"bad entry": `{"model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0], ["a"]]}}`,
		"bad score": `{"model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0], ["a", "x"]]}}`,
		"not json":  `{"model": `,
	} {
		_, err := ParseUnigramJSON("x/tokenizer.json", []byte(bad))
		if assert.Error(t, err, name) {
			assert.Contains(t, err.Error(), "x/tokenizer.json", name)
		}
	}
}

// FuzzParseUnigramJSON: any bytes parse or fail cleanly; a parsed
// tokenizer encodes any text inside its vocabulary.
func FuzzParseUnigramJSON(f *testing.F) {
	f.Add([]byte(`{"model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0], ["</s>", 0], ["<pad>", 0], ["\u2581a", -1]]},
		"added_tokens": [{"id": 1, "content": "</s>", "special": true}, {"id": 2, "content": "<pad>", "special": true}]}`), "a a")
	f.Add([]byte(`{"model": {"type": "Unigram", "unk_id": 5, "vocab": []}}`), "")
	f.Add([]byte(`{"normalizer": {"type": "Precompiled", "precompiled_charsmap": "AAAA"}, "model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0]]}}`), "x")
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		u, err := ParseUnigramJSON("fuzz", data)
		if err != nil {
			return
		}
		for _, id := range u.Encode(text) {
			if id < 0 || int(id) >= u.VocabSize() {
				t.Fatalf("Encode(%q) gave id %d of %d", text, id, u.VocabSize())
			}
		}
	})
}
