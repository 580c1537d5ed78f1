package checkpoint

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/safetensors"
)

// bflKeys is every key of a Flux transformer in Black Forest Labs' layout
// (flux1-dev.safetensors) for the given block counts, written out by hand
// from the original model's module names, independently of the
// declarations the loader reads.
func bflKeys(double, single int, guidance bool) []string {
	var ks []string
	lin := func(p string) { ks = append(ks, p+".weight", p+".bias") }
	lin("img_in")
	lin("txt_in")
	for _, e := range []string{"time_in", "vector_in"} {
		lin(e + ".in_layer")
		lin(e + ".out_layer")
	}
	if guidance {
		lin("guidance_in.in_layer")
		lin("guidance_in.out_layer")
	}
	for i := 0; i < double; i++ {
		for _, s := range []string{"img", "txt"} {
			p := "double_blocks." + string(rune('0'+i)) + "." + s
			lin(p + "_mod.lin")
			lin(p + "_attn.qkv")
			lin(p + "_attn.proj")
			ks = append(ks, p+"_attn.norm.query_norm.scale", p+"_attn.norm.key_norm.scale")
			lin(p + "_mlp.0")
			lin(p + "_mlp.2")
		}
	}
	for i := 0; i < single; i++ {
		p := "single_blocks." + string(rune('0'+i))
		lin(p + ".modulation.lin")
		lin(p + ".linear1")
		lin(p + ".linear2")
		ks = append(ks, p+".norm.query_norm.scale", p+".norm.key_norm.scale")
	}
	lin("final_layer.adaLN_modulation.1")
	lin("final_layer.linear")
	sort.Strings(ks)
	return ks
}

// A Flux single file written from flux-mini's folder through the
// declarations has Black Forest Labs' names (every key of the original
// model, no other: fused img/txt qkv, single blocks' linear1 = q, k, v and
// the MLP input stacked, final modulation swapped) and loads back to the
// same weights, in ComfyUI's all-in-one layout and as BFL ships it (a bare
// transformer file with ae.safetensors, clip_l and t5xxl given by flag).
func TestFluxSingleFile(t *testing.T) {
	w3 := golden.Wave(t, "golden-wave3")
	dir, bundle := filepath.Join(w3, "flux-mini"), filepath.Join(w3, "flux_mini_config.json")
	m, err := Load(dir, "")
	require.NoError(t, err)
	defer m.Close()
	es, err := SingleFileEntries(m)
	require.NoError(t, err)
	byName := map[string]safetensors.Entry{}
	var transformer []string
	for _, e := range es {
		byName[e.Name] = e
		if k, ok := strings.CutPrefix(e.Name, "model.diffusion_model."); ok {
			transformer = append(transformer, k)
		}
	}
	sort.Strings(transformer)
	assert.Equal(t, bflKeys(2, 2, true), transformer, "the transformer's keys are BFL's")
	inner := 32 // 4 heads x 8
	for key, shape := range map[string][]int{
		"model.diffusion_model.double_blocks.0.img_attn.qkv.weight":                      {3 * inner, inner},
		"model.diffusion_model.single_blocks.1.linear1.weight":                           {7 * inner, inner},
		"model.diffusion_model.single_blocks.1.linear1.bias":                             {7 * inner},
		"model.diffusion_model.single_blocks.0.linear2.weight":                           {inner, 5 * inner},
		"model.diffusion_model.double_blocks.1.txt_attn.norm.key_norm.scale":             {8},
		"model.diffusion_model.final_layer.adaLN_modulation.1.weight":                    {2 * inner, inner},
		"model.diffusion_model.img_in.weight":                                            {inner, 64},
		"first_stage_model.decoder.conv_in.weight":                                       {64, 16, 3, 3},
		"text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight": {64, 96},
	} {
		if assert.Contains(t, byName, key) {
			assert.Equal(t, shape, byName[key].Shape, key)
		}
	}
	// linear1's rows: q, k, v, then the MLP input.
	l1 := byName["model.diffusion_model.single_blocks.1.linear1.bias"].Data
	row := len(l1) / (7 * inner)
	for i, name := range []string{"attn.to_q", "attn.to_k", "attn.to_v"} {
		p, _ := m.TransformerWeights.Get("single_transformer_blocks.1." + name + ".bias")
		assert.Equal(t, p.Raw, l1[i*inner*row:(i+1)*inner*row], name)
	}
	mlp, _ := m.TransformerWeights.Get("single_transformer_blocks.1.proj_mlp.bias")
	assert.Equal(t, mlp.Raw, l1[3*inner*row:], "proj_mlp")
	// The original stores (shift, scale); diffusers (scale, shift).
	nb, _ := m.TransformerWeights.Get("norm_out.linear.bias")
	half := len(nb.Raw) / 2
	assert.Equal(t, nb.Raw[half:], byName["model.diffusion_model.final_layer.adaLN_modulation.1.bias"].Data[:half])

	tmp := t.TempDir()
	require.NoError(t, os.Symlink(filepath.Join(dir, "tokenizer_2", "spiece.model"), filepath.Join(tmp, "spiece.model")))
	all := filepath.Join(tmp, "flux-mini.safetensors")
	writeEntries(t, all, es)
	m2, err := Load(all, bundle)
	require.NoError(t, err)
	defer m2.Close()
	assert.Equal(t, "Flux", m2.Family)
	assert.Equal(t, *m.Flux, *m2.Flux)
	assert.Equal(t, m.T5.Config, m2.T5.Config)
	assert.Equal(t, m.Scheduler.Shift, m2.Scheduler.Shift)
	assert.True(t, m2.Scheduler.UseDynamicShifting)
	sameModelWeights(t, m, m2)

	// Without a bundle the shapes give every size but the rotary axes
	// (FLUX.1's for 128-wide heads; the mini's are 8 wide).
	f, err := safetensors.Open(all)
	require.NoError(t, err)
	defer f.Close()
	fc, _ := inferFlux(source{f: f, prefix: "model.diffusion_model."})
	assert.Equal(t, []int{2, 2, 64, 8, 4, 96, 32}, []int{fc.NumLayers, fc.NumSingleLayers, fc.InChannels, fc.AttentionHeadDim,
		fc.NumAttentionHeads, fc.JointAttentionDim, fc.PooledProjectionDim})
	assert.True(t, fc.GuidanceEmbeds)
	_, err = Load(all, "")
	assert.ErrorContains(t, err, "heads are 8 wide, not FLUX.1's 128")

	// As BFL and ComfyUI users have the parts: a bare transformer file,
	// ae.safetensors (LDM names, no prefix), clip_l and t5xxl.
	files := map[string][]safetensors.Entry{}
	for _, e := range es {
		for prefix, file := range map[string]string{"model.diffusion_model.": "flux1-mini.safetensors", "first_stage_model.": "ae.safetensors",
			"text_encoders.clip_l.transformer.": "clip_l.safetensors", "text_encoders.t5xxl.transformer.": "t5xxl.safetensors"} {
			if k, ok := strings.CutPrefix(e.Name, prefix); ok {
				e.Name = k
				files[file] = append(files[file], e)
			}
		}
	}
	for name, fes := range files {
		writeEntries(t, filepath.Join(tmp, name), fes)
	}
	bare := filepath.Join(tmp, "flux1-mini.safetensors")
	ex := Extra{VAE: filepath.Join(tmp, "ae.safetensors"), CLIPL: filepath.Join(tmp, "clip_l.safetensors"), T5XXL: filepath.Join(tmp, "t5xxl.safetensors")}
	m3, err := LoadExtra(bare, bundle, ex)
	require.NoError(t, err)
	defer m3.Close()
	sameModelWeights(t, m, m3)
	assert.Contains(t, m3.FamilyWhy, "vae from --vae")

	_, err = LoadExtra(bare, bundle, Extra{CLIPL: ex.CLIPL, T5XXL: ex.T5XXL})
	assert.ErrorContains(t, err, "pass it with --vae FILE")
	_, err = LoadExtra(bare, bundle, Extra{VAE: ex.VAE, CLIPL: ex.CLIPL, T5XXL: ex.CLIPL})
	assert.ErrorContains(t, err, "--t5xxl "+ex.CLIPL+": no T5-XXL text encoder tensors in this file")
	_, err = LoadExtra(bare, bundle, Extra{VAE: ex.VAE, CLIPL: ex.CLIPL, T5XXL: ex.T5XXL, CLIPG: ex.CLIPL})
	assert.ErrorContains(t, err, "a Flux model has no CLIP-G")
}
