package models

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/safetensors"
)

// wave3Tol is golden-wave3's README bound for networks: max abs <= 1e-4.
const wave3Tol = 1e-4

// TestInpaintUNet: a 9-channel U-Net is recognised from its in_channels,
// from a diffusers folder and from an original single file, loads with
// the 4-channel VAE (latent channels stay 4), and gives diffusers' outputs
// on every inpaint9_unet case on every device, through the network and
// through PredictNoise.
func TestInpaintUNet(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	folder := golden.InpaintFolder(t)
	u := golden.Open(t, filepath.Join(dir, "inpaint9_unet.safetensors"))

	// The same model as an original (LDM) single file with its config.
	m, err := checkpoint.Load(folder, "")
	require.NoError(t, err)
	entries, err := checkpoint.SingleFileEntries(m)
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, safetensors.Write(&buf, entries, nil))
	cfg, err := json.Marshal(map[string]any{"unet": m.UNet, "vae": m.VAE, "text_encoder": m.Texts[0].Config, "scheduler": m.Scheduler})
	require.NoError(t, err)
	m.Close()
	var in00 []int
	for _, e := range entries {
		if e.Name == "model.diffusion_model.input_blocks.0.0.weight" {
			in00 = e.Shape
		}
	}
	require.Equal(t, []int{32, 9, 3, 3}, in00, "the single file's first convolution")

	for devName, open := range testdev.All(t) {
		for _, src := range []string{"folder", "single"} {
			t.Run(devName+"/"+src, func(t *testing.T) {
				d := open(t)
				var p *Pipeline
				if src == "folder" {
					p, err = Load(d, folder, "")
				} else {
					back, lerr := checkpoint.LoadBytes("sd15-mini-inpaint.safetensors", buf.Bytes(), cfg)
					require.NoError(t, lerr)
					p, err = New(d, back, "sd15-mini-inpaint")
				}
				require.NoError(t, err)
				defer p.Close()
				assert.Equal(t, "SD 1.x inpainting", p.Model.Family, p.Model.FamilyWhy)
				assert.Contains(t, p.Model.FamilyWhy, "9 input channels")
				assert.True(t, p.Inpainting())
				assert.Equal(t, 4, p.LatentChannels())
				c, err := p.EncodePrompt("a photograph of an astronaut riding a horse", "low quality, blurry, watermark", 1)
				require.NoError(t, err)
				defer c.Release()
				worst := 0.0
				for _, cs := range []string{"b1_t999", "b1_t500", "b1_t1", "b2cfg_t500", "b2_mixed"} {
					x, xs := u.F32(cs + ".sample")
					ctx, cshape := u.F32(cs + ".encoder_hidden_states")
					ts, _ := u.F32(cs + ".timestep")
					want, _ := u.F32(cs + ".out")
					d.PushScope()
					out := p.unet.ForwardAdded(d.Upload(x, xs...), ts, d.Upload(ctx, cshape...), nil)
					got := download(t, d, out)
					d.PopScope()
					worst = max(worst, golden.Close(t, "inpaint9_unet "+cs, got, want, wave3Tol, 0))
				}
				// PredictNoise with the model's own prompt encoding: the
				// golden contexts are rows [neg, pos] of these prompts.
				x, _ := u.F32("b2cfg_t500.sample")
				want, _ := u.F32("b2cfg_t500.out")
				got, err := p.PredictNoise(x, [4]int{2, 9, 8, 8}, 500, c, []Row{Uncond, Cond})
				require.NoError(t, err)
				worst = max(worst, golden.Close(t, "PredictNoise b2cfg_t500", got, want, wave3Tol, 0))
				_, err = p.PredictNoise(x[:2*4*64], [4]int{2, 4, 8, 8}, 500, c, []Row{Uncond, Cond})
				assert.ErrorContains(t, err, "the U-Net wants 9")
				t.Logf("worst max |diff| %.3g (bound %g)", worst, wave3Tol)
			})
		}
	}
}

// TestEncodePixelsWave3: the VAE encoder gives diffusers' moments for every
// image the img2img and inpainting goldens encode (the init image, and the
// masked image whose repainted pixels are 0) on every device.
func TestEncodePixelsWave3(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	cases := map[string][]string{
		"img2img_euler_s0.6_seed42":  {"vae_encode.0"},
		"inpaint4_euler_s1.0_seed42": {"vae_encode.0", "vae_encode.1"},
		"inpaint9_euler_s1.0_seed42": {"vae_encode.0"},
	}
	for devName, open := range testdev.All(t) {
		t.Run(devName, func(t *testing.T) {
			d := open(t)
			p, err := Load(d, filepath.Join(golden.Dir(t), "sd15-mini"), "")
			require.NoError(t, err)
			defer p.Close()
			worst := 0.0
			for file, encs := range cases {
				g := golden.Open(t, filepath.Join(dir, file+".safetensors"))
				for _, e := range encs {
					x, _ := g.F32(e + ".input")
					want, _ := g.F32(e + ".moments")
					got, shape, err := p.EncodePixels(x, [4]int{1, 3, 64, 64})
					require.NoError(t, err)
					assert.Equal(t, []int{1, 8, 8, 8}, []int(shape))
					worst = max(worst, golden.Close(t, file+" "+e, got, want, wave3Tol, 0))
				}
			}
			t.Logf("worst max |diff| %.3g (bound %g)", worst, wave3Tol)
		})
	}
}
