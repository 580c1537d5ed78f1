package checkpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

func load(t *testing.T, path, config string) *Model {
	t.Helper()
	m, err := Load(path, config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// fileShapes lists a safetensors file's tensors.
func fileShapes(t *testing.T, path string) map[string][]int {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]int{}
	for _, ti := range f.Tensors() {
		out[ti.Name] = ti.Shape
	}
	return out
}

func compareShapes(t *testing.T, what string, got, want map[string][]int) {
	t.Helper()
	for k, s := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s: missing %s", what, k)
		} else if !slices.Equal(g, s) {
			t.Errorf("%s: %s has shape %v, want %v", what, k, g, s)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected %s", what, k)
		}
	}
}

// TestExpectedMatchesDiffusers checks the computed layouts against the
// tensors diffusers itself wrote for sd15-mini.
func TestExpectedMatchesDiffusers(t *testing.T) {
	g := golden.Dir(t)
	c, err := readConfigFile(filepath.Join(g, "sd15_mini_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	compareShapes(t, "unet", ExpectedUNet(c.UNet), fileShapes(t, filepath.Join(g, "sd15-mini/unet/diffusion_pytorch_model.fp16.safetensors")))
	compareShapes(t, "vae", ExpectedVAE(c.VAE), fileShapes(t, filepath.Join(g, "sd15-mini/vae/diffusion_pytorch_model.fp16.safetensors")))
	compareShapes(t, "text", ExpectedText(c.text1()), fileShapes(t, filepath.Join(g, "sd15-mini/text_encoder/model.fp16.safetensors")))
}

// TestExpectedSD15 checks the layouts of the full-size SD 1.5 defaults
// against the key listing of a real SD 1.5 single file.
func TestExpectedSD15(t *testing.T) {
	g := golden.Dir(t)
	keys := readKeyList(t, filepath.Join(g, "sd15_keys.txt"))
	m := &Model{Spec: FamilyNamed("SD 1.x"), Texts: []TextModel{{Spec: FamilyNamed("SD 1.x").Texts[0]}}}
	want, err := SingleFileKeys(m)
	require.NoError(t, err)
	compareShapes(t, "sd15", keys, want)
	assert.Len(t, keys, 1130)
}

func readKeyList(t *testing.T, path string) map[string][]int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]int{}
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		var shape []int
		for _, s := range strings.Split(strings.Trim(f[len(f)-1], "[]"), ",") {
			if s = strings.TrimSpace(s); s != "" {
				var d int
				for _, r := range s {
					d = d*10 + int(r-'0')
				}
				shape = append(shape, d)
			}
		}
		out[f[0]] = shape
	}
	return out
}

// TestSingleFileEqualsDiffusers converts the LDM single file and compares
// names, shapes, dtypes and bytes with the diffusers folder.
func TestSingleFileEqualsDiffusers(t *testing.T) {
	g := golden.Dir(t)
	folder := load(t, filepath.Join(g, "sd15-mini"), "")
	for _, cfg := range []string{filepath.Join(g, "sd15_mini_config.json"), ""} {
		single := load(t, filepath.Join(g, "sd15-mini.fp16.safetensors"), cfg)
		if single.Layout != SingleFile || folder.Layout != Diffusers {
			t.Fatalf("layouts %q %q", single.Layout, folder.Layout)
		}
		pairs := []struct {
			name string
			a, b nets.Weights
		}{{"unet", single.UNetWeights, folder.UNetWeights}, {"vae", single.VAEWeights, folder.VAEWeights}, {"text", single.Text("text_encoder").Weights, folder.Text("text_encoder").Weights}}
		total := 0
		for _, p := range pairs {
			a, b := p.a.(nets.MapWeights), p.b.(nets.MapWeights)
			if len(a) != len(b) {
				t.Errorf("%s (config %q): %d tensors vs %d in the folder", p.name, cfg, len(a), len(b))
			}
			for k, pb := range b {
				pa, ok := a[k]
				if !ok {
					t.Errorf("%s: %s missing from the single file", p.name, k)
					continue
				}
				if pa.DType != gpu.F16 || pa.DType != pb.DType || !slices.Equal(pa.Shape, pb.Shape) || !bytes.Equal(pa.Raw, pb.Raw) {
					t.Errorf("%s: %s differs: %v %v vs %v %v", p.name, k, pa.DType, pa.Shape, pb.DType, pb.Shape)
				}
			}
			total += len(b)
		}
		if total != 986 {
			t.Errorf("%d tensors, want 986", total)
		}
		if single.Family != "SD 1.x" {
			t.Errorf("family %q (%s)", single.Family, single.FamilyWhy)
		}
		if len(single.Warnings) != 0 {
			t.Errorf("warnings %v", single.Warnings)
		}
	}
	if folder.UNet.CrossAttentionDim != 64 || folder.VAE.NormNumGroups != 8 || folder.Text("text_encoder").Config.NumAttentionHeads != 4 ||
		folder.Scheduler.ClassName != "PNDMScheduler" || folder.Scheduler.StepsOffset != 1 || !folder.Scheduler.SkipPrkSteps {
		t.Errorf("folder configs: %+v %+v %+v %+v", folder.UNet, folder.VAE, folder.Text("text_encoder").Config, folder.Scheduler)
	}
	if folder.Tensors != 986 || len(folder.Files) != 3 {
		t.Errorf("folder: %d tensors in %v", folder.Tensors, folder.Files)
	}
}

func TestInferredConfig(t *testing.T) {
	g := golden.Dir(t)
	m := load(t, filepath.Join(g, "sd15-mini.fp16.safetensors"), "")
	u := m.UNet
	if !slices.Equal(u.BlockOutChannels, []int{32, 64, 128, 128}) || u.LayersPerBlock != 2 || u.CrossAttentionDim != 64 ||
		u.DownBlockTypes[2] != "CrossAttnDownBlock2D" || u.DownBlockTypes[3] != "DownBlock2D" || u.UpBlockTypes[0] != "UpBlock2D" {
		t.Errorf("unet inferred %+v", u)
	}
	if !slices.Equal(m.VAE.BlockOutChannels, []int{16, 32, 64, 64}) || m.VAE.LatentChannels != 4 {
		t.Errorf("vae inferred %+v", m.VAE)
	}
	if m.Text("text_encoder").Config.HiddenSize != 64 || m.Text("text_encoder").Config.NumHiddenLayers != 3 || m.Text("text_encoder").Config.IntermediateSize != 256 {
		t.Errorf("text inferred %+v", m.Text("text_encoder").Config)
	}
	if !strings.Contains(m.FamilyWhy, "inferred") || !strings.Contains(m.ConfigSource, "inferred") {
		t.Errorf("why %q, source %q", m.FamilyWhy, m.ConfigSource)
	}
}

func TestStats(t *testing.T) {
	g := golden.Dir(t)
	m := load(t, filepath.Join(g, "sd15-mini"), "")
	var n int
	for _, s := range m.Stats() {
		n += s.Tensors
		if s.DTypes[gpu.F16] != s.Tensors || s.Bytes != 2*s.Params {
			t.Errorf("%+v", s)
		}
	}
	if n != 986 {
		t.Errorf("%d tensors", n)
	}
	if !errors.Is(m.Close(), nil) {
		t.Error("close")
	}
}

// TestSideConfigVariantName: "m.fp16.safetensors" finds "m.fp16.json" first,
// else "m.json" (the bundled model's and train export's naming); without it
// the bundled model's latent side (8 for the 32x32 model, 16 for the 64x64
// one) was inferred as SD 1.5's 64 (256x256).
func TestSideConfigVariantName(t *testing.T) {
	dir := t.TempDir()
	weights, err := os.ReadFile(filepath.Join("..", "bundled", "stepwise-emoji.fp16.safetensors"))
	require.NoError(t, err)
	cfg, err := os.ReadFile(filepath.Join("..", "bundled", "stepwise-emoji.json"))
	require.NoError(t, err)
	file := filepath.Join(dir, "emoji.fp16.safetensors")
	require.NoError(t, os.WriteFile(file, weights, 0o644))

	assert.Equal(t, "", SideConfig(file))
	inferred, err := Load(file, "")
	require.NoError(t, err)
	defer inferred.Close()
	assert.Contains(t, inferred.ConfigSource, "inferred")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "emoji.json"), cfg, 0o644))
	assert.Equal(t, filepath.Join(dir, "emoji.json"), SideConfig(file))
	m, err := Load(file, "")
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, filepath.Join(dir, "emoji.json"), m.ConfigSource)
	var side struct {
		UNet struct {
			SampleSize int `json:"sample_size"`
		} `json:"unet"`
	}
	require.NoError(t, json.Unmarshal(cfg, &side))
	require.NotZero(t, side.UNet.SampleSize)
	assert.Equal(t, side.UNet.SampleSize, m.UNet.SampleSize, "the bundled model's latent side, from its .json")

	require.NoError(t, os.Mkdir(filepath.Join(dir, "emoji.fp16.json"), 0o755)) // not a file: skipped
	assert.Equal(t, filepath.Join(dir, "emoji.json"), SideConfig(file))
	require.NoError(t, os.Remove(filepath.Join(dir, "emoji.fp16.json")))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "emoji.fp16.json"), cfg, 0o644))
	assert.Equal(t, filepath.Join(dir, "emoji.fp16.json"), SideConfig(file))
	assert.Equal(t, "", SideConfig(filepath.Join(dir, ".fp16.safetensors")))
}
