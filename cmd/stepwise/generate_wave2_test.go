package main

import (
	"bytes"
	"flag"
	"fmt"
	"github.com/stepwise/stepwise/sampler"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
)

// TestGenerateWave2PNGs: `stepwise generate` reproduces golden-wave2's
// public end-to-end PNGs within 1 per channel: SD 2.x from its folder,
// SDXL from its folder and its single file; SDXL's size conditioning is
// written to the parameters only when set, read back by --from, and changes
// the image.
func TestGenerateWave2PNGs(t *testing.T) {
	dir := golden.Wave(t, "golden-wave2")
	tmp := t.TempDir()
	common := []string{"-p", "a photograph of an astronaut riding a horse", "-n", "low quality, blurry, watermark",
		"--steps", "20", "--sampler", "euler", "--schedule", "leading", "--seed", "42", "--rng", "torch-cpu",
		"-W", "64", "-H", "64", "--device", "ref"}
	cases := []struct {
		name, golden string
		model        []string
		cfg          string
	}{
		{"sd2-folder", "sd2_e2e_euler_vpred_seed42", []string{"--model", filepath.Join(dir, "sd2-mini")}, "7.5"},
		{"sdxl-folder", "sdxl_e2e_euler_seed42", []string{"--model", filepath.Join(dir, "sdxl-mini")}, "5"},
		{"sdxl-single", "sdxl_e2e_euler_seed42", []string{"--model", filepath.Join(dir, "sdxl-mini.fp16.safetensors"),
			"--config", filepath.Join(dir, "sdxl_mini_config.json")}, "5"},
	}
	for _, c := range cases {
		want := golden.Open(t, filepath.Join(dir, c.golden+".safetensors")).I64("image_uint8")
		out := filepath.Join(tmp, c.name+".png")
		args := append(append(append([]string{}, c.model...), common...), "--cfg-scale", c.cfg, "-o", out)
		log, err := runGen(t, args)
		require.NoError(t, err, log)
		d, n := pixelsOffBy(t, out, want)
		assert.LessOrEqualf(t, d, 1, "%s: pixels differ from diffusers by up to %d (%d values)", c.name, d, n)
		text, err := render.ReadPNGTextFile(out)
		require.NoError(t, err)
		assert.NotContains(t, text["parameters"], "Original size", c.name)
	}

	// Size conditioning: in the parameters, back through --from, and it
	// changes the image.
	sized := filepath.Join(tmp, "sized.png")
	args := append(append([]string{}, cases[1].model...), common...)
	args = append(args, "--cfg-scale", "5", "--original-size", "128,96", "--crop-top-left", "8,16", "-o", sized)
	log, err := runGen(t, args)
	require.NoError(t, err, log)
	text, err := render.ReadPNGTextFile(sized)
	require.NoError(t, err)
	params := text["parameters"]
	assert.Contains(t, params, "Original size: 128x96")
	assert.Contains(t, params, "Crop top-left: 8x16")
	assert.False(t, strings.Contains(params, "Target size"), params)
	s, _, err := presets.ParseInfotext(params)
	require.NoError(t, err)
	assert.Equal(t, [4]int{128, 96, 8, 16}, [4]int{s.OriginalWidth, s.OriginalHeight, s.CropLeft, s.CropTop})
	want := golden.Open(t, filepath.Join(dir, "sdxl_e2e_euler_seed42.safetensors")).I64("image_uint8")
	d, _ := pixelsOffBy(t, sized, want)
	assert.Greater(t, d, 1, "size conditioning did not change the image")
	again := filepath.Join(tmp, "again.png")
	log, err = runGen(t, append(append([]string{}, cases[1].model...), "--from", sized, "--device", "ref", "-o", again))
	require.NoError(t, err, log)
	a, b := readPixels(t, sized), readPixels(t, again)
	assert.Equal(t, a, b, "--from did not reproduce the size-conditioned image")
}

// readPixels decodes a PNG's RGBA bytes.
func readPixels(t *testing.T, path string) []byte {
	t.Helper()
	fh, err := os.Open(path)
	require.NoError(t, err)
	defer fh.Close()
	im, err := png.Decode(fh)
	require.NoError(t, err)
	b := im.Bounds()
	out := make([]byte, 0, b.Dx()*b.Dy()*4)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := im.At(x, y).RGBA()
			out = append(out, byte(r>>8), byte(g>>8), byte(bl>>8), byte(a>>8))
		}
	}
	return out
}

// TestProgressRedrawsInPlace: the bar without a preview returns to the
// start of its own line and never moves the cursor up (ESC[0A climbed one
// line in real terminals, over the printed seed).
func TestProgressRedrawsInPlace(t *testing.T) {
	var b strings.Builder
	p := &progress{w: &b, tty: true, start: time.Now()}
	for i := 0; i < 3; i++ {
		p.step(sampler.Frame{Index: i, Total: 3})
	}
	out := b.String()
	assert.NotContains(t, out, "\x1b[0A")
	assert.NotRegexp(t, `\x1b\[\d+A`, out, "cursor moved up without a preview")
	assert.Equal(t, 3, strings.Count(out, "\r"), "one carriage return per redraw")
}

// TestUnknownFlagIsOneLine: a mistyped flag gives its error and where to
// find the flags, not every flag (97 lines before).
func TestUnknownFlagIsOneLine(t *testing.T) {
	var stderr bytes.Buffer
	_, err := parseGenerate([]string{"--bogus"}, &stderr)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-bogus")
	assert.Contains(t, err.Error(), "stepwise generate -h")
	assert.Empty(t, stderr.String())
	_, err = parseGenerate([]string{"-h"}, &stderr)
	require.ErrorIs(t, err, flag.ErrHelp)
	assert.Contains(t, stderr.String(), "--original-size")
}

// TestOutputMustBePNG: -o out.jpg is refused before any work (it wrote PNG
// bytes under a .jpg name); .PNG and no extension are fine.
func TestOutputMustBePNG(t *testing.T) {
	dir := t.TempDir()
	for _, bad := range []string{"out.jpg", "out.webp", "out.JPEG"} {
		_, err := outputPaths(filepath.Join(dir, bad), 1, false)
		if assert.Errorf(t, err, "%s accepted", bad) {
			assert.Contains(t, err.Error(), "name the output .png")
		}
	}
	for _, good := range []string{"out.png", "out.PNG", "out"} {
		_, err := outputPaths(filepath.Join(dir, good), 1, false)
		assert.NoErrorf(t, err, "%s", good)
	}
}

// TestGenerateLCMPNG: `stepwise generate` on the LCM-distilled lcm-mini
// picks the lcm sampler by itself and reproduces diffusers' PNG within 1.
func TestGenerateLCMPNG(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	want := golden.Open(t, filepath.Join(dir, "lcm_e2e_4steps_g8.0_seed42.safetensors")).I64("image_uint8")
	out := filepath.Join(t.TempDir(), "lcm.png")
	log, err := runGen(t, []string{"--model", filepath.Join(dir, "lcm-mini"), "-p", "a photograph of an astronaut riding a horse",
		"--steps", "4", "--cfg-scale", "8", "--seed", "42", "--rng", "torch-cpu", "-W", "64", "-H", "64", "--device", "ref", "-o", out})
	require.NoError(t, err, log)
	assert.Contains(t, log, "sampling with lcm")
	d, n := pixelsOffBy(t, out, want)
	assert.LessOrEqualf(t, d, 1, "pixels differ from diffusers by up to %d (%d values)", d, n)
}

// TestGenerateTAESDPNG: `--taesd` decodes the final image with the tiny
// autoencoder (from each of its layouts) and reproduces diffusers'
// taesd_e2e PNG within 1.
func TestGenerateTAESDPNG(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	want := golden.Open(t, filepath.Join(dir, "taesd_e2e_euler_seed42.safetensors")).I64("image_uint8")
	for i, taesd := range []string{filepath.Join(dir, "taesd-mini"), filepath.Join(dir, "taesd-mini", "taesd_decoder.safetensors")} {
		out := filepath.Join(t.TempDir(), fmt.Sprintf("taesd%d.png", i))
		log, err := runGen(t, append(publicE2EArgs(golden.Dir(t), out), "--taesd", taesd))
		require.NoError(t, err, log)
		d, n := pixelsOffBy(t, out, want)
		assert.LessOrEqualf(t, d, 1, "%s: pixels differ from diffusers by up to %d (%d values)", taesd, d, n)
	}
	_, err := runGen(t, append(publicE2EArgs(golden.Dir(t), filepath.Join(t.TempDir(), "x.png")), "--taesd", filepath.Join(dir, "lcm-mini")))
	assert.Error(t, err, "a folder that is no TAESD")
}
