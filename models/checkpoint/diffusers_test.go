package checkpoint

import (
	"bytes"
	"github.com/stretchr/testify/assert"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// copyTree links the golden diffusers folder's files into a temp folder,
// renaming with rename (return "" to leave a file out).
func copyTree(t *testing.T, rename func(rel string) string) string {
	t.Helper()
	src := filepath.Join(golden.Dir(t), "sd15-mini")
	dst := t.TempDir()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel = rename(rel); rel == "" {
			return nil
		}
		os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755)
		abs, _ := filepath.Abs(p)
		return os.Symlink(abs, filepath.Join(dst, rel))
	})
	if err != nil {
		t.Skip("cannot build the folder:", err)
	}
	return dst
}

func TestDiffusersPlainNamesNoScheduler(t *testing.T) {
	dir := copyTree(t, func(rel string) string {
		if strings.HasPrefix(rel, "scheduler") {
			return ""
		}
		return strings.Replace(rel, ".fp16.safetensors", ".safetensors", 1)
	})
	m := load(t, dir, "")
	if len(m.Warnings) != 1 || !strings.Contains(m.Warnings[0], "scheduler_config.json") {
		t.Errorf("warnings %q", m.Warnings)
	}
	if m.Scheduler.ClassName != "PNDMScheduler" || !strings.HasSuffix(m.Files[0], filepath.Join("unet", "diffusion_pytorch_model.safetensors")) {
		t.Errorf("%+v %v", m.Scheduler, m.Files)
	}
}

func TestDiffusersLegacyVAENames(t *testing.T) {
	g := golden.Dir(t)
	dir := copyTree(t, func(rel string) string {
		if strings.HasPrefix(rel, "vae/diffusion") {
			return ""
		}
		return rel
	})
	f, err := safetensors.Open(filepath.Join(g, "sd15-mini/vae/diffusion_pytorch_model.fp16.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var es []safetensors.Entry
	for _, ti := range f.Tensors() {
		d, _ := f.Data(ti.Name)
		name := ti.Name
		for _, r := range [][2]string{{".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}} {
			name = strings.Replace(name, r[0], r[1], 1)
		}
		es = append(es, safetensors.Entry{Name: name, DType: ti.DType, Shape: ti.Shape, Data: d})
	}
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, es, nil); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "vae", "diffusion_pytorch_model.fp16.safetensors"), buf.Bytes(), 0o644)
	m := load(t, dir, "")
	p, ok := m.VAEWeights.Get("decoder.mid_block.attentions.0.to_out.0.weight")
	want, _ := f.Data("decoder.mid_block.attentions.0.to_out.0.weight")
	if !ok || !bytes.Equal(p.Raw, want) || len(m.VAEWeights.(nets.MapWeights)) != 248 {
		t.Errorf("legacy VAE names not mapped")
	}
}

func TestDiffusersBrokenFolder(t *testing.T) {
	dir := copyTree(t, func(rel string) string {
		if rel == "text_encoder/config.json" {
			return ""
		}
		return rel
	})
	if _, err := Load(dir, ""); err == nil || !strings.Contains(err.Error(), filepath.Join("text_encoder", "config.json")) {
		t.Errorf("missing config: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "text_encoder", "config.json"), []byte(`{"hidden_size": "wide"}`), 0o644)
	if _, err := Load(dir, ""); err == nil || !strings.Contains(err.Error(), "hidden_size") || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("bad config: %v", err)
	}
	// A config that disagrees with the weights: one error listing them.
	os.WriteFile(filepath.Join(dir, "text_encoder", "config.json"), []byte(`{"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 3}`), 0o644)
	_, err := Load(dir, "")
	if err == nil || !strings.Contains(err.Error(), `"text_model.encoder.layers.0.mlp.fc1.weight": shape [256 64], expected [128 64]`) {
		t.Errorf("mismatch: %v", err)
	}
}

func TestNotACheckpoint(t *testing.T) {
	g := golden.Dir(t)
	for _, c := range []struct{ path, want string }{
		{filepath.Join(g, "sd15-mini/unet/diffusion_pytorch_model.fp16.safetensors"), "one component of a diffusers folder"},
		{filepath.Join(g, "unet.safetensors"), "no Stable Diffusion tensors"},
	} {
		_, err := Load(c.path, "")
		if assert.Error(t, err, c.path) {
			assert.Contains(t, err.Error(), c.want)
			assert.Contains(t, err.Error(), c.path)
		}
	}
	sdxl := encode(t, []safetensors.Entry{
		{Name: "conditioner.embedders.0.transformer.x", DType: safetensors.F16, Shape: []int{1}, Data: []byte{0, 0}},
		{Name: "model.diffusion_model.input_blocks.0.0.weight", DType: safetensors.F16, Shape: []int{1}, Data: []byte{0, 0}},
	})
	// An SGM-layout file is read as SDXL: what it lacks is named in that layout.
	_, err := LoadBytes("xl.safetensors", sdxl, nil)
	if assert.Error(t, err) {
		assert.Contains(t, err.Error(), "read as SDXL single file")
	}
}

// TestPrefixedDiffusersNames loads one file holding the diffusers folder's
// tensors under unet./vae./text_encoder. prefixes.
func TestPrefixedDiffusersNames(t *testing.T) {
	g := golden.Dir(t)
	folder := load(t, filepath.Join(g, "sd15-mini"), "")
	var es []safetensors.Entry
	for _, c := range []struct {
		prefix string
		w      nets.Weights
	}{{"unet.", folder.UNetWeights}, {"vae.", folder.VAEWeights}, {"text_encoder.", folder.Text("text_encoder").Weights}} {
		for name, p := range c.w.(nets.MapWeights) {
			es = append(es, safetensors.Entry{Name: c.prefix + name, DType: safetensors.F16, Shape: p.Shape, Data: p.Raw})
		}
	}
	cfg, err := os.ReadFile(filepath.Join(g, "sd15_mini_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := LoadBytes("bundled.safetensors", encode(t, es), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, c := range []struct{ a, b nets.Weights }{{m.UNetWeights, folder.UNetWeights}, {m.VAEWeights, folder.VAEWeights}, {m.Text("text_encoder").Weights, folder.Text("text_encoder").Weights}} {
		a, b := c.a.(nets.MapWeights), c.b.(nets.MapWeights)
		if len(a) != len(b) {
			t.Errorf("%d tensors vs %d", len(a), len(b))
		}
		for k, p := range b {
			if !bytes.Equal(a[k].Raw, p.Raw) || !slices.Equal(a[k].Shape, p.Shape) {
				t.Errorf("%s differs", k)
			}
		}
	}
}
