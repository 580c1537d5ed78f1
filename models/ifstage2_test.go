package models

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
)

// Stage II's parts on the golden's own data: the align-corners bilinear
// upscale of stage I's raw output, the image-noising scheduler's add_noise
// at level 250, and every DDPM step (thresholding max 1.0) from the
// golden's guided U-Net outputs and draws (README: image/steps <= 1e-3 x
// max|x|; measured 1e-6, 0 and 5e-7).
func TestIFStage2Parts(t *testing.T) {
	w4 := golden.Wave(t, "golden-wave4")
	g := golden.Open(t, filepath.Join(w4, "if_seed42_stage2.safetensors"))
	low, _ := golden.Open(t, filepath.Join(w4, "if_seed42_stage1.safetensors")).F32("final_image_raw")
	orig, _ := g.F32("image_noising.original")
	up := BilinearAlignCorners(low, 3, 16, 16, 64, 64)
	// README: image <= 1e-3 (values O(1)); the upscale is one bilinear mix.
	golden.Close(t, "image_noising.original", up, orig, 1e-5, 0)
	s, err := LoadIFScheduler(filepath.Join(w4, "if-mini-sr", "scheduler", "scheduler_config.json"))
	require.NoError(t, err)
	ns, err := LoadIFScheduler(filepath.Join(w4, "if-mini-sr", "image_noising_scheduler", "scheduler_config.json"))
	require.NoError(t, err)
	nz, _ := g.F32("image_noising.noise")
	no, _ := g.F32("image_noising.out")
	o2, err := ns.AddNoise(orig, nz, 250)
	require.NoError(t, err)
	// Same float32 formula as diffusers: exact up to rounding.
	golden.Close(t, "image_noising.out", o2, no, 1e-6, 0)
	outs, _ := g.F32("unet.out.per_call")
	ins, _ := g.F32("unet.sample.per_call")
	steps, _ := g.F32("images_after_step")
	per := 3 * 64 * 64
	ts, _ := s.Timesteps(10)
	for i, tt := range ts {
		x := append([]float32(nil), ins[i*4*per:i*4*per+per]...)
		o := outs[i*4*per : (i+1)*4*per]
		un, co := o[:2*per], o[2*per:]
		res := make([]float32, 2*per)
		for k := 0; k < per; k++ {
			res[k] = un[k] + 4*(co[k]-un[k])
		}
		copy(res[per:], co[per:])
		require.NoError(t, s.Step(res, x, 1, 3, tt, 10, func(z []float32) {
			dr, _ := g.F32(fmt.Sprintf("draw.%d", i+2))
			copy(z, dr)
		}))
		d, _, sc := golden.MaxAbsDiff(x, steps[i*per:(i+1)*per])
		// README: per step <= 1e-3 x max|x|.
		assert.LessOrEqual(t, d, 1e-3*sc, "step %d (t %d)", i, tt)
	}
}
