package gen

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models"
)

// TestE2ESD3 reproduces diffusers 0.29.2's StableDiffusion3Pipeline on
// golden-wave3's sd3-mini with flow-matching Euler (shift 3, the double
// shift of the lower end included) on every device: the schedule's
// timesteps, every transformer input, every step's latents within 1e-3 x
// max|latent| and the image within +-1 per channel.
func TestE2ESD3(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	g := golden.Open(t, filepath.Join(dir, "sd3_e2e_flowmatch_seed42.safetensors"))
	wantSteps, shape := g.F32("latents_after_step")
	wantT, _ := g.F32("timesteps")
	wantIn, _ := g.F32("transformer.hidden_states.per_call")
	wantPix := g.I64("image_uint8")
	for devName, open := range testdev.All(t) {
		t.Run(devName, func(t *testing.T) {
			p, err := models.Load(open(t), filepath.Join(dir, "sd3-mini"), "")
			require.NoError(t, err)
			defer p.Close()
			assert.Equal(t, "SD3", p.Model.Family)
			s := e2eSettings()
			s.CFGScale, s.Schedule = 7, ""
			j, err := Start(p, s)
			require.NoError(t, err)
			defer j.Close()
			require.Equal(t, shape[0], j.Run.Total(), "steps run")
			sc := j.Run.Schedule()
			for i, w := range wantT {
				// README: scheduler quantities rel 1e-6.
				assert.InEpsilon(t, float64(w), sc.Timesteps[i], 1e-6, "timestep %d", i)
			}
			n := 16 * 8 * 8
			worst := 0.0
			for i := 0; !j.Done(); i++ {
				diff, _, scale := golden.MaxAbsDiff(j.Run.X().Data, wantIn[2*i*n:(2*i+1)*n])
				require.LessOrEqualf(t, diff, 1e-3*scale, "step %d: transformer input differs by %.3g", i, diff)
				f, err := j.Step(context.Background())
				require.NoError(t, err)
				diff, _, scale = golden.MaxAbsDiff(f.X.Data, wantSteps[i*n:(i+1)*n])
				require.LessOrEqualf(t, diff, 1e-3*scale, "step %d: latents differ by %.3g (limit 1e-3 x max|latent| = %.3g)", i, diff, 1e-3*scale)
				worst = max(worst, diff/scale)
			}
			imgs, err := j.Images()
			require.NoError(t, err)
			off, big, most := golden.PixelsOff(imgs[0], wantPix)
			assert.Zerof(t, big, "pixel values off by more than 1 (%d off at all)", off)
			t.Logf("SD3 e2e on %s: worst step latent error %.2g x max|latent|; pixels off by at most %d (%d of %d values)", devName, worst, most, off, 64*64*3)
		})
	}
}

// SD3 sizes are refused before any work with the transformer's rules
// (multiples of the VAE's 8 x the patch's 2; at most the positional
// table's side), and the facts describe the T5 context.
func TestSD3Facts(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	p, err := models.Load(testdev.All(t)["ref"](t), filepath.Join(dir, "sd3-mini"), "")
	require.NoError(t, err)
	defer p.Close()
	f := FactsOf(p)
	assert.Equal(t, 16, f.SizeMultiple)
	assert.Equal(t, 256, f.MaxSide)
	assert.Equal(t, 96, f.TextHidden)
	assert.Contains(t, f.Encoders, "text_encoder_3 2 layers")
	assert.Len(t, f.LatentRGB, 16)
	s := e2eSettings()
	s.Width = 72
	assert.ErrorContains(t, f.Validate(s), "multiples of 16 for SD3 (the VAE divides by 8, the transformer's patches by 2 more)")
	s.Width = 512
	assert.ErrorContains(t, f.Validate(s), "at most 256 pixels a side")
	s.Width, s.Height = 160, 64
	assert.NoError(t, f.Validate(s))
}
