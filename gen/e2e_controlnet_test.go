package gen

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"image"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
	"github.com/stepwise/stepwise/presets"
)

// controlNetSettings are the settings of controlnet_e2e_euler_scale1.0_seed42.
func controlNetSettings(dir string) presets.Settings {
	s := e2eSettings()
	s.ControlNet = filepath.Join(dir, "sd15-mini-controlnet")
	s.ControlImage = filepath.Join(dir, "inputs", "control_64.png")
	return s
}

// TestE2EControlNet reproduces diffusers' StableDiffusionControlNetPipeline
// (scale 1.0, Euler, seed 42) on every device: the control image as the
// ControlNet reads it, every step's latents within 1e-3 x max|latent| (the
// README's bound) and the image within +-1 per channel.
func TestE2EControlNet(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	g := golden.Open(t, filepath.Join(dir, "controlnet_e2e_euler_scale1.0_seed42.safetensors"))
	wantSteps, shape := g.F32("latents_after_step")
	wantPix := g.I64("image_uint8")
	wantCond, _ := g.F32("controlnet.controlnet_cond")
	sd15 := filepath.Join(golden.Dir(t), "sd15-mini")
	for devName, open := range testdev.All(t) {
		t.Run(devName, func(t *testing.T) {
			p, err := models.Load(open(t), sd15, "")
			require.NoError(t, err)
			defer p.Close()
			s := controlNetSettings(dir)
			in, err := LoadInputs(s)
			require.NoError(t, err)
			assert.Equal(t, wantCond[:3*64*64], controlPixels(s, in), "control image: RGB/255")
			j, err := StartInputs(p, s, in)
			require.NoError(t, err)
			defer j.Close()
			require.NotNil(t, j.Control)
			require.Equal(t, shape[0], j.Run.Total(), "steps run")
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
			text := j.Infotext(0)
			assert.Contains(t, text, `ControlNet 0: "Module: none, Model: sd15-mini-controlnet [`)
			assert.Contains(t, text, "Weight: 1, Resize Mode: Just Resize, Guidance Start: 0, Guidance End: 1, Control Mode: Balanced")
			t.Logf("controlnet e2e on %s: worst step latent error %.2g x max|latent|; pixels off by at most %d (%d of %d values)", devName, worst, most, off, 64*64*3)
		})
	}
}

// TestControlNetStartEnd: the control strength applies only within
// [start, end] of the run (diffusers' controlnet_keep), strength 0 or a
// window that leaves every step out gives the image without ControlNet,
// and the settings survive the PNG parameters.
func TestControlNetStartEnd(t *testing.T) {
	assert.Equal(t, []float64{1, 1, 1, 1}, keeps(4, 0, 1))
	assert.Equal(t, []float64{0, 1, 1, 0}, keeps(4, 0.25, 0.75))
	assert.Equal(t, []float64{0, 0, 1, 1, 1}, keeps(5, 0.3, 1))
	assert.Equal(t, []float64{1, 1, 0, 0, 0}, keeps(5, 0, 0.5))

	dir := golden.Wave(t, "golden-wave3")
	d := testdev.All(t)["ref"](t)
	p, err := models.Load(d, filepath.Join(golden.Dir(t), "sd15-mini"), "")
	require.NoError(t, err)
	defer p.Close()
	run := func(s presets.Settings) *image.RGBA {
		t.Helper()
		s.Steps = 4
		j, err := Start(p, s)
		require.NoError(t, err)
		defer j.Close()
		imgs, err := j.Finish(context.Background())
		require.NoError(t, err)
		return imgs[0]
	}
	plain := run(e2eSettings())
	s := controlNetSettings(dir)
	full := run(s)
	assert.NotEqual(t, plain.Pix, full.Pix, "the ControlNet changes the image")
	s.ControlStrength = 0
	assert.Equal(t, plain.Pix, run(s).Pix, "strength 0")
	s.ControlStrength, s.ControlStart, s.ControlEnd = 1, 0.5, 0.6 // 2/4 >= 0.5, but 3/4 > 0.6: no step
	assert.Equal(t, plain.Pix, run(s).Pix, "a window without steps")
	s.ControlStart, s.ControlEnd = 0.5, 1
	half := run(s)
	assert.NotEqual(t, plain.Pix, half.Pix)
	assert.NotEqual(t, full.Pix, half.Pix)
	assert.NotNil(t, p.ControlNet(), "loaded once, kept")

	// Canny on the control image, thresholds and window in the PNG text.
	s.Canny, s.CannyLow, s.CannyHigh, s.ControlStrength = true, 50, 150, 0.8
	j, err := Start(p, s)
	require.NoError(t, err)
	text := j.Infotext(0)
	j.Close()
	assert.Contains(t, text, "Module: canny")
	assert.Contains(t, text, "Threshold A: 50, Threshold B: 150, Guidance Start: 0.5, Guidance End: 1")
	back, unknown, err := presets.ParseInfotext(text)
	require.NoError(t, err)
	assert.Empty(t, unknown)
	assert.Equal(t, s.ControlNet, back.ControlNet)
	assert.Equal(t, s.ControlImage, back.ControlImage)
	assert.Equal(t, j.Settings.ControlNetHash, back.ControlNetHash)
	assert.True(t, back.Canny)
	assert.Equal(t, [2]int{50, 150}, [2]int{back.CannyLow, back.CannyHigh})
	assert.Equal(t, [3]float64{0.8, 0.5, 1}, [3]float64{back.ControlStrength, back.ControlStart, back.ControlEnd})

	// No ControlNet in the settings: the pipeline drops it.
	run(e2eSettings())
	assert.Nil(t, p.ControlNet())
}

func keeps(n int, start, end float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = ControlKeep(i, n, start, end)
	}
	return out
}

// sdxlControlNet writes a ControlNet for golden-wave2's sdxl-mini as
// diffusers' ControlNetModel.from_unet makes one (the U-Net's time and
// added embeddings, conv_in, down and mid blocks copied) with a random
// conditioning embedding and zero convolutions: as a diffusers folder and
// as an original single file (control_model.* keys, label_emb included).
func sdxlControlNet(t *testing.T, sdxl string) (folder, single string) {
	t.Helper()
	m, err := checkpoint.Load(sdxl, "")
	require.NoError(t, err)
	defer m.Close()
	raw, err := os.ReadFile(filepath.Join(sdxl, "unet", "config.json"))
	require.NoError(t, err)
	var cfgMap map[string]any
	require.NoError(t, json.Unmarshal(raw, &cfgMap))
	cfgMap["_class_name"] = "ControlNetModel"
	cfgMap["conditioning_embedding_out_channels"] = []int{8, 16, 32, 32}
	for _, k := range []string{"up_block_types", "out_channels", "conv_out_kernel"} {
		delete(cfgMap, k)
	}
	cfgJSON, err := json.Marshal(cfgMap)
	require.NoError(t, err)
	var cfg nets.ControlNetConfig
	require.NoError(t, json.Unmarshal(cfgJSON, &cfg))
	decls, err := nets.ControlNetDecls(cfg)
	require.NoError(t, err)
	seed := uint32(20240612)
	var diff, orig []safetensors.Entry
	for _, d := range decls {
		var data []byte
		if p, ok := m.UNetWeights.Get(d.Name); ok {
			require.Equal(t, gpu.Shape(d.Shape), gpu.Shape(p.Shape), d.Name)
			require.Equal(t, gpu.F16, p.DType)
			data = p.Raw
		} else {
			n := gpu.Shape(d.Shape).Numel()
			data = make([]byte, 2*n)
			for i := 0; i < n; i++ {
				seed = seed*1664525 + 1013904223
				v := (float32(seed>>8)/float32(1<<24) - 0.5) * 0.2
				binary.LittleEndian.PutUint16(data[2*i:], float16(v))
			}
		}
		diff = append(diff, safetensors.Entry{Name: d.Name, DType: safetensors.F16, Shape: d.Shape, Data: data})
		orig = append(orig, safetensors.Entry{Name: "control_model." + d.Orig, DType: safetensors.F16, Shape: d.OrigShape(), Data: data})
	}
	tmp := t.TempDir()
	folder = filepath.Join(tmp, "sdxl-mini-controlnet")
	require.NoError(t, os.Mkdir(folder, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(folder, "config.json"), cfgJSON, 0o644))
	write := func(path string, es []safetensors.Entry) {
		f, err := os.Create(path)
		require.NoError(t, err)
		require.NoError(t, safetensors.Write(f, es, nil))
		require.NoError(t, f.Close())
	}
	write(filepath.Join(folder, "diffusion_pytorch_model.fp16.safetensors"), diff)
	single = filepath.Join(tmp, "control_sdxl_mini.safetensors")
	write(single, orig)
	return folder, single
}

// float16 rounds v to IEEE half precision (v small and normal here).
func float16(v float32) uint16 {
	b := math.Float32bits(v)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	if exp <= 0 {
		return sign
	}
	h := sign | uint16(exp)<<10 | uint16(mant>>13)
	if mant&0x1fff > 0x1000 || (mant&0x1fff == 0x1000 && h&1 == 1) {
		h++
	}
	return h
}

// TestControlNetSDXL: the same mechanism steers SDXL (added conditioning
// through the ControlNet too, 3 U-Net levels): a ControlNet made from
// sdxl-mini's U-Net, from its diffusers folder and from the original
// single file (hyper-parameters and label_emb read from the shapes, the
// same weights), steers the image; an SD 1.x ControlNet is refused for
// SDXL. No golden exists for this.
func TestControlNetSDXL(t *testing.T) {
	w3 := golden.Wave(t, "golden-wave3")
	sdxl := filepath.Join(golden.Wave(t, "golden-wave2"), "sdxl-mini")
	folder, single := sdxlControlNet(t, sdxl)
	c, err := checkpoint.LoadControlNet(single)
	require.NoError(t, err)
	assert.Equal(t, "original", c.Layout)
	assert.Equal(t, "SDXL", c.Family)
	assert.Equal(t, []int{32, 64, 128}, c.Config.BlockOutChannels)
	assert.Equal(t, nets.IntOrList{1, 2, 2}, c.Config.TransformerLayers)
	assert.Equal(t, 80, c.Config.ProjectionClassEmbeddingsInputDim)
	f, err := checkpoint.LoadControlNet(folder)
	require.NoError(t, err)
	require.Len(t, c.Weights, len(f.Weights))
	for name, p := range f.Weights {
		assert.Equal(t, p.Raw, c.Weights[name].Raw, name)
	}
	f.Close()
	c.Close()

	d := testdev.All(t)["ref"](t)
	p, err := models.Load(d, sdxl, "")
	require.NoError(t, err)
	defer p.Close()
	run := func(cn string) []byte {
		t.Helper()
		s := e2eSettings()
		s.Steps = 3
		if cn != "" {
			s.ControlNet, s.ControlImage = cn, filepath.Join(w3, "inputs", "control_64.png")
		}
		j, err := Start(p, s)
		require.NoError(t, err)
		defer j.Close()
		imgs, err := j.Finish(context.Background())
		require.NoError(t, err)
		return imgs[0].Pix
	}
	plain := run("")
	fromFolder := run(folder)
	assert.NotEqual(t, plain, fromFolder)
	// The single file runs too; its heads are assumed 64 wide (SDXL's)
	// where this mini model's are 16, so its image is another.
	assert.NotEqual(t, plain, run(single))

	s := controlNetSettings(w3)
	_, err = Start(p, s)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not for this SDXL model")
}
