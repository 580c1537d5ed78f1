package tokenizer

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// goldenDir is ../shared/golden relative to the module root.
func goldenDir(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "golden")
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.safetensors")); err != nil {
		t.Skipf("golden data not found at %s (%v); skipping", dir, err)
	}
	return dir
}

// readI64Tensors reads the I64 tensors of a safetensors file (8-byte LE
// header length, JSON header, raw little-endian data).
func readI64Tensors(path string) (map[string][]int64, map[string][]int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if len(raw) < 8 {
		return nil, nil, fmt.Errorf("%s: too short", path)
	}
	n := binary.LittleEndian.Uint64(raw)
	if n > uint64(len(raw)-8) {
		return nil, nil, fmt.Errorf("%s: header length %d past end", path, n)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(raw[8:8+n], &hdr); err != nil {
		return nil, nil, fmt.Errorf("%s: header: %w", path, err)
	}
	data := raw[8+n:]
	vals := map[string][]int64{}
	shapes := map[string][]int{}
	for name, msg := range hdr {
		if name == "__metadata__" {
			continue
		}
		var info struct {
			Dtype   string   `json:"dtype"`
			Shape   []int    `json:"shape"`
			Offsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &info); err != nil {
			return nil, nil, fmt.Errorf("%s: tensor %s: %w", path, name, err)
		}
		if info.Dtype != "I64" {
			continue
		}
		b := data[info.Offsets[0]:info.Offsets[1]]
		v := make([]int64, len(b)/8)
		for i := range v {
			v[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
		vals[name], shapes[name] = v, info.Shape
	}
	return vals, shapes, nil
}

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
	dir := goldenDir(t)
	raw, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Prompts []goldenCase `json:"prompts"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatalf("tokenizer.json: %v", err)
	}
	vals, shapes, err := readI64Tensors(filepath.Join(dir, "tokenizer.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	ids, flat, offs := vals["input_ids"], vals["tokens_flat"], vals["tokens_offsets"]
	if len(shapes["input_ids"]) != 2 || shapes["input_ids"][0] != len(meta.Prompts) || shapes["input_ids"][1] != ContextLen {
		t.Fatalf("input_ids shape %v, %d prompts", shapes["input_ids"], len(meta.Prompts))
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

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestGoldenEncode(t *testing.T) {
	tok := Default()
	for _, c := range loadGolden(t) {
		got := tok.Encode(c.Prompt)
		if !equalIDs(got, c.Flat) {
			t.Errorf("prompt %d %q:\n got  %v %q\n want %v %q\n clean %q", c.Index, c.Prompt, got, tok.Tokens(c.Prompt), c.Flat, c.Tokens, Clean(c.Prompt))
			continue
		}
		if p := Pad77(got); !equalIDs(p, c.Padded) {
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
		if !equalIDs(scan, fast) {
			t.Fatalf("%q: heap %v, scan %v", w, fast, scan)
		}
	}
}
