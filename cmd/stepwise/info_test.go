package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/safetensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The sd15-mini parameter counts, summed from the diffusers files' shapes.
const (
	miniUNetParams = 8605284
	miniVAEParams  = 1321207
	miniTextParams = 3317120
)

func TestInfoText(t *testing.T) {
	g := golden.Dir(t)
	single := filepath.Join(g, "sd15-mini.fp16.safetensors")
	for _, c := range []struct {
		path, config string
		want         []string
	}{
		{single, "", []string{"single-file: 1 file(s)", "986 tensors", "F16 x986", "SD 1.x", "inferred from tensor shapes",
			"8.61 M in 686 tensors", "1.32 M in 248 tensors", "3.32 M in 52 tensors", "(13243611)", "widths [32 64 128 128]", "context 64"}},
		{single, filepath.Join(g, "sd15_mini_config.json"), []string{"SD 1.x", "sd15_mini_config.json", "groups 8", "4 heads", "sample 8",
			"PNDMScheduler, scaled_linear 0.00085..0.012 over 1000 steps, epsilon, leading spacing, steps_offset 1", "warnings      none"}},
		{filepath.Join(g, "sd15-mini"), "", []string{"diffusers: 3 file(s)", "986 tensors", "F16 x986", "(13243611)", "widths [16 32 64 64]"}},
	} {
		var out bytes.Buffer
		if err := writeInfo(&out, c.path, c.config, false, false); err != nil {
			t.Fatal(err)
		}
		for _, w := range c.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s (config %q): output lacks %q:\n%s", c.path, c.config, w, out.String())
			}
		}
	}
}

func TestInfoJSON(t *testing.T) {
	g := golden.Dir(t)
	var out bytes.Buffer
	if err := writeInfo(&out, filepath.Join(g, "sd15-mini"), "", false, true); err != nil {
		t.Fatal(err)
	}
	var got checkpointInfo
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v:\n%s", err, out.String())
	}
	params := map[string]int64{}
	for _, c := range got.Components {
		params[c.Name] = c.Params
	}
	if params["unet"] != miniUNetParams || params["vae"] != miniVAEParams || params["text_encoder"] != miniTextParams ||
		got.TotalParams != miniUNetParams+miniVAEParams+miniTextParams {
		t.Errorf("params %v total %d", params, got.TotalParams)
	}
	if got.Layout != "diffusers" || got.Tensors != 986 || got.DTypes["F16"] != 986 || got.Family != "SD 1.x" ||
		got.UNet.CrossAttentionDim != 64 || got.VAE.NormNumGroups != 8 || got.Scheduler.ClassName != "PNDMScheduler" {
		t.Errorf("%+v", got)
	}
}

func TestInfoErrors(t *testing.T) {
	g := golden.Dir(t)
	data, err := os.ReadFile(filepath.Join(g, "sd15-mini.fp16.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cut := filepath.Join(dir, "cut.safetensors")
	os.WriteFile(cut, data[:len(data)-1000], 0o644)
	bad := append([]byte(nil), data...)
	copy(bad[8:], `[`) // the header no longer starts with an object
	corrupt := filepath.Join(dir, "corrupt.safetensors")
	os.WriteFile(corrupt, bad, 0o644)
	for _, c := range []struct{ path, want string }{
		{cut, "truncated"},
		{corrupt, "want the header"},
		{filepath.Join(dir, "absent.safetensors"), "no such file"},
	} {
		var out bytes.Buffer
		err := writeInfo(&out, c.path, "", false, false)
		if err == nil || !strings.Contains(err.Error(), c.path) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.path, err)
		}
		var fe *safetensors.FormatError
		if c.want != "no such file" && !errors.As(err, &fe) {
			t.Errorf("%s: not a FormatError: %v", c.path, err)
		}
	}
	// Through the command: exit status 1 on a bad file, a usage error
	// with two paths; flags may follow the path.
	if code := run([]string{"info", cut}); code != 1 {
		t.Errorf("exit %d for a truncated file", code)
	}
	if err := runInfo([]string{cut, cut}); !errors.Is(err, errUsage) {
		t.Errorf("two paths: %v", err)
	}
	if err := runInfo([]string{cut, "--config", filepath.Join(g, "sd15_mini_config.json"), "--json"}); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("flags after path: %v", err)
	}
}

// TestInfoBundled describes the model embedded in the binary when no path
// is given.
func TestInfoBundled(t *testing.T) {
	var out bytes.Buffer
	if err := writeInfo(&out, "", "", false, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bundled:stepwise-emoji", "SD 1.x", "F16"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("info of the bundled model lacks %q:\n%s", want, out.String())
		}
	}
}

// TestInfoCheck: --check reads every weight; a copy of sd15-mini with one
// F16 NaN in a VAE tensor is reported with the tensor's name.
func TestInfoCheck(t *testing.T) {
	g := golden.Dir(t)
	src := filepath.Join(g, "sd15-mini.fp16.safetensors")
	config := filepath.Join(g, "sd15_mini_config.json")
	var out bytes.Buffer
	if err := writeInfo(&out, src, config, true, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "weights       all finite") {
		t.Errorf("clean file: output lacks the weights check:\n%s", out.String())
	}
	f, err := safetensors.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var es []safetensors.Entry
	poisoned := ""
	for _, ti := range f.Tensors() {
		d, _ := f.Data(ti.Name)
		d = append([]byte(nil), d...)
		if poisoned == "" && strings.HasPrefix(ti.Name, "first_stage_model.decoder.") && ti.DType == safetensors.F16 {
			poisoned = ti.Name
			d[0], d[1] = 0x00, 0x7e // F16 NaN
		}
		es = append(es, safetensors.Entry{Name: ti.Name, DType: ti.DType, Shape: ti.Shape, Data: d})
	}
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, es, nil); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "nan.safetensors")
	if err := os.WriteFile(bad, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := writeInfo(&out, bad, config, true, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), poisoned) || !strings.Contains(out.String(), "NaN or Inf") {
		t.Errorf("NaN in %s not reported:\n%s", poisoned, out.String())
	}
}

// TestInfoDeepIF: `info` on a DeepFloyd IF folder says what it is and how
// to use it (stage I with --model, stage II with --upscaler) instead of
// naming the LDM part it lacks.
func TestInfoDeepIF(t *testing.T) {
	w4 := golden.Wave(t, "golden-wave4")
	for _, c := range []struct{ dir, want string }{
		{filepath.Join(w4, "if-mini"), "(IFPipeline): `stepwise info` describes latent-diffusion checkpoints; generate with `stepwise generate --model "},
		{filepath.Join(w4, "if-mini-sr"), "(IFSuperResolutionPipeline): `stepwise info` describes latent-diffusion checkpoints; it is a stage II upscaler: give it as `--upscaler "},
	} {
		var out bytes.Buffer
		err := writeInfo(&out, c.dir, "", false, false)
		require.Error(t, err, c.dir)
		assert.Contains(t, err.Error(), c.dir+" is a DeepFloyd IF pipeline folder")
		assert.Contains(t, err.Error(), c.want)
		assert.NotContains(t, err.Error(), "vae/config.json")
	}
}
