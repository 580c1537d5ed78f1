package tokenizer

import (
	"encoding/json"
	"math/rand"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/internal/golden"
)

// goldenCase is one prompt of tokenizer.json with its expected ids.
type goldenCase struct {
	Index  int      `json:"index"`
	Prompt string   `json:"prompt"`
	Tokens []string `json:"tokens"`
	Padded []int32  `json:"-"` // input_ids row (ftfy)
	Flat   []int32  `json:"-"` // untruncated ids
}

func loadGolden(t testing.TB) []goldenCase {
	t.Helper()
	raw, err := os.ReadFile(golden.Path(t, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Prompts []goldenCase `json:"prompts"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatalf("tokenizer.json: %v", err)
	}
	f := golden.Open(t, "tokenizer.safetensors")
	ids, flat, offs := f.I64("input_ids"), f.I64("tokens_flat"), f.I64("tokens_offsets")
	if info, _ := f.Lookup("input_ids"); len(info.Shape) != 2 || info.Shape[0] != len(meta.Prompts) || info.Shape[1] != ContextLen {
		t.Fatalf("input_ids shape %v, %d prompts", info.Shape, len(meta.Prompts))
	}
	if len(offs) != len(meta.Prompts)+1 {
		t.Fatalf("tokens_offsets has %d entries for %d prompts", len(offs), len(meta.Prompts))
	}
	to32 := func(v []int64) []int32 {
		out := make([]int32, len(v))
		for i, x := range v {
			out[i] = int32(x)
		}
		return out
	}
	for i := range meta.Prompts {
		meta.Prompts[i].Padded = to32(ids[i*ContextLen : (i+1)*ContextLen])
		meta.Prompts[i].Flat = to32(flat[offs[i]:offs[i+1]])
	}
	return meta.Prompts
}

func TestGoldenEncode(t *testing.T) {
	tok := Default()
	for _, c := range loadGolden(t) {
		got := tok.Encode(c.Prompt)
		if !slices.Equal(got, c.Flat) {
			t.Errorf("prompt %d %q:\n got  %v %q\n want %v %q\n clean %q", c.Index, c.Prompt, got, tok.Tokens(c.Prompt), c.Flat, c.Tokens, Clean(c.Prompt))
			continue
		}
		if p := Pad77(got); !slices.Equal(p, c.Padded) {
			t.Errorf("prompt %d %q: Pad77 = %v, want %v", c.Index, c.Prompt, p, c.Padded)
		}
		strs := tok.Tokens(c.Prompt)
		for i := range strs {
			if strs[i] != c.Tokens[i] {
				t.Errorf("prompt %d token %d = %q, want %q", c.Index, i, strs[i], c.Tokens[i])
				break
			}
		}
	}
}

// TestVocabMatchesJSON checks the vocabulary built from merges.txt against
// the published vocab.json, id for id.
func TestVocabMatchesJSON(t *testing.T) {
	raw, err := gunzip("vocab.json", mustRead(t, "vocab.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	var enc map[string]int32
	if err := json.Unmarshal(raw, &enc); err != nil {
		t.Fatal(err)
	}
	tok := Default()
	if len(enc) != VocabSize {
		t.Fatalf("vocab.json has %d entries", len(enc))
	}
	for s, id := range enc {
		if got := tok.Token(id); got != s {
			t.Fatalf("id %d: built %q, vocab.json %q", id, got, s)
		}
	}
	if tok.Token(-1) != "" || tok.Token(VocabSize) != "" {
		t.Error("Token outside the vocabulary is not empty")
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBPEHeapMatchesScan checks the long-word algorithm against the plain
// one on long words, including repeated pairs ("aaaa...").
func TestBPEHeapMatchesScan(t *testing.T) {
	tok := Default()
	words := []string{
		strings.Repeat("a", 101), strings.Repeat("ab", 60), strings.Repeat("xxxx", 30) + "y",
		"supercalifragilisticexpialidociousantidisestablishmentarianismpneumonoultramicroscopic",
		strings.Repeat("\xe6\x97\xa5\xe6\x9c\xac", 20), strings.Repeat("!?", 40),
	}
	rng := rand.New(rand.NewSource(7))
	for k := 0; k < 200; k++ {
		b := make([]byte, 48+rng.Intn(80))
		for i := range b {
			b[i] = "etaoinshrdlu"[rng.Intn(12)]
		}
		words = append(words, string(b))
	}
	for _, w := range words {
		sym := make([]int32, len(w))
		for i := 0; i < len(w); i++ {
			sym[i] = tok.byteID[w[i]]
		}
		sym[len(sym)-1] = tok.byteEnd[w[len(w)-1]]
		scan := tok.bpeScan(append([]int32(nil), sym...))
		fast := tok.bpeHeap(append([]int32(nil), sym...))
		if !slices.Equal(scan, fast) {
			t.Fatalf("%q: heap %v, scan %v", w, fast, scan)
		}
	}
}
