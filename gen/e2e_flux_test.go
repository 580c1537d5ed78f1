package gen

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models"
)

// fluxSchnellFolder is flux-mini with flux-mini-schnell's transformer and
// scheduler, as the golden README says to use it (symbolic links).
func fluxSchnellFolder(t *testing.T, w3 string) string {
	out := filepath.Join(t.TempDir(), "flux-mini-schnell")
	require.NoError(t, os.Mkdir(out, 0o755))
	for _, n := range []string{"model_index.json", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae"} {
		require.NoError(t, os.Symlink(filepath.Join(w3, "flux-mini", n), filepath.Join(out, n)))
	}
	for _, n := range []string{"transformer", "scheduler"} {
		require.NoError(t, os.Symlink(filepath.Join(w3, "flux-mini-schnell", n), filepath.Join(out, n)))
	}
	return out
}

// TestE2EFlux reproduces diffusers 0.30.3's FluxPipeline on flux-mini
// (FLUX.1-dev: 20 steps, distilled guidance 3.5, dynamic shift mu from
// the 16 packed tokens, T5 512) and flux-mini-schnell (4 steps, T5 256) on
// every device: timesteps, every step's packed latents within 1e-3 x
// max|latent|, pixels within 1.
func TestE2EFlux(t *testing.T) {
	w3 := golden.Wave(t, "golden-wave3")
	cases := []struct{ name, file, folder string }{
		{"dev", "flux_dev_e2e_g3.5_seed42", filepath.Join(w3, "flux-mini")},
		{"schnell", "flux_schnell_e2e_4steps_seed42", fluxSchnellFolder(t, w3)},
	}
	for devName, open := range testdev.All(t) {
		for _, c := range cases {
			t.Run(devName+"/"+c.name, func(t *testing.T) {
				g := golden.Open(t, filepath.Join(w3, c.file+".safetensors"))
				wantSteps, shape := g.F32("latents_after_step")
				wantT, _ := g.F32("timesteps")
				wantPix := g.I64("image_uint8")
				p, err := models.Load(open(t), c.folder, "")
				require.NoError(t, err)
				defer p.Close()
				assert.Equal(t, "Flux", p.Model.Family)
				s := e2eSettings()
				s.NegativePrompt, s.CFGScale, s.Schedule, s.Steps = "", 1, "", shape[0]
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
					f, err := j.Step(context.Background())
					require.NoError(t, err)
					got := models.PackLatents(f.X.Data, f.X.Shape)
					diff, _, scale := golden.MaxAbsDiff(got, wantSteps[i*n:(i+1)*n])
					require.LessOrEqualf(t, diff, 1e-3*scale, "step %d: latents differ by %.3g (limit 1e-3 x max|latent| = %.3g)", i, diff, 1e-3*scale)
					worst = max(worst, diff/scale)
				}
				imgs, err := j.Images()
				require.NoError(t, err)
				off, big, most := golden.PixelsOff(imgs[0], wantPix)
				assert.Zerof(t, big, "pixel values off by more than 1 (%d off at all)", off)
				t.Logf("Flux %s on %s: worst step latent error %.2g x max|latent|; pixels off by at most %d (%d of %d values)", c.name, devName, worst, most, off, 64*64*3)
			})
		}
	}
}
