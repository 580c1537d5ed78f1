package checkpoint

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// ipMini returns golden-wave4's adapter file, its encoder folder and
// sd15-mini's U-Net config.
func ipMini(t *testing.T) (adapter, encoder string, unet nets.UNetConfig) {
	w4 := golden.Wave(t, "golden-wave4")
	data, err := os.ReadFile(filepath.Join(golden.Dir(t), "sd15-mini", "unet", "config.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &unet))
	models := filepath.Join(w4, "ip-adapter-mini", "models")
	return filepath.Join(models, "ip-adapter_sd15-mini.safetensors"), filepath.Join(models, "image_encoder"), unet
}

// rewrite writes the tensors of src (renamed by rename, dropped when it
// returns "") plus extra to dst.
func rewrite(t *testing.T, src, dst string, rename func(string) string, extra ...safetensors.Entry) {
	f, err := safetensors.Open(src)
	require.NoError(t, err)
	defer f.Close()
	var es []safetensors.Entry
	for _, ti := range f.Tensors() {
		name := rename(ti.Name)
		if name == "" {
			continue
		}
		raw, err := f.Data(ti.Name)
		require.NoError(t, err)
		es = append(es, safetensors.Entry{Name: name, DType: ti.DType, Shape: ti.Shape, Data: raw})
	}
	out, err := os.Create(dst)
	require.NoError(t, err)
	require.NoError(t, safetensors.Write(out, append(es, extra...), nil))
	require.NoError(t, out.Close())
}

func TestLoadIPAdapterLayouts(t *testing.T) {
	adapter, encoder, unet := ipMini(t)
	h94, err := LoadIPAdapter(adapter, "", unet) // image_encoder/ beside it
	require.NoError(t, err)
	defer h94.Close()
	assert.Equal(t, "h94", h94.Layout)
	assert.Equal(t, encoder, h94.EncoderPath)
	assert.Equal(t, 48, h94.Config.ImageEmbedDim)
	assert.Equal(t, 4, h94.Config.NumTokens)
	assert.Len(t, h94.Weights, 4+2*16)
	assert.Equal(t, 48, h94.Encoder.ProjectionDim)
	assert.Equal(t, 64, h94.Processor.ShortestEdge)
	assert.Equal(t, [3]float64{0.26862954, 0.26130258, 0.27577711}, h94.Processor.Std)

	// The same weights under diffusers' U-Net names (with the "unet."
	// prefix a whole-pipeline file has).
	decls, err := nets.IPAdapterDecls(h94.Config)
	require.NoError(t, err)
	toDiffusers := map[string]string{}
	for _, d := range decls {
		toDiffusers[d.Orig] = "unet." + d.Name
	}
	tmp := t.TempDir()
	dst := filepath.Join(tmp, "ip_adapter_diffusers.safetensors")
	rewrite(t, adapter, dst, func(n string) string { return toDiffusers[n] })
	diff, err := LoadIPAdapter(dst, encoder, unet)
	require.NoError(t, err)
	defer diff.Close()
	assert.Equal(t, "diffusers", diff.Layout)
	require.Len(t, diff.Weights, len(h94.Weights))
	for name, p := range h94.Weights {
		assert.Equal(t, p.Raw, diff.Weights[name].Raw, name)
	}
}

func TestLoadIPAdapterRefusals(t *testing.T) {
	adapter, encoder, unet := ipMini(t)
	tmp := t.TempDir()
	f16 := func(n int) []byte { return make([]byte, 2*n) }

	plus := filepath.Join(tmp, "ip-adapter-plus_sd15.safetensors")
	rewrite(t, adapter, plus, func(n string) string { return n },
		safetensors.Entry{Name: "image_proj.latents", DType: safetensors.F16, Shape: []int{1, 16, 64}, Data: f16(16 * 64)})
	_, err := LoadIPAdapter(plus, encoder, unet)
	require.Error(t, err)
	assert.Contains(t, err.Error(), plus)
	assert.Contains(t, err.Error(), "IP-Adapter Plus")

	// One cross-attention layer fewer: made for another U-Net.
	short := filepath.Join(tmp, "short.safetensors")
	rewrite(t, adapter, short, func(n string) string {
		if strings.HasPrefix(n, "ip_adapter.31.") {
			return ""
		}
		return n
	})
	_, err = LoadIPAdapter(short, encoder, unet)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "15 cross-attention layers")
	assert.Contains(t, err.Error(), "has 16")

	wide := unet
	wide.CrossAttentionDim = 768
	_, err = LoadIPAdapter(adapter, encoder, wide)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cross-attention width 64 (another model), the model's is 768 (SD 1.x)")

	lora := filepath.Join(tmp, "lora.safetensors")
	rewrite(t, adapter, lora, func(n string) string { return "lora_unet_" + strings.ReplaceAll(n, ".", "_") })
	_, err = LoadIPAdapter(lora, encoder, unet)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not an IP-Adapter")

	// An encoder with a 32-wide projection for the adapter's 48.
	enc32 := filepath.Join(tmp, "enc32")
	require.NoError(t, os.Mkdir(enc32, 0o755))
	cfg, err := os.ReadFile(filepath.Join(encoder, "config.json"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(enc32, "config.json"),
		[]byte(strings.Replace(string(cfg), `"projection_dim": 48`, `"projection_dim": 32`, 1)), 0o644))
	rewrite(t, filepath.Join(encoder, "model.safetensors"), filepath.Join(enc32, "model.safetensors"), func(n string) string {
		if n == "visual_projection.weight" {
			return ""
		}
		return n
	}, safetensors.Entry{Name: "visual_projection.weight", DType: safetensors.F16, Shape: []int{32, 32}, Data: f16(32 * 32)})
	_, err = LoadIPAdapter(adapter, enc32, unet)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "image encoder "+enc32+": projection_dim 32")
	assert.Contains(t, err.Error(), "projects 48-wide image embeddings")

	// The encoder's weights must fit its config.
	bad := filepath.Join(tmp, "badenc")
	require.NoError(t, os.Mkdir(bad, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(bad, "config.json"), cfg, 0o644))
	rewrite(t, filepath.Join(enc32, "model.safetensors"), filepath.Join(bad, "model.safetensors"), func(n string) string { return n })
	_, err = LoadIPAdapter(adapter, bad, unet)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(bad, "model.safetensors"))
	assert.Contains(t, err.Error(), "visual_projection.weight")

	nan := filepath.Join(tmp, "nan.safetensors")
	rewrite(t, adapter, nan, func(n string) string {
		if n == "ip_adapter.5.to_v_ip.weight" {
			return ""
		}
		return n
	}, safetensors.Entry{Name: "ip_adapter.5.to_v_ip.weight", DType: safetensors.F16, Shape: []int{64, 64},
		Data: append([]byte{0x00, 0x7e}, f16(64*64-1)...)})
	_, err = LoadIPAdapter(nan, encoder, unet)
	require.Error(t, err)
	assert.Contains(t, err.Error(), nan)
	assert.Contains(t, err.Error(), "NaN or Inf: down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_v_ip.0.weight (1)")

	truncated := filepath.Join(tmp, "truncated.safetensors")
	data, err := os.ReadFile(adapter)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(truncated, data[:len(data)/2], 0o644))
	_, err = LoadIPAdapter(truncated, encoder, unet)
	require.Error(t, err)
	assert.Contains(t, err.Error(), truncated)

	_, err = LoadIPAdapter(adapter, filepath.Join(tmp, "nowhere"), unet)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "image encoder "+filepath.Join(tmp, "nowhere")+": no such folder")
}

// TestIPAdapterFilesAreNotCheckpoints: given as the model, an adapter or
// its image encoder is named for what it is.
func TestIPAdapterFilesAreNotCheckpoints(t *testing.T) {
	adapter, encoder, _ := ipMini(t)
	_, err := Load(adapter, "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "this is an IP-Adapter")
	assert.Contains(t, err.Error(), "--ip-adapter")
	_, err = Load(filepath.Join(encoder, "model.safetensors"), "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--image-encoder")
}
