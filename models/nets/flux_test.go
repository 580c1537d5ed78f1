package nets

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
)

// ids3 reads a [1,L,3] golden id tensor.
func ids3(g *golden.File, name string) [][3]float64 {
	v, shape := g.F32(name)
	out := make([][3]float64, shape[1])
	for i := range out {
		out[i] = [3]float64{float64(v[3*i]), float64(v[3*i+1]), float64(v[3*i+2])}
	}
	return out
}

// flux-mini's transformers (dev with guidance embeds, schnell without)
// reproduce diffusers 0.30.3's FluxTransformer2DModel on every golden case,
// and for dev t0.5_g3.5 every traced intermediate, on both devices.
func TestFluxGolden(t *testing.T) {
	w3 := golden.Wave(t, "golden-wave3")
	g := golden.Open(t, filepath.Join(w3, "flux_transformer.safetensors"))
	models := map[string]string{"dev": filepath.Join(w3, "flux-mini", "transformer"), "schnell": filepath.Join(w3, "flux-mini-schnell", "transformer")}
	cases := map[string][][2]float32{"dev": {{1, 3.5}, {0.5, 3.5}, {0.5, 1}, {0.03, 3.5}}, "schnell": {{0.5, 0}}}
	names := map[string][]string{"dev": {"t1.0_g3.5", "t0.5_g3.5", "t0.5_g1.0", "t0.03_g3.5"}, "schnell": {"t0.5"}}
	txt, img := ids3(g, "txt_ids"), ids3(g, "img_ids")
	for devName, d := range testDevices(t) {
		for kind, dir := range models {
			t.Run(devName+"/"+kind, func(t *testing.T) {
				var c FluxConfig
				loadConfig(t, filepath.Join(dir, "config.json"), &c)
				w := loadWeights(t, filepath.Join(dir, "diffusion_pytorch_model.fp16.safetensors"))
				f, err := NewFlux(d, c, w)
				require.NoError(t, err)
				defer f.Release()
				for i, cs := range cases[kind] {
					name := kind + "." + names[kind][i]
					traced := 0
					if name == "dev.t0.5_g3.5" {
						f.Trace = func(n string, got *gpu.Tensor) {
							key := name + ".intermediate." + n
							if _, ok := g.Lookup(key); ok {
								want, shape := g.F32(key)
								compare(t, d, key, got, want, shape, 1e-4)
								traced++
							}
						}
					}
					var guidance []float32
					if kind == "dev" {
						guidance = []float32{cs[1]}
					}
					x, ctx, pooled := upload(d, g, "hidden_states"), upload(d, g, "encoder_hidden_states"), upload(d, g, "pooled_projections")
					out, err := f.Forward(x, []float32{cs[0]}, guidance, ctx, pooled, txt, img)
					f.Trace = nil
					require.NoError(t, err, name)
					want, shape := g.F32(name + ".out")
					// README: Flux outputs max abs <= 1e-4.
					worst := compare(t, d, name, out, want, shape, 1e-4)
					t.Logf("%s %s: worst |diff| %.3g", devName, name, worst)
					if name == "dev.t0.5_g3.5" {
						assert.Equal(t, 14, traced, "intermediates compared (every golden one but pos_embed, checked by TestFluxRope)")
					}
					for _, tt := range []*gpu.Tensor{x, ctx, pooled, out} {
						d.Release(tt)
					}
				}
			})
		}
	}
}

// The rotary tables against the golden's rotation matrices [[cos, -sin],
// [sin, cos]] for the 24 text + 16 image positions.
func TestFluxRope(t *testing.T) {
	g := golden.Open(t, filepath.Join(golden.Wave(t, "golden-wave3"), "flux_transformer.safetensors"))
	ids := append(ids3(g, "txt_ids"), ids3(g, "img_ids")...)
	cos, sin := FluxRope(ids, []int{2, 2, 4})
	want, shape := g.F32("dev.t0.5_g3.5.intermediate.pos_embed")
	require.Equal(t, []int{1, 1, 40, 4, 2, 2}, shape)
	for l := 0; l < 40; l++ {
		for j := 0; j < 4; j++ {
			m := want[(l*4+j)*4:]
			assert.InDelta(t, m[0], cos[l*8+2*j], 1e-7) // both float64 -> float32
			assert.InDelta(t, -m[1], sin[l*8+2*j], 1e-7)
			assert.InDelta(t, m[2], sin[l*8+2*j+1], 1e-7)
			assert.InDelta(t, m[3], cos[l*8+2*j+1], 1e-7)
		}
	}
}
