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
	"github.com/stepwise/stepwise/presets"
)

// e2eSettings is the public golden case e2e_euler_seed42: diffusers'
// StableDiffusionPipeline with EulerDiscreteScheduler.from_config(SD1.5's
// PNDM config), i.e. Euler with "leading" timestep spacing.
func e2eSettings() presets.Settings {
	s := presets.Default()
	s.Prompt = "a photograph of an astronaut riding a horse"
	s.NegativePrompt = "low quality, blurry, watermark"
	s.Steps, s.CFGScale = 20, 7.5
	s.Sampler, s.Schedule = "euler", "leading"
	s.Seed, s.RNG = 42, presets.RNGTorchCPU
	s.Width, s.Height = 64, 64
	return s
}

// TestE2EEulerSeed42 reproduces diffusers' whole pipeline on every device,
// from the single file and from the diffusers folder: every step's latents
// within 1e-3 x max|latent| and the PNG pixels within +-1.
func TestE2EEulerSeed42(t *testing.T) {
	g := golden.Open(t, "e2e_euler_seed42.safetensors")
	dir := golden.Dir(t)
	wantSteps, _ := g.F32("latents_after_step")
	wantPix := g.I64("image_uint8")
	sources := map[string][2]string{
		"single": {filepath.Join(dir, "sd15-mini.fp16.safetensors"), filepath.Join(dir, "sd15_mini_config.json")},
		"folder": {filepath.Join(dir, "sd15-mini"), ""},
	}
	for devName, open := range testdev.All(t) {
		for srcName, src := range sources {
			t.Run(devName+"/"+srcName, func(t *testing.T) {
				d := open(t)
				p, err := models.Load(d, src[0], src[1])
				require.NoError(t, err)
				defer p.Close()
				j, err := Start(p, e2eSettings())
				require.NoError(t, err)
				defer j.Close()
				n := 4 * 8 * 8
				worst := 0.0
				for i := 0; !j.Done(); i++ {
					f, err := j.Step(context.Background())
					require.NoError(t, err)
					want := wantSteps[i*n : (i+1)*n]
					d, _, scale := golden.MaxAbsDiff(f.X.Data, want)
					// golden README (e2e): latents max abs diff <= 1e-3 x max|latent| per step.
					require.LessOrEqual(t, d, 1e-3*scale, "step %d: latents max abs diff", i)
					worst = max(worst, d/scale)
				}
				imgs, err := j.Images()
				require.NoError(t, err)
				require.NotEmpty(t, imgs)
				off, big := 0, 0
				im := imgs[0]
				for y := 0; y < 64; y++ {
					for x := 0; x < 64; x++ {
						c := im.RGBAAt(x, y)
						for ch, v := range []uint8{c.R, c.G, c.B} {
							w := wantPix[(y*64+x)*3+ch]
							if dv := int64(v) - w; dv != 0 {
								off++
								if dv > 1 || dv < -1 {
									big++
								}
							}
						}
					}
				}
				// golden README (e2e): uint8 pixels within +-1.
				assert.Zero(t, big, "%d pixel values differ by more than 1 (%d differ at all)", big, off)
				t.Logf("worst step latent error %.2g x max|latent|; %d of %d pixel values off by 1", worst, off, 64*64*3)
			})
		}
	}
}
