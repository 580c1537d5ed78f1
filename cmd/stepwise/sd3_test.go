package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/safetensors"
	"github.com/stepwise/stepwise/render"
)

// The public SD3 case from the command line, on both devices:
// sd3-mini, 20 flow-matching Euler steps at cfg 7, seed 42, reproduces
// diffusers' PNG within 1 per channel; other samplers are refused by name
// and --max-sequence-length is checked before the model loads.
func TestGenerateSD3(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	want := golden.Open(t, filepath.Join(dir, "sd3_e2e_flowmatch_seed42.safetensors")).I64("image_uint8")
	tmp := t.TempDir()
	args := func(device, out string, extra ...string) []string {
		return append([]string{"--model", filepath.Join(dir, "sd3-mini"),
			"-p", "a photograph of an astronaut riding a horse", "-n", "low quality, blurry, watermark",
			"--steps", "20", "--cfg-scale", "7", "--sampler", "euler", "--seed", "42",
			"-W", "64", "-H", "64", "-o", filepath.Join(tmp, out), "--device", device}, extra...)
	}
	devs := []string{"ref"}
	if testdev.MaybeGL(t) != nil {
		devs = append(devs, "gl")
	}
	for _, dev := range devs {
		log, err := runGen(t, args(dev, dev+".png"))
		require.NoError(t, err, log)
		d, n := pixelsOffBy(t, filepath.Join(tmp, dev+".png"), want)
		assert.LessOrEqualf(t, d, 1, "%s: pixels differ from diffusers by up to %d (%d values)", dev, d, n)
		t.Logf("%s: pixels off by at most %d (%d values)", dev, d, n)
	}
	_, err := runGen(t, args("ref", "a.png", "--sampler", "Euler a"))
	assert.ErrorContains(t, err, "euler_ancestral cannot sample a flow-matching model")
	_, err = runGen(t, args("ref", "b.png", "--max-sequence-length", "5000"))
	assert.ErrorContains(t, err, "--max-sequence-length 5000")
}

// tokenize --model shows the T5 ids SD3's pipeline gives the encoder.
func TestTokenizeT5(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	want := golden.Open(t, filepath.Join(dir, "sd3_e2e_flowmatch_seed42.safetensors")).I64("prompt_ids_3")
	var out bytes.Buffer
	require.NoError(t, tokenizeTo(&out, nil, []string{"--json", "--model", filepath.Join(dir, "sd3-mini"),
		"a photograph of an astronaut riding a horse"}))
	var rep tokenizeReport
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep))
	require.NotNil(t, rep.T5)
	require.Len(t, rep.T5.IDs, 256)
	for i, id := range rep.T5.IDs {
		require.Equal(t, want[i], int64(id), "T5 id %d", i)
	}
	assert.Equal(t, 15, rep.T5.Count)
	assert.Equal(t, "\u2581horse", rep.T5.Pieces[13])

	out.Reset()
	require.NoError(t, tokenizeTo(&out, nil, []string{"--t5", filepath.Join(dir, "sd3-mini", "tokenizer_3", "spiece.model"),
		"--max-sequence-length", "4", "a photograph of an astronaut riding a horse"}))
	assert.Contains(t, out.String(), "t5:        15 tokens: cut to 4")
	err := tokenizeTo(&out, nil, []string{"--model", t.TempDir(), "x"})
	assert.ErrorContains(t, err, "no tokenizer_3/spiece.model")
}

// An SD3 single file without its text encoders and VAE runs with them
// given as stable-diffusion.cpp's --clip-l, --clip-g, --t5xxl and --vae
// (ComfyUI's file layouts) and reproduces the public PNG.
func TestGenerateSD3SingleFile(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	want := golden.Open(t, filepath.Join(dir, "sd3_e2e_flowmatch_seed42.safetensors")).I64("image_uint8")
	m, err := checkpoint.Load(filepath.Join(dir, "sd3-mini"), "")
	require.NoError(t, err)
	defer m.Close()
	es, err := checkpoint.SingleFileEntries(m)
	require.NoError(t, err)
	tmp := t.TempDir()
	files := map[string][]safetensors.Entry{}
	for _, e := range es {
		switch {
		case strings.HasPrefix(e.Name, "model.diffusion_model."):
			files["sd3.safetensors"] = append(files["sd3.safetensors"], e)
		case strings.HasPrefix(e.Name, "text_encoders.clip_l.transformer."):
			e.Name = strings.TrimPrefix(e.Name, "text_encoders.clip_l.transformer.")
			files["clip_l.safetensors"] = append(files["clip_l.safetensors"], e)
		case strings.HasPrefix(e.Name, "text_encoders.clip_g.transformer."):
			e.Name = strings.TrimPrefix(e.Name, "text_encoders.clip_g.transformer.")
			files["clip_g.safetensors"] = append(files["clip_g.safetensors"], e)
		case strings.HasPrefix(e.Name, "text_encoders.t5xxl.transformer."):
			e.Name = strings.TrimPrefix(e.Name, "text_encoders.t5xxl.transformer.")
			files["t5xxl.safetensors"] = append(files["t5xxl.safetensors"], e)
		case strings.HasPrefix(e.Name, "first_stage_model."):
			files["vae.safetensors"] = append(files["vae.safetensors"], e)
		}
	}
	for name, es := range files {
		var buf bytes.Buffer
		require.NoError(t, safetensors.Write(&buf, es, nil))
		require.NoError(t, os.WriteFile(filepath.Join(tmp, name), buf.Bytes(), 0o644))
	}
	out := filepath.Join(tmp, "out.png")
	log, err := runGen(t, []string{"--model", filepath.Join(tmp, "sd3.safetensors"), "--config", filepath.Join(dir, "sd3_mini_config.json"),
		"--clip-l", filepath.Join(tmp, "clip_l.safetensors"), "--clip-g", filepath.Join(tmp, "clip_g.safetensors"),
		"--t5xxl", filepath.Join(tmp, "t5xxl.safetensors"), "--vae", filepath.Join(tmp, "vae.safetensors"),
		"--t5-tokenizer", filepath.Join(dir, "sd3-mini", "tokenizer_3", "spiece.model"),
		"-p", "a photograph of an astronaut riding a horse", "-n", "low quality, blurry, watermark",
		"--steps", "20", "--cfg-scale", "7", "--sampler", "euler", "--seed", "42", "-W", "64", "-H", "64", "-o", out, "--device", "ref"})
	require.NoError(t, err, log)
	d, n := pixelsOffBy(t, out, want)
	assert.LessOrEqualf(t, d, 1, "pixels differ from diffusers by up to %d (%d values)", d, n)

	_, err = runGen(t, []string{"--model", filepath.Join(tmp, "sd3.safetensors"), "--config", filepath.Join(dir, "sd3_mini_config.json"),
		"-p", "x", "-o", filepath.Join(tmp, "x.png"), "--device", "ref"})
	assert.ErrorContains(t, err, "pass it with --vae FILE")
}

// The public Flux cases from the command line: flux-mini (FLUX.1-dev, 20
// steps, guidance 3.5 by default, --cfg-scale 1 by default) and the
// schnell transformer (4 steps) reproduce diffusers' PNGs within 1.
func TestGenerateFlux(t *testing.T) {
	w3 := golden.Wave(t, "golden-wave3")
	tmp := t.TempDir()
	schnell := filepath.Join(tmp, "flux-mini-schnell")
	require.NoError(t, os.Mkdir(schnell, 0o755))
	for _, n := range []string{"model_index.json", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae"} {
		require.NoError(t, os.Symlink(filepath.Join(w3, "flux-mini", n), filepath.Join(schnell, n)))
	}
	for _, n := range []string{"transformer", "scheduler"} {
		require.NoError(t, os.Symlink(filepath.Join(w3, "flux-mini-schnell", n), filepath.Join(schnell, n)))
	}
	for _, c := range []struct {
		model, golden string
		extra         []string
	}{
		{filepath.Join(w3, "flux-mini"), "flux_dev_e2e_g3.5_seed42", []string{"--steps", "20"}},
		{filepath.Join(w3, "flux-mini"), "flux_dev_e2e_g3.5_seed42", []string{"--steps", "20", "--guidance", "3.5", "--cfg-scale", "1"}},
		{schnell, "flux_schnell_e2e_4steps_seed42", []string{"--steps", "4", "--max-sequence-length", "256"}},
	} {
		want := golden.Open(t, filepath.Join(w3, c.golden+".safetensors")).I64("image_uint8")
		out := filepath.Join(tmp, c.golden+".png")
		log, err := runGen(t, append([]string{"--model", c.model, "-p", "a photograph of an astronaut riding a horse",
			"--sampler", "euler", "--seed", "42", "-W", "64", "-H", "64", "-o", out, "--device", "ref", "--force"}, c.extra...))
		require.NoError(t, err, log)
		d, n := pixelsOffBy(t, out, want)
		assert.LessOrEqualf(t, d, 1, "%s: pixels differ from diffusers by up to %d (%d values)", c.golden, d, n)
	}
	// Another guidance changes the image; a negative one is refused.
	out := filepath.Join(tmp, "g1.png")
	_, err := runGen(t, []string{"--model", filepath.Join(w3, "flux-mini"), "-p", "a photograph of an astronaut riding a horse",
		"--steps", "20", "--seed", "42", "-W", "64", "-H", "64", "-o", out, "--device", "ref", "--guidance", "1"})
	require.NoError(t, err)
	d, _ := pixelsOffBy(t, out, golden.Open(t, filepath.Join(w3, "flux_dev_e2e_g3.5_seed42.safetensors")).I64("image_uint8"))
	assert.Greater(t, d, 1, "guidance 1 gives another image")
	_, err = runGen(t, []string{"--model", filepath.Join(w3, "flux-mini"), "-p", "x", "--guidance", "-2", "-o", filepath.Join(tmp, "n.png")})
	assert.ErrorContains(t, err, "--guidance -2")
}

// Flux's --guidance is recorded as Forge's "Distilled CFG Scale" and read
// back by --from, which then redraws the same image; --guidance overrides
// the PNG's; a run without it records the default 3.5.
func TestFluxGuidanceRoundTrip(t *testing.T) {
	w3 := golden.Wave(t, "golden-wave3")
	tmp := t.TempDir()
	model := filepath.Join(w3, "flux-mini")
	gen := func(out string, extra ...string) string {
		t.Helper()
		log, err := runGen(t, append([]string{"--model", model, "--steps", "4", "--seed", "42", "-W", "64", "-H", "64", "-o", out, "--device", "ref"}, extra...))
		require.NoError(t, err, log)
		text, err := render.ReadPNGTextFile(out)
		require.NoError(t, err)
		return text["parameters"]
	}
	first := filepath.Join(tmp, "g1.png")
	params := gen(first, "-p", "a photograph of an astronaut riding a horse", "--guidance", "1.25")
	assert.Contains(t, params, "CFG scale: 1, ")
	assert.Contains(t, params, ", Distilled CFG Scale: 1.25")

	back := filepath.Join(tmp, "back.png")
	assert.Contains(t, gen(back, "--from", first), ", Distilled CFG Scale: 1.25")
	d, n := pixelsOffBy(t, back, pngPixels(t, first))
	assert.Equalf(t, 0, d, "--from redraws the image exactly (%d values differ)", n)

	over := filepath.Join(tmp, "over.png")
	assert.Contains(t, gen(over, "--from", first, "--guidance", "3.5"), ", Distilled CFG Scale: 3.5")
	d, _ = pixelsOffBy(t, over, pngPixels(t, first))
	assert.Greater(t, d, 1, "--guidance overrides the PNG's")

	def := filepath.Join(tmp, "def.png")
	assert.Contains(t, gen(def, "-p", "a photograph of an astronaut riding a horse"), ", Distilled CFG Scale: 3.5")
	d, _ = pixelsOffBy(t, def, pngPixels(t, over))
	assert.Equal(t, 0, d, "the default is 3.5")
}

// A Flux transformer in Black Forest Labs' layout (a bare
// flux1-dev-style file) runs with the VAE, CLIP-L and T5 given as
// stable-diffusion.cpp's --vae, --clip-l and --t5xxl, and reproduces the
// public FLUX.1-dev PNG.
func TestGenerateFluxSingleFile(t *testing.T) {
	w3 := golden.Wave(t, "golden-wave3")
	want := golden.Open(t, filepath.Join(w3, "flux_dev_e2e_g3.5_seed42.safetensors")).I64("image_uint8")
	m, err := checkpoint.Load(filepath.Join(w3, "flux-mini"), "")
	require.NoError(t, err)
	defer m.Close()
	es, err := checkpoint.SingleFileEntries(m)
	require.NoError(t, err)
	tmp := t.TempDir()
	files := map[string][]safetensors.Entry{}
	for _, e := range es {
		for prefix, file := range map[string]string{"model.diffusion_model.": "flux1-mini.safetensors", "first_stage_model.": "ae.safetensors",
			"text_encoders.clip_l.transformer.": "clip_l.safetensors", "text_encoders.t5xxl.transformer.": "t5xxl.safetensors"} {
			if k, ok := strings.CutPrefix(e.Name, prefix); ok {
				e.Name = k
				files[file] = append(files[file], e)
			}
		}
	}
	for name, es := range files {
		var buf bytes.Buffer
		require.NoError(t, safetensors.Write(&buf, es, nil))
		require.NoError(t, os.WriteFile(filepath.Join(tmp, name), buf.Bytes(), 0o644))
	}
	out := filepath.Join(tmp, "out.png")
	log, err := runGen(t, []string{"--model", filepath.Join(tmp, "flux1-mini.safetensors"), "--config", filepath.Join(w3, "flux_mini_config.json"),
		"--clip-l", filepath.Join(tmp, "clip_l.safetensors"), "--t5xxl", filepath.Join(tmp, "t5xxl.safetensors"), "--vae", filepath.Join(tmp, "ae.safetensors"),
		"--t5-tokenizer", filepath.Join(w3, "flux-mini", "tokenizer_2", "spiece.model"),
		"-p", "a photograph of an astronaut riding a horse", "--steps", "20", "--sampler", "euler", "--seed", "42",
		"-W", "64", "-H", "64", "-o", out, "--device", "ref"})
	require.NoError(t, err, log)
	d, n := pixelsOffBy(t, out, want)
	assert.LessOrEqualf(t, d, 1, "pixels differ from diffusers by up to %d (%d values)", d, n)
}
