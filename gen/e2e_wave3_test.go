package gen

import (
	"context"
	"image"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/sampler"
)

// wave3Case is one img2img or inpainting golden of golden-wave3 with the
// settings that reproduce it.
type wave3Case struct {
	name, file string
	kind       sampler.ImageKind
	inpaint9   bool // the 9-channel model (golden.InpaintFolder)
	settings   func(dir string) presets.Settings
}

func wave3Cases() []wave3Case {
	img := func(strength float64, mask bool) func(string) presets.Settings {
		return func(dir string) presets.Settings {
			s := e2eSettings()
			s.InitImage, s.Strength = filepath.Join(dir, "inputs", "init_64.png"), strength
			if mask {
				s.Mask = filepath.Join(dir, "inputs", "mask_64.png")
			}
			return s
		}
	}
	return []wave3Case{
		{"img2img", "img2img_euler_s0.6_seed42", sampler.Img2Img, false, img(0.6, false)},
		{"inpaint4", "inpaint4_euler_s1.0_seed42", sampler.InpaintBlend, false, img(1, true)},
		{"inpaint9", "inpaint9_euler_s1.0_seed42", sampler.InpaintConcat, true, img(1, true)},
	}
}

// TestE2EWave3 reproduces diffusers' img2img (strength 0.6), legacy
// inpainting (4-channel U-Net, latent blending) and 9-channel inpainting
// of ../shared/golden-wave3 on every device: the same number of steps,
// every step's latents within 1e-3 x max|latent| (the README's bound) and
// the image within +-1 per channel.
func TestE2EWave3(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	sd15 := filepath.Join(golden.Dir(t), "sd15-mini")
	inpaint := golden.InpaintFolder(t)
	for devName, open := range testdev.All(t) {
		for _, c := range wave3Cases() {
			t.Run(devName+"/"+c.name, func(t *testing.T) {
				g := golden.Open(t, filepath.Join(dir, c.file+".safetensors"))
				wantSteps, shape := g.F32("latents_after_step")
				wantPix := g.I64("image_uint8")
				model := sd15
				if c.inpaint9 {
					model = inpaint
				}
				p, err := models.Load(open(t), model, "")
				require.NoError(t, err)
				defer p.Close()
				j, err := Start(p, c.settings(dir))
				require.NoError(t, err)
				defer j.Close()
				require.Equal(t, shape[0], j.Run.Total(), "steps run")
				assert.Equal(t, c.kind, j.Run.ImageKind())
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
				t.Logf("%s on %s: worst step latent error %.2g x max|latent|; pixels off by at most %d (%d of %d values)", c.file, devName, worst, most, off, 64*64*3)
			})
		}
	}
}

// TestImageRunsOtherShapes: img2img resizes an init image of another size
// and draws a batch; a 9-channel model also runs without an init image
// (repainting everything) and with a blurred mask; a strength that leaves
// no step is refused before the text encoder runs.
func TestImageRunsOtherShapes(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	d := testdev.All(t)["ref"](t)
	p, err := models.Load(d, filepath.Join(golden.Dir(t), "sd15-mini"), "")
	require.NoError(t, err)
	defer p.Close()
	s := wave3Cases()[0].settings(dir)
	s.Width, s.Height, s.Batch, s.Steps, s.Strength = 128, 64, 2, 4, 0.5
	j, err := Start(p, s)
	require.NoError(t, err)
	imgs, err := j.Finish(context.Background())
	j.Close()
	require.NoError(t, err)
	require.Len(t, imgs, 2)
	assert.Equal(t, image.Rect(0, 0, 128, 64), imgs[0].Bounds())
	assert.Len(t, j.Frames, 2, "int(4*0.5) steps")
	assert.Contains(t, j.Infotext(0), "Denoising strength: 0.5")

	s.Steps, s.Strength = 20, 0.04
	delete(p.Timings, "text_encoder")
	_, err = Start(p, s)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "int(20*0.04) = 0 steps")
	_, encoded := p.Timings["text_encoder"]
	assert.False(t, encoded, "the text encoder ran before the strength was refused")

	p9, err := models.Load(d, golden.InpaintFolder(t), "")
	require.NoError(t, err)
	defer p9.Close()
	for _, name := range []string{"text to image", "blurred mask"} {
		s := wave3Cases()[2].settings(dir)
		s.Steps = 3
		if name == "text to image" {
			s.InitImage, s.Mask = "", ""
		} else {
			s.MaskBlur, s.Strength = 4, 0.7
		}
		j, err := Start(p9, s)
		require.NoError(t, err, name)
		assert.Equal(t, sampler.InpaintConcat, j.Run.ImageKind(), name)
		_, err = j.Finish(context.Background())
		j.Close()
		require.NoError(t, err, name)
		if name == "blurred mask" {
			assert.Contains(t, j.Infotext(0), "Mask blur: 4")
			assert.Len(t, j.Frames, 2, "int(3*0.7) steps")
		}
	}
}

// TestImageRunsWave2Families: img2img and legacy inpainting run on SD 2.x
// (v-prediction) and SDXL (added conditioning, its VAE scaling) through
// the same mechanism; no golden exists for them (and the mini models'
// random VAEs do not give an image back), so this checks that they run to
// the end with the strength's number of steps.
func TestImageRunsWave2Families(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	w2 := golden.Wave(t, "golden-wave2")
	d := testdev.All(t)["ref"](t)
	for _, model := range []string{"sd2-mini", "sdxl-mini"} {
		p, err := models.Load(d, filepath.Join(w2, model), "")
		require.NoError(t, err)
		for _, c := range wave3Cases()[:2] {
			s := c.settings(dir)
			s.Steps, s.Strength = 4, 0.5
			j, err := Start(p, s)
			require.NoError(t, err, model+" "+c.name)
			assert.Equal(t, c.kind, j.Run.ImageKind())
			imgs, err := j.Finish(context.Background())
			j.Close()
			require.NoError(t, err, model+" "+c.name)
			assert.Len(t, j.Frames, 2)
			assert.Equal(t, image.Rect(0, 0, 64, 64), imgs[0].Bounds())
		}
		p.Close()
	}
}
