package main

import (
	"encoding/binary"
	"image"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
	"github.com/stepwise/stepwise/render"
)

// TestGenerateControlNetPNG: `stepwise generate --control-net
// --control-image` reproduces golden-wave3's public ControlNet PNG within 1
// per channel, from the diffusers folder and from the same ControlNet
// written as lllyasviel's original single file; the parameters carry
// sd-webui-controlnet's "ControlNet 0" and the files, and --from makes the
// same image again.
func TestGenerateControlNetPNG(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	sd15 := filepath.Join(golden.Dir(t), "sd15-mini")
	folder := filepath.Join(dir, "sd15-mini-controlnet")
	control := filepath.Join(dir, "inputs", "control_64.png")
	tmp := t.TempDir()
	single := writeOriginalControlNet(t, tmp, "control_sd15_mini.safetensors", nil)
	want := pngPixels(t, filepath.Join(dir, "controlnet_e2e_euler_scale1.0_seed42.png"))
	common := []string{"--model", sd15, "-p", "a photograph of an astronaut riding a horse", "-n", "low quality, blurry, watermark",
		"--steps", "20", "--cfg-scale", "7.5", "--sampler", "euler", "--schedule", "leading", "--seed", "42", "--rng", "torch-cpu",
		"-W", "64", "-H", "64", "--device", "ref", "--control-image", control, "--control-strength", "1"}
	for name, cn := range map[string]string{"folder": folder, "single": single} {
		out := filepath.Join(tmp, name+".png")
		log, err := runGen(t, append(append([]string{}, common...), "--control-net", cn, "-o", out))
		require.NoError(t, err, log)
		assert.NotContains(t, log, "warning")
		assert.Contains(t, log, "controlnet "+filepath.Base(strings.TrimSuffix(cn, ".safetensors")))
		d, n := pixelsOffBy(t, out, want)
		assert.LessOrEqualf(t, d, 1, "%s: pixels differ from diffusers' PNG by up to %d (%d values)", name, d, n)
		t.Logf("controlnet %s: pixels differ from diffusers' PNG by at most %d (%d of %d values)", name, d, n, 64*64*3)
		text, err := render.ReadPNGTextFile(out)
		require.NoError(t, err)
		params := text["parameters"]
		assert.Contains(t, params, `ControlNet 0: "Module: none, Model: `+filepath.Base(strings.TrimSuffix(cn, ".safetensors"))+" [")
		assert.Contains(t, params, "Weight: 1, Resize Mode: Just Resize, Guidance Start: 0, Guidance End: 1, Control Mode: Balanced\"")
		assert.Contains(t, params, "ControlNet model: "+cn+", Control image: "+control)
		again := filepath.Join(tmp, name+"-again.png")
		log, err = runGen(t, []string{"--model", sd15, "--from", out, "--device", "ref", "-o", again})
		require.NoError(t, err, log)
		assert.NotContains(t, log, "warning")
		assert.Equal(t, readPixels(t, out), readPixels(t, again), "%s: --from did not reproduce the image", name)
	}

	// --canny on the golden's control image (already an edge map) with
	// thresholds and a window: written and read back.
	out := filepath.Join(tmp, "canny.png")
	args := append(append([]string{}, common...), "--control-net", folder, "--canny", "--canny-low", "50", "--canny-high", "120",
		"--control-start", "0.1", "--control-end", "0.8", "--control-strength", "0.7", "--steps", "4", "-o", out)
	log, err := runGen(t, args)
	require.NoError(t, err, log)
	assert.Contains(t, log, "canny 50/120: strength 0.7 from 0.1 to 0.8 of the run")
	text, err := render.ReadPNGTextFile(out)
	require.NoError(t, err)
	assert.Contains(t, text["parameters"], `"Module: canny, Model: sd15-mini-controlnet [`)
	assert.Contains(t, text["parameters"], "Weight: 0.7, Resize Mode: Just Resize, Threshold A: 50, Threshold B: 120, Guidance Start: 0.1, Guidance End: 0.8")
	again := filepath.Join(tmp, "canny-again.png")
	log, err = runGen(t, []string{"--model", sd15, "--from", out, "--device", "ref", "-o", again})
	require.NoError(t, err, log)
	assert.Equal(t, readPixels(t, out), readPixels(t, again), "--from did not reproduce the canny image")
}

// writeOriginalControlNet writes golden-wave3's mini ControlNet as an
// original single file (control_model.* keys, from the declarations), with
// edit applied to the entries first.
func writeOriginalControlNet(t *testing.T, dir, name string, edit func([]safetensors.Entry) []safetensors.Entry) string {
	t.Helper()
	c, err := checkpoint.LoadControlNet(filepath.Join(golden.Wave(t, "golden-wave3"), "sd15-mini-controlnet"))
	require.NoError(t, err)
	defer c.Close()
	decls, err := nets.ControlNetDecls(c.Config)
	require.NoError(t, err)
	var entries []safetensors.Entry
	for _, d := range decls {
		p := c.Weights[d.Name]
		dt := safetensors.F32
		if p.DType == gpu.F16 {
			dt = safetensors.F16
		}
		entries = append(entries, safetensors.Entry{Name: "control_model." + d.Orig, DType: dt, Shape: d.OrigShape(), Data: append([]byte(nil), p.Raw...)})
	}
	if edit != nil {
		entries = edit(entries)
	}
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, safetensors.Write(f, entries, nil))
	require.NoError(t, f.Close())
	return path
}

// TestGenerateControlNetBadFiles: broken ControlNet files and control
// images are refused with an error naming the file and the problem, before
// the model loads (a ControlNet for another family: once the model's shape
// is known, before any step), and nothing is written: a truncated file,
// garbage, a pickle, a LoRA, a full checkpoint, missing and mis-shaped
// tensors, NaN weights, a folder without config, a ControlNet for SDXL's
// U-Net, an unreadable control image, and the flags without each other.
func TestGenerateControlNetBadFiles(t *testing.T) {
	w3 := golden.Wave(t, "golden-wave3")
	sd15 := filepath.Join(golden.Dir(t), "sd15-mini")
	sdxl := filepath.Join(golden.Wave(t, "golden-wave2"), "sdxl-mini")
	control := filepath.Join(w3, "inputs", "control_64.png")
	tmp := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(tmp, name)
		require.NoError(t, os.WriteFile(p, data, 0o644))
		return p
	}
	good := writeOriginalControlNet(t, tmp, "good.safetensors", nil)
	data, err := os.ReadFile(good)
	require.NoError(t, err)
	truncated := write("truncated.safetensors", data[:len(data)/2])
	garbage := write("garbage.safetensors", []byte("\xff\xff\xff\xff\xff\xff\xff\x7fnot a header"))
	hugeHeader := make([]byte, 16)
	binary.LittleEndian.PutUint64(hugeHeader, 1<<40)
	huge := write("huge.safetensors", hugeHeader)
	pickle := write("control_v11p_sd15_canny.pth", []byte("PK\x03\x04 a zip"))
	missing := writeOriginalControlNet(t, tmp, "missing.safetensors", func(es []safetensors.Entry) []safetensors.Entry {
		var out []safetensors.Entry
		for _, e := range es {
			if !strings.Contains(e.Name, "zero_convs.11.") && !strings.Contains(e.Name, "middle_block_out") {
				out = append(out, e)
			}
		}
		return out
	})
	misshaped := writeOriginalControlNet(t, tmp, "misshaped.safetensors", func(es []safetensors.Entry) []safetensors.Entry {
		for i, e := range es {
			if e.Name == "control_model.input_hint_block.2.weight" {
				es[i].Shape = []int{e.Shape[0] / 2, e.Shape[1] * 2, e.Shape[2], e.Shape[3]}
			}
		}
		return es
	})
	renamed := writeOriginalControlNet(t, tmp, "renamed.safetensors", func(es []safetensors.Entry) []safetensors.Entry {
		es[len(es)-1].Name = "control_model.middle_block_out.9.weight"
		return es
	})
	nan := writeOriginalControlNet(t, tmp, "nan.safetensors", func(es []safetensors.Entry) []safetensors.Entry {
		for i, e := range es {
			if e.Name == "control_model.zero_convs.3.0.weight" {
				if e.DType == safetensors.F16 {
					binary.LittleEndian.PutUint16(es[i].Data, 0x7e00)
				} else {
					binary.LittleEndian.PutUint32(es[i].Data, math.Float32bits(float32(math.NaN())))
				}
			}
		}
		return es
	})
	lora := filepath.Join(w3, "lora", "sd15-mini-lora.kohya.fp16.safetensors")
	fullCheckpoint := filepath.Join(golden.Dir(t), "sd15-mini.fp16.safetensors")
	noConfig := filepath.Join(tmp, "noconfig")
	require.NoError(t, os.Mkdir(noConfig, 0o755))
	text := write("text.png", []byte("hello"))

	out := filepath.Join(tmp, "out.png")
	base := []string{"--device", "ref", "-p", "x", "--steps", "2", "-W", "64", "-H", "64", "-o", out}
	cases := []struct {
		model string
		args  []string
		want  string
		late  bool // refused once the model is loaded
	}{
		{sd15, []string{"--control-net", truncated, "--control-image", control}, "controlnet: safetensors " + truncated, false},
		{sd15, []string{"--control-net", garbage, "--control-image", control}, garbage, false},
		{sd15, []string{"--control-net", huge, "--control-image", control}, huge, false},
		{sd15, []string{"--control-net", pickle, "--control-image", control}, pickle + ": pickle checkpoints are never loaded", false},
		{sd15, []string{"--control-net", lora, "--control-image", control}, "controlnet " + lora + ": this is a LoRA/adapter file, not a ControlNet", false},
		{sd15, []string{"--control-net", fullCheckpoint, "--control-image", control}, "controlnet " + fullCheckpoint + ": this is a Stable Diffusion checkpoint, not a ControlNet", false},
		{sd15, []string{"--control-net", missing, "--control-image", control}, "missing tensor \"control_model.middle_block_out.0.weight\" (controlnet controlnet_mid_block.weight), expected shape [128 128 1 1]", false},
		{sd15, []string{"--control-net", misshaped, "--control-image", control}, "controlnet " + misshaped + ": tensor \"control_model.input_hint_block.2.weight\" (controlnet controlnet_cond_embedding.blocks.0.weight): shape [4 16 3 3], expected [8 8 3 3]", false},
		{sd15, []string{"--control-net", renamed, "--control-image", control}, "not recognised (misnamed?): control_model.middle_block_out.9.weight", false},
		{sd15, []string{"--control-net", nan, "--control-image", control}, "checkpoint " + nan + ": 1 non-finite weight value(s) (NaN or Inf) in 1 tensor(s)", false},
		{sd15, []string{"--control-net", noConfig, "--control-image", control}, "controlnet " + noConfig, false},
		{sd15, []string{"--control-net", filepath.Join(tmp, "absent"), "--control-image", control}, "no such file or directory", false},
		{sd15, []string{"--control-net", good, "--control-image", text}, "control image " + text + ": not a PNG or JPEG image; nothing written", false},
		{sd15, []string{"--control-net", good}, "control image: a ControlNet needs a control image (--control-image)", false},
		{sd15, []string{"--control-image", control}, "control net: a control image needs a ControlNet to read it (--control-net)", false},
		{sd15, []string{"--control-net", good, "--control-image", control, "--control-start", "0.9", "--control-end", "0.2"}, "control start 0.9 and end 0.2 must satisfy", false},
		{sd15, []string{"--control-net", good, "--control-image", control, "--control-strength", "NaN"}, "control strength: NaN is outside", false},
		{sdxl, []string{"--control-net", good, "--control-image", control}, "controlnet " + good + ": made for another model, not for this SDXL model: it attends to 64-wide text context, the U-Net to 96", true},
	}
	for _, c := range cases {
		log, err := runGen(t, append(append([]string{"--model", c.model}, base...), c.args...))
		require.Error(t, err, c.want)
		assert.Contains(t, err.Error(), c.want)
		if !c.late {
			assert.NotContains(t, log, "model ", "the model loaded before %v was refused", c.args)
		}
		assert.NotContains(t, log, "step 1/", "%v: a step ran", c.args)
		_, serr := os.Stat(out)
		assert.True(t, os.IsNotExist(serr), "%v: an output was written", c.args)
	}
}

// TestGenerateControlNetFromA1111: --from on PNGs whose ControlNet cannot
// be found warns naming it and generates without it: an A1111 PNG (the
// model by name and hash only), ours with the control image gone, and an
// A1111 unit whose preprocessor Stepwise does not have; a ControlNet on
// the command line with the PNG's unit settings works.
func TestGenerateControlNetFromA1111(t *testing.T) {
	w3 := golden.Wave(t, "golden-wave3")
	sd15 := filepath.Join(golden.Dir(t), "sd15-mini")
	folder := filepath.Join(w3, "sd15-mini-controlnet")
	control := filepath.Join(w3, "inputs", "control_64.png")
	tmp := t.TempDir()
	params := func(extra string) string {
		return "red heart\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, RNG: CPU, " + extra
	}
	a1111 := `ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 0.6, Resize Mode: Crop and Resize, Low Vram: False, Processor Res: 512, Threshold A: 80, Threshold B: 160, Guidance Start: 0.1, Guidance End: 0.9, Pixel Perfect: False, Control Mode: Balanced"`
	cases := []struct {
		name, extra, want string
	}{
		{"a1111", a1111, "its ControlNet control_v11p_sd15_canny [d14c016b] is missing; generating without it (pass --control-net PATH --control-image PATH)"},
		{"no-image", `ControlNet 0: "Module: none, Model: sd15-mini-controlnet [00000000], Weight: 1", ControlNet model: ` + folder + ", Control image: gone.png",
			"its control image gone.png is missing; generating without the ControlNet " + folder + " (pass --control-image PATH)"},
		{"depth", `ControlNet 0: "Module: depth_midas, Model: control_v11f1p_sd15_depth [cfd03158], Weight: 1"`,
			"it was made with a ControlNet whose preprocessor Stepwise does not have (Module: depth_midas"},
	}
	for _, c := range cases {
		from := filepath.Join(tmp, c.name+".png")
		require.NoError(t, render.WritePNG(from, image.NewRGBA(image.Rect(0, 0, 8, 8)), map[string]string{"parameters": params(c.extra)}, true))
		out := filepath.Join(tmp, c.name+"-out.png")
		log, err := runGen(t, []string{"--model", sd15, "--device", "ref", "--from", from, "-o", out})
		require.NoError(t, err, log)
		assert.Contains(t, log, "warning: --from "+from+": "+c.want, c.name)
		assert.NotContains(t, log, "\ncontrolnet ", c.name)
	}
	// The A1111 PNG with the files given: its weight, thresholds and window.
	from := filepath.Join(tmp, "a1111.png")
	out := filepath.Join(tmp, "a1111-flags.png")
	log, err := runGen(t, []string{"--model", sd15, "--device", "ref", "--from", from, "--control-net", folder, "--control-image", control, "-o", out})
	require.NoError(t, err, log)
	assert.NotContains(t, log, "warning")
	assert.Contains(t, log, "canny 80/160: strength 0.6 from 0.1 to 0.9 of the run")
}
