package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/stepwise/stepwise/models/nets"
)

// fluxPipeline reports a model_index.json of a Flux pipeline.
func fluxPipeline(idx modelIndex) bool {
	for _, p := range FamilyNamed("Flux").Pipelines {
		if idx.ClassName == p {
			return true
		}
	}
	t, ok := idx.Components["transformer"]
	return ok && t[1] == "FluxTransformer2DModel"
}

// loadFluxDiffusers loads a Flux diffusers folder: transformer/, vae/,
// text_encoder/ (CLIP-L), text_encoder_2/ (T5) with tokenizer_2's
// spiece.model (or tokenizer.json), scheduler/.
func loadFluxDiffusers(dir string, idx modelIndex) (*Model, error) {
	fam := FamilyNamed("Flux")
	m := &Model{Path: dir, Layout: Diffusers, Spec: fam, Family: fam.Name, ConfigSource: filepath.Join(dir, "*", "config.json")}
	read := func(rel, what string) ([]byte, string, error) {
		p := filepath.Join(dir, rel)
		data, err := readSmall(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil, p, fmt.Errorf("checkpoint %s: %s is missing (%s): %w", dir, rel, what, os.ErrNotExist)
		}
		return data, p, err
	}
	var fc nets.FluxConfig
	data, p, err := read("transformer/config.json", "a Flux folder holds transformer/, vae/, text_encoder/ and text_encoder_2/")
	if err != nil {
		return nil, err
	}
	if err := decodeJSON(p, data, &fc); err != nil {
		return nil, err
	}
	fc.Defaults()
	td, err := nets.FluxDecls(fc)
	if err != nil {
		return nil, cfgErr(p, "%v", err)
	}
	m.Flux = &fc
	if data, p, err = read("vae/config.json", "the 16-channel autoencoder"); err != nil {
		return nil, err
	}
	if err := decodeJSON(p, data, &m.VAE); err != nil {
		return nil, err
	}
	m.VAE.Defaults()
	if err := validateVAE(p, &m.VAE); err != nil {
		return nil, err
	}
	if 4*m.VAE.LatentChannels != fc.InChannels {
		return nil, cfgErr(p, "the VAE has %d latent channels, 2x2-packed %d, but the transformer takes %d", m.VAE.LatentChannels, 4*m.VAE.LatentChannels, fc.InChannels)
	}
	m.Scheduler = fam.Scheduler
	if data, p, err = read("scheduler/scheduler_config.json", ""); err == nil {
		s := DefaultScheduler()
		if err := decodeJSON(p, data, &s); err != nil {
			return nil, err
		}
		if s.ClassName != FlowMatchScheduler {
			return nil, cfgErr(p, "scheduler %q: a Flux model is a rectified-flow model and needs %s", s.ClassName, FlowMatchScheduler)
		}
		if err := validateScheduler(p, &s); err != nil {
			return nil, err
		}
		s.PipelineSigmas = true
		m.Scheduler = s
	} else if errors.Is(err, os.ErrNotExist) {
		m.Warnings = append(m.Warnings, "no scheduler/scheduler_config.json: using FLUX.1-dev's (dynamic shift)")
	} else {
		return nil, err
	}
	spec := fam.Texts[0]
	if data, p, err = read(filepath.Join(spec.Role, "config.json"), "Flux's CLIP-L"); err != nil {
		return nil, err
	}
	var tc nets.TextConfig
	if err := decodeJSON(p, data, &tc); err != nil {
		return nil, err
	}
	tc.Defaults()
	if err := validateText(p, spec.Role, &tc); err != nil {
		return nil, err
	}
	pad, ok, err := tokenizerPad(filepath.Join(dir, spec.Tokenizer))
	if err != nil {
		return nil, err
	}
	if !ok {
		pad = spec.Pad
	}
	m.Texts = []TextModel{{Spec: spec, Config: tc, Pad: pad}}
	t5 := &T5Model{Spec: *fam.T5}
	if data, p, err = read(filepath.Join(t5.Spec.Role, "config.json"), "Flux's T5 encoder"); err != nil {
		return nil, err
	}
	if err := decodeJSON(p, data, &t5.Config); err != nil {
		return nil, err
	}
	t5.Config.Defaults()
	t5d, err := nets.T5Decls(t5.Config)
	if err != nil {
		return nil, cfgErr(p, "%v", err)
	}
	tp := filepath.Join(dir, t5.Spec.Tokenizer)
	switch {
	case fileExists(filepath.Join(tp, "spiece.model")):
		t5.Tokenizer = filepath.Join(tp, "spiece.model")
	case fileExists(filepath.Join(tp, "tokenizer.json")):
		t5.Tokenizer = filepath.Join(tp, "tokenizer.json")
	default:
		return nil, fmt.Errorf("checkpoint %s: %s/spiece.model (the T5 tokenizer) is missing, and so is its tokenizer.json", dir, t5.Spec.Tokenizer)
	}
	m.T5 = t5
	tcfg := filepath.Join(dir, "transformer", "config.json")
	switch {
	case t5.Config.DModel != fc.JointAttentionDim:
		return nil, cfgErr(tcfg, "joint_attention_dim %d, but the T5 encoder (%s) is %d wide: a T5 of the wrong size for this transformer", fc.JointAttentionDim, t5.Spec.Role, t5.Config.DModel)
	case tc.HiddenSize != fc.PooledProjectionDim:
		return nil, cfgErr(tcfg, "pooled_projection_dim %d, but CLIP-L's pooled output is %d wide", fc.PooledProjectionDim, tc.HiddenSize)
	}

	vd, err := nets.VAEDecls(m.VAE)
	if err != nil {
		return nil, err
	}
	cd, err := nets.TextDecls(tc)
	if err != nil {
		return nil, err
	}
	direct := func(d nets.Decl) []string { return []string{d.Name} }
	type part struct {
		c         *component
		sub, base string
	}
	comps := []part{
		{newComponent("transformer", td, false, direct), "transformer", "diffusion_pytorch_model"},
		{newComponent("vae", vd, false, direct), "vae", "diffusion_pytorch_model"},
		{newComponent(t5.Spec.Role, t5d, false, direct), t5.Spec.Role, "model"},
		{newComponent(spec.Role, cd, false, direct), spec.Role, "model"},
	}
	var b builder
	for _, cp := range comps {
		f, infos, err := m.openPart(filepath.Join(dir, cp.sub), cp.base)
		if err != nil {
			return nil, err
		}
		for _, t := range infos {
			switch {
			case ignored(t.Name):
				b.ignored++
			case cp.c.hasSlot(t.Name):
				b.place(cp.c, f, t.Name, cp.c.decls[cp.c.byName[t.Name]])
			case cp.sub == t5.Spec.Role && t.Name == "encoder.embed_tokens.weight":
				b.ignored++
			default:
				b.unknown = append(b.unknown, cp.sub+"/"+t.Name)
			}
		}
		b.missing(cp.c)
		path := f.Path()
		m.setOrigins(cp.c, func(string) string { return path })
	}
	if len(b.problems) > 0 {
		m.Close()
		return nil, b.fail(dir)
	}
	m.Ignored = b.ignored
	m.Warnings = append(m.Warnings, b.warnings()...)
	m.TransformerWeights, m.VAEWeights, t5.Weights, m.Texts[0].Weights = comps[0].c.weights, comps[1].c.weights, comps[2].c.weights, comps[3].c.weights
	kind := "FLUX.1-dev-like (guidance embedding)"
	if !fc.GuidanceEmbeds {
		kind = "FLUX.1-schnell-like (no guidance embedding)"
	}
	m.FamilyWhy = fmt.Sprintf("%s with FluxTransformer2DModel, %s: %d double + %d single blocks, CLIP-L width %d + T5 width %d",
		orUnknown(idx.ClassName), kind, fc.NumLayers, fc.NumSingleLayers, tc.HiddenSize, t5.Config.DModel)
	return m, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
