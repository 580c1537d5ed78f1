package nets

import (
	"path/filepath"
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
