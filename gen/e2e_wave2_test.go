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

// TestE2EWave2 reproduces diffusers' SD 2.x (v-prediction, Euler, leading)
// and SDXL (Euler, leading, cfg 5) pipelines of ../shared/golden-wave2 on
// every device and from every published layout: each step's latents within
// 1e-3 x max|latent| (the README's bound) and the image within +-1 per
// channel.
func TestE2EWave2(t *testing.T) {
	dir := golden.Wave(t, "golden-wave2")
	cases := []struct {
		name, file, model, config string
		cfg                       float64
	}{
		{"sd2/folder", "sd2_e2e_euler_vpred_seed42.safetensors", "sd2-mini", "", 7.5},
		{"sdxl/folder", "sdxl_e2e_euler_seed42.safetensors", "sdxl-mini", "", 5},
		{"sdxl/single", "sdxl_e2e_euler_seed42.safetensors", "sdxl-mini.fp16.safetensors", "sdxl_mini_config.json", 5},
	}
	for devName, open := range testdev.All(t) {
		for _, c := range cases {
			t.Run(devName+"/"+c.name, func(t *testing.T) {
				g := golden.Open(t, filepath.Join(dir, c.file))
				wantSteps, _ := g.F32("latents_after_step")
				wantPix := g.I64("image_uint8")
				d := open(t)
				cfgPath := ""
				if c.config != "" {
					cfgPath = filepath.Join(dir, c.config)
				}
				p, err := models.Load(d, filepath.Join(dir, c.model), cfgPath)
				require.NoError(t, err)
				defer p.Close()
				s := e2eSettings()
				s.CFGScale = c.cfg
				j, err := Start(p, s)
				require.NoError(t, err)
				defer j.Close()
				n := 4 * 8 * 8
				worst := 0.0
				for i := 0; !j.Done(); i++ {
					f, err := j.Step(context.Background())
					require.NoError(t, err)
					diff, _, scale := golden.MaxAbsDiff(f.X.Data, wantSteps[i*n:(i+1)*n])
					require.LessOrEqualf(t, diff, 1e-3*scale, "step %d: latents differ by %.3g (limit 1e-3 x max|latent| = %.3g)", i, diff, 1e-3*scale)
					worst = max(worst, diff/scale)
				}
				imgs, err := j.Images()
				require.NoError(t, err)
				off, big, _ := golden.PixelsOff(imgs[0], wantPix)
				assert.Zerof(t, big, "pixel values off by more than 1 (%d off at all)", off)
				t.Logf("worst step latent error %.2g x max|latent|; %d of %d pixel values off by 1", worst, off, 64*64*3)
			})
		}
	}
}
