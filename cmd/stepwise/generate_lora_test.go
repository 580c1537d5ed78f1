package main

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
)

// TestGenerateLoRA: `stepwise generate` with <lora:NAME:0.8> in the prompt
// and --lora-dir reproduces golden-wave3's public
// lora_e2e_euler_scale0.8_seed42.png within 1 per channel, in both file
// formats; the PNG keeps the tag in its prompt and carries A1111's "Lora
// hashes"; --from (with stable-diffusion.cpp's --lora-model-dir) makes the
// same image again; a LoRA that is not there is refused before the model
// loads.
func TestGenerateLoRA(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	loraDir := filepath.Join(dir, "lora")
	want := readPixels(t, filepath.Join(dir, "lora_e2e_euler_scale0.8_seed42.png"))
	model := filepath.Join(golden.Dir(t), "sd15-mini")
	tmp := t.TempDir()
	for _, name := range []string{"sd15-mini-lora.kohya.fp16", "sd15-mini-lora.peft.fp16"} {
		out := filepath.Join(tmp, name+".png")
		prompt := "a photograph of an astronaut riding a horse <lora:" + name + ":0.8>"
		log, err := runGen(t, []string{"--model", model, "-p", prompt, "-n", "low quality, blurry, watermark",
			"--steps", "20", "--cfg-scale", "7.5", "--sampler", "euler", "--schedule", "leading", "--seed", "42", "--rng", "torch-cpu",
			"-W", "64", "-H", "64", "--device", "ref", "--lora-dir", loraDir, "-o", out})
		require.NoError(t, err, log)
		got := readPixels(t, out)
		require.Len(t, got, len(want))
		most := 0
		for i := range got {
			d := int(got[i]) - int(want[i])
			most = max(most, d, -d)
		}
		assert.LessOrEqualf(t, most, 1, "%s: pixels differ from the public PNG by up to %d", name, most)
		t.Logf("%s: pixels off by at most %d", name, most)

		text, err := render.ReadPNGTextFile(out)
		require.NoError(t, err)
		s, unknown, err := presets.ParseInfotext(text["parameters"])
		require.NoError(t, err)
		assert.Equal(t, prompt, s.Prompt, "the tag stays in the PNG's prompt")
		full, err := checkpoint.AddnetHash(filepath.Join(loraDir, name+".safetensors"))
		require.NoError(t, err)
		assert.Equal(t, name+": "+full[:12], s.LoraHashes)
		assert.Contains(t, text["parameters"], `Lora hashes: "`+name+": "+full[:12]+`"`)
		assert.Empty(t, unknown)

		again := filepath.Join(tmp, name+"-again.png")
		log, err = runGen(t, []string{"--model", model, "--from", out, "--device", "ref", "--lora-model-dir", loraDir, "-o", again})
		require.NoError(t, err, log)
		assert.NotContains(t, log, "warning")
		assert.Equal(t, got, readPixels(t, again), "--from did not reproduce the LoRA image")
	}

	// A PNG made with another version of the file: the image is made, with
	// a warning naming the LoRA and both hashes.
	out := filepath.Join(tmp, "sd15-mini-lora.kohya.fp16.png")
	text, err := render.ReadPNGTextFile(out)
	require.NoError(t, err)
	s, _, err := presets.ParseInfotext(text["parameters"])
	require.NoError(t, err)
	s.LoraHashes = "sd15-mini-lora.kohya.fp16: 000000000000"
	edited := filepath.Join(tmp, "edited.png")
	fh, err := os.Open(out)
	require.NoError(t, err)
	im, err := png.Decode(fh)
	fh.Close()
	require.NoError(t, err)
	require.NoError(t, render.WritePNG(edited, im, map[string]string{"parameters": s.Infotext()}, false))
	log, err := runGen(t, []string{"--model", model, "--from", edited, "--device", "ref", "--lora-dir", loraDir, "--steps", "1", "-o", filepath.Join(tmp, "edited-out.png")})
	require.NoError(t, err, log)
	assert.Contains(t, log, "warning: LoRA sd15-mini-lora.kohya.fp16: the file found has hash")

	// Missing: refused before any model is loaded, naming the LoRA.
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"-p", "x <lora:nowhere:1>", "--lora-dir", loraDir}, `lora "nowhere": no nowhere.safetensors in ` + loraDir},
		{[]string{"-p", "x <lora:sd15-mini-lora.kohya.fp16:1>"}, "no LoRA folder (pass --lora-dir DIR)"},
		{[]string{"-p", "x <lora:sd15-mini-lora.kohya.fp16:much>", "--lora-dir", loraDir}, `weight "much" is not a number`},
		{[]string{"--from", out, "--lora-dir", tmp}, `(--from ` + out + ` was made with Lora hashes "sd15-mini-lora.kohya.fp16: `},
	} {
		_, err := parseGenerate(append(c.args, "-o", filepath.Join(tmp, "never.png")), os.Stderr)
		if assert.Error(t, err, c.args) {
			assert.Contains(t, err.Error(), c.says)
		}
	}
}

// TestGenerateLCMLoRA: an LCM-LoRA on an ordinary model with --sampler lcm,
// 4 steps and CFG 1 reproduces golden-wave3's lcm_lora_4steps PNG within 1
// per channel, without the note that lcm needs an LCM model or LoRA.
func TestGenerateLCMLoRA(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	want := readPixels(t, filepath.Join(dir, "lcm_lora_4steps_g1.0_seed42.png"))
	out := filepath.Join(t.TempDir(), "lcm.png")
	log, err := runGen(t, []string{"--model", filepath.Join(golden.Dir(t), "sd15-mini"),
		"-p", "<lora:sd15-mini-lora.kohya.fp16:1>a photograph of an astronaut riding a horse",
		"--steps", "4", "--cfg-scale", "1", "--sampler", "lcm", "--seed", "42", "--rng", "torch-cpu",
		"-W", "64", "-H", "64", "--device", "ref", "--lora-dir", filepath.Join(dir, "lora"), "-o", out})
	require.NoError(t, err, log)
	assert.NotContains(t, log, "LCM-LoRA", "the prompt names a LoRA")
	got := readPixels(t, out)
	require.Len(t, got, len(want))
	most := 0
	for i := range got {
		d := int(got[i]) - int(want[i])
		most = max(most, d, -d)
	}
	assert.LessOrEqual(t, most, 1, "pixels differ from the public PNG")
}
