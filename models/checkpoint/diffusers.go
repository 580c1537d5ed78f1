package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// weightFile finds a component's weights in a diffusers folder: the plain
// file, else the fp16 variant. Pickle-only components are refused.
func weightFile(dir, base string) (string, error) {
	for _, name := range []string{base + ".safetensors", base + ".fp16.safetensors"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	for _, name := range []string{base + ".bin", base + ".fp16.bin", base + ".ckpt"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return "", fmt.Errorf("checkpoint %s: %w", p, ErrPickle)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, base+".safetensors.index.json")); err == nil {
		return "", fmt.Errorf("checkpoint %s: sharded weights (%s.safetensors.index.json) are not supported", dir, base)
	}
	return "", fmt.Errorf("checkpoint %s: no %s.safetensors or %s.fp16.safetensors", dir, base, base)
}

// readSmall reads a config file, refusing oversized ones.
func readSmall(path string) ([]byte, error) { return readConfig(path) }

// parseDiffusersConfigs reads the config.json files of a diffusers folder
// (unet, vae or scheduler nil: SD 1.5 defaults) and validates them together;
// texts holds each text encoder's config by role.
func parseDiffusersConfigs(unet, vae, sched []byte, texts map[string][]byte, names map[string]string) (configs, error) {
	c := newConfigs()
	parts := []struct {
		role string
		data []byte
		v    any
	}{{"unet", unet, &c.UNet}, {"vae", vae, &c.VAE}, {"scheduler", sched, &c.Scheduler}}
	for _, p := range parts {
		if p.data == nil {
			continue
		}
		if err := decodeJSON(names[p.role], p.data, p.v); err != nil {
			return c, err
		}
		if err := refuseUnsupported(names[p.role], p.role, p.data); err != nil {
			return c, err
		}
	}
	for role, data := range texts {
		var t nets.TextConfig
		if err := decodeJSON(names[role], data, &t); err != nil {
			return c, err
		}
		c.Texts[role] = t
	}
	c.UNet.Defaults()
	c.VAE.Defaults()
	if err := validateUNet(names["unet"], &c.UNet); err != nil {
		return c, err
	}
	if err := validateVAE(names["vae"], &c.VAE); err != nil {
		return c, err
	}
	for role, t := range c.Texts {
		t.Defaults()
		if err := validateText(names[role], role, &t); err != nil {
			return c, err
		}
		c.Texts[role] = t
	}
	return c, validateScheduler(names["scheduler"], &c.Scheduler)
}

// modelIndex is what a diffusers folder's model_index.json says: the
// pipeline class and, for each component folder, its [library, class]
// (either may be empty: diffusers writes [null, null] for an absent one).
type modelIndex struct {
	ClassName  string
	Components map[string][2]string
}

// parseModelIndex reads model_index.json: one JSON object whose
// "_class_name" is a string and whose component entries are
// [library, class] pairs of strings or nulls. Other "_" keys and
// non-pair values (such as requires_safety_checker) are skipped.
func parseModelIndex(path string, data []byte) (modelIndex, error) {
	var raw map[string]json.RawMessage
	if err := decodeJSON(path, data, &raw); err != nil {
		return modelIndex{}, err
	}
	if raw == nil {
		return modelIndex{}, cfgErr(path, "want a JSON object, got null")
	}
	idx := modelIndex{Components: map[string][2]string{}}
	if v, ok := raw["_class_name"]; ok {
		var name *string
		if err := json.Unmarshal(v, &name); err != nil {
			return modelIndex{}, cfgErr(path, "_class_name: want a string, got %s", clip(v))
		}
		if name != nil {
			idx.ClassName = *name
		}
	}
	for k, v := range raw {
		if strings.HasPrefix(k, "_") {
			continue
		}
		var pair []*string
		if json.Unmarshal(v, &pair) != nil || len(pair) != 2 {
			continue
		}
		var c [2]string
		for i, p := range pair {
			if p != nil {
				c[i] = *p
			}
		}
		idx.Components[k] = c
	}
	return idx, nil
}

// clip shortens a raw JSON value for a message.
func clip(v []byte) string {
	if len(v) > 40 {
		return string(v[:40]) + "..."
	}
	return string(v)
}

// supported explains pipelines whose folders this loader cannot read, from
// their model_index.json alone (before any weights are opened).
func (idx modelIndex) supported(path string) error {
	what := "this pipeline"
	if idx.ClassName != "" {
		what = idx.ClassName
	}
	if sd3Pipeline(idx) || fluxPipeline(idx) {
		return nil
	}
	unet, hasUNet := idx.Components["unet"]
	if _, ok := idx.Components["transformer"]; ok && !hasUNet {
		return cfgErr(path, "%s has a transformer denoiser that is not SD3's or Flux's (PixArt, Sana, ...): only SD 1.x/2.x, SDXL, SD3 and Flux pipelines are supported", what)
	}
	if hasUNet && unet[1] != "" && unet[1] != "UNet2DConditionModel" {
		return cfgErr(path, "%s: unet is a %s; only UNet2DConditionModel (SD 1.x/2.x, SDXL) is supported", what, unet[1])
	}
	if te, ok := idx.Components["text_encoder_3"]; ok && te[1] != "" {
		return cfgErr(path, "%s has a third text encoder (text_encoder_3, as SD3): only SD 1.x/2.x and SDXL pipelines are supported", what)
	}
	return nil
}

// legacyVAE maps the attention names of VAE files written by diffusers
// before 0.14 (query, key, value, proj_attn) to the current ones.
func legacyVAE(name string) string {
	for _, r := range [][2]string{{".query.", ".to_q."}, {".key.", ".to_k."}, {".value.", ".to_v."}, {".proj_attn.", ".to_out.0."}} {
		if strings.Contains(name, ".attentions.0"+r[0]) {
			return strings.Replace(name, r[0], r[1], 1)
		}
	}
	return name
}

// tokenizerPad reads the padding token a diffusers tokenizer folder names
// (special_tokens_map.json, else tokenizer_config.json).
func tokenizerPad(dir string) (int32, bool, error) {
	for _, name := range []string{"special_tokens_map.json", "tokenizer_config.json"} {
		p := filepath.Join(dir, name)
		data, err := readSmall(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, false, err
		}
		var t struct {
			Pad json.RawMessage `json:"pad_token"`
		}
		if err := decodeJSON(p, data, &t); err != nil {
			return 0, false, err
		}
		if id, ok, err := padID(p, t.Pad); err != nil || ok {
			return id, ok, err
		}
	}
	return 0, false, nil
}

// loadDiffusers loads a diffusers pipeline folder.
func loadDiffusers(dir string) (*Model, error) {
	m := &Model{Path: dir, Layout: Diffusers}
	var idx modelIndex
	indexPath := filepath.Join(dir, "model_index.json")
	if data, err := readSmall(indexPath); err == nil {
		if idx, err = parseModelIndex(indexPath, data); err != nil {
			return nil, err
		}
		if err := idx.supported(indexPath); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if sd3Pipeline(idx) {
		return loadSD3Diffusers(dir, idx)
	}
	if fluxPipeline(idx) {
		return loadFluxDiffusers(dir, idx)
	}
	names := map[string]string{
		"unet":      filepath.Join(dir, "unet", "config.json"),
		"vae":       filepath.Join(dir, "vae", "config.json"),
		"scheduler": filepath.Join(dir, "scheduler", "scheduler_config.json"),
	}
	read := func(role string, required bool) ([]byte, error) {
		data, err := readSmall(names[role])
		if errors.Is(err, os.ErrNotExist) {
			if !required {
				return nil, nil
			}
			rel, _ := filepath.Rel(dir, names[role])
			return nil, fmt.Errorf("checkpoint %s: %s is missing (a diffusers folder holds unet/, vae/ and text_encoder/ (SDXL: and text_encoder_2/), each with its config.json): %w",
				dir, rel, os.ErrNotExist)
		}
		return data, err
	}
	texts := map[string][]byte{}
	for _, role := range []string{"text_encoder", "text_encoder_2"} {
		names[role] = filepath.Join(dir, role, "config.json")
		c, listed := idx.Components[role]
		if listed && c[1] == "" {
			continue // [null, null]: absent (the SDXL refiner has no text_encoder)
		}
		required := listed
		if role == "text_encoder" && !listed {
			_, sdxl := idx.Components["text_encoder_2"]
			required = !sdxl
		}
		data, err := read(role, required)
		if err != nil {
			return nil, err
		}
		if data != nil {
			texts[role] = data
		}
	}
	if len(texts) == 0 {
		_, err := read("text_encoder", true)
		return nil, err
	}
	unetCfg, err := read("unet", true)
	if err != nil {
		return nil, err
	}
	vaeCfg, err := read("vae", true)
	if err != nil {
		return nil, err
	}
	schedCfg, err := read("scheduler", false)
	if err != nil {
		return nil, err
	}
	if schedCfg == nil {
		m.Warnings = append(m.Warnings, "no scheduler/scheduler_config.json: using the family's default scheduler")
	}
	cfg, err := parseDiffusersConfigs(unetCfg, vaeCfg, schedCfg, texts, names)
	if err != nil {
		return nil, err
	}
	_, has1 := texts["text_encoder"]
	_, has2 := texts["text_encoder_2"]
	fam, why := folderFamily(idx, has1, has2, textInfo{act: cfg.Texts["text_encoder"].HiddenAct, linearProj: cfg.UNet.UseLinearProjection})
	if schedCfg == nil {
		cfg.Scheduler = fam.Scheduler
	}
	m.Spec = fam
	m.UNet, m.VAE, m.Scheduler = cfg.UNet, cfg.VAE, cfg.Scheduler
	m.ConfigSource = filepath.Join(dir, "*", "config.json")
	for _, spec := range fam.Texts {
		tc := cfg.Texts[spec.Role]
		if spec.Pooled {
			tc.Architectures = []string{"CLIPTextModelWithProjection"}
		}
		pad, ok, err := tokenizerPad(filepath.Join(dir, spec.Tokenizer))
		if err != nil {
			return nil, err
		}
		if !ok {
			pad = spec.Pad
		}
		m.Texts = append(m.Texts, TextModel{Spec: spec, Config: tc, Pad: pad})
	}
	ud, vd, tds, err := declsOf(m)
	if err != nil {
		return nil, &LoadError{Path: dir, Problems: []string{err.Error()}}
	}
	direct := func(d nets.Decl) []string { return []string{d.Name} }
	type part struct {
		c    *component
		sub  string
		base string
	}
	comps := []part{
		{newComponent("unet", ud, false, direct), "unet", "diffusion_pytorch_model"},
		{newComponent("vae", vd, false, direct), "vae", "diffusion_pytorch_model"},
	}
	for i, t := range m.Texts {
		comps = append(comps, part{newComponent(t.Spec.Role, tds[i], false, direct), t.Spec.Role, "model"})
	}
	var b builder
	for _, cp := range comps {
		f, infos, err := m.openPart(filepath.Join(dir, cp.sub), cp.base)
		if err != nil {
			return nil, err
		}
		for _, t := range infos {
			name := t.Name
			if cp.sub == "vae" {
				name = legacyVAE(name)
			}
			switch {
			case ignored(t.Name):
				b.ignored++
			case cp.c.hasSlot(name):
				b.place(cp.c, f, t.Name, cp.c.decls[cp.c.byName[name]])
			case strings.HasPrefix(cp.sub, "text_encoder") && t.Name == "text_projection.weight":
				b.ignored++ // CLIPTextModelWithProjection's head where no pooled vector is used
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
	m.UNetWeights, m.VAEWeights = comps[0].c.weights, comps[1].c.weights
	for i := range m.Texts {
		m.Texts[i].Weights = comps[2+i].c.weights
	}
	m.Family, m.FamilyWhy = classify(m, false, why)
	return m, nil
}

func (c *component) hasSlot(name string) bool {
	_, ok := c.byName[name]
	return ok
}

// openPart opens the weight file (base.safetensors or its fp16 variant) of
// a diffusers component folder and records it in m, returning its tensors;
// on an error m is closed.
func (m *Model) openPart(folder, base string) (*safetensors.File, []safetensors.TensorInfo, error) {
	path, err := weightFile(folder, base)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	f, err := safetensors.Open(path)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("checkpoint: %w", err)
	}
	m.files = append(m.files, f)
	m.Files = append(m.Files, path)
	infos := f.Tensors()
	m.Tensors += len(infos)
	return f, infos, nil
}
