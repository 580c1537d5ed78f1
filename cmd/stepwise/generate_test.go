package main

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// publicE2EArgs is the command line of the public e2e case.
func publicE2EArgs(dir, out string) []string {
	return []string{
		"--model", filepath.Join(dir, "sd15-mini.fp16.safetensors"), "--config", filepath.Join(dir, "sd15_mini_config.json"),
		"-p", "a photograph of an astronaut riding a horse", "-n", "low quality, blurry, watermark",
		"--steps", "20", "--cfg-scale", "7.5", "--sampler", "euler", "--schedule", "leading", "--seed", "42",
		"--rng", "torch-cpu", "-W", "64", "-H", "64", "-o", out, "--device", "ref",
	}
}

func runGen(t *testing.T, args []string) (string, error) {
	t.Helper()
	var stderr bytes.Buffer
	f, err := parseGenerate(args, &stderr)
	if err != nil {
		return stderr.String(), err
	}
	err = generate(context.Background(), f, &stderr)
	return stderr.String(), err
}

// pixelsOffBy compares a PNG's pixels with the golden uint8 image.
func pixelsOffBy(t *testing.T, path string, want []int64) (maxDiff, count int) {
	t.Helper()
	fh, err := os.Open(path)
	require.NoError(t, err)
	defer fh.Close()
	im, err := png.Decode(fh)
	require.NoError(t, err)
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			r, g, b, _ := im.At(x, y).RGBA()
			for ch, v := range []uint32{r >> 8, g >> 8, b >> 8} {
				d := int(v) - int(want[(y*64+x)*3+ch])
				if d < 0 {
					d = -d
				}
				if d > 0 {
					count++
				}
				maxDiff = max(maxDiff, d)
			}
		}
	}
	return maxDiff, count
}

func TestGeneratePublicE2EAndFrom(t *testing.T) {
	dir := golden.Dir(t)
	want := golden.Open(t, "e2e_euler_seed42.safetensors").I64("image_uint8")
	tmp := t.TempDir()
	out := filepath.Join(tmp, "out.png")
	log, err := runGen(t, publicE2EArgs(dir, out))
	require.NoError(t, err, log)
	assert.Contains(t, log, "step 20/20", "progress log lacks plain step lines")
	assert.Contains(t, log, "wrote "+out, "progress log lacks the path")
	d, n := pixelsOffBy(t, out, want)
	assert.LessOrEqual(t, d, 1, "pixels differ from diffusers by up to %d (%d values)", d, n)
	text, err := render.ReadPNGTextFile(out)
	require.NoError(t, err)
	s, _, err := presets.ParseInfotext(text["parameters"])
	require.NoError(t, err)
	assert.Equal(t, int64(42), s.Seed, "parameters read back wrong: seed")
	assert.Equal(t, 20, s.Steps, "parameters read back wrong: steps")
	assert.Equal(t, 7.5, s.CFGScale, "parameters read back wrong: CFG scale")
	assert.Equal(t, 64, s.Width, "parameters read back wrong: width")
	assert.Equal(t, "a photograph of an astronaut riding a horse", s.Prompt, "parameters read back wrong: prompt")
	assert.Equal(t, "low quality, blurry, watermark", s.NegativePrompt, "parameters read back wrong: negative prompt")
	assert.Equal(t, presets.RNGTorchCPU, s.RNG, "parameters read back wrong: RNG")
	assert.Contains(t, text["parameters"], "Model: sd15-mini.fp16,", "parameters lack the model name")

	// Writing again refuses to overwrite.
	_, err = runGen(t, publicE2EArgs(dir, out))
	assert.ErrorContains(t, err, "--force", "second write: want a refusal mentioning --force")

	// --from regenerates the same image from the PNG's parameters.
	again := filepath.Join(tmp, "again.png")
	log, err = runGen(t, []string{"--from", out, "--model", filepath.Join(dir, "sd15-mini.fp16.safetensors"),
		"--config", filepath.Join(dir, "sd15_mini_config.json"), "--device", "ref", "-o", again})
	require.NoError(t, err, "--from:\n%s", log)
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(again)
	assert.True(t, bytes.Equal(a, b), "--from did not reproduce the image byte for byte")
}

func TestGenerateBatchNames(t *testing.T) {
	dir := golden.Dir(t)
	tmp := t.TempDir()
	args := []string{"--model", filepath.Join(dir, "sd15-mini"), "-p", "a cat", "--steps", "2", "--seed", "7",
		"--batch", "2", "-W", "64", "-H", "64", "--device", "ref", "-o", filepath.Join(tmp, "cat.png")}
	log, err := runGen(t, args)
	require.NoError(t, err, log)
	for i, name := range []string{"cat_0.png", "cat_1.png"} {
		text, err := render.ReadPNGTextFile(filepath.Join(tmp, name))
		require.NoError(t, err)
		assert.Contains(t, text["parameters"], "Batch size: 2", "%s parameters", name)
		assert.Contains(t, text["parameters"], "Batch pos: "+string(rune('0'+i)), "%s parameters", name)
	}
}

func TestGenerateRefusesBadInput(t *testing.T) {
	dir := golden.Dir(t)
	model := filepath.Join(dir, "sd15-mini")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-W", "60"}, "multiples of 8"},
		{[]string{"--steps", "0"}, "steps"},
		{[]string{"--cfg-scale", "NaN"}, "finite"},
		{[]string{"--sampler", "nonsense"}, "dpmpp_2m"},
		{[]string{"--schedule", "nonsense"}, "karras"},
		{[]string{"--from", filepath.Join(dir, "README.md")}, "README.md"},
	}
	for _, c := range cases {
		args := append([]string{"--model", model, "--device", "ref", "-p", "x", "-o", filepath.Join(t.TempDir(), "x.png")}, c.args...)
		_, err := runGen(t, args)
		assert.ErrorContains(t, err, c.want, "%v", c.args)
	}
}
