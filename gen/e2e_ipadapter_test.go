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
	"github.com/stepwise/stepwise/models/bundled"
	"github.com/stepwise/stepwise/presets"
)

// ipSettings are golden-wave4's IP-Adapter e2e case: sd15-mini, Euler
// (leading), 20 steps, CFG 7.5, seed 42, scale 0.6 on init_64.png.
func ipSettings(t *testing.T) presets.Settings {
	w4 := golden.Wave(t, "golden-wave4")
	s := e2eSettings()
	s.IPAdapter = filepath.Join(w4, "ip-adapter-mini", "models", "ip-adapter_sd15-mini.safetensors")
	s.IPAdapterImage = filepath.Join(golden.Wave(t, "golden-wave3"), "inputs", "init_64.png")
	s.IPAdapterScale = 0.6
	return s
}

// TestE2EIPAdapter reproduces diffusers' IP-Adapter pipeline on every
// device: the image embeddings the U-Net gets ([zeros, image]) within
// 1e-4, every step's latents within 1e-3 x max|latent| and the image
// within +-1 per channel (the README's bounds).
func TestE2EIPAdapter(t *testing.T) {
	w4 := golden.Wave(t, "golden-wave4")
	sd15 := filepath.Join(golden.Dir(t), "sd15-mini")
	for devName, open := range testdev.All(t) {
		t.Run(devName, func(t *testing.T) {
			g := golden.Open(t, filepath.Join(w4, "ipadapter_e2e_euler_scale0.6_seed42.safetensors"))
			wantSteps, shape := g.F32("latents_after_step")
			wantEmbeds, _ := g.F32("unet.added_cond_kwargs.image_embeds.0")
			wantPix := g.I64("image_uint8")
			p, err := models.Load(open(t), sd15, "")
			require.NoError(t, err)
			defer p.Close()
			j, err := Start(p, ipSettings(t))
			require.NoError(t, err)
			defer j.Close()
			require.Equal(t, shape[0], j.Run.Total(), "steps run")

			d := p.Device()
			cond, err := d.Download(j.Cond.CondImage)
			require.NoError(t, err)
			uncond, err := d.Download(j.Cond.UncondImage)
			require.NoError(t, err)
			diff, _, _ := golden.MaxAbsDiff(append(uncond, cond...), wantEmbeds)
			assert.LessOrEqual(t, diff, 1e-4, "image embeddings [zeros, image] (encoder tolerance 1e-4)")

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
			off, big, most := golden.PixelsOff(imgs[0], wantPix)
			assert.Zerof(t, big, "pixel values off by more than 1 (%d off at all)", off)
			t.Logf("ipadapter_e2e_euler_scale0.6_seed42 on %s: image embeds within %.2g; worst step latent error %.2g x max|latent|; pixels off by at most %d (%d of %d values)",
				devName, diff, worst, most, off, 64*64*3)

			info := j.Infotext(0)
			assert.Contains(t, info, "IP-Adapter scale: 0.6")
			back, _, err := presets.ParseInfotext(info)
			require.NoError(t, err)
			assert.Equal(t, j.Settings.IPAdapter, back.IPAdapter)
			assert.Equal(t, j.Settings.IPAdapterImage, back.IPAdapterImage)
			assert.InDelta(t, 0.6, back.IPAdapterScale, 0, "scale read back exactly")
		})
	}
}

// TestIPAdapterHostileInputs: a reference image that is not an image, a
// missing image encoder, an adapter for another model and one without its
// reference image are refused with the file named, before any model work
// or before the text encoder runs.
func TestIPAdapterHostileInputs(t *testing.T) {
	s := ipSettings(t)
	tmp := t.TempDir()

	notImage := filepath.Join(tmp, "ref.png")
	require.NoError(t, os.WriteFile(notImage, []byte("not a picture"), 0o644))
	bad := s
	bad.IPAdapterImage = notImage
	_, err := LoadInputs(bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), notImage)
	assert.Contains(t, err.Error(), "not a PNG or JPEG")

	// An adapter file without image_encoder/ beside it.
	lonely := filepath.Join(tmp, "ip-adapter_sd15.safetensors")
	data, err := os.ReadFile(s.IPAdapter)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(lonely, data, 0o644))
	bad = s
	bad.IPAdapter = lonely
	_, err = LoadInputs(bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(tmp, "image_encoder"))
	assert.Contains(t, err.Error(), "--image-encoder")

	bad.IPAdapter = filepath.Join(tmp, "ip-adapter.bin")
	require.NoError(t, os.WriteFile(bad.IPAdapter, []byte("PK\x03\x04"), 0o644))
	_, err = LoadInputs(bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), bad.IPAdapter)
	assert.Contains(t, err.Error(), "pickle")

	bad = s
	bad.IPAdapterImage = ""
	_, err = LoadInputs(bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "reference image")

	// The bundled model has other cross-attention layers than sd15-mini.
	p, err := bundled.Load(testdev.All(t)["ref"](t))
	require.NoError(t, err)
	defer p.Close()
	bs := s
	bs.Width, bs.Height = 32, 32
	delete(p.Timings, "text_encoder")
	_, err = Start(p, bs)
	require.Error(t, err)
	assert.Contains(t, err.Error(), s.IPAdapter)
	assert.Contains(t, err.Error(), "16 cross-attention layers")
	assert.Contains(t, err.Error(), "another family")
	_, encoded := p.Timings["text_encoder"]
	assert.False(t, encoded, "the text encoder ran before the adapter was refused")
}

// TestEncodeImagePromptForBranches: a branch's fresh conditioning gets the
// same image embeddings again after its parent's are gone, and settings
// without an adapter detach it (PredictNoise then needs no image).
func TestEncodeImagePromptForBranches(t *testing.T) {
	g := golden.Open(t, filepath.Join(golden.Wave(t, "golden-wave4"), "ipadapter_e2e_euler_scale0.6_seed42.safetensors"))
	wantEmbeds, _ := g.F32("unet.added_cond_kwargs.image_embeds.0")
	p, err := models.Load(testdev.All(t)["ref"](t), filepath.Join(golden.Dir(t), "sd15-mini"), "")
	require.NoError(t, err)
	defer p.Close()
	s := ipSettings(t)
	s.Steps = 2
	j, err := Start(p, s)
	require.NoError(t, err)
	_, err = j.Finish(context.Background())
	require.NoError(t, err)
	j.Close()

	c, err := p.EncodePrompt(s.Prompt, s.NegativePrompt, s.ClipSkip)
	require.NoError(t, err)
	defer c.Release()
	_, err = p.PredictNoise(make([]float32, 4*8*8), [4]int{1, 4, 8, 8}, 500, c, []models.Row{models.Cond})
	require.Error(t, err, "an attached adapter without an encoded image")
	assert.Contains(t, err.Error(), "no reference image")
	require.NoError(t, EncodeImagePrompt(p, s, c))
	got, err := p.Device().Download(c.CondImage)
	require.NoError(t, err)
	diff, _, _ := golden.MaxAbsDiff(got, wantEmbeds[48:])
	assert.LessOrEqual(t, diff, 1e-4, "image embeddings (encoder tolerance 1e-4)")
	_, err = p.PredictNoise(make([]float32, 2*4*8*8), [4]int{2, 4, 8, 8}, 500, c, []models.Row{models.Uncond, models.Cond})
	require.NoError(t, err)

	s.IPAdapter, s.IPAdapterImage = "", ""
	require.NoError(t, EncodeImagePrompt(p, s, c))
	assert.Nil(t, p.IPAdapter(), "detached")
}
