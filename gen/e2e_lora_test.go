package gen

import (
	"context"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
)

// loraE2ETol is the READMEs' bound on end-to-end latents: every step
// within 1e-3 x max|latent|; images within +-1 per channel.
const loraE2ETol = 1e-3

// runLoRAE2E runs settings s on p and checks every step's latents and the
// image against golden file g; it returns the worst step error (relative
// to max|latent|) and the most any pixel value is off.
func runLoRAE2E(t *testing.T, p *models.Pipeline, s presets.Settings, g *golden.File) (*Job, float64, int) {
	t.Helper()
	wantSteps, _ := g.F32("latents_after_step")
	wantPix := g.I64("image_uint8")
	j, err := Start(p, s)
	require.NoError(t, err)
	t.Cleanup(j.Close)
	n := 4 * 8 * 8
	worst := 0.0
	for i := 0; !j.Done(); i++ {
		f, err := j.Step(context.Background())
		require.NoError(t, err)
		diff, _, scale := golden.MaxAbsDiff(f.X.Data, wantSteps[i*n:(i+1)*n])
		require.LessOrEqualf(t, diff, loraE2ETol*scale, "step %d: latents differ by %.3g (limit 1e-3 x max|latent| = %.3g)", i, diff, loraE2ETol*scale)
		worst = max(worst, diff/scale)
	}
	imgs, err := j.Images()
	require.NoError(t, err)
	_, _, most := golden.PixelsOff(imgs[0], wantPix)
	return j, worst, most
}

// TestE2ELoRA reproduces golden-wave3's lora_e2e_euler_scale0.8_seed42 (the
// LoRA at 0.8 on the text encoder and the U-Net) with <lora:NAME:0.8> in
// the prompt, in both file formats on every device; then, on the same
// loaded pipeline, changes the LoRA between generations (none: the plain
// e2e_euler_seed42 golden; 0.8 again) without reloading the model, and
// gets the right image each time.
func TestE2ELoRA(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	gl := golden.Open(t, filepath.Join(dir, "lora_e2e_euler_scale0.8_seed42.safetensors"))
	gb := golden.Open(t, filepath.Join(golden.Dir(t), "e2e_euler_seed42.safetensors"))
	for devName, open := range testdev.All(t) {
		for _, f := range []struct{ name, file string }{{"kohya", "sd15-mini-lora.kohya.fp16"}, {"peft", "sd15-mini-lora.peft.fp16"}} {
			t.Run(devName+"/"+f.name, func(t *testing.T) {
				gl, gb := gl.For(t), gb.For(t)
				d := open(t)
				p, err := models.Load(d, filepath.Join(golden.Dir(t), "sd15-mini"), "")
				require.NoError(t, err)
				defer p.Close()
				p.LoRADir = filepath.Join(dir, "lora")
				model := p.Model
				s := e2eSettings()
				s.Prompt = "<lora:" + f.file + ":0.8>" + s.Prompt
				j, worst, most := runLoRAE2E(t, p, s, gl)
				assert.LessOrEqual(t, most, 1, "pixels off by more than 1")
				assert.Equal(t, s.Prompt, j.Settings.Prompt, "the tag stays in the prompt")
				assert.Regexp(t, "^"+regexp.QuoteMeta(f.file)+": [0-9a-f]{12}$", j.Settings.LoraHashes)
				assert.Contains(t, j.Infotext(0), `Lora hashes: "`+f.file+": ")
				t.Logf("%s %s: LoRA 0.8: worst step latent error %.2g x max|latent|, pixels off by at most %d", devName, f.name, worst, most)
				if f.name == "peft" {
					return // the switching below is the same for both formats
				}

				// The LoRA out, then in again: the same pipeline, the
				// checkpoint not loaded again.
				_, worst, most = runLoRAE2E(t, p, e2eSettings(), gb)
				assert.LessOrEqual(t, most, 1, "without the LoRA: pixels off by more than 1")
				assert.Empty(t, p.LoRAs())
				t.Logf("%s: LoRA removed: worst %.2g, pixels off by at most %d", devName, worst, most)
				_, worst, most = runLoRAE2E(t, p, s, gl)
				assert.LessOrEqual(t, most, 1, "LoRA again: pixels off by more than 1")
				assert.Same(t, model, p.Model, "the model was reloaded")
				t.Logf("%s: LoRA 0.8 again: worst %.2g, pixels off by at most %d", devName, worst, most)
			})
		}
	}
}

// TestE2ELCMLoRA reproduces golden-wave3's lcm_lora_4steps_g1.0_seed42
// (LCM-LoRA style: the LoRA at 1.0 with the lcm sampler, 4 steps, CFG 1 so
// no unconditional pass) on every device with the existing lcm sampler.
func TestE2ELCMLoRA(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	g := golden.Open(t, filepath.Join(dir, "lcm_lora_4steps_g1.0_seed42.safetensors"))
	for devName, open := range testdev.All(t) {
		t.Run(devName, func(t *testing.T) {
			d := open(t)
			p, err := models.Load(d, filepath.Join(golden.Dir(t), "sd15-mini"), "")
			require.NoError(t, err)
			defer p.Close()
			p.LoRADir = filepath.Join(dir, "lora")
			s := e2eSettings()
			s.Prompt = "<lora:sd15-mini-lora.kohya.fp16:1>" + s.Prompt
			s.NegativePrompt = ""
			s.Steps, s.CFGScale, s.Sampler, s.Schedule = 4, 1, "lcm", ""
			_, worst, most := runLoRAE2E(t, p, s, g.For(t))
			assert.LessOrEqual(t, most, 1, "pixels off by more than 1")
			t.Logf("%s: worst step latent error %.2g x max|latent|, pixels off by at most %d", devName, worst, most)
		})
	}
}
