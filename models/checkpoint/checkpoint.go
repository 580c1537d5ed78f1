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
	// Family is the model family's name ("SD 1.x", "SD 2.x", "SDXL",
	// "SDXL refiner", "unknown"), FamilyWhy the evidence, Spec its row of
	// the family table.
	Family, FamilyWhy string
	Spec              *Family
	UNet              nets.UNetConfig
	VAE               nets.VAEConfig
	// Texts are the text encoders, in the order of Spec.Texts.
	Texts     []TextModel
	Scheduler SchedulerConfig
	// Weights by diffusers/transformers name, in the file's dtype.
	UNetWeights, VAEWeights nets.Weights
	// Transformer is the MM-DiT's config of an SD3 model (nil for a U-Net
	// model, whose UNet is set instead); TransformerWeights its weights.
	Transformer        *nets.MMDiTConfig
	TransformerWeights nets.Weights
	// Flux is a Flux model's transformer config (its weights in
	// TransformerWeights), else nil.
	Flux *nets.FluxConfig
	// T5 is the T5 encoder of families that have one (SD3), else nil.
	T5 *T5Model
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

	// InPlace makes Upload hand the devices that can (gpu.MappedUploader)
	// the mapped file's bytes to read in place instead of copying them:
	// the weights are then the file's pages, resident one op at a time
	// (see models.New for when it is set). The files must not change
	// while the model is loaded.
	InPlace bool
	// inPlace counts the tensors a device took in place.
	inPlace int
	// extra holds the components of a side model (see sideModel).
	extra map[string]nets.Weights

	files []*safetensors.File
	// origins maps "component/param" to the file and key it came from.
	origins map[string]origin
}

// TextModel is one text encoder of a Model.
type TextModel struct {
	Spec    TextSpec
	Config  nets.TextConfig
	Weights nets.Weights
	// Pad is the tokenizer's padding id (49407 "<|endoftext|>" for CLIP-L,
	// 0 "!" for OpenCLIP's tokenizers in SD 2.x and SDXL).
	Pad int32
}

// T5Model is the T5 encoder of a Model.
type T5Model struct {
	Spec    T5Spec
	Config  nets.T5Config
	Weights nets.Weights
	// Tokenizer is the SentencePiece model file (spiece.model).
	Tokenizer string
}

// Denoiser names the denoising network's component: "transformer" for
// SD3, else "unet".
func (m *Model) Denoiser() string {
	if m.Transformer != nil || m.Flux != nil {
		return "transformer"
	}
	return "unet"
}

// Text returns the text encoder with the given role ("text_encoder",
// "text_encoder_2"), or nil.
func (m *Model) Text(role string) *TextModel {
	for i := range m.Texts {
		if m.Texts[i].Spec.Role == role {
			return &m.Texts[i]
		}
	}
	return nil
}

// DropPages releases the resident pages of the mapped files (see
// safetensors.File.DropPages); the weights stay readable. Pipelines call it
// after uploading every network.
func (m *Model) DropPages() error {
	var errs []error
	for _, f := range m.files {
		errs = append(errs, f.DropPages())
	}
	return errors.Join(errs...)
}

// CheckFiles returns a *safefile.ChangedError naming the first mapped file
// that changed on disk since it was opened (see safetensors.File.Changed).
// With InPlace the devices read the weights from the mappings without a
// guard: pipelines call it before each piece of work.
func (m *Model) CheckFiles() error {
	for _, f := range m.files {
		if err := f.Changed(); err != nil {
			return err
		}
	}
	return nil
}

// sideModel is a Model over the mapped files of a ControlNet, an IP-Adapter
// or a TAESD (which own and close them), whose components are the given
// weights: it uploads them as a checkpoint's (StartUpload: guarded,
// counting NaN/Inf, in place where the device can) and checks the files
// (CheckFiles). Never Close it.
func sideModel(path string, files []*safetensors.File, comps map[string]nets.Weights) *Model {
	return &Model{Path: path, files: files, extra: comps}
}

// ReadsInPlace reports whether a device reads any of the weights in place
// from the mapped files (see InPlace).
func (m *Model) ReadsInPlace() bool { return m.inPlace > 0 }

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
	Name    string // "unet", "vae", "text_encoder", "text_encoder_2"
	Tensors int
	Params  int64
	Bytes   int64
	DTypes  map[gpu.DType]int // tensor count per dtype
}

// Stats summarises the weights of the U-Net, VAE and text encoders.
func (m *Model) Stats() []ComponentStats {
	var out []ComponentStats
	roles := m.textRoles()
	if m.T5 != nil {
		roles = append(roles, m.T5.Spec.Role)
	}
	for _, name := range append([]string{m.Denoiser(), "vae"}, roles...) {
		s := ComponentStats{Name: name, DTypes: map[gpu.DType]int{}}
		w, _ := m.weightsOf(name)
		if mw, ok := w.(nets.MapWeights); ok {
			for _, p := range mw {
				s.Tensors++
				s.DTypes[p.DType]++
				s.Bytes += int64(len(p.Raw))
				s.Params += int64(gpu.Shape(p.Shape).Numel())
			}
		}
		out = append(out, s)
	}
	return out
}

// LoadError lists every missing, mis-shaped or unusable tensor of a
// checkpoint.
type LoadError struct {
	Path string
	// Family is the family the layout was read as, when known.
	Family   string
	Problems []string
	// NotModel: the file holds no Stable Diffusion checkpoint at all
	// (a LoRA, one diffusers component, ...); Problems says what.
	NotModel bool
}

func (e *LoadError) Error() string {
	const show = 25
	if e.NotModel && len(e.Problems) == 1 {
		return fmt.Sprintf("checkpoint %s: not a loadable Stable Diffusion checkpoint: %s", e.Path, e.Problems[0])
	}
	var b strings.Builder
	fmt.Fprintf(&b, "checkpoint %s", e.Path)
	if e.Family != "" {
		fmt.Fprintf(&b, " (read as %s)", e.Family)
	}
	fmt.Fprintf(&b, ": %d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	b.WriteString(" (do the configs match the weights?):")
	writeProblems(&b, e.Problems, show)
	return b.String()
}

// writeProblems lists problems one a line, the first show of them.
func writeProblems(b *strings.Builder, problems []string, show int) {
	for i, p := range problems {
		if i == show {
			fmt.Fprintf(b, "\n  ... and %d more", len(problems)-show)
			break
		}
		b.WriteString("\n  - " + p)
	}
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

// precisionTags are the weight-variant tags a file name may carry before its
// extension (diffusers' variant names: "model.fp16.safetensors"); the side
// config of "m.fp16.safetensors" may be "m.json", as the bundled model's is.
var precisionTags = []string{".fp16", ".fp32", ".bf16", ".fp8"}

// SideConfig returns the config file beside a single-file checkpoint, or ""
// when there is none: the file's base name with .json, .yaml or .yml, first
// as it is ("m.fp16.json"), then without a precision tag ("m.json").
func SideConfig(path string) string {
	base := strings.TrimSuffix(path, filepath.Ext(path))
	bases := []string{base}
	for _, tag := range precisionTags {
		if t := strings.TrimSuffix(base, tag); t != base && t != "" && !os.IsPathSeparator(t[len(t)-1]) {
			bases = append(bases, t)
		}
	}
	for _, b := range bases {
		for _, ext := range []string{".json", ".yaml", ".yml"} {
			// A folder is skipped; any other kind of file is taken, so that a
			// FIFO or a device there is refused by name when it is read.
			if st, err := os.Stat(b + ext); err == nil && !st.IsDir() {
				return b + ext
			}
		}
	}
	return ""
}

// Load opens a checkpoint: path is a .safetensors file in the original
// single-file layout or a diffusers folder. A single file may also hold
// diffusers names under "unet.", "vae." and "text_encoder." prefixes (as
// a Go trainer writes them); such a file needs its config. For a single file, configPath
// may name a JSON bundle of diffusers configs ("unet", "vae",
// "text_encoder", "scheduler") or an original LDM .yaml inference config;
// without it a side file with the same base name and .json/.yaml/.yml is
// used (see SideConfig), else the hyper-parameters are inferred from the tensor shapes and
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
		configPath = SideConfig(path)
	}
	if configPath != "" {
		c, err := readConfigFile(configPath)
		if err != nil {
			return nil, err
		}
		cfg, source = &c, configPath
	}
	f, err := OpenWeights(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if fam, _ := singleFileFamily(f.Tensors()); fam != nil && fam.Denoiser == DenoiserFlux {
		m, err := fromSingleFlux(f, cfg, source, Extra{})
		if err != nil {
			f.Close()
			return nil, err
		}
		return m, nil
	} else if fam != nil && fam.Denoiser == DenoiserMMDiT {
		m, err := fromSingleSD3(f, cfg, source, Extra{})
		if err != nil {
			f.Close()
			return nil, err
		}
		return m, nil
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
