package golden

import (
	"os"
	"slices"
	"testing"

	"github.com/stepwise/stepwise/models/safetensors"
)

func TestReaders(t *testing.T) {
	f := Open(t, "tokenizer.safetensors")
	ids := f.I64("input_ids")
	wide, shape := f.F64("input_ids")
	if !slices.Equal(shape, []int{32, 77}) || len(ids) != 32*77 || len(wide) != len(ids) {
		t.Fatalf("input_ids: shape %v, %d and %d values", shape, len(ids), len(wide))
	}
	// README: each row is [49406] + ids + [49407] padding.
	if ids[0] != 49406 || ids[76] != 49407 || wide[0] != 49406 || wide[76] != 49407 {
		t.Errorf("input_ids row 0 starts %d ends %d (F64 %v, %v)", ids[0], ids[76], wide[0], wide[76])
	}
	g := Open(t, Path(t, "rng.safetensors")) // an absolute path
	name := g.Tensors()[0].Name
	v32, s32 := g.F32(name)
	v64, s64 := g.For(t).F64(name)
	if len(v32) == 0 || !slices.Equal(s32, s64) || len(v32) != len(v64) {
		t.Fatalf("%s: F32 %v (%d values), F64 %v (%d values)", name, s32, len(v32), s64, len(v64))
	}
	for i := range v32 {
		if float64(v32[i]) != v64[i] {
			t.Fatalf("%s[%d]: F32 %v, F64 %v", name, i, v32[i], v64[i])
		}
	}
}

func TestSD15(t *testing.T) {
	keys := SD15Keys(t)
	if len(keys) != 1130 {
		t.Fatalf("%d keys, want 1130", len(keys))
	}
	pe := keys[0]
	if pe.Name != "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" ||
		pe.DType != safetensors.F16 || !slices.Equal(pe.Shape, []int{77, 768}) {
		t.Errorf("first key %+v", pe)
	}
	path := SD15File(t, safetensors.Entry{Name: "betas", DType: safetensors.F32, Shape: []int{1}})
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n := len(f.Tensors()); n != 1131 {
		t.Errorf("%d tensors, want 1131", n)
	}
	if info, ok := f.Lookup("betas"); !ok || info.DType != safetensors.F32 {
		t.Errorf("betas: %+v %v", info, ok)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() < 2_000_000_000 {
		t.Errorf("file is %d bytes, want the full-size 2.13 GB", st.Size())
	}
}

func TestMaxAbsDiff(t *testing.T) {
	d, at, scale := MaxAbsDiff([]float32{1, 2.5, -3}, []float32{1, 2, -4})
	if d != 1 || at != 2 || scale != 4 {
		t.Errorf("got %v at %d scale %v, want 1 at 2 scale 4", d, at, scale)
	}
}
