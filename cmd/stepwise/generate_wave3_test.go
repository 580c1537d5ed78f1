package main

import (
	"bytes"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/render"
)

// pngPixels reads a 64x64 PNG's RGB values in the layout of a golden
// image_uint8.
func pngPixels(t *testing.T, path string) []int64 {
	t.Helper()
	fh, err := os.Open(path)
	require.NoError(t, err)
	defer fh.Close()
	im, err := png.Decode(fh)
	require.NoError(t, err)
	out := make([]int64, 0, 64*64*3)
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			r, g, b, _ := im.At(x, y).RGBA()
			out = append(out, int64(r>>8), int64(g>>8), int64(b>>8))
		}
	}
	return out
}

// TestGenerateWave3PNGs: `stepwise generate --init-img/--strength/--mask`
// reproduces golden-wave3's public img2img and inpainting PNGs within 1
// per channel (the 9-channel model from a folder of its U-Net beside
// sd15-mini's parts); the parameters carry "Denoising strength", "Mask
// blur" and the files, and --from makes the same image again.
func TestGenerateWave3PNGs(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	sd15 := filepath.Join(golden.Dir(t), "sd15-mini")
	initImg, mask := filepath.Join(dir, "inputs", "init_64.png"), filepath.Join(dir, "inputs", "mask_64.png")
	tmp := t.TempDir()
	common := []string{"-p", "a photograph of an astronaut riding a horse", "-n", "low quality, blurry, watermark",
		"--steps", "20", "--cfg-scale", "7.5", "--sampler", "euler", "--schedule", "leading", "--seed", "42", "--rng", "torch-cpu",
		"--device", "ref", "--init-img", initImg}
	cases := []struct {
		name, golden, model string
		args                []string
		say                 string
	}{
		{"img2img", "img2img_euler_s0.6_seed42", sd15, []string{"--strength", "0.6"}, "img2img from " + initImg + ": 12 of 20 steps"},
		{"inpaint4", "inpaint4_euler_s1.0_seed42", sd15, []string{"--strength", "1", "--mask", mask}, "inpainting (latent blending) from"},
		{"inpaint9", "inpaint9_euler_s1.0_seed42", golden.InpaintFolder(t), []string{"--strength", "1", "--mask", mask}, "inpainting (mask and masked image as U-Net channels) from"},
	}
	for _, c := range cases {
		want := pngPixels(t, filepath.Join(dir, c.golden+".png"))
		out := filepath.Join(tmp, c.name+".png")
		args := append(append(append([]string{"--model", c.model}, common...), c.args...), "-o", out)
		log, err := runGen(t, args)
		require.NoError(t, err, log)
		assert.Contains(t, log, c.say)
		d, n := pixelsOffBy(t, out, want)
		assert.LessOrEqualf(t, d, 1, "%s: pixels differ from diffusers' PNG by up to %d (%d values)", c.name, d, n)
		t.Logf("%s: pixels differ from diffusers' PNG by at most %d (%d of %d values)", c.name, d, n, 64*64*3)
		text, err := render.ReadPNGTextFile(out)
		require.NoError(t, err)
		params := text["parameters"]
		assert.Contains(t, params, "Init image: "+initImg)
		if c.name == "img2img" {
			assert.Contains(t, params, "Denoising strength: 0.6")
			assert.NotContains(t, params, "Mask")
		} else {
			assert.Contains(t, params, "Denoising strength: 1")
			assert.Contains(t, params, "Mask image: "+mask+", Mask blur: 0")
		}
		again := filepath.Join(tmp, c.name+"-again.png")
		log, err = runGen(t, []string{"--model", c.model, "--from", out, "--device", "ref", "-o", again})
		require.NoError(t, err, log)
		assert.NotContains(t, log, "warning")
		assert.Equal(t, readPixels(t, out), readPixels(t, again), "%s: --from did not reproduce the image", c.name)
	}
}

// TestGenerateImageFromMissingFiles: --from on a PNG whose init image or
// mask is gone warns naming the file and goes on without it; a relative
// name is also looked for beside the PNG; an A1111 img2img PNG (strength,
// no file) says so.
func TestGenerateImageFromMissingFiles(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	sd15 := filepath.Join(golden.Dir(t), "sd15-mini")
	tmp := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(tmp, name)
		require.NoError(t, os.WriteFile(p, data, 0o644))
		return p
	}
	initData, err := os.ReadFile(filepath.Join(dir, "inputs", "init_64.png"))
	require.NoError(t, err)
	maskData, err := os.ReadFile(filepath.Join(dir, "inputs", "mask_64.png"))
	require.NoError(t, err)
	write("init.png", initData)
	write("mask.png", maskData)
	params := func(extra string) string {
		return "red heart\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, RNG: CPU" + extra
	}
	pngWith := func(name, text string) string {
		var b bytes.Buffer
		require.NoError(t, png.Encode(&b, image.NewGray(image.Rect(0, 0, 8, 8))))
		p := filepath.Join(tmp, name)
		require.NoError(t, render.WritePNG(p, image.NewRGBA(image.Rect(0, 0, 8, 8)), map[string]string{"parameters": text}, true))
		return p
	}
	cases := []struct {
		name, extra, want, img string
	}{
		{"beside", ", Denoising strength: 0.5, Init image: init.png, Mask image: mask.png, Mask blur: 2", "", "inpainting (latent blending) from " + filepath.Join(tmp, "init.png")},
		{"no-init", ", Denoising strength: 0.5, Init image: gone/init.png, Mask image: mask.png", "its init image gone/init.png is missing; generating from noise without its mask mask.png either (pass --init-img PATH)", ""},
		{"no-mask", ", Denoising strength: 0.5, Init image: init.png, Mask image: gone.png", "its mask gone.png is missing; generating img2img without it (pass --mask PATH)", "img2img from"},
		{"a1111", ", Denoising strength: 0.45, Mask blur: 4", "it was made by img2img (Denoising strength 0.45) from an init image its parameters do not name", ""},
	}
	for _, c := range cases {
		from := pngWith(c.name+".png", params(c.extra))
		out := filepath.Join(tmp, c.name+"-out.png")
		log, err := runGen(t, []string{"--model", sd15, "--device", "ref", "--from", from, "-o", out})
		require.NoError(t, err, log)
		if c.want == "" {
			assert.NotContains(t, log, "warning", c.name)
		} else {
			assert.Contains(t, log, "warning: --from "+from+": "+c.want, c.name)
		}
		if c.img != "" {
			assert.Contains(t, log, c.img, c.name)
		} else {
			assert.NotContains(t, log, "img2img from", c.name)
			assert.NotContains(t, log, "inpainting", c.name)
		}
	}
	// A file given on the command line wins over the PNG's and is not
	// looked up beside it.
	from := pngWith("flag.png", params(", Denoising strength: 0.5, Init image: gone.png"))
	log, err := runGen(t, []string{"--model", sd15, "--device", "ref", "--from", from, "--init-img", filepath.Join(tmp, "init.png"), "-o", filepath.Join(tmp, "flag-out.png")})
	require.NoError(t, err, log)
	assert.NotContains(t, log, "warning")
	assert.Contains(t, log, "img2img from "+filepath.Join(tmp, "init.png")+": 1 of 2 steps")
}

// TestGenerateImageBadInput: a bad init image or mask is refused naming the
// file and the problem before the model loads, and nothing is written; an
// init image whose size the model cannot take is refused with the rule
// and the flags that resize it; -W/-H resize it, saying so.
func TestGenerateImageBadInput(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	sd15 := filepath.Join(golden.Dir(t), "sd15-mini")
	initImg := filepath.Join(dir, "inputs", "init_64.png")
	tmp := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(tmp, name)
		require.NoError(t, os.WriteFile(p, data, 0o644))
		return p
	}
	encode := func(w, h int) []byte {
		var b bytes.Buffer
		require.NoError(t, png.Encode(&b, image.NewGray(image.Rect(0, 0, w, h))))
		return b.Bytes()
	}
	text := write("text.png", []byte("hello"))
	small := write("small.png", encode(32, 32))
	odd := write("odd.png", encode(96, 80))
	notEight := write("not8.png", encode(100, 80))
	empty := write("empty.png", []byte{})
	out := filepath.Join(tmp, "out.png")
	base := []string{"--model", sd15, "--device", "ref", "-p", "x", "--steps", "2", "-o", out}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--init-img", text}, "init image " + text + ": not a PNG or JPEG image; nothing written"},
		{[]string{"--init-img", empty}, "init image " + empty + ": not a PNG or JPEG image"},
		{[]string{"--init-img", initImg, "--mask", text}, "mask " + text + ": not a PNG or JPEG image"},
		{[]string{"--init-img", initImg, "--mask", small}, "mask " + small + ": is 32x32 but the init image " + initImg + " is 64x64; they must be the same size"},
		{[]string{"--init-img", filepath.Join(tmp, "absent.png")}, "no such file or directory"},
		{[]string{"--mask", small}, "mask: a mask needs an init image to repaint"},
		{[]string{"--init-img", initImg, "--strength", "1.5"}, "strength: 1.5 is outside [0, 1]"},
		{[]string{"--init-img", initImg, "--strength", "0.04", "--steps", "20"}, "int(20*0.04) = 0 steps"},
		{[]string{"--init-img", odd}, "size 96x80: width and height must be positive multiples of 64 for SD 1.x"},
		{[]string{"--init-img", notEight}, "width: 100 is not a multiple of 8: that is the size of the init image " + notEight + "; pass -W 128 -H 64"},
	}
	for _, c := range cases {
		log, err := runGen(t, append(append([]string{}, base...), c.args...))
		require.Error(t, err, c.want)
		assert.Contains(t, err.Error(), c.want)
		if !strings.Contains(c.want, "size") && !strings.Contains(c.want, "int(") {
			assert.NotContains(t, log, "model sd15-mini", "the model loaded before %s was refused", c.args)
		}
		_, serr := os.Stat(out)
		assert.True(t, os.IsNotExist(serr), "%v: an output was written", c.args)
	}
	_, err := runGen(t, append(append([]string{}, base...), "--init-img", odd))
	assert.ErrorContains(t, err, "that is the size of the init image "+odd+"; pass -W 128 -H 64 (or other multiples of 64) to resize it; nothing written")

	log, err := runGen(t, append(append([]string{}, base...), "--init-img", odd, "-W", "128", "-H", "64", "--strength", "0.5"))
	require.NoError(t, err, log)
	assert.Contains(t, log, "note: resizing the init image "+odd+" from 96x80 to 128x64")
	text2, err := render.ReadPNGTextFile(out)
	require.NoError(t, err)
	assert.Contains(t, text2["parameters"], "Size: 128x64")
}
