package main

import (
	"fmt"
	"image"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/render"
)

// TestGenerateIPAdapterPNG: `stepwise generate --ip-adapter FILE
// --ip-adapter-image PNG --ip-adapter-scale 0.6` (the image encoder found
// in image_encoder/ beside the adapter, as h94 lays it out) reproduces
// golden-wave4's public PNG within 1 per channel; the parameters name the
// adapter, the image and the scale, and --from makes the same image again.
func TestGenerateIPAdapterPNG(t *testing.T) {
	w4 := golden.Wave(t, "golden-wave4")
	sd15 := filepath.Join(golden.Dir(t), "sd15-mini")
	adapter := filepath.Join(w4, "ip-adapter-mini", "models", "ip-adapter_sd15-mini.safetensors")
	ref := filepath.Join(golden.Wave(t, "golden-wave3"), "inputs", "init_64.png")
	tmp := t.TempDir()
	out := filepath.Join(tmp, "ip.png")
	args := []string{"--model", sd15, "-p", "a photograph of an astronaut riding a horse", "-n", "low quality, blurry, watermark",
		"--steps", "20", "--cfg-scale", "7.5", "--sampler", "euler", "--schedule", "leading", "--seed", "42", "--rng", "torch-cpu",
		"-W", "64", "-H", "64", "--device", "ref",
		"--ip-adapter", adapter, "--ip-adapter-image", ref, "--ip-adapter-scale", "0.6", "-o", out}
	log, err := runGen(t, args)
	require.NoError(t, err, log)
	assert.Contains(t, log, "image prompt "+ref+" through the IP-Adapter "+adapter+" (scale 0.6)")
	want := pngPixels(t, filepath.Join(w4, "ipadapter_e2e_euler_scale0.6_seed42.png"))
	d, n := pixelsOffBy(t, out, want)
	// Tolerance: the "within 1 per channel".
	assert.LessOrEqualf(t, d, 1, "pixels differ from diffusers' PNG by up to %d (%d values)", d, n)
	t.Logf("ipadapter_e2e_euler_scale0.6_seed42: pixels differ from diffusers' PNG by at most %d (%d of %d values)", d, n, 64*64*3)

	text, err := render.ReadPNGTextFile(out)
	require.NoError(t, err)
	assert.Contains(t, text["parameters"], "IP-Adapter: "+adapter+", IP-Adapter image: "+ref+", IP-Adapter scale: 0.6")

	again := filepath.Join(tmp, "again.png")
	log, err = runGen(t, []string{"--model", sd15, "--from", out, "--device", "ref", "-o", again})
	require.NoError(t, err, log)
	assert.Equal(t, readPixels(t, out), readPixels(t, again), "--from did not reproduce the image")

	// The short names and another scale: a different image.
	other := filepath.Join(tmp, "scale1.png")
	log, err = runGen(t, []string{"--model", sd15, "--from", out, "--device", "ref", "--ip-scale", "1", "--ip-image", ref, "--steps", "2", "-o", other})
	require.NoError(t, err, log)
	text, err = render.ReadPNGTextFile(other)
	require.NoError(t, err)
	assert.Contains(t, text["parameters"], "IP-Adapter scale: 1")
}

// TestGenerateIPAdapterRefusals: bad IP-Adapter inputs are refused naming
// the file before the model loads (or, for the family, before its weights
// are uploaded), and nothing is written.
func TestGenerateIPAdapterRefusals(t *testing.T) {
	w4 := golden.Wave(t, "golden-wave4")
	adapter := filepath.Join(w4, "ip-adapter-mini", "models", "ip-adapter_sd15-mini.safetensors")
	ref := filepath.Join(golden.Wave(t, "golden-wave3"), "inputs", "init_64.png")
	tmp := t.TempDir()
	notImage := filepath.Join(tmp, "ref.jpg")
	require.NoError(t, os.WriteFile(notImage, []byte("GIF89a"), 0o644))
	// sdxl-mini's cross-attention is 96 wide, sd15-mini's 64.
	sdxl := filepath.Join(golden.Wave(t, "golden-wave2"), "sdxl-mini")
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"not an image", []string{"--ip-adapter", adapter, "--ip-adapter-image", notImage}, []string{"ip-adapter image " + notImage, "not a PNG or JPEG"}},
		{"no encoder", []string{"--ip-adapter", adapter, "--ip-adapter-image", ref, "--image-encoder", filepath.Join(tmp, "enc")}, []string{"image encoder " + filepath.Join(tmp, "enc") + ": no such folder"}},
		{"no clip vision", []string{"--ip-adapter", adapter, "--ip-image", ref, "--clip-vision", filepath.Join(tmp, "cv")}, []string{"image encoder " + filepath.Join(tmp, "cv") + ": no such folder"}},
		{"no image", []string{"--ip-adapter", adapter}, []string{"ip adapter image", "needs a reference image (--ip-adapter-image)"}},
		{"another family", []string{"--model", sdxl, "--ip-adapter", adapter, "--ip-adapter-image", ref},
			[]string{"ip-adapter " + adapter, "made for a U-Net with cross-attention width 64", "the model's is 96"}},
		{"bad scale", []string{"--ip-adapter", adapter, "--ip-adapter-image", ref, "--ip-adapter-scale", "9"}, []string{"ip adapter scale: 9 is outside [-1, 5]"}},
	}
	for _, c := range cases {
		out := filepath.Join(tmp, "out.png")
		log, err := runGen(t, append([]string{"-p", "x", "--device", "ref", "-o", out}, c.args...))
		require.Error(t, err, c.name)
		for _, w := range c.want {
			assert.Contains(t, err.Error(), w, c.name)
		}
		assert.NotContains(t, log, "loaded in", c.name+": the model was loaded")
		_, statErr := os.Stat(out)
		assert.True(t, os.IsNotExist(statErr), c.name+": nothing is written")
	}
}

// TestGenerateIPAdapterFromBeside: --from finds the adapter, its encoder
// (image_encoder/ beside it) and the reference image that the PNG names
// by relative paths beside the PNG; a reference image found nowhere is
// refused naming it.
func TestGenerateIPAdapterFromBeside(t *testing.T) {
	w4 := golden.Wave(t, "golden-wave4")
	sd15 := filepath.Join(golden.Dir(t), "sd15-mini")
	tmp := t.TempDir()
	copyFile := func(src, dst string) {
		data, err := os.ReadFile(src)
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		require.NoError(t, os.WriteFile(dst, data, 0o644))
	}
	models := filepath.Join(w4, "ip-adapter-mini", "models")
	copyFile(filepath.Join(models, "ip-adapter_sd15-mini.safetensors"), filepath.Join(tmp, "ad", "ip.safetensors"))
	for _, n := range []string{"config.json", "model.safetensors", "preprocessor_config.json"} {
		copyFile(filepath.Join(models, "image_encoder", n), filepath.Join(tmp, "ad", "image_encoder", n))
	}
	copyFile(filepath.Join(golden.Wave(t, "golden-wave3"), "inputs", "init_64.png"), filepath.Join(tmp, "ref.png"))
	params := "a red hat\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, RNG: CPU, IP-Adapter: ad/ip.safetensors, IP-Adapter image: %s, IP-Adapter scale: 0.8"
	from := filepath.Join(tmp, "from.png")
	require.NoError(t, render.WritePNG(from, image.NewRGBA(image.Rect(0, 0, 8, 8)), map[string]string{"parameters": fmt.Sprintf(params, "ref.png")}, true))
	out := filepath.Join(tmp, "out.png")
	log, err := runGen(t, []string{"--model", sd15, "--device", "ref", "--from", from, "-o", out})
	require.NoError(t, err, log)
	assert.Contains(t, log, "image prompt "+filepath.Join(tmp, "ref.png")+" through the IP-Adapter "+filepath.Join(tmp, "ad", "ip.safetensors")+" (scale 0.8)")

	require.NoError(t, render.WritePNG(from, image.NewRGBA(image.Rect(0, 0, 8, 8)), map[string]string{"parameters": fmt.Sprintf(params, "gone.png")}, true))
	_, err = runGen(t, []string{"--model", sd15, "--device", "ref", "--from", from, "-o", filepath.Join(tmp, "out2.png")})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "ip-adapter image gone.png")
}
