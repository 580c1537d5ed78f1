package ref

import (
	"fmt"
	"math"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
)

// These tests run small pieces of the sd15-mini networks with the reference
// ops on the real fp16 checkpoint and compare them with what diffusers and
// transformers computed (../shared/golden, beside the repository). The
// golden README asks for max abs diff <= 1e-4.

const goldenTol = 1e-4

// tensor uploads one entry of f (F32 or F16, kept in its type) to d.
func tensor(t *testing.T, d *Device, f *golden.File, name string) *gpu.Tensor {
	t.Helper()
	e, ok := f.Lookup(name)
	if !ok {
		t.Fatalf("%s: no tensor %q", f.Path(), name)
	}
	dt, ok := e.DType.GPU()
	if !ok {
		t.Fatalf("%s: %s has dtype %s", f.Path(), name, e.DType)
	}
	raw, err := f.Data(name)
	if err != nil {
		t.Fatal(err)
	}
	return d.UploadRaw(dt, raw, e.Shape...)
}

// ints reads an I64 entry as int32 ids.
func ints(f *golden.File, name string) []int32 {
	v := f.I64(name)
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = int32(x)
	}
	return out
}

// match compares got with a golden F32 tensor by max abs diff.
func match(t *testing.T, d *Device, got *gpu.Tensor, gold *golden.File, name string) {
	t.Helper()
	want, _ := gold.F32(name)
	g := down(t, d, got)
	if len(g) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(g), len(want))
	}
	worst, at, _ := golden.MaxAbsDiff(g, want)
	if !(worst <= goldenTol) {
		t.Errorf("%s: max abs diff %.3g at %d (got %v, want %v)", name, worst, at, g[at], want[at])
	} else {
		t.Logf("%s: max abs diff %.3g", name, worst)
	}
}

func TestGoldenUNetPieces(t *testing.T) {
	ck := golden.Open(t, golden.Path(t, "sd15-mini.fp16.safetensors"))
	gold := golden.Open(t, "unet.safetensors")
	d := New()
	w := func(name string) *gpu.Tensor { return tensor(t, d, ck, "model.diffusion_model."+name) }
	const c = "b1_t500."

	// time_proj: sinusoidal, flip_sin_to_cos, shift 0; then Linear-SiLU-Linear.
	ts, _ := gold.F32(c + "timestep")
	tp := d.TimestepEmbedding(ts, 32, true, 0, 10000)
	match(t, d, tp, gold, c+"intermediate.time_proj")
	te := gpu.Linear(d, d.SiLU(gpu.Linear(d, tp, w("time_embed.0.weight"), w("time_embed.0.bias"))),
		w("time_embed.2.weight"), w("time_embed.2.bias"))
	match(t, d, te, gold, c+"intermediate.time_embedding")

	// conv_in, and the tail: GroupNorm(32, eps 1e-5) -> SiLU -> conv_out.
	pad1 := gpu.Conv2DOpts{PadH: 1, PadW: 1}
	ci := d.Conv2D(tensor(t, d, gold, c+"sample"), w("input_blocks.0.0.weight"), w("input_blocks.0.0.bias"), pad1)
	match(t, d, ci, gold, c+"intermediate.conv_in")
	gn := d.GroupNorm(tensor(t, d, gold, c+"intermediate.up_blocks.3"), w("out.0.weight"), w("out.0.bias"), 32, 1e-5)
	match(t, d, gn, gold, c+"intermediate.conv_norm_out")
	co := d.Conv2D(d.SiLU(gn), w("out.2.weight"), w("out.2.bias"), pad1)
	match(t, d, co, gold, c+"out")
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestGoldenVAEPieces(t *testing.T) {
	ck := golden.Open(t, golden.Path(t, "sd15-mini.fp16.safetensors"))
	gold := golden.Open(t, "vae.safetensors")
	d := New()
	w := func(name string) *gpu.Tensor { return tensor(t, d, ck, "first_stage_model."+name) }
	pad1 := gpu.Conv2DOpts{PadH: 1, PadW: 1}

	pq := d.Conv2D(tensor(t, d, gold, "decode.latent_scaled"), w("post_quant_conv.weight"), w("post_quant_conv.bias"), gpu.Conv2DOpts{})
	match(t, d, pq, gold, "decode.intermediate.post_quant_conv")
	match(t, d, d.Conv2D(pq, w("decoder.conv_in.weight"), w("decoder.conv_in.bias"), pad1), gold, "decode.intermediate.decoder.conv_in")
	// The tail at 64x64: GroupNorm(8, eps 1e-6) -> SiLU -> conv_out.
	gn := d.GroupNorm(tensor(t, d, gold, "decode.intermediate.decoder.up_blocks.3"), w("decoder.norm_out.weight"), w("decoder.norm_out.bias"), 8, 1e-6)
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
	ck := golden.Open(t, golden.Path(t, "sd15-mini.fp16.safetensors"))
	gold := golden.Open(t, "text_encoder.safetensors")
	d := New()
	w := func(name string) *gpu.Tensor {
		return tensor(t, d, ck, "cond_stage_model.transformer.text_model."+name)
	}
	const B, L, C, heads = 6, 77, 64, 4
	ids := ints(gold, "input_ids")
	tok := d.Embedding(w("embeddings.token_embedding.weight"), ids).View(B, L, C)
	match(t, d, tok, gold, "embeddings_token")
	h := d.Add(tok, w("embeddings.position_embedding.weight"))

	hs, _ := gold.F32("hidden_states")
	all := d.Upload(hs, 4, B*L*C)
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
