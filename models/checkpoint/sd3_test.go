package checkpoint

import (
	"bytes"
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

func sd3MiniFolder(t *testing.T) (string, string) {
	w3 := golden.Wave(t, "golden-wave3")
	return filepath.Join(w3, "sd3-mini"), filepath.Join(w3, "sd3_mini_config.json")
}

func writeEntries(t *testing.T, path string, es []safetensors.Entry) {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, safetensors.Write(&buf, es, nil))
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
}

// sameModelWeights asserts that two models hold byte-identical weights for
// every component.
func sameModelWeights(t *testing.T, a, b *Model) {
	t.Helper()
	require.Equal(t, a.Components(), b.Components())
	for _, c := range a.Components() {
		wa, err := a.weightsOf(c)
		require.NoError(t, err)
		wb, err := b.weightsOf(c)
		require.NoError(t, err)
		ma, mb := wa.(nets.MapWeights), wb.(nets.MapWeights)
		require.Equal(t, len(ma), len(mb), c)
		for name, p := range ma {
			q, ok := mb[name]
			if assert.True(t, ok, "%s/%s", c, name) {
				assert.True(t, bytes.Equal(p.Raw, q.Raw), "%s/%s differs", c, name)
			}
		}
	}
}

// An SD3 single file written from sd3-mini's folder through the
// declarations has the original names (fused qkv, LDM VAE, swapped final
// modulation) and loads back to the same weights, all in one file or with
// the text encoders and the VAE in separate files (--clip-l, --clip-g,
// --t5xxl, --vae as ComfyUI ships them); a network in neither is named by
// its flag.
func TestSD3SingleFile(t *testing.T) {
	dir, bundle := sd3MiniFolder(t)
	m, err := Load(dir, "")
	require.NoError(t, err)
	defer m.Close()
	es, err := SingleFileEntries(m)
	require.NoError(t, err)
	byName := map[string]safetensors.Entry{}
	for _, e := range es {
		byName[e.Name] = e
	}
	for key, shape := range map[string][]int{
		"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight":                                         {96, 32},
		"model.diffusion_model.joint_blocks.1.context_block.attn.qkv.bias":                                     {96},
		"model.diffusion_model.final_layer.adaLN_modulation.1.weight":                                          {64, 32},
		"model.diffusion_model.pos_embed":                                                                      {1, 256, 32},
		"model.diffusion_model.x_embedder.proj.weight":                                                         {32, 16, 2, 2},
		"first_stage_model.decoder.mid.attn_1.q.weight":                                                        {64, 64, 1, 1},
		"text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight":                        {49408, 32},
		"text_encoders.clip_g.transformer.text_projection.weight":                                              {32, 48},
		"text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": {32, 4},
	} {
		if assert.Contains(t, byName, key) {
			assert.Equal(t, shape, byName[key].Shape, key)
		}
	}
	// The original stores (shift, scale); diffusers (scale, shift).
	nb, _ := m.TransformerWeights.Get("norm_out.linear.bias")
	half := len(nb.Raw) / 2
	assert.Equal(t, nb.Raw[half:], byName["model.diffusion_model.final_layer.adaLN_modulation.1.bias"].Data[:half])

	tmp := t.TempDir()
	require.NoError(t, os.Symlink(filepath.Join(dir, "tokenizer_3", "spiece.model"), filepath.Join(tmp, "spiece.model")))
	all := filepath.Join(tmp, "sd3-mini.safetensors")
	writeEntries(t, all, es)
	m2, err := Load(all, bundle)
	require.NoError(t, err)
	defer m2.Close()
	assert.Equal(t, "SD3", m2.Family)
	assert.Equal(t, *m.Transformer, *m2.Transformer)
	assert.Equal(t, m.T5.Config, m2.T5.Config)
	sameModelWeights(t, m, m2)

	// Without a bundle the shapes give every size but the head width
	// (assumed 64, as every real SD3 has; the mini's are 8 wide, so it
	// needs its config).
	f, err := safetensors.Open(all)
	require.NoError(t, err)
	defer f.Close()
	assert.Equal(t, m.T5.Config, inferT5(source{f: f, prefix: "text_encoders.t5xxl.transformer."}), "T5 from shapes")
	tc, _ := inferMMDiT(source{f: f, prefix: "model.diffusion_model."})
	assert.Equal(t, []int{2, 2, 16, 16, 96, 32, 64, 16}, []int{tc.NumLayers, tc.PatchSize, tc.InChannels, tc.OutChannels,
		tc.JointAttentionDim, tc.CaptionProjectionDim, tc.PooledProjectionDim, tc.PosEmbedMaxSize})
	vc := inferVAE(source{f: f, prefix: "first_stage_model."}, false)
	assert.Equal(t, m.VAE.BlockOutChannels, vc.BlockOutChannels)
	assert.Equal(t, []int{16, 2, 3}, []int{vc.LatentChannels, vc.LayersPerBlock, vc.InChannels})
	cc := inferCLIP(source{f: f, prefix: "text_encoders.clip_g.transformer."}, "gelu")
	assert.Equal(t, []int{48, 4, 192, 32, 77}, []int{cc.HiddenSize, cc.NumHiddenLayers, cc.IntermediateSize, cc.ProjectionDim, cc.MaxPositionEmbeddings})
	_, err = Load(all, "")
	assert.ErrorContains(t, err, "the MM-DiT is 32 wide, not a whole number of 64-wide heads")

	// Split as ComfyUI users have the parts.
	var model, clipL, clipG, t5 []safetensors.Entry
	for _, e := range es {
		switch {
		case strings.HasPrefix(e.Name, "model.diffusion_model."):
			model = append(model, e)
		case strings.HasPrefix(e.Name, "text_encoders.clip_l.transformer."):
			e.Name = strings.TrimPrefix(e.Name, "text_encoders.clip_l.transformer.")
			clipL = append(clipL, e)
		case strings.HasPrefix(e.Name, "text_encoders.clip_g.transformer."):
			e.Name = "transformer." + strings.TrimPrefix(e.Name, "text_encoders.clip_g.transformer.")
			clipG = append(clipG, e)
		case strings.HasPrefix(e.Name, "text_encoders.t5xxl.transformer."):
			e.Name = strings.TrimPrefix(e.Name, "text_encoders.t5xxl.transformer.")
			t5 = append(t5, e)
		}
	}
	ex := Extra{CLIPL: filepath.Join(tmp, "clip_l.safetensors"), CLIPG: filepath.Join(tmp, "clip_g.safetensors"),
		T5XXL: filepath.Join(tmp, "t5xxl_fp16.safetensors"), VAE: filepath.Join(dir, "vae", "diffusion_pytorch_model.fp16.safetensors"),
		T5Tokenizer: filepath.Join(dir, "tokenizer_3")}
	writeEntries(t, filepath.Join(tmp, "sd3_model_only.safetensors"), model)
	writeEntries(t, ex.CLIPL, clipL)
	writeEntries(t, ex.CLIPG, clipG)
	writeEntries(t, ex.T5XXL, t5)
	m4, err := LoadExtra(filepath.Join(tmp, "sd3_model_only.safetensors"), bundle, ex)
	require.NoError(t, err)
	defer m4.Close()
	sameModelWeights(t, m, m4)
	assert.Contains(t, m4.FamilyWhy, "text_encoder_3 from --t5xxl")

	for flag, drop := range map[string]func(*Extra){
		"--clip-l FILE": func(e *Extra) { e.CLIPL = "" }, "--clip-g FILE": func(e *Extra) { e.CLIPG = "" },
		"--t5xxl FILE": func(e *Extra) { e.T5XXL = "" }, "--vae FILE": func(e *Extra) { e.VAE = "" },
	} {
		e := ex
		drop(&e)
		_, err := LoadExtra(filepath.Join(tmp, "sd3_model_only.safetensors"), bundle, e)
		assert.ErrorContains(t, err, "pass it with "+flag)
	}
	e := ex
	e.T5Tokenizer = ""
	_, err = LoadExtra(filepath.Join(tmp, "sd3_model_only.safetensors"), bundle, e)
	assert.NoError(t, err, "spiece.model beside the file is found")
	require.NoError(t, os.Remove(filepath.Join(tmp, "spiece.model")))
	_, err = LoadExtra(filepath.Join(tmp, "sd3_model_only.safetensors"), bundle, e)
	assert.ErrorContains(t, err, "no T5 tokenizer")
	e.CLIPL = ex.T5XXL // a T5 file given as CLIP-L
	_, err = LoadExtra(filepath.Join(tmp, "sd3_model_only.safetensors"), bundle, e)
	assert.ErrorContains(t, err, "--clip-l "+ex.T5XXL+": no a CLIP-L text encoder tensors")
	_, err = LoadExtra(dir, "", ex)
	assert.ErrorContains(t, err, "apply to single files")
}
