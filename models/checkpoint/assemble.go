package checkpoint

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// ignored reports training-only tensors that inference never needs.
func ignored(name string) bool {
	if strings.HasPrefix(name, "model_ema.") || strings.HasSuffix(name, "position_ids") {
		return true
	}
	switch name {
	case "betas", "logvar", "lvlb_weights", "alphas_cumprod", "alphas_cumprod_prev",
		"sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
		"sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod":
		return true
	}
	return strings.HasPrefix(name, "alphas_cumprod") || strings.HasPrefix(name, "posterior_")
}

// component gathers one network's weights against the parameters its
// builder declares (nets.*Decls): each declaration names the tensor in the
// diffusers layout and in the original one, so both layouts map through
// the same list.
type component struct {
	name    string
	decls   []nets.Decl
	byName  map[string]int
	byKey   map[string][]int // file key -> declarations it holds
	keyOf   []string         // declaration -> the file key reported when missing
	weights nets.MapWeights
	from    map[string]string // diffusers name -> file key, for messages
	// orig: the file holds the original tensors (Decl.Orig: fused, squeezed,
	// transposed as the original code stores them), not diffusers'.
	orig bool
}

// newComponent indexes decls by file key: key(d) returns the keys a
// declaration may have in the file (the first is reported when missing).
func newComponent(name string, decls []nets.Decl, orig bool, key func(d nets.Decl) []string) *component {
	c := &component{name: name, decls: decls, orig: orig, byName: map[string]int{}, byKey: map[string][]int{},
		weights: nets.MapWeights{}, from: map[string]string{}}
	for i, d := range decls {
		c.byName[d.Name] = i
		ks := key(d)
		c.keyOf = append(c.keyOf, ks[0])
		for j, k := range ks {
			if !slices.Contains(ks[:j], k) {
				c.byKey[k] = append(c.byKey[k], i)
			}
		}
	}
	return c
}

// builder accumulates problems and warnings while placing tensors.
type builder struct {
	problems []string
	unknown  []string
	ignored  int
}

// take places file tensor key into every declaration of c it holds and
// reports whether there was one.
func (b *builder) take(c *component, f *safetensors.File, key string) bool {
	idx := c.byKey[key]
	for _, i := range idx {
		b.place(c, f, key, c.decls[i])
	}
	return len(idx) > 0
}

// place stores (part of) tensor key of f as declaration d. A slice of a
// row-major tensor along its first dimension is contiguous, so nothing is
// copied, except for a transposed original.
func (b *builder) place(c *component, f *safetensors.File, key string, d nets.Decl) {
	info, _ := f.Lookup(key)
	label := func() string {
		if key != d.Name {
			return fmt.Sprintf("%q (%s %s)", key, c.name, d.Name)
		}
		return fmt.Sprintf("%q", key)
	}
	if prev, dup := c.from[d.Name]; dup {
		b.problems = append(b.problems, fmt.Sprintf("tensor %s duplicates %q", label(), prev))
		return
	}
	c.from[d.Name] = key
	dt, ok := info.DType.GPU()
	if !ok {
		b.problems = append(b.problems, fmt.Sprintf("tensor %s: dtype %s is not supported (want F32, F16 or BF16)", label(), info.DType))
		return
	}
	direct := !c.orig // diffusers layout: the declared shape itself
	want := d.Shape
	if !direct {
		want = d.OrigShape()
	}
	okShape := slices.Equal(info.Shape, want)
	if !okShape && d.Squeeze { // diffusers-era files and LDM files both occur
		alt := append(append([]int(nil), d.Shape...), 1, 1)
		okShape = slices.Equal(info.Shape, d.Shape) || slices.Equal(info.Shape, alt)
	}
	if !okShape {
		b.problems = append(b.problems, fmt.Sprintf("tensor %s: shape %v, expected %v", label(), info.Shape, want))
		return
	}
	raw, err := f.Data(key)
	if err != nil {
		b.problems = append(b.problems, err.Error())
		return
	}
	if !direct && d.Fused() {
		lo, hi := d.RowRange(len(raw))
		raw = raw[lo:hi:hi]
	}
	if !direct && d.Transpose {
		if dt.Quantized() { // blocks run along the stored rows: widen first
			v, err := ref.Dequantize(dt, raw, int(info.NumElements()))
			if err != nil {
				b.problems = append(b.problems, fmt.Sprintf("tensor %s: %v", label(), err))
				return
			}
			dt, raw = gpu.F16, ref.EncodeF16(v)
		}
		raw = transpose(raw, info.Shape[0], info.Shape[1], dt.Size())
	}
	if !direct && d.Swap {
		n := len(raw) / 2
		raw = append(append(make([]byte, 0, len(raw)), raw[n:]...), raw[:n]...)
	}
	c.weights[d.Name] = nets.Param{DType: dt, Shape: append([]int(nil), d.Shape...), Raw: raw}
}

// transpose copies a rows x cols matrix of size-byte elements transposed.
func transpose(raw []byte, rows, cols, size int) []byte {
	out := make([]byte, len(raw))
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			copy(out[(c*rows+r)*size:(c*rows+r+1)*size], raw[(r*cols+c)*size:(r*cols+c+1)*size])
		}
	}
	return out
}

// missing reports the component's declarations that received no tensor.
func (b *builder) missing(c *component) {
	for i, d := range c.decls {
		if _, ok := c.from[d.Name]; ok {
			continue
		}
		k := c.keyOf[i]
		label := fmt.Sprintf("%q", k)
		if k != d.Name {
			label = fmt.Sprintf("%q (%s %s)", k, c.name, d.Name)
		}
		want := d.Shape
		if c.orig {
			want = d.OrigShape()
		}
		b.problems = append(b.problems, fmt.Sprintf("missing tensor %s, expected shape %v", label, want))
	}
}

// fail builds the LoadError; unknown tensors are listed too, since a
// misnamed tensor is often the missing one.
func (b *builder) fail(path string) error {
	if len(b.unknown) > 0 {
		b.problems = append(b.problems, strings.Replace(b.warnings()[0], "ignored", "not recognised (misnamed?)", 1))
	}
	return &LoadError{Path: path, Problems: b.problems}
}

// warnings summarises unknown tensors.
func (b *builder) warnings() []string {
	if len(b.unknown) == 0 {
		return nil
	}
	const show = 5
	sort.Strings(b.unknown)
	list := b.unknown
	more := ""
	if len(list) > show {
		more = fmt.Sprintf(", ... (%d more)", len(list)-show)
		list = list[:show]
	}
	return []string{fmt.Sprintf("%d unknown tensor(s) ignored: %s%s", len(b.unknown), strings.Join(list, ", "), more)}
}

// openCLIPUnused reports OpenCLIP tensors inference does not use: the
// contrastive head (unless declared) and the blocks after the ones kept.
func openCLIPUnused(key string, layers int) bool {
	switch key {
	case "text_projection", "logit_scale", "attn_mask":
		return true
	}
	if rest, ok := strings.CutPrefix(key, "transformer.resblocks."); ok {
		if i := strings.IndexByte(rest, '.'); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil && n >= layers {
				return true
			}
		}
	}
	return false
}

// notACheckpoint explains files that hold no single-file keys of any
// family, rather than listing every expected tensor as missing.
func notACheckpoint(infos []safetensors.TensorInfo) string {
	var known, diffusersUNet, diffusersVAE, clip, lora, ipAdapter, vision int
	for _, t := range infos {
		k := t.Name
		switch {
		case strings.HasPrefix(k, "model.diffusion_model."), strings.HasPrefix(k, "first_stage_model."),
			strings.HasPrefix(k, "cond_stage_model."), strings.HasPrefix(k, "conditioner.embedders."),
			strings.HasPrefix(k, "unet."), strings.HasPrefix(k, "vae."), strings.HasPrefix(k, "text_encoder."):
			known++
		case strings.HasPrefix(k, "lora_") || strings.Contains(k, ".lora_") || strings.Contains(k, "lora_down"):
			lora++
		case strings.HasPrefix(k, "down_blocks.") || strings.HasPrefix(k, "time_embedding."):
			diffusersUNet++
		case strings.HasPrefix(k, "encoder.down_blocks.") || strings.HasPrefix(k, "decoder.up_blocks."):
			diffusersVAE++
		case strings.HasPrefix(k, "text_model."):
			clip++
		case strings.HasPrefix(k, "image_proj.") || strings.HasPrefix(k, "ip_adapter."):
			ipAdapter++
		case strings.HasPrefix(k, "vision_model."):
			vision++
		}
	}
	switch {
	case known > 0:
		return ""
	case lora > 0:
		return "this is a LoRA/adapter file, not a full checkpoint"
	case ipAdapter > 0:
		return "this is an IP-Adapter (image_proj.*, ip_adapter.*), not a full checkpoint: pass it with --ip-adapter"
	case vision > 0 && clip == 0:
		return "this is a CLIP vision model (an IP-Adapter's image encoder), not a full checkpoint: pass its folder with --image-encoder"
	case diffusersUNet > 0, diffusersVAE > 0, clip > 0:
		return "this is one component of a diffusers folder (diffusers names, no model.diffusion_model.* keys): pass the folder that holds model_index.json"
	}
	return "no Stable Diffusion tensors (model.diffusion_model.*, first_stage_model.*, cond_stage_model.*, conditioner.embedders.*) in this file"
}

// declsOf lists the declarations of every network of m (configs set).
func declsOf(m *Model) (unet, vae []nets.Decl, texts [][]nets.Decl, err error) {
	if unet, err = nets.UNetDecls(m.UNet); err != nil {
		return nil, nil, nil, fmt.Errorf("unet config: %w", err)
	}
	if vae, err = nets.VAEDecls(m.VAE); err != nil {
		return nil, nil, nil, fmt.Errorf("vae config: %w", err)
	}
	for _, t := range m.Texts {
		d, err := nets.TextDecls(t.Config)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s config: %w", t.Spec.Role, err)
		}
		texts = append(texts, d)
	}
	return unet, vae, texts, nil
}

// fromSingle converts an opened single file; cfg nil means infer.
func fromSingle(f *safetensors.File, cfg *configs, source string) (*Model, error) {
	infos := f.Tensors()
	if why := notACheckpoint(infos); why != "" {
		return nil, &LoadError{Path: f.Path(), Problems: []string{why}, NotModel: true}
	}
	prefixed := false // a Go trainer's "unet." / "vae." / "text_encoder." names
	for _, t := range infos {
		if strings.HasPrefix(t.Name, "unet.") || strings.HasPrefix(t.Name, "vae.") || strings.HasPrefix(t.Name, "text_encoder.") {
			prefixed = true
			break
		}
	}
	fam, why := singleFileFamily(infos)
	if cfg != nil && cfg.family != nil && (fam == nil || prefixed) {
		fam, why = cfg.family, "named by "+source
	}
	if fam == nil {
		fam, why = FamilyNamed("SD 1.x"), "diffusers-named single file"
	}
	m := &Model{Path: f.Path(), Layout: SingleFile, Files: []string{f.Path()}, Tensors: len(infos), Spec: fam}
	inferred := cfg == nil
	shaped, notes := inferConfigs(infos, fam)
	if inferred {
		cfg = &shaped
		m.ConfigSource = "inferred from tensor shapes (" + strings.Join(notes, "; ") + ")"
	} else {
		m.ConfigSource = source
		if cfg.textFromShapes {
			cfg.Texts = shaped.Texts
			m.ConfigSource += " (text encoder sizes from tensor shapes)"
		}
	}
	m.UNet, m.VAE, m.Scheduler = cfg.UNet, cfg.VAE, cfg.Scheduler
	for _, spec := range fam.Texts {
		tc, ok := cfg.Texts[spec.Role]
		if !ok {
			tc = shaped.Texts[spec.Role]
		}
		if spec.Pooled {
			tc.Architectures = []string{"CLIPTextModelWithProjection"}
		}
		pad := spec.Pad
		if p, ok := cfg.Pads[spec.Tokenizer]; ok {
			pad = p
		}
		m.Texts = append(m.Texts, TextModel{Spec: spec, Config: tc, Pad: pad})
	}

	ud, vd, tds, err := declsOf(m)
	if err != nil {
		return nil, &LoadError{Path: f.Path(), Problems: []string{err.Error()}}
	}
	var unet, vae *component
	texts := make([]*component, len(m.Texts))
	if prefixed {
		unet = newComponent("unet", ud, false, func(d nets.Decl) []string { return []string{"unet." + d.Name} })
		vae = newComponent("vae", vd, false, func(d nets.Decl) []string { return []string{"vae." + d.Name, "vae." + legacyVAEInverse(d.Name)} })
	} else {
		unet = newComponent("unet", ud, true, func(d nets.Decl) []string { return []string{fam.UNetPrefix + d.Orig} })
		vae = newComponent("vae", vd, true, func(d nets.Decl) []string { return []string{fam.VAEPrefix + d.Orig} })
	}
	for i, t := range m.Texts {
		spec := t.Spec
		texts[i] = newComponent(spec.Role, tds[i], spec.OpenCLIP && !prefixed, func(d nets.Decl) []string {
			switch {
			case prefixed:
				return []string{spec.Role + "." + d.Name}
			case spec.OpenCLIP:
				return []string{spec.Prefix + d.Orig}
			}
			// LDM files of SD 1.x hold transformers' names with or without
			// the text_model level.
			return []string{spec.Prefix + d.Name, spec.Prefix + strings.TrimPrefix(d.Name, "text_model.")}
		})
	}
	var b builder
	all := append([]*component{unet, vae}, texts...)
	for _, t := range infos {
		k := t.Name
		if ignored(k) {
			b.ignored++
			continue
		}
		taken := false
		for _, c := range all {
			if b.take(c, f, k) {
				taken = true
				break
			}
		}
		if taken {
			continue
		}
		unused := false
		for i, tm := range m.Texts {
			if rest, ok := strings.CutPrefix(k, tm.Spec.Prefix); ok && tm.Spec.OpenCLIP {
				unused = openCLIPUnused(rest, tm.Config.NumHiddenLayers) && texts[i].byKey[k] == nil
			}
			if tm.Spec.Role == "text_encoder" && (k == "text_encoder.text_projection.weight") {
				unused = true
			}
		}
		if unused {
			b.ignored++
		} else {
			b.unknown = append(b.unknown, k)
		}
	}
	for _, c := range all {
		b.missing(c)
	}
	if len(b.problems) > 0 {
		err := b.fail(f.Path())
		err.(*LoadError).Family = fam.Name + " single file, " + why
		return nil, err
	}
	m.Ignored = b.ignored
	m.Warnings = b.warnings()
	m.UNetWeights, m.VAEWeights = unet.weights, vae.weights
	for i := range m.Texts {
		m.Texts[i].Weights = texts[i].weights
	}
	for _, c := range all {
		m.setOrigins(c, func(string) string { return f.Path() })
	}
	m.files = []*safetensors.File{f}
	m.Family, m.FamilyWhy = classify(m, inferred, why)
	return m, nil
}

// legacyVAEInverse maps current VAE attention names to those of diffusers
// before 0.14 (query, key, value, proj_attn).
func legacyVAEInverse(name string) string {
	for _, r := range [][2]string{{".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}} {
		if strings.Contains(name, ".attentions.0"+r[0]) {
			return strings.Replace(name, r[0], r[1], 1)
		}
	}
	return name
}

// SingleFileKeys lists every tensor an original single file of m's family
// holds for m's configs (key -> shape), from the networks' declarations.
func SingleFileKeys(m *Model) (map[string][]int, error) {
	ud, vd, tds, err := declsOf(m)
	if err != nil {
		return nil, err
	}
	out := map[string][]int{}
	for _, d := range ud {
		out[m.Spec.UNetPrefix+d.Orig] = d.OrigShape()
	}
	for _, d := range vd {
		s := d.OrigShape()
		out[m.Spec.VAEPrefix+d.Orig] = s
	}
	for i, t := range m.Texts {
		for _, d := range tds[i] {
			if t.Spec.OpenCLIP {
				out[t.Spec.Prefix+d.Orig] = d.OrigShape()
			} else {
				out[t.Spec.Prefix+d.Name] = d.Shape
			}
		}
	}
	return out, nil
}

// SingleFileEntries lays m's weights out as an original single file of its
// family (the inverse of loading one), from the same declarations: fused
// q/k/v rebuilt, transposed and squeezed tensors stored as the original
// code stores them. An encoder whose single file holds one block more
// (SD 2.x) gets a copy of its last block there, which loading drops again.
func SingleFileEntries(m *Model) ([]safetensors.Entry, error) {
	if m.Spec == nil {
		return nil, fmt.Errorf("checkpoint %s: no family", m.Path)
	}
	if m.Transformer != nil {
		return sd3SingleFileEntries(m)
	}
	if m.Flux != nil {
		return fluxSingleFileEntries(m)
	}
	ud, vd, tds, err := declsOf(m)
	if err != nil {
		return nil, err
	}
	var out []safetensors.Entry
	dtype := func(p nets.Param) safetensors.DType {
		if d, ok := safetensors.FromGPU(p.DType); ok {
			return d // quantized types too: stepwise convert writes them to GGUF
		}
		return safetensors.F16
	}
	emit := func(component string, w nets.Weights, decls []nets.Decl, key func(d nets.Decl) string, orig bool) error {
		fused := map[string]int{} // key -> index in out
		for _, d := range decls {
			p, ok := w.Get(d.Name)
			if !ok {
				return fmt.Errorf("checkpoint %s: %s has no %s", m.Path, component, d.Name)
			}
			k := key(d)
			shape, data := d.Shape, p.Raw
			if orig {
				shape = d.OrigShape()
				if d.Transpose {
					if p.DType.Quantized() {
						v, err := ref.Dequantize(p.DType, p.Raw, gpu.Shape(d.Shape).Numel())
						if err != nil {
							return fmt.Errorf("checkpoint %s: %s: %w", m.Path, d.Name, err)
						}
						p = nets.Param{DType: gpu.F16, Shape: p.Shape, Raw: ref.EncodeF16(v)}
					}
					data = transpose(p.Raw, d.Shape[0], d.Shape[1], p.DType.Size())
				}
			}
			if orig && d.Fused() {
				if i, ok := fused[k]; ok {
					out[i].Data = append(out[i].Data, data...)
					continue
				}
				fused[k] = len(out)
				data = append(make([]byte, 0, len(data)*shape[0]/d.Shape[0]), data...)
			}
			out = append(out, safetensors.Entry{Name: k, DType: dtype(p), Shape: shape, Data: data})
		}
		return nil
	}
	if err := emit("unet", m.UNetWeights, ud, func(d nets.Decl) string { return m.Spec.UNetPrefix + d.Orig }, true); err != nil {
		return nil, err
	}
	if err := emit("vae", m.VAEWeights, vd, func(d nets.Decl) string { return m.Spec.VAEPrefix + d.Orig }, true); err != nil {
		return nil, err
	}
	for i, t := range m.Texts {
		spec := t.Spec
		key := func(d nets.Decl) string { return spec.Prefix + d.Name }
		if spec.OpenCLIP {
			key = func(d nets.Decl) string { return spec.Prefix + d.Orig }
		}
		start := len(out)
		if err := emit(spec.Role, t.Weights, tds[i], key, spec.OpenCLIP); err != nil {
			return nil, err
		}
		if spec.ExtraBlock && spec.OpenCLIP {
			last := fmt.Sprintf("transformer.resblocks.%d.", t.Config.NumHiddenLayers-1)
			extra := fmt.Sprintf("transformer.resblocks.%d.", t.Config.NumHiddenLayers)
			for _, e := range out[start:] {
				if rest, ok := strings.CutPrefix(e.Name, spec.Prefix+last); ok {
					e.Name = spec.Prefix + extra + rest
					out = append(out, e)
				}
			}
		}
	}
	return out, nil
}
