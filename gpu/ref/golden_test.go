package ref

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stepwise/stepwise/gpu"
)

// These tests run small pieces of the sd15-mini networks with the reference
// ops on the real fp16 checkpoint and compare them with what diffusers and
// transformers computed (../shared/golden, beside the repository). The
// golden README asks for max abs diff <= 1e-4.

const goldenTol = 1e-4

// goldenDir finds ../shared/golden relative to the module root, or skips.
func goldenDir(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("golden data: module root not found")
		}
		dir = parent
	}
	g := filepath.Join(dir, "..", "shared", "golden")
	if _, err := os.Stat(filepath.Join(g, "sd15-mini.fp16.safetensors")); err != nil {
		t.Skipf("golden data not found at %s (it lives beside the checkout)", g)
	}
	return g
}

// stFile is a safetensors file read whole: just enough of the format for
// these tests (models/safetensors is the real reader).
type stFile struct {
	name   string
	header map[string]struct {
		DType   string `json:"dtype"`
		Shape   []int  `json:"shape"`
		Offsets [2]int `json:"data_offsets"`
	}
	data []byte
}

func readST(t *testing.T, path string) *stFile {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) < 8 {
		t.Fatalf("%s: too short", path)
	}
	n := binary.LittleEndian.Uint64(raw)
	if n > uint64(len(raw)-8) {
		t.Fatalf("%s: header length %d beyond the file", path, n)
	}
	f := &stFile{name: path, data: raw[8+n:]}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(raw[8:8+n], &hdr); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	delete(hdr, "__metadata__")
	b, _ := json.Marshal(hdr)
	if err := json.Unmarshal(b, &f.header); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f
}

// tensor uploads one entry (F32 or F16, kept in its type) to d.
func (f *stFile) tensor(t *testing.T, d *Device, name string) *gpu.Tensor {
	t.Helper()
	e, ok := f.header[name]
	if !ok {
		t.Fatalf("%s: no tensor %q", f.name, name)
	}
	raw := f.data[e.Offsets[0]:e.Offsets[1]]
	switch e.DType {
	case "F32":
		return d.UploadRaw(gpu.F32, raw, e.Shape...)
	case "F16":
		return d.UploadRaw(gpu.F16, raw, e.Shape...)
	}
	t.Fatalf("%s: %s has dtype %s", f.name, name, e.DType)
	return nil
}

// ints reads an I64 entry.
func (f *stFile) ints(t *testing.T, name string) []int32 {
	t.Helper()
	e, ok := f.header[name]
	if !ok || e.DType != "I64" {
		t.Fatalf("%s: no I64 tensor %q", f.name, name)
	}
	raw := f.data[e.Offsets[0]:e.Offsets[1]]
	out := make([]int32, len(raw)/8)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint64(raw[8*i:]))
	}
	return out
}

// match compares got with a golden F32 tensor by max abs diff.
func match(t *testing.T, d *Device, got *gpu.Tensor, gold *stFile, name string) {
	t.Helper()
	want := down(t, d, gold.tensor(t, d, name))
	g := down(t, d, got)
	if len(g) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(g), len(want))
	}
	worst, at := 0.0, 0
	for i := range g {
		if diff := math.Abs(float64(g[i] - want[i])); diff > worst || math.IsNaN(diff) {
			worst, at = diff, i
		}
	}
	if !(worst <= goldenTol) {
		t.Errorf("%s: max abs diff %.3g at %d (got %v, want %v)", name, worst, at, g[at], want[at])
	} else {
		t.Logf("%s: max abs diff %.3g", name, worst)
	}
}

func TestGoldenUNetPieces(t *testing.T) {
	dir := goldenDir(t)
	ck := readST(t, filepath.Join(dir, "sd15-mini.fp16.safetensors"))
	gold := readST(t, filepath.Join(dir, "unet.safetensors"))
	d := New()
	w := func(name string) *gpu.Tensor { return ck.tensor(t, d, "model.diffusion_model."+name) }
	const c = "b1_t500."

	// time_proj: sinusoidal, flip_sin_to_cos, shift 0; then Linear-SiLU-Linear.
	ts := down(t, d, gold.tensor(t, d, c+"timestep"))
	tp := d.TimestepEmbedding(ts, 32, true, 0, 10000)
	match(t, d, tp, gold, c+"intermediate.time_proj")
	te := gpu.Linear(d, d.SiLU(gpu.Linear(d, tp, w("time_embed.0.weight"), w("time_embed.0.bias"))),
		w("time_embed.2.weight"), w("time_embed.2.bias"))
	match(t, d, te, gold, c+"intermediate.time_embedding")

	// conv_in, and the tail: GroupNorm(32, eps 1e-5) -> SiLU -> conv_out.
	pad1 := gpu.Conv2DOpts{PadH: 1, PadW: 1}
	ci := d.Conv2D(gold.tensor(t, d, c+"sample"), w("input_blocks.0.0.weight"), w("input_blocks.0.0.bias"), pad1)
	match(t, d, ci, gold, c+"intermediate.conv_in")
	gn := d.GroupNorm(gold.tensor(t, d, c+"intermediate.up_blocks.3"), w("out.0.weight"), w("out.0.bias"), 32, 1e-5)
	match(t, d, gn, gold, c+"intermediate.conv_norm_out")
	co := d.Conv2D(d.SiLU(gn), w("out.2.weight"), w("out.2.bias"), pad1)
	match(t, d, co, gold, c+"out")
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestGoldenVAEPieces(t *testing.T) {
	dir := goldenDir(t)
	ck := readST(t, filepath.Join(dir, "sd15-mini.fp16.safetensors"))
	gold := readST(t, filepath.Join(dir, "vae.safetensors"))
	d := New()
	w := func(name string) *gpu.Tensor { return ck.tensor(t, d, "first_stage_model."+name) }
	pad1 := gpu.Conv2DOpts{PadH: 1, PadW: 1}

	pq := d.Conv2D(gold.tensor(t, d, "decode.latent_scaled"), w("post_quant_conv.weight"), w("post_quant_conv.bias"), gpu.Conv2DOpts{})
	match(t, d, pq, gold, "decode.intermediate.post_quant_conv")
	match(t, d, d.Conv2D(pq, w("decoder.conv_in.weight"), w("decoder.conv_in.bias"), pad1), gold, "decode.intermediate.decoder.conv_in")
	// The tail at 64x64: GroupNorm(8, eps 1e-6) -> SiLU -> conv_out.
	gn := d.GroupNorm(gold.tensor(t, d, "decode.intermediate.decoder.up_blocks.3"), w("decoder.norm_out.weight"), w("decoder.norm_out.bias"), 8, 1e-6)
	match(t, d, gn, gold, "decode.intermediate.decoder.conv_norm_out")
	match(t, d, d.Conv2D(d.SiLU(gn), w("decoder.conv_out.weight"), w("decoder.conv_out.bias"), pad1), gold, "decode.image")
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestGoldenCLIP runs the whole sd15-mini text encoder (embeddings, three
// pre-LayerNorm transformer layers with causal attention and quick_gelu,
// final LayerNorm) with reference ops and compares every hidden state.
func TestGoldenCLIP(t *testing.T) {
	dir := goldenDir(t)
	ck := readST(t, filepath.Join(dir, "sd15-mini.fp16.safetensors"))
	gold := readST(t, filepath.Join(dir, "text_encoder.safetensors"))
	d := New()
	w := func(name string) *gpu.Tensor {
		return ck.tensor(t, d, "cond_stage_model.transformer.text_model."+name)
	}
	const B, L, C, heads = 6, 77, 64, 4
	ids := gold.ints(t, "input_ids")
	tok := d.Embedding(w("embeddings.token_embedding.weight"), ids).View(B, L, C)
	match(t, d, tok, gold, "embeddings_token")
	h := d.Add(tok, w("embeddings.position_embedding.weight"))

	all := d.Upload(down(t, d, gold.tensor(t, d, "hidden_states")), 4, B*L*C)
	for layer := 0; layer < 3; layer++ {
		if err := compareRows(d, h, all, layer); err != nil {
			t.Errorf("hidden_states[%d]: %v", layer, err)
		}
		p := fmt.Sprintf("encoder.layers.%d.", layer)
		lin := func(x *gpu.Tensor, name string) *gpu.Tensor {
			return gpu.Linear(d, x, w(p+name+".weight"), w(p+name+".bias"))
		}
		x := d.LayerNorm(h, w(p+"layer_norm1.weight"), w(p+"layer_norm1.bias"), 1e-5)
		a := d.Attention(lin(x, "self_attn.q_proj"), lin(x, "self_attn.k_proj"), lin(x, "self_attn.v_proj"),
			gpu.AttentionOpts{Heads: heads, Causal: true})
		h = d.Add(h, lin(a, "self_attn.out_proj"))
		x = d.LayerNorm(h, w(p+"layer_norm2.weight"), w(p+"layer_norm2.bias"), 1e-5)
		h = d.Add(h, lin(d.QuickGELU(lin(x, "mlp.fc1")), "mlp.fc2"))
	}
	if err := compareRows(d, h, all, 3); err != nil {
		t.Errorf("hidden_states[3]: %v", err)
	}
	final := d.LayerNorm(h, w("final_layer_norm.weight"), w("final_layer_norm.bias"), 1e-5)
	match(t, d, final, gold, "last_hidden_state")
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
}

// compareRows compares h with row i of the stacked golden hidden states.
func compareRows(d *Device, h, all *gpu.Tensor, i int) error {
	want, err := d.Download(d.Slice(all, 0, i, i+1))
	if err != nil {
		return err
	}
	got, err := d.Download(h)
	if err != nil {
		return err
	}
	for j := range got {
		if diff := math.Abs(float64(got[j] - want[j])); !(diff <= goldenTol) {
			return fmt.Errorf("element %d: got %v, want %v", j, got[j], want[j])
		}
	}
	return nil
}
