package checkpoint

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// TestOpenCLIPSingleFile builds an SD 2.x-style single file from sd15-mini
// (linear proj_in/proj_out, an OpenCLIP text tower with fused q/k/v and one
// extra final layer) and checks that it converts to the same weights as the
// diffusers folder.
func TestOpenCLIPSingleFile(t *testing.T) {
	g := golden.Dir(t)
	es, cfgJSON := miniEntries(t)
	folder := load(t, filepath.Join(g, "sd15-mini"), "")
	tw := folder.Text("text_encoder").Weights.(nets.MapWeights)
	get := func(n string) []byte { return tw[n].Raw }

	var out []safetensors.Entry
	for _, e := range es {
		switch {
		case strings.HasPrefix(e.Name, ldmText):
			continue // replaced below
		case strings.HasPrefix(e.Name, ldmUNet) && (strings.HasSuffix(e.Name, ".proj_in.weight") || strings.HasSuffix(e.Name, ".proj_out.weight")):
			e.Shape = e.Shape[:2]
		}
		out = append(out, e)
	}
	f16 := func(name string, data []byte, shape ...int) {
		out = append(out, safetensors.Entry{Name: ldmOpen + name, DType: safetensors.F16, Shape: shape, Data: data})
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f16("token_embedding.weight", get("text_model.embeddings.token_embedding.weight"), 49408, 64)
	f16("positional_embedding", get("text_model.embeddings.position_embedding.weight"), 77, 64)
	for i := 0; i < 4; i++ {
		src := i
		if i == 3 {
			src = 0 // the unused last layer: any data
		}
		p := "text_model.encoder.layers." + string(rune('0'+src)) + "."
		r := "transformer.resblocks." + string(rune('0'+i)) + "."
		f16(r+"attn.in_proj_weight", cat(get(p+"self_attn.q_proj.weight"), get(p+"self_attn.k_proj.weight"), get(p+"self_attn.v_proj.weight")), 192, 64)
		f16(r+"attn.in_proj_bias", cat(get(p+"self_attn.q_proj.bias"), get(p+"self_attn.k_proj.bias"), get(p+"self_attn.v_proj.bias")), 192)
		f16(r+"attn.out_proj.weight", get(p+"self_attn.out_proj.weight"), 64, 64)
		f16(r+"attn.out_proj.bias", get(p+"self_attn.out_proj.bias"), 64)
		f16(r+"ln_1.weight", get(p+"layer_norm1.weight"), 64)
		f16(r+"ln_1.bias", get(p+"layer_norm1.bias"), 64)
		f16(r+"ln_2.weight", get(p+"layer_norm2.weight"), 64)
		f16(r+"ln_2.bias", get(p+"layer_norm2.bias"), 64)
		f16(r+"mlp.c_fc.weight", get(p+"mlp.fc1.weight"), 256, 64)
		f16(r+"mlp.c_fc.bias", get(p+"mlp.fc1.bias"), 256)
		f16(r+"mlp.c_proj.weight", get(p+"mlp.fc2.weight"), 64, 256)
		f16(r+"mlp.c_proj.bias", get(p+"mlp.fc2.bias"), 64)
	}
	f16("ln_final.weight", get("text_model.final_layer_norm.weight"), 64)
	f16("ln_final.bias", get("text_model.final_layer_norm.bias"), 64)
	f16("text_projection", make([]byte, 64*64*2), 64, 64)
	f16("logit_scale", make([]byte, 2))

	var bundle map[string]any
	require.NoError(t, json.Unmarshal(cfgJSON, &bundle))
	bundle["unet"].(map[string]any)["use_linear_projection"] = true
	bundle["text_encoder"].(map[string]any)["hidden_act"] = "gelu"
	cfg, _ := json.Marshal(bundle)
	file := encode(t, out)

	for _, c := range []struct {
		name string
		cfg  []byte
	}{{"config", cfg}, {"inferred", nil}} {
		m, err := LoadBytes("sd2-mini.safetensors", file, c.cfg)
		require.NoError(t, err, c.name)
		assert.Equal(t, 14, m.Ignored, c.name)
		assert.Empty(t, m.Warnings, c.name)
		assert.Equal(t, 3, m.Text("text_encoder").Config.NumHiddenLayers, c.name)
		assert.Equal(t, "gelu", m.Text("text_encoder").Config.HiddenAct, c.name)
		assert.True(t, m.UNet.UseLinearProjection, c.name)
		got := m.Text("text_encoder").Weights.(nets.MapWeights)
		assert.Equal(t, len(tw), len(got), "%s: text tensors", c.name)
		for k, p := range tw {
			q := got[k]
			assert.Equal(t, p.DType, q.DType, "%s: %s", c.name, k)
			assert.Equal(t, p.Shape, q.Shape, "%s: %s", c.name, k)
			assert.True(t, bytes.Equal(q.Raw, p.Raw), "%s: %s differs", c.name, k)
		}
		pin, _ := m.UNetWeights.Get("down_blocks.1.attentions.0.proj_in.weight")
		want, _ := folder.UNetWeights.Get("down_blocks.1.attentions.0.proj_in.weight")
		assert.Equal(t, []int{64, 64}, pin.Shape, "%s: linear proj_in", c.name)
		assert.True(t, bytes.Equal(pin.Raw, want.Raw), "%s: linear proj_in data", c.name)
		m.Close()
	}

	// A missing fused projection is reported under its OpenCLIP name.
	var cut []safetensors.Entry
	for _, e := range out {
		if e.Name != ldmOpen+"transformer.resblocks.1.attn.in_proj_bias" {
			cut = append(cut, e)
		}
	}
	_, err := LoadBytes("cut.safetensors", encode(t, cut), cfg)
	assert.ErrorContains(t, err, `missing tensor "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_bias" (text_encoder text_model.encoder.layers.1.self_attn.q_proj.bias)`, "missing in_proj")
}
