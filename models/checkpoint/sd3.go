package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/stepwise/stepwise/models/nets"
)

// sd3Pipeline reports a model_index.json of an SD3 pipeline.
func sd3Pipeline(idx modelIndex) bool {
	fam := FamilyNamed("SD3")
	for _, p := range fam.Pipelines {
		if idx.ClassName == p {
			return true
		}
	}
	if t, ok := idx.Components["transformer"]; ok && t[1] == "SD3Transformer2DModel" {
		return true
	}
	return false
}

// loadSD3Diffusers loads an SD3 diffusers folder: transformer/, vae/,
// text_encoder/ (CLIP-L), text_encoder_2/ (CLIP-G), text_encoder_3/ (T5)
// with tokenizer_3/spiece.model, scheduler/. Every config is read and
// checked, and every tensor placed against the networks' declarations,
// before anything is returned.
func loadSD3Diffusers(dir string, idx modelIndex) (*Model, error) {
	fam := FamilyNamed("SD3")
	m := &Model{Path: dir, Layout: Diffusers, Spec: fam, ConfigSource: filepath.Join(dir, "*", "config.json")}
	read := func(rel string, required bool, what string) ([]byte, string, error) {
		p := filepath.Join(dir, rel)
		data, err := readSmall(p)
		if errors.Is(err, os.ErrNotExist) {
			if !required {
				return nil, p, nil
			}
			return nil, p, fmt.Errorf("checkpoint %s: %s is missing (%s): %w", dir, rel, what, os.ErrNotExist)
		}
		return data, p, err
	}
	var tc nets.MMDiTConfig
	data, p, err := read("transformer/config.json", true, "an SD3 folder holds transformer/, vae/, text_encoder/, text_encoder_2/ and text_encoder_3/")
	if err != nil {
		return nil, err
	}
	if err := decodeJSON(p, data, &tc); err != nil {
		return nil, err
	}
	tc.Defaults()
	if _, err := nets.MMDiTDecls(tc); err != nil {
		return nil, cfgErr(p, "%v", err)
	}
	m.Transformer = &tc

	if data, p, err = read("vae/config.json", true, "the 16-channel autoencoder"); err != nil {
		return nil, err
	}
	if err := decodeJSON(p, data, &m.VAE); err != nil {
		return nil, err
	}
	m.VAE.Defaults()
	if err := validateVAE(p, &m.VAE); err != nil {
		return nil, err
	}
	if m.VAE.LatentChannels != tc.InChannels {
		return nil, cfgErr(p, "the VAE has %d latent channels but the transformer takes %d", m.VAE.LatentChannels, tc.InChannels)
	}

	m.Scheduler = fam.Scheduler
	if data, p, err = read("scheduler/scheduler_config.json", false, ""); err != nil {
		return nil, err
	}
	if data == nil {
		m.Warnings = append(m.Warnings, "no scheduler/scheduler_config.json: using SD3's (flow matching, shift 3)")
	} else {
		s := DefaultScheduler()
		if err := decodeJSON(p, data, &s); err != nil {
			return nil, err
		}
		if err := refuseUnsupported(p, "scheduler", data); err != nil {
			return nil, err
		}
		if s.ClassName != FlowMatchScheduler {
			return nil, cfgErr(p, "scheduler %q: an SD3 model is a rectified-flow model and needs %s", s.ClassName, FlowMatchScheduler)
		}
		if err := validateScheduler(p, &s); err != nil {
			return nil, err
		}
		m.Scheduler = s
	}

	for _, spec := range fam.Texts {
		data, p, err := read(filepath.Join(spec.Role, "config.json"), true, "SD3's CLIP-L (text_encoder) and CLIP-G (text_encoder_2)")
		if err != nil {
			return nil, err
		}
		var c nets.TextConfig
		if err := decodeJSON(p, data, &c); err != nil {
			return nil, err
		}
		c.Defaults()
		c.Architectures = []string{"CLIPTextModelWithProjection"}
		if err := validateText(p, spec.Role, &c); err != nil {
			return nil, err
		}
		pad, ok, err := tokenizerPad(filepath.Join(dir, spec.Tokenizer))
		if err != nil {
			return nil, err
		}
		if !ok {
			pad = spec.Pad
		}
		m.Texts = append(m.Texts, TextModel{Spec: spec, Config: c, Pad: pad})
	}
	t5 := &T5Model{Spec: *fam.T5}
	if data, p, err = read(filepath.Join(t5.Spec.Role, "config.json"), true, "SD3's T5 encoder"); err != nil {
		return nil, err
	}
	if err := decodeJSON(p, data, &t5.Config); err != nil {
		return nil, err
	}
	t5.Config.Defaults()
	if _, err := nets.T5Decls(t5.Config); err != nil {
		return nil, cfgErr(p, "%v", err)
	}
	t5.Tokenizer = filepath.Join(dir, t5.Spec.Tokenizer, "spiece.model")
	if _, err := os.Stat(t5.Tokenizer); err != nil {
		alt := filepath.Join(dir, t5.Spec.Tokenizer, "tokenizer.json")
		if _, err2 := os.Stat(alt); err2 != nil {
			return nil, fmt.Errorf("checkpoint %s: %s/spiece.model (the T5 tokenizer's SentencePiece model) is missing, and so is its tokenizer.json: %w", dir, t5.Spec.Tokenizer, err)
		}
		t5.Tokenizer = alt
	}
	m.T5 = t5
	if err := checkSD3Widths(m, filepath.Join(dir, "transformer", "config.json")); err != nil {
		return nil, err
	}

	// Weights, placed by declared name.
	td, err := nets.MMDiTDecls(tc)
	if err != nil {
		return nil, err
	}
	vd, err := nets.VAEDecls(m.VAE)
	if err != nil {
		return nil, &LoadError{Path: dir, Problems: []string{"vae config: " + err.Error()}}
	}
	t5d, err := nets.T5Decls(t5.Config)
	if err != nil {
		return nil, err
	}
	direct := func(d nets.Decl) []string { return []string{d.Name} }
	type part struct {
		c    *component
		sub  string
		base string
	}
	comps := []part{
		{newComponent("transformer", td, false, direct), "transformer", "diffusion_pytorch_model"},
		{newComponent("vae", vd, false, direct), "vae", "diffusion_pytorch_model"},
		{newComponent(t5.Spec.Role, t5d, false, direct), t5.Spec.Role, "model"},
	}
	for _, t := range m.Texts {
		d, err := nets.TextDecls(t.Config)
		if err != nil {
			return nil, err
		}
		comps = append(comps, part{newComponent(t.Spec.Role, d, false, direct), t.Spec.Role, "model"})
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
				b.ignored++ // tied to shared.weight
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
	m.TransformerWeights, m.VAEWeights, t5.Weights = comps[0].c.weights, comps[1].c.weights, comps[2].c.weights
	for i := range m.Texts {
		m.Texts[i].Weights = comps[3+i].c.weights
	}
	m.Family = fam.Name
	var parts []string
	for _, t := range m.Texts {
		parts = append(parts, fmt.Sprintf("%s width %d", t.Spec.Role, t.Config.HiddenSize))
	}
	m.FamilyWhy = fmt.Sprintf("%s with %s (%s + T5 width %d, MM-DiT %d layers x %d wide, rectified flow shift %g)",
		orUnknown(idx.ClassName), "SD3Transformer2DModel", strings.Join(parts, " + "), t5.Config.DModel,
		tc.NumLayers, tc.Inner(), m.Scheduler.Shift)
	return m, nil
}

// checkSD3Widths checks that the text encoders fit the transformer: CLIP-L
// + CLIP-G widths at most T5's (they are zero-padded to it), T5's width the
// transformer's joint_attention_dim, and both projections together its
// pooled_projection_dim.
func checkSD3Widths(m *Model, transformerConfig string) error {
	tc := m.Transformer
	clip, pooled := 0, 0
	for _, t := range m.Texts {
		clip += t.Config.HiddenSize
		pooled += t.Config.ProjectionDim
	}
	t5 := m.T5.Config.DModel
	switch {
	case t5 != tc.JointAttentionDim:
		return cfgErr(transformerConfig, "joint_attention_dim %d, but the T5 encoder (%s) is %d wide: a T5 of the wrong size for this transformer",
			tc.JointAttentionDim, m.T5.Spec.Role, t5)
	case clip > t5:
		return cfgErr(transformerConfig, "the CLIP encoders are %d wide together, more than T5's %d they are padded to", clip, t5)
	case pooled != tc.PooledProjectionDim:
		return cfgErr(transformerConfig, "pooled_projection_dim %d, but the CLIP projections give %d", tc.PooledProjectionDim, pooled)
	}
	return nil
}
