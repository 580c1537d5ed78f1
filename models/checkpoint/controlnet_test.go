package checkpoint

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/safetensors"
)

// TestControlNetHostileFiles: ControlNet files built to mislead the
// loader (ranks and sizes the inference does not expect, empty and huge
// widths, a conditioning embedding alone, a LoRA's keys) and diffusers
// configs with hostile values are refused with an error naming the file;
// nothing panics and no error is unbounded.
func TestControlNetHostileFiles(t *testing.T) {
	tmp := t.TempDir()
	f16 := func(name string, shape ...int) safetensors.Entry {
		n := 1
		for _, d := range shape {
			n *= d
		}
		return safetensors.Entry{Name: name, DType: safetensors.F16, Shape: shape, Data: make([]byte, 2*n)}
	}
	write := func(name string, es ...safetensors.Entry) string {
		p := filepath.Join(tmp, name)
		f, err := os.Create(p)
		require.NoError(t, err)
		require.NoError(t, safetensors.Write(f, es, nil))
		require.NoError(t, f.Close())
		return p
	}
	const h = "control_model.input_hint_block."
	const ib = "control_model.input_blocks."
	files := map[string]string{
		"rank1 hint":      write("rank1.safetensors", f16(h+"0.weight", 16)),
		"empty hint":      write("empty.safetensors", f16(h+"0.weight", 0, 3, 3, 3), f16(h+"0.bias", 0)),
		"hint alone":      write("alone.safetensors", f16(h+"0.weight", 16, 3, 3, 3), f16(h+"0.bias", 16), f16(h+"2.weight", 16, 16, 3, 3)),
		"huge width":      write("huge.safetensors", f16(h+"0.weight", 16, 3, 3, 3), f16(ib+"1.0.out_layers.3.weight", 1<<20, 0, 3, 3), f16(ib+"0.0.weight", 1<<20, 4, 3, 3)),
		"zero width":      write("zero.safetensors", f16(h+"0.weight", 16, 3, 3, 3), f16(ib+"1.0.out_layers.3.weight", 0, 0, 3, 3)),
		"rank1 label_emb": write("label.safetensors", f16(h+"0.weight", 16, 3, 3, 3), f16("control_model.label_emb.0.0.weight", 7)),
		"bare lora keys":  write("lora.safetensors", f16("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", 4, 32)),
		"no tensors":      write("nothing.safetensors"),
		"diffusers, no config": write("diffusion_pytorch_model.safetensors",
			f16("controlnet_cond_embedding.conv_in.weight", 16, 3, 3, 3)),
	}
	for what, path := range files {
		c, err := LoadControlNet(path)
		if !assert.Error(t, err, what) {
			c.Close()
			continue
		}
		assert.Contains(t, err.Error(), path, what)
		t.Logf("%s: %.300s", what, err)
		assert.Less(t, len(err.Error()), 8000, "%s: an unbounded error", what)
	}

	// A diffusers folder with the mini ControlNet's weights and a config
	// edited to hostile values.
	w3 := golden.Wave(t, "golden-wave3")
	weights := filepath.Join(w3, "sd15-mini-controlnet", "diffusion_pytorch_model.fp16.safetensors")
	base, err := os.ReadFile(filepath.Join(w3, "sd15-mini-controlnet", "config.json"))
	require.NoError(t, err)
	configs := map[string][2]string{
		"no levels":        {`"block_out_channels": [`, `"block_out_channels": [], "x": [`},
		"pooled":           {`"global_pool_conditions": false`, `"global_pool_conditions": true`},
		"channel order":    {`"controlnet_conditioning_channel_order": "rgb"`, `"controlnet_conditioning_channel_order": "xyz"`},
		"embedding widths": {`"conditioning_embedding_out_channels": [`, `"conditioning_embedding_out_channels": [0, `},
		"many embeddings":  {`"conditioning_embedding_out_channels": [`, `"conditioning_embedding_out_channels": [8,8,8,8,8,8,8,8,8,8,`},
		"in channels":      {`"in_channels": 4`, `"in_channels": -4`},
		"layers":           {`"layers_per_block": 2`, `"layers_per_block": 100000`},
		"class embeds":     {`"class_embed_type": null`, `"class_embed_type": "timestep"`},
		"not json":         {`{`, `{{`},
		"heads":            {`"attention_head_dim": 8`, `"attention_head_dim": 0`},
		"conditioning ch":  {`"conditioning_channels": 3`, `"conditioning_channels": 1000000`},
	}
	for what, edit := range configs {
		require.Contains(t, string(base), edit[0], what)
		dir := filepath.Join(tmp, strings.ReplaceAll(what, " ", "_"))
		require.NoError(t, os.Mkdir(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), []byte(strings.Replace(string(base), edit[0], edit[1], 1)), 0o644))
		require.NoError(t, os.Symlink(weights, filepath.Join(dir, "diffusion_pytorch_model.fp16.safetensors")))
		c, err := LoadControlNet(dir)
		if !assert.Error(t, err, what) {
			c.Close()
			continue
		}
		assert.Contains(t, err.Error(), dir, what)
		t.Logf("%s: %.300s", what, err)
		assert.Less(t, len(err.Error()), 8000, "%s: an unbounded error", what)
	}
}
