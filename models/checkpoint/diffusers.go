package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

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
// (any of them nil: SD 1.5 defaults) and validates them together.
func parseDiffusersConfigs(unet, vae, text, sched []byte, names [4]string) (configs, error) {
	c := configs{Scheduler: DefaultScheduler()}
	parts := []struct {
		data []byte
		v    any
	}{{unet, &c.UNet}, {vae, &c.VAE}, {text, &c.Text}}
	for i, p := range parts {
		if p.data == nil {
			continue
		}
		if err := decodeJSON(names[i], p.data, p.v); err != nil {
			return c, err
		}
	}
	if sched != nil {
		if err := decodeJSON(names[3], sched, &c.Scheduler); err != nil {
			return c, err
		}
	}
	c.UNet.Defaults()
	c.VAE.Defaults()
	c.Text.Defaults()
	for _, err := range []error{validateUNet(names[0], &c.UNet), validateVAE(names[1], &c.VAE), validateText(names[2], &c.Text), validateScheduler(names[3], &c.Scheduler)} {
		if err != nil {
			return c, err
		}
	}
	return c, nil
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
	if _, ok := idx.Components["text_encoder_2"]; ok {
		return cfgErr(path, "%s has a second text encoder (text_encoder_2, as SDXL): only SD 1.x/2.x pipelines are supported", what)
	}
	unet, hasUNet := idx.Components["unet"]
	if _, ok := idx.Components["transformer"]; ok && !hasUNet {
		return cfgErr(path, "%s has a transformer denoiser, not a U-Net (SD3, Flux, PixArt, ...): only SD 1.x/2.x pipelines are supported", what)
	}
	if hasUNet && unet[1] != "" && unet[1] != "UNet2DConditionModel" {
		return cfgErr(path, "%s: unet is a %s; only UNet2DConditionModel (SD 1.x/2.x) is supported", what, unet[1])
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

// loadDiffusers loads a diffusers pipeline folder.
func loadDiffusers(dir string) (*Model, error) {
	m := &Model{Path: dir, Layout: Diffusers}
	names := [4]string{
		filepath.Join(dir, "unet", "config.json"),
		filepath.Join(dir, "vae", "config.json"),
		filepath.Join(dir, "text_encoder", "config.json"),
		filepath.Join(dir, "scheduler", "scheduler_config.json"),
	}
	pipeline := ""
	indexPath := filepath.Join(dir, "model_index.json")
	if data, err := readSmall(indexPath); err == nil {
		idx, err := parseModelIndex(indexPath, data)
		if err != nil {
			return nil, err
		}
		if err := idx.supported(indexPath); err != nil {
			return nil, err
		}
		pipeline = idx.ClassName
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var raw [4][]byte
	for i, p := range names {
		data, err := readSmall(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				if i == 3 {
					m.Warnings = append(m.Warnings, "no scheduler/scheduler_config.json: using SD 1.5's scheduler")
					continue
				}
				rel, _ := filepath.Rel(dir, p)
				return nil, fmt.Errorf("checkpoint %s: %s is missing (a diffusers folder holds unet/, vae/ and text_encoder/, each with its config.json): %w",
					dir, rel, os.ErrNotExist)
			}
			return nil, err
		}
		raw[i] = data
	}
	cfg, err := parseDiffusersConfigs(raw[0], raw[1], raw[2], raw[3], names)
	if err != nil {
		return nil, err
	}
	m.UNet, m.VAE, m.Text, m.Scheduler = cfg.UNet, cfg.VAE, cfg.Text, cfg.Scheduler
	m.ConfigSource = filepath.Join(dir, "*", "config.json")

	comps := []struct {
		c    *component
		sub  string
		base string
	}{
		{newComponent("unet", unetLayout(m.UNet)), "unet", "diffusion_pytorch_model"},
		{newComponent("vae", vaeLayout(m.VAE)), "vae", "diffusion_pytorch_model"},
		{newComponent("text_encoder", textLayout(m.Text)), "text_encoder", "model"},
	}
	var b builder
	for _, cp := range comps {
		path, err := weightFile(filepath.Join(dir, cp.sub), cp.base)
		if err != nil {
			m.Close()
			return nil, err
		}
		f, err := safetensors.Open(path)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
		m.files = append(m.files, f)
		m.Files = append(m.Files, path)
		infos := f.Tensors()
		m.Tensors += len(infos)
		for _, t := range infos {
			name := t.Name
			if cp.sub == "vae" {
				name = legacyVAE(name)
			}
			switch {
			case ignored(t.Name):
				b.ignored++
			case cp.c.hasSlot(name):
				b.place(cp.c, f, t.Name, name)
			case cp.sub == "text_encoder" && t.Name == "text_projection.weight":
				b.ignored++ // CLIPTextModelWithProjection's extra head
			default:
				b.unknown = append(b.unknown, cp.sub+"/"+t.Name)
			}
		}
		b.missing(cp.c, func(s slot) string { return s.name })
		m.setOrigins(cp.c, func(string) string { return path })
	}
	if len(b.problems) > 0 {
		m.Close()
		return nil, b.fail(dir)
	}
	m.Ignored = b.ignored
	m.Warnings = append(m.Warnings, b.warnings()...)
	m.UNetWeights, m.VAEWeights, m.TextWeights = comps[0].c.weights, comps[1].c.weights, comps[2].c.weights
	m.Family, m.FamilyWhy = classify(m, false)
	if pipeline != "" && pipeline != "StableDiffusionPipeline" {
		m.FamilyWhy += "; model_index.json says " + pipeline
	}
	return m, nil
}

func (c *component) hasSlot(name string) bool {
	_, ok := c.slots[name]
	return ok
}
