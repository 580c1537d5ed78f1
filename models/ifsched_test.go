package models

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
)

// The DDPM step (learned-range variance, dynamic thresholding with
// torch.quantile's interpolation) applied to the golden's own guided U-Net
// outputs, samples and draws reproduces every step of if_seed42_stage1
// (README: per step <= 1e-3 x max|x|; measured ~2e-7).
func TestIFSchedulerGolden(t *testing.T) {
	w4 := golden.Wave(t, "golden-wave4")
	g := golden.Open(t, filepath.Join(w4, "if_seed42_stage1.safetensors"))
	s, err := LoadIFScheduler(filepath.Join(w4, "if-mini", "scheduler", "scheduler_config.json"))
	require.NoError(t, err)
	outs, _ := g.F32("unet.out.per_call")
	ins, _ := g.F32("unet.sample.per_call")
	steps, _ := g.F32("images_after_step")
	per := 3 * 16 * 16
	ts, _ := s.Timesteps(10)
	for i, tt := range ts {
		x := append([]float32(nil), ins[i*2*per:i*2*per+per]...)
		o := outs[i*2*2*per : (i+1)*2*2*per]
		un, co := o[:2*per], o[2*per:]
		res := make([]float32, 2*per)
		for k := 0; k < per; k++ {
			res[k] = un[k] + 7*(co[k]-un[k])
		}
		copy(res[per:], co[per:])
		require.NoError(t, s.Step(res, x, 1, 3, tt, 10, func(z []float32) {
			dr, _ := g.F32(fmt.Sprintf("draw.%d", i+1))
			copy(z, dr)
		}))
		d, _, sc := golden.MaxAbsDiff(x, steps[i*per:(i+1)*per])
		// README: per step <= 1e-3 x max|x|.
		assert.LessOrEqual(t, d, 1e-3*sc, "step %d (t %d)", i, tt)
	}
}
