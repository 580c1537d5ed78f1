package main

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
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
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	im, err := png.Decode(fh)
	if err != nil {
		t.Fatal(err)
	}
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
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if !strings.Contains(log, "step 20/20") || !strings.Contains(log, "wrote "+out) {
		t.Errorf("progress log lacks plain step lines or the path:\n%s", log)
	}
	if d, n := pixelsOffBy(t, out, want); d > 1 {
		t.Errorf("pixels differ from diffusers by up to %d (%d values)", d, n)
	}
	text, err := render.ReadPNGTextFile(out)
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := presets.ParseInfotext(text["parameters"])
	if err != nil {
		t.Fatal(err)
	}
	if s.Seed != 42 || s.Steps != 20 || s.CFGScale != 7.5 || s.Width != 64 || s.Prompt != "a photograph of an astronaut riding a horse" ||
		s.NegativePrompt != "low quality, blurry, watermark" || s.RNG != presets.RNGTorchCPU {
		t.Errorf("parameters read back wrong: %+v", s)
	}
	if !strings.Contains(text["parameters"], "Model: sd15-mini.fp16,") {
		t.Errorf("parameters lack the model name: %q", text["parameters"])
	}

	// Writing again refuses to overwrite.
	if _, err := runGen(t, publicE2EArgs(dir, out)); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("second write: err = %v, want a refusal mentioning --force", err)
	}

	// --from regenerates the same image from the PNG's parameters.
	again := filepath.Join(tmp, "again.png")
	log, err = runGen(t, []string{"--from", out, "--model", filepath.Join(dir, "sd15-mini.fp16.safetensors"),
		"--config", filepath.Join(dir, "sd15_mini_config.json"), "--device", "ref", "-o", again})
	if err != nil {
		t.Fatalf("--from: %v\n%s", err, log)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(again)
	if !bytes.Equal(a, b) {
		t.Errorf("--from did not reproduce the image byte for byte")
	}
}

func TestGenerateBatchNames(t *testing.T) {
	dir := golden.Dir(t)
	tmp := t.TempDir()
	args := []string{"--model", filepath.Join(dir, "sd15-mini"), "-p", "a cat", "--steps", "2", "--seed", "7",
		"--batch", "2", "-W", "64", "-H", "64", "--device", "ref", "-o", filepath.Join(tmp, "cat.png")}
	if log, err := runGen(t, args); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	for i, name := range []string{"cat_0.png", "cat_1.png"} {
		text, err := render.ReadPNGTextFile(filepath.Join(tmp, name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text["parameters"], "Batch size: 2") || !strings.Contains(text["parameters"], "Batch pos: "+string(rune('0'+i))) {
			t.Errorf("%s parameters: %q", name, text["parameters"])
		}
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
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want one mentioning %q", c.args, err, c.want)
		}
	}
}
