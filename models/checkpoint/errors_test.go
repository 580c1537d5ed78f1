package checkpoint

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/safetensors"
)

// miniEntries returns the golden single file's tensors (data copied) and
// the config bundle.
func miniEntries(t *testing.T) ([]safetensors.Entry, []byte) {
	t.Helper()
	g := golden.Dir(t)
	f, err := safetensors.Open(filepath.Join(g, "sd15-mini.fp16.safetensors"))
	require.NoError(t, err)
	defer f.Close()
	var out []safetensors.Entry
	for _, ti := range f.Tensors() {
		d, _ := f.Data(ti.Name)
		out = append(out, safetensors.Entry{Name: ti.Name, DType: ti.DType, Shape: ti.Shape, Data: append([]byte(nil), d...)})
	}
	cfg, err := os.ReadFile(filepath.Join(g, "sd15_mini_config.json"))
	require.NoError(t, err)
	return out, cfg
}

func encode(t *testing.T, es []safetensors.Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, safetensors.Write(&buf, es, nil))
	return buf.Bytes()
}

func edit(es []safetensors.Entry, fn func(e *safetensors.Entry) bool) []safetensors.Entry {
	var out []safetensors.Entry
	for _, e := range es {
		if fn(&e) {
			out = append(out, e)
		}
	}
	return out
}

func TestMissingAndMisshaped(t *testing.T) {
	es, cfg := miniEntries(t)
	const gone = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
	const bent = "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight"
	const badType = "cond_stage_model.transformer.text_model.final_layer_norm.bias"
	broken := edit(es, func(e *safetensors.Entry) bool {
		switch e.Name {
		case gone:
			return false
		case bent:
			e.Shape = []int{16, 32} // really [16,32,1,1]
		case badType:
			e.DType = safetensors.I16 // same size, unusable type
		}
		return true
	})
	_, err := LoadBytes("broken.safetensors", encode(t, broken), cfg)
	var le *LoadError
	require.ErrorAs(t, err, &le, "want *LoadError, got %v", err)
	require.Len(t, le.Problems, 3, "want 3 problems, got %q", le.Problems)
	msg := err.Error()
	for _, want := range []string{
		`missing tensor "` + gone + `" (unet down_blocks.0.resnets.0.conv1.weight), expected shape [32 32 3 3]`,
		`tensor "` + bent + `" (vae decoder.up_blocks.3.resnets.0.conv_shortcut.weight): shape [16 32], expected [16 32 1 1]`,
		`tensor "` + badType + `" (text_encoder text_model.final_layer_norm.bias): dtype I16 is not supported`,
		"broken.safetensors",
	} {
		assert.Contains(t, msg, want, "error lacks %q:\n%s", want, msg)
	}
}

func TestWrongConfig(t *testing.T) {
	es, _ := miniEntries(t)
	// SD 1.5's full-size config against the mini weights: every tensor is
	// mis-shaped; the error lists them in one go.
	_, err := LoadBytes("mini.safetensors", encode(t, es), []byte(`{}`))
	var le *LoadError
	require.ErrorAs(t, err, &le, "want hundreds of problems, got %v", err)
	require.GreaterOrEqual(t, len(le.Problems), 900, "want hundreds of problems, got %v", err)
	assert.Contains(t, err.Error(), "... and ", "error not summarised:\n%s", err)
	assert.LessOrEqual(t, strings.Count(err.Error(), "\n"), 30, "error not summarised:\n%s", err)
}

func TestExtrasAndOldTextPrefix(t *testing.T) {
	es, cfg := miniEntries(t)
	const textModel = "cond_stage_model.transformer.text_model."
	es = edit(es, func(e *safetensors.Entry) bool {
		if strings.HasPrefix(e.Name, textModel) {
			e.Name = "cond_stage_model.transformer." + e.Name[len(textModel):]
		}
		if e.Name == "model.diffusion_model.out.0.weight" {
			e.DType = safetensors.BF16 // accepted as is
		}
		return true
	})
	for _, name := range []string{"model_ema.decay", "alphas_cumprod", "posterior_mean_coef1", "betas", "logvar",
		"cond_stage_model.transformer.text_model.embeddings.position_ids", "lora_unet_foo.alpha", "model.diffusion_model.extra.weight"} {
		es = append(es, safetensors.Entry{Name: name, DType: safetensors.I64, Shape: []int{1}, Data: make([]byte, 8)})
	}
	m, err := LoadBytes("extras.safetensors", encode(t, es), cfg)
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, 6, m.Ignored, "ignored %d, warnings %q", m.Ignored, m.Warnings)
	require.Len(t, m.Warnings, 1, "ignored %d, warnings %q", m.Ignored, m.Warnings)
	assert.Contains(t, m.Warnings[0], "2 unknown", "ignored %d, warnings %q", m.Ignored, m.Warnings)
	assert.Contains(t, m.Warnings[0], "lora_unet_foo.alpha", "ignored %d, warnings %q", m.Ignored, m.Warnings)
	assert.Contains(t, m.Warnings[0], "model.diffusion_model.extra.weight", "ignored %d, warnings %q", m.Ignored, m.Warnings)
	p, ok := m.Text("text_encoder").Weights.Get("text_model.encoder.layers.2.mlp.fc2.weight")
	assert.True(t, ok, "old-style text key not converted: %+v", p.Shape)
	assert.Equal(t, []int{64, 256}, p.Shape, "old-style text key not converted: %+v", p.Shape)
	p, _ = m.UNetWeights.Get("conv_norm_out.weight")
	assert.Equal(t, gpu.BF16, p.DType, "BF16 tensor became %v", p.DType)
	assert.Equal(t, 986+8, m.Tensors, "Tensors %d", m.Tensors)
}

func TestPickleRefused(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"model.ckpt":        []byte("PK\x03\x04anything"),
		"model.pt":          {0x80, 0x02},
		"disguised.bin":     []byte("x"),
		"zip.safetensors":   []byte("PK\x03\x04 torch zip"),
		"proto.safetensors": {0x80, 0x04, 0x95, 0},
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		_, err := Load(p, "")
		assert.ErrorIs(t, err, ErrPickle, "%s: %v", name, err)
		assert.ErrorContains(t, err, p, "%s: %v", name, err)
		assert.ErrorContains(t, err, "safetensors", "%s: %v", name, err)
	}
	// A diffusers folder with only pickle weights.
	unet := filepath.Join(dir, "pipe", "unet")
	os.MkdirAll(unet, 0o755)
	_, err := weightFile(unet, "diffusion_pytorch_model")
	assert.ErrorContains(t, err, "no diffusion_pytorch_model", "empty folder: %v", err)
	os.WriteFile(filepath.Join(unet, "diffusion_pytorch_model.bin"), []byte("PK"), 0o644)
	_, err = weightFile(unet, "diffusion_pytorch_model")
	assert.ErrorIs(t, err, ErrPickle, "pickle-only folder: %v", err)
}

func TestTruncatedFile(t *testing.T) {
	g := golden.Dir(t)
	data, err := os.ReadFile(filepath.Join(g, "sd15-mini.fp16.safetensors"))
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "cut.safetensors")
	os.WriteFile(p, data[:len(data)/2], 0o644)
	_, err = Load(p, filepath.Join(g, "sd15_mini_config.json"))
	var fe *safetensors.FormatError
	if assert.ErrorAs(t, err, &fe, "truncated file: %v", err) {
		assert.Equal(t, p, fe.Path, "truncated file: %v", err)
	}
	assert.ErrorContains(t, err, "truncated", "truncated file: %v", err)
}

// linkMini puts the golden single file in a temp dir under name and
// returns its path.
func linkMini(t *testing.T, name string) string {
	t.Helper()
	g := golden.Dir(t)
	p := filepath.Join(t.TempDir(), name)
	abs, _ := filepath.Abs(filepath.Join(g, "sd15-mini.fp16.safetensors"))
	if err := os.Symlink(abs, p); err != nil {
		t.Skip("symlinks unavailable:", err)
	}
	return p
}

func TestSideFiles(t *testing.T) {
	g := golden.Dir(t)
	p := linkMini(t, "mini.safetensors")
	cfg, _ := os.ReadFile(filepath.Join(g, "sd15_mini_config.json"))
	side := strings.TrimSuffix(p, ".safetensors") + ".json"
	os.WriteFile(side, cfg, 0o644)
	m := load(t, p, "")
	assert.Equal(t, side, m.ConfigSource, "side .json not used: %q %+v", m.ConfigSource, m.VAE)
	assert.Equal(t, 8, m.VAE.NormNumGroups, "side .json not used: %q %+v", m.ConfigSource, m.VAE)
	assert.Equal(t, 4, m.Text("text_encoder").Config.NumAttentionHeads, "side .json not used: %q %+v", m.ConfigSource, m.VAE)
	os.Remove(side)
	yside := strings.TrimSuffix(p, ".safetensors") + ".yaml"
	os.WriteFile(yside, []byte(miniYAML), 0o644)
	m = load(t, p, "")
	assert.True(t, strings.HasPrefix(m.ConfigSource, yside), "side .yaml not used: %q %+v", m.ConfigSource, m.UNet)
	assert.Equal(t, 64, m.Text("text_encoder").Config.HiddenSize, "side .yaml not used: %q %+v", m.ConfigSource, m.UNet)
	assert.Equal(t, 16, m.VAE.NormNumGroups, "side .yaml not used: %q %+v", m.ConfigSource, m.UNet)
	assert.Equal(t, 64, m.UNet.CrossAttentionDim, "side .yaml not used: %q %+v", m.ConfigSource, m.UNet)
	assert.Equal(t, "SD 1.x", m.Family, "side .yaml not used: %q %+v", m.ConfigSource, m.UNet)
	// A bad explicit config names its file.
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"unet": {"layers_per_block": "two"}}`), 0o644)
	_, err := Load(p, bad)
	var ce *ConfigError
	if assert.ErrorAs(t, err, &ce, "bad config: %v", err) {
		assert.Equal(t, bad, ce.Path, "bad config: %v", err)
	}
	assert.ErrorContains(t, err, "layers_per_block", "bad config: %v", err)
}

// miniYAML describes sd15-mini in the original LDM config format (the VAE's
// 8 groups are not expressible there: the loader picks the largest power of
// two up to 32 that divides the widths, 16).
const miniYAML = `
model:
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    timesteps: 1000
    scale_factor: 0.18215
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: 32
        in_channels: 4
        out_channels: 4
        model_channels: 32
        attention_resolutions: [ 4, 2, 1 ]
        num_res_blocks: 2
        channel_mult: [ 1, 2, 4, 4 ]
        num_heads: 8
        transformer_depth: 1
        context_dim: 64
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        ddconfig:
          double_z: true
          z_channels: 4
          resolution: 256
          in_channels: 3
          out_ch: 3
          ch: 16
          ch_mult: [1, 2, 4, 4]
          num_res_blocks: 2
          attn_resolutions: []
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
`

// v2YAML is the shape-relevant part of Stability's v2-inference-v.yaml.
const v2YAML = `
model:
  base_learning_rate: 1.0e-4
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    parameterization: "v"
    linear_start: 0.00085
    linear_end: 0.0120
    timesteps: 1000
    scale_factor: 0.18215
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        use_checkpoint: True
        image_size: 32 # unused
        in_channels: 4
        out_channels: 4
        model_channels: 320
        attention_resolutions: [ 4, 2, 1 ]
        num_res_blocks: 2
        channel_mult: [ 1, 2, 4, 4 ]
        num_head_channels: 64 # need to fix for flash-attn
        use_spatial_transformer: True
        use_linear_in_transformer: True
        transformer_depth: 1
        context_dim: 1024
        legacy: False
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        ddconfig:
          double_z: true
          z_channels: 4
          resolution: 256
          in_channels: 3
          out_ch: 3
          ch: 128
          ch_mult: [1, 2, 4, 4]
          num_res_blocks: 2
          attn_resolutions: []
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder
      params:
        freeze: True
        layer: "penultimate"
`

func TestLDMYAML(t *testing.T) {
	c, err := parseLDMYAML("v2.yaml", []byte(v2YAML))
	require.NoError(t, err)
	u := c.UNet
	assert.True(t, u.UseLinearProjection, "unet %+v", u)
	assert.Equal(t, 1024, u.CrossAttentionDim, "unet %+v", u)
	assert.Equal(t, 5, u.Heads(0), "unet %+v", u)
	assert.Equal(t, 20, u.Heads(3), "unet %+v", u)
	assert.Equal(t, []int{320, 640, 1280, 1280}, u.BlockOutChannels, "unet %+v", u)
	assert.Equal(t, 96, u.SampleSize, "unet %+v", u)
	assert.Equal(t, 1024, c.text1().HiddenSize, "text %+v", c.text1())
	assert.Equal(t, 23, c.text1().NumHiddenLayers, "text %+v", c.text1())
	assert.Equal(t, "gelu", c.text1().HiddenAct, "text %+v", c.text1())
	assert.Equal(t, 16, c.text1().NumAttentionHeads, "text %+v", c.text1())
	assert.Equal(t, "v_prediction", c.Scheduler.PredictionType, "scheduler %+v", c.Scheduler)
	assert.Equal(t, 0.012, c.Scheduler.BetaEnd, "scheduler %+v", c.Scheduler)
	sd2 := FamilyNamed("SD 2.x")
	m := &Model{UNet: c.UNet, VAE: c.VAE, Spec: sd2, Texts: []TextModel{{Spec: sd2.Texts[0], Config: c.text1()}}, Scheduler: c.Scheduler}
	fam, why := classify(m, false, "")
	assert.Equal(t, "SD 2.x", fam, "family %q: %s", fam, why)
	assert.Contains(t, why, "OpenCLIP ViT-H", "family %q: %s", fam, why)
	assert.Contains(t, why, "v_prediction", "family %q: %s", fam, why)
	// SD 2.x U-Net: proj_in is linear, cross-attention keys are 1024 wide.
	e := ExpectedUNet(c.UNet)
	s := e["down_blocks.0.attentions.0.proj_in.weight"]
	assert.Equal(t, []int{320, 320}, s, "proj_in %v", s)
	s = e["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"]
	assert.Equal(t, []int{1280, 1024}, s, "attn2.to_k %v", s)

	// v1 defaults: the SD 1.5 configs.
	v1 := strings.NewReplacer("model_channels: 32", "model_channels: 320", "context_dim: 64", "context_dim: 768", "ch: 16", "ch: 128").Replace(miniYAML)
	c1, err := parseLDMYAML("v1.yaml", []byte(v1))
	require.NoError(t, err)
	var want configs
	want.Scheduler = DefaultScheduler()
	want.validate("")
	compareShapes(t, "v1 unet", ExpectedUNet(c1.UNet), ExpectedUNet(want.UNet))
	compareShapes(t, "v1 vae", ExpectedVAE(c1.VAE), ExpectedVAE(want.VAE))
	assert.Equal(t, 8, c1.UNet.Heads(2), "v1: %+v %+v", c1.UNet, c1.Scheduler)
	assert.Equal(t, want.Scheduler, c1.Scheduler, "v1: %+v %+v", c1.UNet, c1.Scheduler)

	for _, bad := range []string{
		"", "model: [", "model:\n  params:\n    unet_config:\n      params:\n        model_channels: 320\n",
		strings.Replace(v2YAML, "FrozenOpenCLIPEmbedder", "FrozenT5Embedder", 1),
		strings.Replace(v2YAML, `parameterization: "v"`, `parameterization: "z"`, 1),
		strings.Replace(v2YAML, "num_res_blocks: 2", "num_res_blocks: 2000", 1),
		strings.Replace(v2YAML, "channel_mult: [ 1, 2, 4, 4 ]", "channel_mult: [ 1, 2, 4, 4, 4, 4, 4, 4, 4 ]", 1),
	} {
		_, err := parseLDMYAML("bad.yaml", []byte(bad))
		assert.ErrorContains(t, err, "bad.yaml", "accepted or unnamed: %v\n%s", err, bad)
	}
}

func TestBundleValidation(t *testing.T) {
	for _, bad := range []string{
		`[]`, `{"unet": 1}`, `{"unet": {"block_out_channels": [320, 641]}}`,
		`{"unet": {"down_block_types": ["CrossAttnDownBlock2D"]}}`,
		`{"unet": {"attention_head_dim": 7}}`,
		`{"unet": {"layers_per_block": 100000000}}`,
		`{"vae": {"latent_channels": -4}}`,
		`{"text_encoder": {"hidden_act": "relu"}}`,
		`{"text_encoder": {"num_attention_heads": 7}}`,
		`{"scheduler": {"beta_start": 0.5, "beta_end": 0.1}}`,
		`{"scheduler": {"prediction_type": "x"}}`,
		`{"scheduler": {"trained_betas": [0.1]}}`,
		`{} {}`,
	} {
		_, err := parseBundle("cfg.json", []byte(bad))
		var ce *ConfigError
		if assert.ErrorAs(t, err, &ce, "%s: %v", bad, err) {
			assert.Equal(t, "cfg.json", ce.Path, "%s: %v", bad, err)
		}
	}
	c, err := parseBundle("cfg.json", []byte(`{"unet": {"attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024, "use_linear_projection": true}, "scheduler": {"prediction_type": "v_prediction", "timestep_spacing": "trailing"}}`))
	require.NoError(t, err)
	assert.Equal(t, 10, c.UNet.Heads(1), "%+v %+v", c.UNet, c.Scheduler)
	assert.Equal(t, "v_prediction", c.Scheduler.PredictionType, "%+v %+v", c.UNet, c.Scheduler)
	assert.Equal(t, 1, c.Scheduler.StepsOffset, "%+v %+v", c.UNet, c.Scheduler)
	assert.Equal(t, 0.18215, c.VAE.ScalingFactor, "%+v %+v", c.UNet, c.Scheduler)
	d := DefaultScheduler()
	assert.Equal(t, "scaled_linear", d.BetaSchedule, "defaults %+v", d)
	assert.Equal(t, 1000, d.NumTrainTimesteps, "defaults %+v", d)
	assert.Equal(t, "leading", d.TimestepSpacing, "defaults %+v", d)
}
