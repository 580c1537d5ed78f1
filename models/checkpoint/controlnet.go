package checkpoint

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// ControlNet is a loaded ControlNet (diffusers' ControlNetModel): its
// config and weights (diffusers names), mapped from its file until Close.
type ControlNet struct {
	Path string
	// Name is the display name A1111 writes ("control_v11p_sd15_canny":
	// the file name without its extension, or the folder's name).
	Name   string
	Config nets.ControlNetConfig
	// Layout: "diffusers folder", "diffusers single file" or "original"
	// (lllyasviel's cldm keys, control_model.* or bare).
	Layout string
	// Family is the model family the ControlNet was made for, as far as
	// its shapes tell ("SD 1.x", "SD 2.x", "SDXL"; "" when they do not).
	Family  string
	Weights nets.MapWeights
	// Warnings lists harmless oddities (a v1.0 file's base-model tensors).
	Warnings []string

	file *safetensors.File
	src  *Model            // Source's
	from map[string]string // diffusers name -> file key
	hash string
	// timeIDsGuessed: an original SDXL file does not show the width of
	// its time-id embeddings; Fits takes the U-Net's.
	timeIDsGuessed bool
}

// Source is c's weights as a Model with one component, "controlnet", for
// uploading them (StartUpload) and checking the file (CheckFiles). c owns
// the file: close c, not the Model.
func (c *ControlNet) Source() *Model {
	if c.src == nil {
		c.src = sideModel(c.Path, []*safetensors.File{c.file}, map[string]nets.Weights{"controlnet": c.Weights})
	}
	return c.src
}

// Close releases the mapped file.
func (c *ControlNet) Close() error {
	if c.file == nil {
		return nil
	}
	err := c.file.Close()
	c.file = nil
	return err
}

// controlNetError is a ControlNet file that cannot be used: every problem,
// naming the file.
func controlNetError(path string, problems ...string) error {
	if len(problems) == 1 {
		return fmt.Errorf("controlnet %s: %s", path, problems[0])
	}
	var b strings.Builder
	fmt.Fprintf(&b, "controlnet %s: %d problems:", path, len(problems))
	writeProblems(&b, problems, 25)
	return errors.New(b.String())
}

// LoadControlNet opens a ControlNet: a diffusers folder (config.json +
// diffusion_pytorch_model[.fp16].safetensors), a .safetensors with
// diffusers names and its config.json beside it, or an original single
// file (lllyasviel's ControlNet 1.0/1.1 keys, with or without the
// control_model. prefix; the hyper-parameters come from the shapes). The
// weights are checked against the declarations, and for NaN/Inf values.
func LoadControlNet(path string) (*ControlNet, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("controlnet: %w", err)
	}
	c := &ControlNet{Path: path, Name: displayName(path)}
	file := path
	var cfg []byte
	if st.IsDir() {
		if cfg, err = readConfig(filepath.Join(path, "config.json")); err != nil {
			return nil, fmt.Errorf("controlnet %s: %w", path, err)
		}
		if file, err = weightFile(path, "diffusion_pytorch_model"); err != nil {
			return nil, err
		}
		c.Layout = "diffusers folder"
	} else if err := refusePickle(path); err != nil {
		return nil, fmt.Errorf("controlnet: %w", err)
	}
	f, err := safetensors.Open(file)
	if err != nil {
		return nil, fmt.Errorf("controlnet: %w", err)
	}
	c.file = f
	if err := c.load(cfg); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// displayName is a path's file name without .safetensors, or its folder.
func displayName(path string) string {
	base := filepath.Base(filepath.Clean(path))
	return strings.TrimSuffix(base, filepath.Ext(base))
}

// Original key prefixes of a ControlNet single file.
const controlPrefix = "control_model."

func (c *ControlNet) load(cfg []byte) error {
	infos := c.file.Tensors()
	shapes := map[string][]int{}
	for _, t := range infos {
		shapes[t.Name] = t.Shape
	}
	has := func(k string) bool { _, ok := shapes[k]; return ok }
	prefix, original := "", false
	switch {
	case c.Layout != "":
	case has("controlnet_cond_embedding.conv_in.weight"):
		c.Layout = "diffusers single file"
		cp := filepath.Join(filepath.Dir(c.Path), "config.json")
		data, err := readConfig(cp)
		if err != nil {
			return controlNetError(c.Path, "a ControlNet with diffusers names needs its config.json beside it (or pass the diffusers folder): "+err.Error())
		}
		cfg = data
	case has(controlPrefix + "input_hint_block.0.weight"):
		c.Layout, prefix, original = "original", controlPrefix, true
	case has("input_hint_block.0.weight"):
		c.Layout, original = "original", true
	default:
		return controlNetError(c.Path, notAControlNet(infos))
	}
	if cfg != nil {
		if err := decodeJSON(c.Path, cfg, &c.Config); err != nil {
			return err
		}
		if err := refuseUnsupported(c.Path, "unet", cfg); err != nil {
			return err
		}
	} else {
		c.Config = inferControlNet(infos, prefix)
		c.timeIDsGuessed = c.Config.AdditionEmbedType != ""
	}
	c.Config.Defaults()
	if err := validateUNet(c.Path, &c.Config.UNetConfig); err != nil {
		return err
	}
	decls, err := nets.ControlNetDecls(c.Config)
	if err != nil {
		return controlNetError(c.Path, err.Error())
	}
	comp := newComponent("controlnet", decls, original, func(d nets.Decl) []string {
		if original {
			return []string{prefix + d.Orig}
		}
		return []string{d.Name}
	})
	var b builder
	base := 0
	for _, t := range infos {
		k := t.Name
		if b.take(comp, c.file, k) {
			continue
		}
		switch {
		case ignored(k):
			b.ignored++
		case original && (strings.HasPrefix(k, "model.diffusion_model.") || strings.HasPrefix(k, "first_stage_model.") ||
			strings.HasPrefix(k, "cond_stage_model.")):
			base++ // ControlNet 1.0 files carry the SD model they were trained on
		default:
			b.unknown = append(b.unknown, k)
		}
	}
	b.missing(comp)
	if len(b.unknown) > 0 {
		b.problems = append(b.problems, strings.Replace(b.warnings()[0], "ignored", "not recognised (misnamed?)", 1))
	}
	if len(b.problems) > 0 {
		return controlNetError(c.Path, b.problems...)
	}
	if base > 0 {
		c.Warnings = append(c.Warnings, fmt.Sprintf("controlnet %s: %d tensors of the base model it was trained with ignored", c.Path, base))
	}
	if err := checkFiniteWeights(c.Path, comp.weights, comp.from); err != nil {
		return err
	}
	c.Weights, c.from = comp.weights, comp.from
	c.Family = controlNetFamily(&c.Config.UNetConfig)
	return nil
}

// notAControlNet explains a file without ControlNet keys.
func notAControlNet(infos []safetensors.TensorInfo) string {
	if why := notACheckpoint(infos); why == "" {
		return "this is a Stable Diffusion checkpoint, not a ControlNet (no input_hint_block / controlnet_cond_embedding tensors)"
	} else if strings.Contains(why, "LoRA") {
		return "this is a LoRA/adapter file, not a ControlNet"
	}
	return "not a ControlNet: no control_model.input_hint_block.* (original) or controlnet_cond_embedding.* (diffusers) tensors"
}

// inferControlNet reads an original ControlNet's hyper-parameters from
// its shapes, as for a U-Net (inferConfigs, under the control_model.
// prefix), plus the conditioning embedding's widths from input_hint_block.
func inferControlNet(infos []safetensors.TensorInfo, prefix string) nets.ControlNetConfig {
	shapes := map[string][]int{}
	for _, t := range infos {
		shapes[t.Name] = t.Shape
	}
	dim := func(k string, i int) int {
		if s := shapes[k]; i < len(s) {
			return s[i]
		}
		return 0
	}
	has := func(k string) bool { _, ok := shapes[k]; return ok }
	// SDXL's heads are 64 wide (SD 1.x: 8 heads); its added conditioning
	// is set below (the family's pooled width is not in this file).
	fam := &Family{UNetPrefix: prefix}
	sdxl := has(prefix + "label_emb.0.0.weight")
	if sdxl {
		fam.HeadWidth = 64
	}
	cfg, _ := inferConfigs(infos, fam)
	var c nets.ControlNetConfig
	c.UNetConfig = cfg.UNet
	c.SampleSize = 0
	if sdxl {
		// The pooled width is not visible without the text encoders:
		// SDXL's time ids are 256 wide.
		c.AdditionEmbedType = "text_time"
		c.ProjectionClassEmbeddingsInputDim = dim(prefix+"label_emb.0.0.weight", 1)
		c.AdditionTimeEmbedDim = 256
		if c.ProjectionClassEmbeddingsInputDim <= 256 {
			c.AdditionTimeEmbedDim = 2 // a placeholder: Fits takes the U-Net's
		}
	}
	h := prefix + "input_hint_block."
	c.ConditioningChannels = dim(h+"0.weight", 1)
	emb := []int{dim(h+"0.weight", 0)}
	for k := 2; has(fmt.Sprintf("%s%d.weight", h, k)) && has(fmt.Sprintf("%s%d.weight", h, k+2)) && has(fmt.Sprintf("%s%d.weight", h, k+4)); k += 4 {
		emb = append(emb, dim(fmt.Sprintf("%s%d.weight", h, k+2), 0))
	}
	c.ConditioningEmbeddingOutChannels = emb
	return c
}

// controlNetFamily names the family whose U-Net a ControlNet's shapes fit.
func controlNetFamily(u *nets.UNetConfig) string {
	switch {
	case u.AdditionEmbedType != "":
		return "SDXL"
	case u.CrossAttentionDim == 1024:
		return "SD 2.x"
	case u.CrossAttentionDim == 768:
		return "SD 1.x"
	}
	return ""
}

// checkFiniteWeights refuses weights holding NaN or Inf values.
func checkFiniteWeights(path string, w nets.MapWeights, from map[string]string) error {
	var bad []NonFiniteTensor
	err := safefile.Guard(path, func() {
		for name, p := range w {
			if n := CountNonFinite(p.DType, p.Raw); n > 0 {
				key := name
				if k, ok := from[name]; ok {
					key = k
				}
				bad = append(bad, NonFiniteTensor{Key: key, Component: "controlnet", Param: name, File: path, Count: n,
					Total: int64(len(p.Raw) / max(p.DType.Size(), 1))})
			}
		}
	})
	if err != nil {
		return err
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Slice(bad, func(i, j int) bool { return bad[i].Key < bad[j].Key })
	return &NonFiniteError{Path: path, Tensors: bad}
}

// Fits says why the ControlNet cannot steer a U-Net with config u (nil
// when it can): its residuals must have the shapes of the U-Net's skip
// tensors, and it must read the same text context and added conditioning.
// An original SDXL file's time-id width, which its shapes do not show,
// becomes the U-Net's.
func (c *ControlNet) Fits(u *nets.UNetConfig, family string) error {
	cc := &c.Config
	if c.timeIDsGuessed && u.AdditionTimeEmbedDim > 0 {
		cc.AdditionTimeEmbedDim = u.AdditionTimeEmbedDim
	}
	made := c.Family
	if made == "" {
		made = "another model"
	}
	for_ := func(format string, args ...any) error {
		return fmt.Errorf("controlnet %s: made for %s, not for this %s model: %s", c.Path, made, family, fmt.Sprintf(format, args...))
	}
	switch {
	case cc.CrossAttentionDim != u.CrossAttentionDim:
		return for_("it attends to %d-wide text context, the U-Net to %d", cc.CrossAttentionDim, u.CrossAttentionDim)
	case (cc.AdditionEmbedType == "") != (u.AdditionEmbedType == ""):
		return for_("added conditioning %q, the U-Net's %q", cc.AdditionEmbedType, u.AdditionEmbedType)
	case cc.AdditionEmbedType != "" && (cc.ProjectionClassEmbeddingsInputDim != u.ProjectionClassEmbeddingsInputDim || cc.AdditionTimeEmbedDim != u.AdditionTimeEmbedDim):
		return for_("its add_embedding takes %d values (time ids %d wide), the U-Net's %d (%d)",
			cc.ProjectionClassEmbeddingsInputDim, cc.AdditionTimeEmbedDim, u.ProjectionClassEmbeddingsInputDim, u.AdditionTimeEmbedDim)
	case len(cc.BlockOutChannels) != len(u.BlockOutChannels) || cc.LayersPerBlock != u.LayersPerBlock:
		return for_("%d levels x %d layers, the U-Net has %d x %d", len(cc.BlockOutChannels), cc.LayersPerBlock, len(u.BlockOutChannels), u.LayersPerBlock)
	case cc.InChannels > u.InChannels:
		return for_("it takes %d latent channels, the U-Net %d", cc.InChannels, u.InChannels)
	}
	for i := range cc.BlockOutChannels {
		if cc.BlockOutChannels[i] != u.BlockOutChannels[i] {
			return for_("block widths %v, the U-Net's %v", cc.BlockOutChannels, u.BlockOutChannels)
		}
	}
	return nil
}

// Hash is the short hash sd-webui-controlnet writes after the model's
// name ("control_v11p_sd15_canny [d14c016b]"): A1111's legacy model hash,
// the first 8 hex digits of the SHA-256 of the 64 KiB at offset 1 MiB of
// the weight file.
func (c *ControlNet) Hash() (string, error) {
	if c.hash != "" {
		return c.hash, nil
	}
	p := c.Path
	if c.file != nil {
		p = c.file.Path()
	}
	fd, _, err := safefile.Open(p)
	if err != nil {
		return "", fmt.Errorf("controlnet: %w", err)
	}
	defer fd.Close()
	h := sha256.New()
	if _, err := fd.Seek(0x100000, io.SeekStart); err == nil {
		if _, err := io.CopyN(h, fd, 0x10000); err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("controlnet %s: %w", p, err)
		}
	}
	c.hash = hex.EncodeToString(h.Sum(nil))[:8]
	return c.hash, nil
}
