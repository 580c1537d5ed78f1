package main

import (
	"bytes"
	"encoding/json"
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
		require.NoError(t, writeInfo(&out, c.path, c.config, false, false))
		for _, w := range c.want {
			assert.Contains(t, out.String(), w, "%s (config %q): output", c.path, c.config)
		}
	}
}

func TestInfoJSON(t *testing.T) {
	g := golden.Dir(t)
	var out bytes.Buffer
	require.NoError(t, writeInfo(&out, filepath.Join(g, "sd15-mini"), "", false, true))
	var got checkpointInfo
	require.NoError(t, json.Unmarshal(out.Bytes(), &got), out.String())
	params := map[string]int64{}
	for _, c := range got.Components {
		params[c.Name] = c.Params
	}
	assert.Equal(t, int64(miniUNetParams), params["unet"], "params %v", params)
	assert.Equal(t, int64(miniVAEParams), params["vae"], "params %v", params)
	assert.Equal(t, int64(miniTextParams), params["text_encoder"], "params %v", params)
	assert.Equal(t, int64(miniUNetParams+miniVAEParams+miniTextParams), got.TotalParams, "total params")
	assert.Equal(t, "diffusers", got.Layout, "%+v", got)
	assert.Equal(t, 986, got.Tensors, "%+v", got)
	assert.Equal(t, 986, got.DTypes["F16"], "%+v", got)
	assert.Equal(t, "SD 1.x", got.Family, "%+v", got)
	assert.Equal(t, 64, got.UNet.CrossAttentionDim, "%+v", got)
	assert.Equal(t, 8, got.VAE.NormNumGroups, "%+v", got)
	assert.Equal(t, "PNDMScheduler", got.Scheduler.ClassName, "%+v", got)
}

func TestInfoErrors(t *testing.T) {
	g := golden.Dir(t)
	data, err := os.ReadFile(filepath.Join(g, "sd15-mini.fp16.safetensors"))
	require.NoError(t, err)
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
		assert.ErrorContains(t, err, c.path, c.path)
		assert.ErrorContains(t, err, c.want, c.path)
		var fe *safetensors.FormatError
		if c.want != "no such file" {
			assert.ErrorAs(t, err, &fe, "%s: not a FormatError", c.path)
		}
	}
	// Through the command: exit status 1 on a bad file, a usage error
	// with two paths; flags may follow the path.
	assert.Equal(t, 1, run([]string{"info", cut}), "exit status for a truncated file")
	assert.ErrorIs(t, runInfo([]string{cut, cut}), errUsage, "two paths")
	assert.ErrorContains(t, runInfo([]string{cut, "--config", filepath.Join(g, "sd15_mini_config.json"), "--json"}), "truncated", "flags after path")
}

// TestInfoBundled describes the model embedded in the binary when no path
// is given.
func TestInfoBundled(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, writeInfo(&out, "", "", false, false))
	for _, want := range []string{"bundled:stepwise-emoji", "SD 1.x", "F16"} {
		assert.Contains(t, out.String(), want, "info of the bundled model")
	}
}

// TestInfoCheck: --check reads every weight; a copy of sd15-mini with one
// F16 NaN in a VAE tensor is reported with the tensor's name.
func TestInfoCheck(t *testing.T) {
	g := golden.Dir(t)
	src := filepath.Join(g, "sd15-mini.fp16.safetensors")
	config := filepath.Join(g, "sd15_mini_config.json")
	var out bytes.Buffer
	require.NoError(t, writeInfo(&out, src, config, true, false))
	assert.Contains(t, out.String(), "weights       all finite", "clean file: output lacks the weights check")
	f, err := safetensors.Open(src)
	require.NoError(t, err)
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
	require.NoError(t, safetensors.Write(&buf, es, nil))
	bad := filepath.Join(t.TempDir(), "nan.safetensors")
	require.NoError(t, os.WriteFile(bad, buf.Bytes(), 0o644))
	out.Reset()
	require.NoError(t, writeInfo(&out, bad, config, true, false))
	assert.Contains(t, out.String(), poisoned, "NaN in %s not reported", poisoned)
	assert.Contains(t, out.String(), "NaN or Inf", "NaN in %s not reported", poisoned)
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
