package checkpoint

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// Extra names the files a single-file checkpoint may leave out, as
// stable-diffusion.cpp takes them (--clip-l, --clip-g, --t5xxl, --vae),
// and the T5 tokenizer that no single file carries. Each file holds one
// network under any key prefix (ComfyUI's clip_l.safetensors:
// "text_model.*"; t5xxl_fp16.safetensors: "encoder.*"; a VAE in the
// original or the diffusers layout). They apply to SD3 single files.
type Extra struct {
	CLIPL, CLIPG, T5XXL, VAE string
	// T5Tokenizer is a spiece.model or the folder holding it; empty looks
	// beside the checkpoint (spiece.model, tokenizer_3/spiece.model).
	T5Tokenizer string
}

func (e Extra) empty() bool { return e == Extra{} }

// LoadExtra is Load with separate component files (see Extra).
func LoadExtra(path, configPath string, ex Extra) (*Model, error) {
	if ex.empty() {
		return Load(path, configPath)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("checkpoint %s: --clip-l, --clip-g, --t5xxl, --vae and --t5-tokenizer apply to single files; a diffusers folder has its own", path)
	}
	if err := refusePickle(path); err != nil {
		return nil, err
	}
	var cfg *configs
	if configPath != "" {
		c, err := readConfigFile(configPath)
		if err != nil {
			return nil, err
		}
		cfg = &c
	}
	f, err := OpenWeights(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	fam, _ := singleFileFamily(f.Tensors())
	from := fromSingleSD3
	switch {
	case fam != nil && fam.Denoiser == DenoiserFlux:
		from = fromSingleFlux
		if ex.CLIPG != "" {
			f.Close()
			return nil, fmt.Errorf("checkpoint %s: --clip-g: a Flux model has no CLIP-G (it takes --clip-l, --t5xxl and --vae)", path)
		}
	case fam == nil || fam.Denoiser != DenoiserMMDiT:
		f.Close()
		return nil, fmt.Errorf("checkpoint %s: --clip-l, --clip-g, --t5xxl, --vae and --t5-tokenizer apply to SD3 and Flux single files (model.diffusion_model.joint_blocks.*, double_blocks.*), and this is not one", path)
	}
	m, err := from(f, cfg, configPath, ex)
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

// source is where one network's tensors are: a file and the key prefix.
type source struct {
	f      *safetensors.File
	prefix string
	flag   string // the flag that named the file ("" for the checkpoint)
}

// keyPrefix returns the prefix before the first key of f ending in suffix
// (restricted to keys starting with within).
func keyPrefix(f *safetensors.File, within, suffix string) (string, bool) {
	for _, t := range f.Tensors() {
		if strings.HasPrefix(t.Name, within) && strings.HasSuffix(t.Name, suffix) {
			return strings.TrimSuffix(t.Name, suffix), true
		}
	}
	return "", false
}

// sourceWant is one network a single file may hold or a flag may supply:
// its role, the flag and the path it gave (empty: look in the checkpoint
// under within), the key suffix that finds it, and what to call it.
type sourceWant struct {
	role, flag, path, within, suffix, what string
}

// sd3Sources finds every network of an SD3 single file: in the file under
// the family's prefixes, or in the separate file the matching flag names.
// A network found in neither is an error that names its flag.
func sd3Sources(main *safetensors.File, fam *Family, ex Extra, opened *[]*safetensors.File) (map[string]source, error) {
	return findSources(main, []sourceWant{
		{"transformer", "", "", fam.UNetPrefix, "x_embedder.proj.weight", "the MM-DiT (model.diffusion_model.*)"},
		{"vae", "--vae", ex.VAE, fam.VAEPrefix, "decoder.conv_in.weight", "a VAE (first_stage_model.*)"},
		{fam.Texts[0].Role, "--clip-l", ex.CLIPL, fam.Texts[0].Prefix, "text_model.embeddings.token_embedding.weight", "a CLIP-L text encoder (" + fam.Texts[0].Prefix + "*)"},
		{fam.Texts[1].Role, "--clip-g", ex.CLIPG, fam.Texts[1].Prefix, "text_model.embeddings.token_embedding.weight", "a CLIP-G text encoder (" + fam.Texts[1].Prefix + "*)"},
		{fam.T5.Role, "--t5xxl", ex.T5XXL, fam.T5.Prefix, "encoder.block.0.layer.0.SelfAttention.q.weight", "a T5-XXL text encoder (" + fam.T5.Prefix + "*)"},
	}, opened)
}

// findSources finds each wanted network in main or in the file its flag
// names (opened files are appended to opened, for the caller to close).
func findSources(main *safetensors.File, ws []sourceWant, opened *[]*safetensors.File) (map[string]source, error) {
	out := map[string]source{}
	for _, w := range ws {
		if w.path == "" {
			p, ok := keyPrefix(main, w.within, w.suffix)
			if !ok {
				if w.flag == "" {
					return nil, fmt.Errorf("checkpoint %s: no %s", main.Path(), w.what)
				}
				return nil, fmt.Errorf("checkpoint %s: the file has no %s: pass it with %s FILE", main.Path(), w.what, w.flag)
			}
			out[w.role] = source{f: main, prefix: p}
			continue
		}
		f, err := OpenWeights(w.path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", w.flag, err)
		}
		*opened = append(*opened, f)
		p, ok := keyPrefix(f, "", w.suffix)
		if !ok {
			return nil, fmt.Errorf("%s %s: no %s tensors in this file (no key ending in %s)", w.flag, w.path, strings.SplitN(w.what, " (", 2)[0], w.suffix)
		}
		out[w.role] = source{f: f, prefix: p, flag: w.flag}
	}
	return out, nil
}

// dimOf returns dimension i of tensor key of f (0 when absent).
func dimOf(f *safetensors.File, key string, i int) int {
	t, ok := f.Lookup(key)
	if !ok || i >= len(t.Shape) {
		return 0
	}
	return t.Shape[i]
}

func countKeys(f *safetensors.File, format string) int {
	n := 0
	for n < 4096 {
		if _, ok := f.Lookup(fmt.Sprintf(format, n)); !ok {
			break
		}
		n++
	}
	return n
}

// inferMMDiT reads an MM-DiT's config from the original tensors' shapes.
// Heads are 64 wide (every SD3/SD3.5 model), unless q/k norms give the
// head width.
func inferMMDiT(s source) (nets.MMDiTConfig, string) {
	f, p := s.f, s.prefix
	var c nets.MMDiTConfig
	inner := dimOf(f, p+"x_embedder.proj.weight", 0)
	c.InChannels = dimOf(f, p+"x_embedder.proj.weight", 1)
	c.PatchSize = dimOf(f, p+"x_embedder.proj.weight", 2)
	c.PosEmbedMaxSize = int(math.Round(math.Sqrt(float64(dimOf(f, p+"pos_embed", 1)))))
	c.NumLayers = countKeys(f, p+"joint_blocks.%d.x_block.adaLN_modulation.1.weight")
	c.JointAttentionDim = dimOf(f, p+"context_embedder.weight", 1)
	c.CaptionProjectionDim = inner
	c.PooledProjectionDim = dimOf(f, p+"y_embedder.mlp.0.weight", 1)
	if pp := c.PatchSize * c.PatchSize; pp > 0 {
		c.OutChannels = dimOf(f, p+"final_layer.linear.weight", 0) / pp
	}
	c.AttentionHeadDim = 64
	note := "heads assumed 64 wide"
	if hd := dimOf(f, p+"joint_blocks.0.x_block.attn.ln_q.weight", 0); hd > 0 {
		c.AttentionHeadDim, c.QKNorm, note = hd, "rms_norm", "q/k RMS norm"
	}
	if inner > 0 && inner%c.AttentionHeadDim == 0 {
		c.NumAttentionHeads = inner / c.AttentionHeadDim
	}
	for i := 0; i < c.NumLayers; i++ {
		if _, ok := f.Lookup(fmt.Sprintf("%sjoint_blocks.%d.x_block.attn2.qkv.weight", p, i)); ok {
			c.DualAttentionLayers = append(c.DualAttentionLayers, i)
		}
	}
	c.SampleSize = 128
	return c, fmt.Sprintf("MM-DiT %d layers x %d wide, %s", c.NumLayers, inner, note)
}

// inferT5 reads a T5 encoder's config from its tensors' shapes.
func inferT5(s source) nets.T5Config {
	f, p := s.f, s.prefix
	c := nets.T5Config{
		VocabSize:                   dimOf(f, p+"shared.weight", 0),
		DModel:                      dimOf(f, p+"shared.weight", 1),
		NumLayers:                   countKeys(f, p+"encoder.block.%d.layer.0.layer_norm.weight"),
		NumHeads:                    dimOf(f, p+"encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 1),
		RelativeAttentionNumBuckets: dimOf(f, p+"encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 0),
		FeedForwardProj:             "gated-gelu",
		DFF:                         dimOf(f, p+"encoder.block.0.layer.1.DenseReluDense.wi_0.weight", 0),
	}
	if c.DFF == 0 {
		c.FeedForwardProj = "relu"
		c.DFF = dimOf(f, p+"encoder.block.0.layer.1.DenseReluDense.wi.weight", 0)
	}
	if c.NumHeads > 0 {
		c.DKV = dimOf(f, p+"encoder.block.0.layer.0.SelfAttention.q.weight", 0) / c.NumHeads
	}
	if c.DModel == 0 {
		c.DModel = dimOf(f, p+"encoder.block.0.layer.0.layer_norm.weight", 0)
	}
	c.Defaults()
	return c
}

// inferCLIP reads a transformers CLIP text model's config from its shapes
// (heads 64 wide).
func inferCLIP(s source, act string) nets.TextConfig {
	f, p := s.f, s.prefix+"text_model."
	c := nets.TextConfig{
		VocabSize:             dimOf(f, p+"embeddings.token_embedding.weight", 0),
		HiddenSize:            dimOf(f, p+"embeddings.token_embedding.weight", 1),
		MaxPositionEmbeddings: dimOf(f, p+"embeddings.position_embedding.weight", 0),
		IntermediateSize:      dimOf(f, p+"encoder.layers.0.mlp.fc1.weight", 0),
		NumHiddenLayers:       countKeys(f, p+"encoder.layers.%d.mlp.fc1.weight"),
		ProjectionDim:         dimOf(f, s.prefix+"text_projection.weight", 0),
		HiddenAct:             act,
	}
	c.NumAttentionHeads = max(c.HiddenSize/64, 1)
	return c
}

// inferVAE reads an AutoencoderKL config from its tensors: original (LDM)
// names unless diffusers is set.
func inferVAE(s source, diffusers bool) nets.VAEConfig {
	f, p := s.f, s.prefix
	var c nets.VAEConfig
	c.InChannels = dimOf(f, p+"encoder.conv_in.weight", 1)
	c.OutChannels = dimOf(f, p+"decoder.conv_out.weight", 0)
	c.LatentChannels = dimOf(f, p+"decoder.conv_in.weight", 1)
	block, res := "encoder.down.%d.block.0.conv1.weight", "encoder.down.0.block.%d.conv1.weight"
	if diffusers {
		block, res = "encoder.down_blocks.%d.resnets.0.conv1.weight", "encoder.down_blocks.0.resnets.%d.conv1.weight"
	}
	for i := 0; i < 8; i++ {
		w := dimOf(f, fmt.Sprintf(p+block, i), 0)
		if w == 0 {
			break
		}
		c.BlockOutChannels = append(c.BlockOutChannels, w)
	}
	c.LayersPerBlock = countKeys(f, p+res)
	c.NormNumGroups = groupsFor(c.BlockOutChannels)
	t, fl := true, false
	c.UseQuantConv, c.UsePostQuantConv = &fl, &fl
	if _, ok := f.Lookup(p + "quant_conv.weight"); ok {
		c.UseQuantConv = &t
	}
	if _, ok := f.Lookup(p + "post_quant_conv.weight"); ok {
		c.UsePostQuantConv = &t
	}
	n := len(c.BlockOutChannels)
	for i := 0; i < n; i++ {
		c.DownBlockTypes = append(c.DownBlockTypes, "DownEncoderBlock2D")
		c.UpBlockTypes = append(c.UpBlockTypes, "UpDecoderBlock2D")
	}
	return c
}

// sd3Bundle is the SD3 part of a config bundle (a JSON file with the
// diffusers configs under "transformer" and "text_encoder_3").
type sd3Bundle struct {
	Transformer *nets.MMDiTConfig `json:"transformer"`
	T5          *nets.T5Config    `json:"text_encoder_3"`
}

// fromSingleSD3 loads an SD3 single file (model.diffusion_model.* MM-DiT,
// first_stage_model.* VAE, text_encoders.{clip_l,clip_g,t5xxl}.transformer.*),
// with any network it lacks from the files ex names. Hyper-parameters come
// from the config bundle when given, else from the tensors' shapes.
func fromSingleSD3(f *safetensors.File, cfg *configs, configPath string, ex Extra) (*Model, error) {
	fam := FamilyNamed("SD3")
	m := &Model{Path: f.Path(), Layout: SingleFile, Spec: fam, Family: fam.Name}
	var opened []*safetensors.File
	fail := func(err error) (*Model, error) {
		for _, o := range opened {
			o.Close()
		}
		return nil, err
	}
	src, err := sd3Sources(f, fam, ex, &opened)
	if err != nil {
		return fail(err)
	}
	var bundle sd3Bundle
	if err := readBundle(configPath, &bundle); err != nil {
		return fail(err)
	}
	tc, note := inferMMDiT(src["transformer"])
	m.ConfigSource = "inferred from tensor shapes (" + note + ")"
	if bundle.Transformer != nil {
		tc, m.ConfigSource = *bundle.Transformer, configPath
	} else if tc.NumAttentionHeads == 0 {
		return fail(fmt.Errorf("checkpoint %s: the MM-DiT is %d wide, not a whole number of 64-wide heads, so its heads cannot be read from the shapes: pass --config with a JSON bundle holding its \"transformer\" config",
			f.Path(), tc.CaptionProjectionDim))
	}
	tc.Defaults()
	if _, err := nets.MMDiTDecls(tc); err != nil {
		return fail(fmt.Errorf("checkpoint %s: transformer: %w", f.Path(), err))
	}
	m.Transformer = &tc

	diffusersVAE, err := singleVAE(m, src["vae"], cfg)
	if err != nil {
		return fail(err)
	}
	m.Scheduler = fam.Scheduler
	if cfg != nil && cfg.Scheduler.ClassName == FlowMatchScheduler {
		m.Scheduler = cfg.Scheduler
	}
	for _, spec := range fam.Texts {
		if err := singleText(m, src[spec.Role], spec, cfg, "CLIPTextModelWithProjection"); err != nil {
			return fail(err)
		}
	}
	if err := singleT5(m, src[fam.T5.Role], bundle.T5, ex); err != nil {
		return fail(err)
	}
	if err := checkSD3Widths(m, f.Path()); err != nil {
		return fail(err)
	}

	td, err := nets.MMDiTDecls(tc)
	if err != nil {
		return fail(err)
	}
	if err := placeSingle(m, f, opened, src, td, diffusersVAE, "SD3 single file", "keys model.diffusion_model.joint_blocks.*"); err != nil {
		return fail(err)
	}
	return m, nil
}

// readBundle decodes the config bundle at configPath (none: nothing) into v.
func readBundle(configPath string, v any) error {
	if configPath == "" {
		return nil
	}
	data, err := readConfig(configPath)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return cfgErr(configPath, "%v", err)
	}
	return nil
}

// singleVAE sets m's VAE config: the bundle's "vae" when it gives the
// shift (scaling included), else read from vs's shapes with the family's
// scaling and shift. It reports whether vs holds diffusers' names.
func singleVAE(m *Model, vs source, cfg *configs) (diffusers bool, err error) {
	_, diffusers = vs.f.Lookup(vs.prefix + "decoder.up_blocks.0.resnets.0.conv1.weight")
	if cfg != nil && cfg.VAE.ShiftFactor != nil {
		m.VAE = cfg.VAE
	} else {
		m.VAE = inferVAE(vs, diffusers)
		shift := m.Spec.Shift
		m.VAE.ScalingFactor, m.VAE.ShiftFactor = m.Spec.Scaling, &shift
	}
	m.VAE.Defaults()
	return diffusers, validateVAE(m.Path, &m.VAE)
}

// singleText appends the CLIP text encoder spec to m.Texts: its config
// from the bundle or s's shapes, as class arch, with the tokenizer's pad.
func singleText(m *Model, s source, spec TextSpec, cfg *configs, arch string) error {
	c := inferCLIP(s, spec.Act)
	pad := spec.Pad
	if cfg != nil {
		if bc, ok := cfg.Texts[spec.Role]; ok && bc.HiddenSize > 0 {
			c = bc
		}
		if p, ok := cfg.Pads[spec.Tokenizer]; ok {
			pad = p
		}
	}
	c.Defaults()
	c.Architectures = []string{arch}
	if err := validateText(m.Path, spec.Role, &c); err != nil {
		return err
	}
	m.Texts = append(m.Texts, TextModel{Spec: spec, Config: c, Pad: pad})
	return nil
}

// singleT5 sets m's T5: its config from the bundle (bc) or s's shapes, and
// the tokenizer --t5-tokenizer names or one beside the checkpoint.
func singleT5(m *Model, s source, bc *nets.T5Config, ex Extra) error {
	t5 := &T5Model{Spec: *m.Spec.T5, Config: inferT5(s)}
	if bc != nil {
		t5.Config = *bc
		t5.Config.Defaults()
	}
	var err error
	if t5.Tokenizer, err = findT5Tokenizer(m.Path, ex.T5Tokenizer); err != nil {
		return err
	}
	m.T5 = t5
	return nil
}

// placeSingle places the tensors of a transformer family's single file,
// and of the separate files that supplied its other networks, against the
// declarations: the transformer's td by original names, the VAE by LDM
// (or diffusers) names, T5 and the CLIP encoders by transformers' names,
// each under the prefix its source was found at. Tensors no network
// claims are reported; on success m holds the weights and its files.
func placeSingle(m *Model, f *safetensors.File, opened []*safetensors.File, src map[string]source, td []nets.Decl, diffusersVAE bool, family, keysWhy string) error {
	fam, t5 := m.Spec, m.T5
	vd, err := nets.VAEDecls(m.VAE)
	if err != nil {
		return err
	}
	t5d, err := nets.T5Decls(t5.Config)
	if err != nil {
		return err
	}
	type part struct {
		c   *component
		src source
	}
	orig := func(p string) func(d nets.Decl) []string {
		return func(d nets.Decl) []string { return []string{p + d.Orig} }
	}
	direct := func(p string) func(d nets.Decl) []string {
		return func(d nets.Decl) []string { return []string{p + d.Name} }
	}
	ts, t5s, vs := src["transformer"], src[fam.T5.Role], src["vae"]
	parts := []part{
		{newComponent("transformer", td, true, orig(ts.prefix)), ts},
		{newComponent("vae", vd, !diffusersVAE, orig(vs.prefix)), vs},
		{newComponent(fam.T5.Role, t5d, false, direct(t5s.prefix)), t5s},
	}
	if diffusersVAE {
		parts[1].c = newComponent("vae", vd, false, direct(vs.prefix))
	}
	for _, t := range m.Texts {
		d, err := nets.TextDecls(t.Config)
		if err != nil {
			return err
		}
		s := src[t.Spec.Role]
		parts = append(parts, part{newComponent(t.Spec.Role, d, false, direct(s.prefix)), s})
	}
	var b builder
	claimed := map[*safetensors.File]map[string]bool{}
	for _, pt := range parts {
		if claimed[pt.src.f] == nil {
			claimed[pt.src.f] = map[string]bool{}
		}
		for _, t := range pt.src.f.Tensors() {
			if !strings.HasPrefix(t.Name, pt.src.prefix) || claimed[pt.src.f][t.Name] {
				continue
			}
			rest := strings.TrimPrefix(t.Name, pt.src.prefix)
			switch {
			case b.take(pt.c, pt.src.f, t.Name):
				claimed[pt.src.f][t.Name] = true
			case ignored(t.Name) || rest == "encoder.embed_tokens.weight" || rest == "text_projection.weight":
				claimed[pt.src.f][t.Name] = true
				b.ignored++
			}
		}
		b.missing(pt.c)
		path := pt.src.f.Path()
		m.setOrigins(pt.c, func(string) string { return path })
	}
	for _, file := range append([]*safetensors.File{f}, opened...) {
		for _, t := range file.Tensors() {
			if !claimed[file][t.Name] {
				b.unknown = append(b.unknown, t.Name)
			}
		}
	}
	m.Tensors = len(f.Tensors())
	for _, o := range opened {
		m.Tensors += len(o.Tensors())
	}
	if len(b.problems) > 0 {
		err := b.fail(f.Path())
		err.(*LoadError).Family = family
		return err
	}
	m.Ignored = b.ignored
	m.Warnings = b.warnings()
	m.TransformerWeights, m.VAEWeights, t5.Weights = parts[0].c.weights, parts[1].c.weights, parts[2].c.weights
	for i := range m.Texts {
		m.Texts[i].Weights = parts[3+i].c.weights
	}
	m.files = append([]*safetensors.File{f}, opened...)
	m.Files = []string{f.Path()}
	var why []string
	for _, o := range opened {
		m.Files = append(m.Files, o.Path())
	}
	roles := []string{}
	for _, t := range fam.Texts {
		roles = append(roles, t.Role)
	}
	for _, role := range append(roles, fam.T5.Role, "vae") {
		if s := src[role]; s.flag != "" {
			why = append(why, fmt.Sprintf("%s from %s", role, s.flag))
		}
	}
	m.FamilyWhy = keysWhy
	if len(why) > 0 {
		m.FamilyWhy += "; " + strings.Join(why, ", ")
	}
	return nil
}

// findT5Tokenizer returns the spiece.model given (a file or a folder
// holding one), or one beside the checkpoint.
func findT5Tokenizer(checkpointPath, given string) (string, error) {
	if given != "" {
		if st, err := os.Stat(given); err == nil && st.IsDir() {
			given = filepath.Join(given, "spiece.model")
		}
		if _, err := os.Stat(given); err != nil {
			return "", fmt.Errorf("--t5-tokenizer: %w", err)
		}
		return given, nil
	}
	dir := filepath.Dir(checkpointPath)
	for _, p := range []string{"spiece.model", filepath.Join("tokenizer_3", "spiece.model"), filepath.Join("tokenizer_2", "spiece.model")} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			return filepath.Join(dir, p), nil
		}
	}
	return "", fmt.Errorf("checkpoint %s: no T5 tokenizer: a single file carries none; pass --t5-tokenizer PATH (the spiece.model of an SD3 folder's tokenizer_3/ or a Flux folder's tokenizer_2/) or put spiece.model beside the file", checkpointPath)
}

// sd3SingleFileEntries lays an SD3 model out as an all-in-one original
// single file, from the declarations (fused q/k/v, swapped adaLN halves):
// the inverse of fromSingleSD3.
func sd3SingleFileEntries(m *Model) ([]safetensors.Entry, error) {
	fam := m.Spec
	td, err := nets.MMDiTDecls(*m.Transformer)
	if err != nil {
		return nil, err
	}
	return transformerFileEntries(m, td, fam.UNetPrefix)
}

// transformerFileEntries lays out a transformer family's model (SD3,
// Flux) as an all-in-one original single file: the transformer's
// declarations td under prefix with original names, the VAE in LDM names
// under the family's VAE prefix, the text encoders and T5 under theirs.
func transformerFileEntries(m *Model, td []nets.Decl, prefix string) ([]safetensors.Entry, error) {
	vd, err := nets.VAEDecls(m.VAE)
	if err != nil {
		return nil, err
	}
	t5d, err := nets.T5Decls(m.T5.Config)
	if err != nil {
		return nil, err
	}
	out, err := appendEntries(nil, m.Path, m.TransformerWeights, td, prefix, true)
	if err != nil {
		return nil, err
	}
	if out, err = appendEntries(out, m.Path, m.VAEWeights, vd, m.Spec.VAEPrefix, true); err != nil {
		return nil, err
	}
	for _, t := range m.Texts {
		d, err := nets.TextDecls(t.Config)
		if err != nil {
			return nil, err
		}
		if out, err = appendEntries(out, m.Path, t.Weights, d, t.Spec.Prefix, false); err != nil {
			return nil, err
		}
	}
	return appendEntries(out, m.Path, m.T5.Weights, t5d, m.T5.Spec.Prefix, false)
}

// appendEntries appends w's tensors under prefix, with their declared
// names, or (orig) their original names and layouts: transposed, swapped,
// and fused parts concatenated in declaration order.
func appendEntries(out []safetensors.Entry, path string, w nets.Weights, decls []nets.Decl, prefix string, orig bool) ([]safetensors.Entry, error) {
	fused := map[string]int{}
	for _, d := range decls {
		p, ok := w.Get(d.Name)
		if !ok {
			return nil, fmt.Errorf("checkpoint %s: no %s", path, d.Name)
		}
		k, shape, data := prefix+d.Name, d.Shape, p.Raw
		if orig {
			k, shape = prefix+d.Orig, d.OrigShape()
			if d.Transpose && p.DType.Quantized() {
				return nil, fmt.Errorf("checkpoint %s: %s: a transposed original cannot be written from %v", path, d.Name, p.DType)
			}
			if d.Transpose {
				data = transpose(p.Raw, d.Shape[0], d.Shape[1], p.DType.Size())
			}
			if d.Swap {
				n := len(data) / 2
				data = append(append(make([]byte, 0, len(data)), data[n:]...), data[:n]...)
			}
			if d.Fused() {
				if i, ok := fused[k]; ok {
					out[i].Data = append(out[i].Data, data...)
					continue
				}
				fused[k] = len(out)
				data = append(make([]byte, 0, len(data)*shape[0]/d.Shape[0]), data...)
			}
		}
		dt, ok := safetensors.FromGPU(p.DType)
		if !ok {
			dt = safetensors.F16
		}
		out = append(out, safetensors.Entry{Name: k, DType: dt, Shape: shape, Data: data})
	}
	return out, nil
}
