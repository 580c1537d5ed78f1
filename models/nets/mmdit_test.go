package nets

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
)

// sd3-mini's transformer reproduces diffusers' SD3Transformer2DModel on
// every golden case (batch 1 and 2, t 1000 / 750 / 500 / 28.5, random and
// real 333-token text), and for b1_t500 every traced intermediate.
func TestMMDiTGolden(t *testing.T) {
	dir := sd3Mini(t)
	g := golden.Open(t, filepath.Join(golden.Wave(t, "golden-wave3"), "sd3_transformer.safetensors"))
	var c MMDiTConfig
	loadConfig(t, filepath.Join(dir, "transformer", "config.json"), &c)
	w := loadWeights(t, filepath.Join(dir, "transformer", "diffusion_pytorch_model.fp16.safetensors"))
	for name, d := range testDevices(t) {
		t.Run(name, func(t *testing.T) {
			m, err := NewMMDiT(d, c, w)
			require.NoError(t, err)
			defer m.Release()
			for _, cs := range []string{"b1_t1000", "b1_t500", "b1_t28.5", "b2_t750", "b1_t500_prompt"} {
				traced := map[string]float64{}
				if cs == "b1_t500" {
					m.Trace = func(n string, got *gpu.Tensor) {
						key := cs + ".intermediate." + n
						if _, ok := g.Lookup(key); ok {
							want, shape := g.F32(key)
							traced[n] = compare(t, d, key, got, want, shape, 1e-4)
						}
					}
				}
				ts, _ := g.F32(cs + ".timestep")
				x, ctx, pooled := upload(d, g, cs+".hidden_states"), upload(d, g, cs+".encoder_hidden_states"), upload(d, g, cs+".pooled_projections")
				out, err := m.Forward(x, ts, ctx, pooled)
				m.Trace = nil
				require.NoError(t, err, cs)
				want, shape := g.F32(cs + ".out")
				// README: MMDiT outputs max abs <= 1e-4.
				worst := compare(t, d, cs, out, want, shape, 1e-4)
				t.Logf("%s %s: worst |diff| %.3g", name, cs, worst)
				if cs == "b1_t500" {
					assert.Len(t, traced, 9, "intermediates compared: %v", traced)
				}
				for _, tt := range []*gpu.Tensor{x, ctx, pooled, out} {
					d.Release(tt)
				}
			}
		})
	}
}

// Sizes the network cannot take are refused before any work.
func TestMMDiTBadInput(t *testing.T) {
	dir := sd3Mini(t)
	var c MMDiTConfig
	loadConfig(t, filepath.Join(dir, "transformer", "config.json"), &c)
	w := loadWeights(t, filepath.Join(dir, "transformer", "diffusion_pytorch_model.fp16.safetensors"))
	d := testDevices(t)["ref"]
	m, err := NewMMDiT(d, c, w)
	require.NoError(t, err)
	defer m.Release()
	ctx, pooled := d.Upload(make([]float32, 5*96), 1, 5, 96), d.Upload(make([]float32, 64), 1, 64)
	_, err = m.Forward(d.Upload(make([]float32, 16*34*34), 1, 16, 34, 34), []float32{500}, ctx, pooled)
	assert.ErrorContains(t, err, "more than the positional table's 16x16")
	_, err = m.Forward(d.Upload(make([]float32, 16*7*8), 1, 16, 7, 8), []float32{500}, ctx, pooled)
	assert.ErrorContains(t, err, "not a multiple of the patch size 2")
	_, err = m.Forward(d.Upload(make([]float32, 16*8*8), 1, 16, 8, 8), []float32{500}, d.Upload(make([]float32, 5*80), 1, 5, 80), pooled)
	assert.ErrorContains(t, err, "want context [B,T,96]")
	c.CaptionProjectionDim = 48
	_, err = NewMMDiT(d, c, w)
	assert.ErrorContains(t, err, "caption_projection_dim 48")
}

// sd35Weights returns random F32 weights (N(0, 0.3)) for every parameter
// c declares; norm weights near 1.
func sd35Weights(t *testing.T, c MMDiTConfig, seed int64) MapWeights {
	ds, err := MMDiTDecls(c)
	require.NoError(t, err)
	r := rand.New(rand.NewSource(seed))
	w := MapWeights{}
	for _, d := range ds {
		n := gpu.Shape(d.Shape).Numel()
		raw := make([]byte, 4*n)
		for i := 0; i < n; i++ {
			v := float32(r.NormFloat64() * 0.3)
			if strings.Contains(d.Name, "norm_") {
				v = 1 + v/3
			}
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
		}
		w[d.Name] = Param{DType: gpu.F32, Shape: d.Shape, Raw: raw}
	}
	return w
}

// SD3.5's additions, which no golden covers, checked by what they must do:
// with q/k RMS norms the output does not change when to_q's weights are
// scaled (it does without them); an MMDiT-X block whose second attention
// outputs zeros equals the plain block with the first six modulation
// chunks; and GL agrees with gpu/ref on a model with both (odd sizes).
func TestMMDiTSD35Features(t *testing.T) {
	base := MMDiTConfig{SampleSize: 4, PatchSize: 2, InChannels: 4, OutChannels: 4, NumLayers: 3, AttentionHeadDim: 6,
		NumAttentionHeads: 3, JointAttentionDim: 10, CaptionProjectionDim: 18, PooledProjectionDim: 7, PosEmbedMaxSize: 5}
	devs := testDevices(t)
	ref := devs["ref"]
	in := func(d gpu.Device) (*gpu.Tensor, *gpu.Tensor, *gpu.Tensor) {
		r := rand.New(rand.NewSource(7))
		f := func(n int) []float32 {
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(r.NormFloat64())
			}
			return v
		}
		return d.Upload(f(2*4*6*8), 2, 4, 6, 8), d.Upload(f(2*5*10), 2, 5, 10), d.Upload(f(2*7), 2, 7)
	}
	run := func(d gpu.Device, c MMDiTConfig, w MapWeights) []float32 {
		m, err := NewMMDiT(d, c, w)
		require.NoError(t, err)
		defer m.Release()
		x, ctx, pooled := in(d)
		out, err := m.Forward(x, []float32{900, 90}, ctx, pooled)
		require.NoError(t, err)
		v, err := d.Download(out)
		require.NoError(t, err)
		return v
	}
	scaled := func(w MapWeights, name string, s float32) MapWeights {
		out := MapWeights{}
		for k, p := range w {
			out[k] = p
		}
		p := w[name]
		raw := make([]byte, len(p.Raw))
		for i := 0; i < len(raw); i += 4 {
			binary.LittleEndian.PutUint32(raw[i:], math.Float32bits(s*math.Float32frombits(binary.LittleEndian.Uint32(p.Raw[i:]))))
		}
		out[name] = Param{DType: p.DType, Shape: p.Shape, Raw: raw}
		return out
	}
	maxDiff := func(a, b []float32) float64 {
		worst := 0.0
		for i := range a {
			worst = max(worst, math.Abs(float64(a[i]-b[i])))
		}
		return worst
	}

	qk := base
	qk.QKNorm = "rms_norm"
	w := sd35Weights(t, qk, 1)
	for _, n := range []string{"transformer_blocks.1.attn.to_q", "transformer_blocks.1.attn.add_k_proj"} {
		w2 := scaled(scaled(w, n+".weight", 3), n+".bias", 3)
		// RMS norms make q and k scale-free (up to eps 1e-6): float32 rounding only.
		assert.Less(t, maxDiff(run(ref, qk, w), run(ref, qk, w2)), 1e-4, "q/k norm: scaling %s changed the output", n)
	}
	plain := sd35Weights(t, base, 1)
	assert.Greater(t, maxDiff(run(ref, base, plain), run(ref, base, scaled(plain, "transformer_blocks.1.attn.to_q.weight", 3))), 1e-3,
		"without q/k norms scaling to_q must change the output")

	dual := base
	dual.DualAttentionLayers = []int{0, 1}
	wd := sd35Weights(t, dual, 2)
	wp := MapWeights{}
	for k, p := range wd {
		if strings.Contains(k, "attn2.") {
			continue
		}
		wp[k] = p
	}
	for _, i := range []int{0, 1} {
		for _, n := range []string{"attn2.to_out.0.weight", "attn2.to_out.0.bias"} {
			name := fmt.Sprintf("transformer_blocks.%d.%s", i, n)
			wd = scaled(wd, name, 0)
		}
		mod := wd[fmt.Sprintf("transformer_blocks.%d.norm1.linear.weight", i)]
		bias := wd[fmt.Sprintf("transformer_blocks.%d.norm1.linear.bias", i)]
		wp[fmt.Sprintf("transformer_blocks.%d.norm1.linear.weight", i)] = Param{DType: gpu.F32, Shape: []int{6 * 18, 18}, Raw: mod.Raw[:4*6*18*18]}
		wp[fmt.Sprintf("transformer_blocks.%d.norm1.linear.bias", i)] = Param{DType: gpu.F32, Shape: []int{6 * 18}, Raw: bias.Raw[:4*6*18]}
	}
	assert.Less(t, maxDiff(run(ref, dual, wd), run(ref, base, wp)), 1e-5, "a silent second attention leaves the block as it was")

	both := base
	both.QKNorm, both.DualAttentionLayers = "rms_norm", []int{1}
	wb := sd35Weights(t, both, 3)
	if gl, ok := devs["gl"]; ok {
		// GL against gpu/ref: the op suite's 1e-4.
		assert.Less(t, maxDiff(run(ref, both, wb), run(gl, both, wb)), 1e-4)
	}
	ds, err := MMDiTDecls(both)
	require.NoError(t, err)
	origs := map[string]bool{}
	for _, d := range ds {
		origs[d.Orig] = true
	}
	for _, o := range []string{"joint_blocks.1.x_block.attn2.qkv.weight", "joint_blocks.1.x_block.attn.ln_q.weight",
		"joint_blocks.0.context_block.attn.ln_k.weight", "joint_blocks.1.x_block.attn2.ln_k.weight", "final_layer.linear.bias"} {
		assert.True(t, origs[o], "original name %s declared", o)
	}
}
