// Package checkpoint loads a Stable Diffusion checkpoint, either an
// original single .safetensors file (LDM layout) or a diffusers folder, into
// the network configs and diffusers-named weights of package nets, checking
// every tensor against the shapes the configs imply.
package checkpoint

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// Layouts of Model.Layout.
const (
	SingleFile = "single-file"
	Diffusers  = "diffusers"
)

// Model is a loaded checkpoint. Its weights are nets.MapWeights whose Raw
// bytes point into the memory-mapped files: they stay valid until Close.
type Model struct {
	Path, Layout string
	// Family is the model family recognised ("SD 1.x", "SD 2.x",
	// "unknown"), FamilyWhy the evidence.
	Family, FamilyWhy string
	UNet              nets.UNetConfig
	VAE               nets.VAEConfig
	Text              nets.TextConfig
	Scheduler         SchedulerConfig
	// Weights by diffusers/transformers name, in the file's dtype.
	UNetWeights, VAEWeights, TextWeights nets.Weights
	// Warnings lists harmless oddities (unknown extra tensors, ...).
	Warnings []string
	// ConfigSource says where the hyper-parameters came from.
	ConfigSource string
	// Files are the safetensors files read; Tensors counts their tensors and
	// Ignored those skipped as training-only state (EMA copies, schedule
	// buffers, position ids).
	Files   []string
	Tensors int
	Ignored int

	files []*safetensors.File
	// origins maps "component/param" to the file and key it came from.
	origins map[string]origin
}

// Close releases the mapped files; the weights must not be used after.
func (m *Model) Close() error {
	var errs []error
	for _, f := range m.files {
		errs = append(errs, f.Close())
	}
	m.files = nil
	return errors.Join(errs...)
}

// ComponentStats summarises one network's weights.
type ComponentStats struct {
	Name    string // "unet", "vae", "text_encoder"
	Tensors int
	Params  int64
	Bytes   int64
	DTypes  map[gpu.DType]int // tensor count per dtype
}

// Stats summarises the weights of the U-Net, VAE and text encoder.
func (m *Model) Stats() []ComponentStats {
	var out []ComponentStats
	for _, c := range []struct {
		name string
		w    nets.Weights
	}{{"unet", m.UNetWeights}, {"vae", m.VAEWeights}, {"text_encoder", m.TextWeights}} {
		s := ComponentStats{Name: c.name, DTypes: map[gpu.DType]int{}}
		if mw, ok := c.w.(nets.MapWeights); ok {
			for _, p := range mw {
				s.Tensors++
				s.DTypes[p.DType]++
				s.Bytes += int64(len(p.Raw))
				s.Params += int64(len(p.Raw) / p.DType.Size())
			}
		}
		out = append(out, s)
	}
	return out
}

// LoadError lists every missing, mis-shaped or unusable tensor of a
// checkpoint.
type LoadError struct {
	Path     string
	Problems []string
	// NotModel: the file holds no Stable Diffusion checkpoint at all
	// (a LoRA, one diffusers component, SDXL, ...); Problems says what.
	NotModel bool
}

func (e *LoadError) Error() string {
	const show = 25
	if e.NotModel && len(e.Problems) == 1 {
		return fmt.Sprintf("checkpoint %s: not a loadable Stable Diffusion checkpoint: %s", e.Path, e.Problems[0])
	}
	var b strings.Builder
	fmt.Fprintf(&b, "checkpoint %s: %d problem", e.Path, len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	b.WriteString(" (do the configs match the weights?):")
	for i, p := range e.Problems {
		if i == show {
			fmt.Fprintf(&b, "\n  ... and %d more", len(e.Problems)-show)
			break
		}
		b.WriteString("\n  - " + p)
	}
	return b.String()
}

// ErrPickle is returned for .ckpt/.pt/.bin checkpoints.
var ErrPickle = errors.New("pickle checkpoints are never loaded: unpickling can execute arbitrary code; convert the file to .safetensors first (e.g. with diffusers or the safetensors convert script)")

var pickleExts = []string{".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"}

// refusePickle rejects pickle files by extension and by content (a zip
// archive as torch.save writes, or a raw pickle stream).
func refusePickle(path string) error {
	ext := strings.ToLower(filepath.Ext(path))
	for _, e := range pickleExts {
		if ext == e {
			return fmt.Errorf("checkpoint %s: %w", path, ErrPickle)
		}
	}
	f, _, err := safefile.Open(path) // regular files only; never blocks
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	defer f.Close()
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if bytes.HasPrefix(head, []byte("PK\x03\x04")) || (n >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5) {
		return fmt.Errorf("checkpoint %s looks like a PyTorch pickle: %w", path, ErrPickle)
	}
	return nil
}

// Load opens a checkpoint: path is a .safetensors file in the original
// single-file layout or a diffusers folder. A single file may also hold
// diffusers names under "unet.", "vae." and "text_encoder." prefixes (as
// a Go trainer writes them); such a file needs its config. For a single file, configPath
// may name a JSON bundle of diffusers configs ("unet", "vae",
// "text_encoder", "scheduler") or an original LDM .yaml inference config;
// without it a side file with the same base name and .json/.yaml/.yml is
// used, else the hyper-parameters are inferred from the tensor shapes and
// SD 1.5's defaults.
func Load(path, configPath string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if st.IsDir() {
		m, err := loadDiffusers(path)
		if err == nil && configPath != "" {
			m.Warnings = append(m.Warnings, fmt.Sprintf("config %s ignored: a diffusers folder carries its own config.json files", configPath))
		}
		return m, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("checkpoint: %w", &safefile.NotRegularError{Path: path, Kind: safefile.Kind(st.Mode()), Want: "a .safetensors file or a diffusers folder"})
	}
	if err := refusePickle(path); err != nil {
		return nil, err
	}
	var cfg *configs
	source := ""
	if configPath == "" {
		base := strings.TrimSuffix(path, filepath.Ext(path))
		for _, ext := range []string{".json", ".yaml", ".yml"} {
			if _, err := os.Stat(base + ext); err == nil {
				configPath = base + ext
				break
			}
		}
	}
	if configPath != "" {
		c, err := readConfigFile(configPath)
		if err != nil {
			return nil, err
		}
		cfg, source = &c, configPath
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	m, err := fromSingle(f, cfg, source)
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

// LoadBytes loads a single-file checkpoint held in memory (e.g. embedded
// with go:embed); configJSON is a config bundle as for Load, or nil to
// infer the hyper-parameters.
func LoadBytes(name string, data []byte, configJSON []byte) (*Model, error) {
	var cfg *configs
	source := ""
	if configJSON != nil {
		c, err := parseBundle(name+" (config)", configJSON)
		if err != nil {
			return nil, err
		}
		cfg, source = &c, name+" (embedded config)"
	}
	f, err := safetensors.FromBytes(name, data)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return fromSingle(f, cfg, source)
}

// readConfigFile reads a JSON config bundle or an LDM YAML config.
func readConfigFile(path string) (configs, error) {
	data, err := readConfig(path)
	if err != nil {
		return configs{}, err
	}
	if isLDMYAML(path) {
		return parseLDMYAML(path, data)
	}
	return parseBundle(path, data)
}

// readConfig reads a config file: a regular file (a FIFO, a device or
// /dev/zero behind a symlink is refused by what it is) of at most
// maxConfigSize bytes, however large it claims or grows to be.
func readConfig(path string) ([]byte, error) {
	data, err := safefile.ReadFile(path, maxConfigSize)
	var tl *safefile.TooLargeError
	if errors.As(err, &tl) {
		return nil, cfgErr(path, "larger than the %d-byte limit", maxConfigSize)
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return data, nil
}

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

// component gathers one network's weights against its expected layout.
type component struct {
	name    string
	layout  *layout
	slots   map[string]int    // diffusers name -> index in layout.slots
	byLDM   map[string]string // LDM name -> diffusers name
	weights nets.MapWeights
	from    map[string]string // diffusers name -> file key, for messages
}

func newComponent(name string, l *layout) *component {
	c := &component{name: name, layout: l, slots: map[string]int{}, byLDM: map[string]string{},
		weights: nets.MapWeights{}, from: map[string]string{}}
	for i, s := range l.slots {
		c.slots[s.name] = i
		c.byLDM[s.ldm] = s.name
	}
	return c
}

// builder accumulates problems and warnings while placing tensors.
type builder struct {
	problems []string
	unknown  []string
	ignored  int
}

// place stores tensor key of f as the component's parameter name.
func (b *builder) place(c *component, f *safetensors.File, key, name string) {
	b.placePart(c, f, key, name, 0, 1)
}

// placePart stores part `part` of `parts` equal slices along dimension 0
// of tensor key (OpenCLIP's fused q/k/v projection) as parameter name.
// The slice of a row-major tensor along its first dimension is contiguous,
// so nothing is copied.
func (b *builder) placePart(c *component, f *safetensors.File, key, name string, part, parts int) {
	info, _ := f.Lookup(key)
	s := c.layout.slots[c.slots[name]]
	label := func() string {
		if key != name {
			return fmt.Sprintf("%q (%s %s)", key, c.name, name)
		}
		return fmt.Sprintf("%q", key)
	}
	if prev, dup := c.from[name]; dup {
		b.problems = append(b.problems, fmt.Sprintf("tensor %s duplicates %q", label(), prev))
		return
	}
	c.from[name] = key
	dt, ok := info.DType.GPU()
	if !ok {
		b.problems = append(b.problems, fmt.Sprintf("tensor %s: dtype %s is not supported (want F32, F16 or BF16)", label(), info.DType))
		return
	}
	want := append([]int(nil), s.shape...)
	want[0] *= parts
	if !slices.Equal(info.Shape, want) && !(s.squeeze && slices.Equal(info.Shape, append(want, 1, 1))) {
		b.problems = append(b.problems, fmt.Sprintf("tensor %s: shape %v, expected %v", label(), info.Shape, want))
		return
	}
	raw, err := f.Data(key)
	if err != nil {
		b.problems = append(b.problems, err.Error())
		return
	}
	n := len(raw) / parts
	c.weights[name] = nets.Param{DType: dt, Shape: append([]int(nil), s.shape...), Raw: raw[part*n : (part+1)*n : (part+1)*n]}
}

// missing reports the component's slots that received no tensor; ldm
// gives the file key a slot would have had.
func (b *builder) missing(c *component, key func(s slot) string) {
	for _, s := range c.layout.slots {
		if _, ok := c.from[s.name]; ok {
			continue
		}
		k := key(s)
		label := fmt.Sprintf("%q", k)
		if k != s.name {
			label = fmt.Sprintf("%q (%s %s)", k, c.name, s.name)
		}
		b.problems = append(b.problems, fmt.Sprintf("missing tensor %s, expected shape %v", label, s.shape))
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

// LDM single-file prefixes.
const (
	ldmUNet = "model.diffusion_model."
	ldmVAE  = "first_stage_model."
	ldmText = "cond_stage_model.transformer."
	ldmOpen = "cond_stage_model.model."
)

// notACheckpoint explains files that hold no LDM single-file keys at all,
// rather than listing every expected tensor as missing.
func notACheckpoint(infos []safetensors.TensorInfo) string {
	var ldm, sdxl, diffusersUNet, diffusersVAE, clip, lora int
	for _, t := range infos {
		k := t.Name
		switch {
		case strings.HasPrefix(k, ldmUNet), strings.HasPrefix(k, ldmVAE), strings.HasPrefix(k, "cond_stage_model."),
			strings.HasPrefix(k, "unet."), strings.HasPrefix(k, "vae."), strings.HasPrefix(k, "text_encoder."):
			ldm++
		case strings.HasPrefix(k, "conditioner.embedders."):
			sdxl++
		case strings.HasPrefix(k, "lora_") || strings.Contains(k, ".lora_") || strings.Contains(k, "lora_down"):
			lora++
		case strings.HasPrefix(k, "down_blocks.") || strings.HasPrefix(k, "time_embedding."):
			diffusersUNet++
		case strings.HasPrefix(k, "encoder.down_blocks.") || strings.HasPrefix(k, "decoder.up_blocks."):
			diffusersVAE++
		case strings.HasPrefix(k, "text_model."):
			clip++
		}
	}
	switch {
	case sdxl > 0:
		return "this is an SDXL checkpoint (conditioner.embedders.*); only SD 1.x/2.x are supported"
	case ldm > 0:
		return ""
	case lora > 0:
		return "this is a LoRA/adapter file, not a full checkpoint"
	case diffusersUNet > 0, diffusersVAE > 0, clip > 0:
		return "this is one component of a diffusers folder (diffusers names, no model.diffusion_model.* keys): pass the folder that holds model_index.json"
	}
	return "no Stable Diffusion tensors (model.diffusion_model.*, first_stage_model.*, cond_stage_model.*) in this file"
}

// fromSingle converts an opened LDM single file; cfg nil means infer.
func fromSingle(f *safetensors.File, cfg *configs, source string) (*Model, error) {
	infos := f.Tensors()
	if why := notACheckpoint(infos); why != "" {
		return nil, &LoadError{Path: f.Path(), Problems: []string{why}, NotModel: true}
	}
	m := &Model{Path: f.Path(), Layout: SingleFile, Files: []string{f.Path()}, Tensors: len(infos)}
	inferred := cfg == nil
	if inferred {
		c, notes := inferConfigs(infos)
		cfg = &c
		m.ConfigSource = "inferred from tensor shapes (" + strings.Join(notes, "; ") + ")"
	} else {
		m.ConfigSource = source
		if cfg.textFromShapes {
			if shaped, _ := inferConfigs(infos); shaped.Text.HiddenSize > 0 {
				cfg.Text = shaped.Text
				m.ConfigSource += " (text encoder sizes from tensor shapes)"
			}
		}
	}
	m.UNet, m.VAE, m.Text, m.Scheduler = cfg.UNet, cfg.VAE, cfg.Text, cfg.Scheduler

	unet := newComponent("unet", unetLayout(m.UNet))
	vae := newComponent("vae", vaeLayout(m.VAE))
	text := newComponent("text_encoder", textLayout(m.Text))
	openByKey, openKeyOf := openCLIPNames(text.layout)
	openclip, prefixed := false, false
	for _, t := range infos {
		if strings.HasPrefix(t.Name, "unet.") || strings.HasPrefix(t.Name, "vae.") || strings.HasPrefix(t.Name, "text_encoder.") {
			prefixed = true
			break
		}
	}
	var b builder
	for _, t := range infos {
		k := t.Name
		switch {
		case ignored(k):
			b.ignored++
		case strings.HasPrefix(k, ldmUNet):
			b.route(unet, f, k, unet.byLDM[k[len(ldmUNet):]])
		case strings.HasPrefix(k, ldmVAE):
			b.route(vae, f, k, vae.byLDM[k[len(ldmVAE):]])
		case strings.HasPrefix(k, ldmText):
			rest := k[len(ldmText):]
			if !strings.HasPrefix(rest, "text_model.") {
				rest = "text_model." + rest
			}
			b.route(text, f, k, text.byLDM[rest])
		case strings.HasPrefix(k, "unet."):
			b.route(unet, f, k, unet.slotName(k[len("unet."):]))
		case strings.HasPrefix(k, "vae."):
			b.route(vae, f, k, vae.slotName(legacyVAE(k[len("vae."):])))
		case strings.HasPrefix(k, "text_encoder."):
			b.route(text, f, k, text.slotName(k[len("text_encoder."):]))
		case strings.HasPrefix(k, ldmOpen):
			openclip = true
			rest := k[len(ldmOpen):]
			targets := openByKey[rest]
			for _, tg := range targets {
				b.placePart(text, f, k, tg.name, tg.part, tg.parts)
			}
			if len(targets) == 0 {
				if openCLIPUnused(rest, m.Text.NumHiddenLayers) {
					b.ignored++
				} else {
					b.unknown = append(b.unknown, k)
				}
			}
		default:
			b.unknown = append(b.unknown, k)
		}
	}
	if prefixed {
		b.missing(unet, func(s slot) string { return "unet." + s.name })
		b.missing(vae, func(s slot) string { return "vae." + s.name })
	} else {
		b.missing(unet, func(s slot) string { return ldmUNet + s.ldm })
		b.missing(vae, func(s slot) string { return ldmVAE + s.ldm })
	}
	if prefixed && !openclip {
		b.missing(text, func(s slot) string { return "text_encoder." + s.name })
	} else if openclip {
		b.missing(text, func(s slot) string { return ldmOpen + openKeyOf[s.name] })
	} else {
		b.missing(text, func(s slot) string { return ldmText + s.ldm })
	}
	if len(b.problems) > 0 {
		return nil, b.fail(f.Path())
	}
	m.Ignored = b.ignored
	m.Warnings = b.warnings()
	m.UNetWeights, m.VAEWeights, m.TextWeights = unet.weights, vae.weights, text.weights
	for _, c := range []*component{unet, vae, text} {
		m.setOrigins(c, func(string) string { return f.Path() })
	}
	m.files = []*safetensors.File{f}
	m.Family, m.FamilyWhy = classify(m, inferred)
	return m, nil
}

// slotName returns name if the component expects it, else "".
func (c *component) slotName(name string) string {
	if _, ok := c.slots[name]; ok {
		return name
	}
	return ""
}

// route places key as name, or records it as unknown when name is empty.
func (b *builder) route(c *component, f *safetensors.File, key, name string) {
	if name == "" {
		b.unknown = append(b.unknown, key)
		return
	}
	b.place(c, f, key, name)
}
