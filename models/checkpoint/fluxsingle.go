package checkpoint

import (
	"fmt"

	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// fluxBundle is the Flux part of a config bundle (a JSON file with the
// diffusers configs under "transformer" and "text_encoder_2", the T5).
type fluxBundle struct {
	Transformer *nets.FluxConfig `json:"transformer"`
	T5          *nets.T5Config   `json:"text_encoder_2"`
}

// fluxSources finds the networks of a Flux single file: the transformer
// (Black Forest Labs' names, bare as in flux1-dev.safetensors or under
// model.diffusion_model. as ComfyUI saves it), and the VAE, CLIP-L and
// T5-XXL in the file or in the files --vae, --clip-l and --t5xxl name
// (BFL's ae.safetensors, ComfyUI's clip_l.safetensors and
// t5xxl_fp16.safetensors).
func fluxSources(main *safetensors.File, fam *Family, ex Extra, opened *[]*safetensors.File) (map[string]source, error) {
	return findSources(main, []sourceWant{
		{"transformer", "", "", "", "double_blocks.0.img_attn.qkv.weight", "Flux transformer (double_blocks.*)"},
		{"vae", "--vae", ex.VAE, "", "decoder.conv_in.weight", "VAE (an ae.safetensors)"},
		{fam.Texts[0].Role, "--clip-l", ex.CLIPL, "", "text_model.embeddings.token_embedding.weight", "CLIP-L text encoder (clip_l.safetensors)"},
		{fam.T5.Role, "--t5xxl", ex.T5XXL, "", "encoder.block.0.layer.0.SelfAttention.q.weight", "T5-XXL text encoder (t5xxl_fp16.safetensors)"},
	}, opened)
}

// inferFlux reads a Flux transformer's config from its original tensors'
// shapes. The rotary axes are FLUX.1's (16, 56, 56) for its 128-wide
// heads; other head widths need the config.
func inferFlux(s source) (nets.FluxConfig, string) {
	f, p := s.f, s.prefix
	c := nets.FluxConfig{PatchSize: 1}
	inner := dimOf(f, p+"img_in.weight", 0)
	c.InChannels = dimOf(f, p+"img_in.weight", 1)
	c.NumLayers = countKeys(f, p+"double_blocks.%d.img_mod.lin.weight")
	c.NumSingleLayers = countKeys(f, p+"single_blocks.%d.modulation.lin.weight")
	c.AttentionHeadDim = dimOf(f, p+"double_blocks.0.img_attn.norm.query_norm.scale", 0)
	c.JointAttentionDim = dimOf(f, p+"txt_in.weight", 1)
	c.PooledProjectionDim = dimOf(f, p+"vector_in.in_layer.weight", 1)
	_, c.GuidanceEmbeds = f.Lookup(p + "guidance_in.in_layer.weight")
	if c.AttentionHeadDim > 0 && inner%c.AttentionHeadDim == 0 {
		c.NumAttentionHeads = inner / c.AttentionHeadDim
	}
	if c.AttentionHeadDim == 128 {
		c.AxesDimsRope = []int{16, 56, 56}
	}
	kind := "FLUX.1-dev-like (guidance_in)"
	if !c.GuidanceEmbeds {
		kind = "FLUX.1-schnell-like (no guidance_in)"
	}
	return c, fmt.Sprintf("%s, %d double + %d single blocks x %d wide", kind, c.NumLayers, c.NumSingleLayers, inner)
}

// fluxSchedule is the scheduler a Flux single file gets: FLUX.1-dev's
// (dynamic shift from the image size) with a guidance embedding,
// schnell's (shift 1, no dynamic shift) without one.
func fluxSchedule(fam *Family, guidance bool) SchedulerConfig {
	s := fam.Scheduler
	if !guidance {
		s.Shift, s.UseDynamicShifting = 1, false
	}
	return s
}

// fromSingleFlux loads a Flux single file (the transformer in Black Forest
// Labs' layout), with the VAE, CLIP-L and T5 from the file or the files ex
// names. Hyper-parameters come from the config bundle when given, else
// from the tensors' shapes.
func fromSingleFlux(f *safetensors.File, cfg *configs, configPath string, ex Extra) (*Model, error) {
	fam := FamilyNamed("Flux")
	m := &Model{Path: f.Path(), Layout: SingleFile, Spec: fam, Family: fam.Name}
	var opened []*safetensors.File
	fail := func(err error) (*Model, error) {
		for _, o := range opened {
			o.Close()
		}
		return nil, err
	}
	src, err := fluxSources(f, fam, ex, &opened)
	if err != nil {
		return fail(err)
	}
	var bundle fluxBundle
	if err := readBundle(configPath, &bundle); err != nil {
		return fail(err)
	}
	tc, note := inferFlux(src["transformer"])
	m.ConfigSource = "inferred from tensor shapes (" + note + ")"
	switch {
	case bundle.Transformer != nil:
		tc, m.ConfigSource = *bundle.Transformer, configPath
	case tc.NumAttentionHeads == 0 || len(tc.AxesDimsRope) == 0:
		return fail(fmt.Errorf("checkpoint %s: the transformer's heads are %d wide, not FLUX.1's 128, so its rotary axes cannot be read from the shapes: pass --config with a JSON bundle holding its \"transformer\" config",
			f.Path(), tc.AttentionHeadDim))
	}
	tc.Defaults()
	td, err := nets.FluxDecls(tc)
	if err != nil {
		return fail(fmt.Errorf("checkpoint %s: transformer: %w", f.Path(), err))
	}
	m.Flux = &tc

	vs := src["vae"]
	diffusersVAE, err := singleVAE(m, vs, cfg)
	if err != nil {
		return fail(err)
	}
	if 4*m.VAE.LatentChannels != tc.InChannels {
		return fail(fmt.Errorf("checkpoint %s: the VAE has %d latent channels, 2x2-packed %d, but the transformer takes %d", vs.f.Path(), m.VAE.LatentChannels, 4*m.VAE.LatentChannels, tc.InChannels))
	}
	m.Scheduler = fluxSchedule(fam, tc.GuidanceEmbeds)
	if cfg != nil && cfg.Scheduler.ClassName == FlowMatchScheduler {
		m.Scheduler = cfg.Scheduler
		m.Scheduler.PipelineSigmas = true
	}

	spec := fam.Texts[0]
	if err := singleText(m, src[spec.Role], spec, cfg, "CLIPTextModel"); err != nil { // Flux pools without the projection
		return fail(err)
	}
	if err := singleT5(m, src[fam.T5.Role], bundle.T5, ex); err != nil {
		return fail(err)
	}
	c, t5 := m.Texts[0].Config, m.T5
	switch {
	case t5.Config.DModel != tc.JointAttentionDim:
		return fail(fmt.Errorf("checkpoint %s: the transformer's txt_in takes %d-wide T5 states, but the T5 encoder is %d wide: a T5 of the wrong size for this transformer", f.Path(), tc.JointAttentionDim, t5.Config.DModel))
	case c.HiddenSize != tc.PooledProjectionDim:
		return fail(fmt.Errorf("checkpoint %s: the transformer's vector_in takes a %d-wide pooled vector, but CLIP-L is %d wide", f.Path(), tc.PooledProjectionDim, c.HiddenSize))
	}
	if err := placeSingle(m, f, opened, src, td, diffusersVAE, "Flux single file", "keys double_blocks.*, single_blocks.* (Black Forest Labs' layout), "+note); err != nil {
		return fail(err)
	}
	return m, nil
}

// fluxSingleFileEntries lays a Flux model out as an all-in-one file in
// ComfyUI's layout (the transformer in Black Forest Labs' names under
// model.diffusion_model., the VAE in LDM names, CLIP-L and T5 under
// text_encoders.*): the inverse of fromSingleFlux.
func fluxSingleFileEntries(m *Model) ([]safetensors.Entry, error) {
	td, err := nets.FluxDecls(*m.Flux)
	if err != nil {
		return nil, err
	}
	return transformerFileEntries(m, td, m.Spec.UNetPrefix)
}
