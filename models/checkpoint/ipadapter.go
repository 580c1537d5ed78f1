package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// IPAdapter is a loaded IP-Adapter and the image encoder it works with:
// configs, weights (diffusers names) mapped from their files until Close.
type IPAdapter struct {
	Path string
	// Layout is "h94" (image_proj.* / ip_adapter.<k>.*, the published
	// ip-adapter_sd15.safetensors) or "diffusers" (the U-Net's state-dict
	// names after load_ip_adapter: encoder_hid_proj.*, *.processor.to_k_ip.0).
	Layout  string
	Config  nets.IPAdapterConfig
	Weights nets.MapWeights

	// EncoderPath is the image encoder's folder (transformers'
	// CLIPVisionModelWithProjection: config.json, model.safetensors,
	// preprocessor_config.json).
	EncoderPath    string
	Encoder        nets.VisionConfig
	EncoderWeights nets.MapWeights
	// Processor is the encoder's CLIPImageProcessor configuration.
	Processor ImageProcessorConfig

	files []*safetensors.File
	src   *Model // Source's
}

// Source is a's weights as a Model with two components, "ip_adapter" and
// "image_encoder", for uploading them (StartUpload) and checking the files
// (CheckFiles). a owns the files: close a, not the Model.
func (a *IPAdapter) Source() *Model {
	if a.src == nil {
		a.src = sideModel(a.Path, a.files, map[string]nets.Weights{"ip_adapter": a.Weights, "image_encoder": a.EncoderWeights})
	}
	return a.src
}

// Close releases the mapped files.
func (a *IPAdapter) Close() error {
	var errs []error
	for _, f := range a.files {
		errs = append(errs, f.Close())
	}
	a.files = nil
	return errors.Join(errs...)
}

// ImageProcessorConfig is transformers' CLIPImageProcessor configuration
// (preprocessor_config.json): resize the shortest side to ShortestEdge
// (bicubic for resample 3), centre-crop CropH x CropW, x*RescaleFactor,
// then (x-mean)/std per channel.
type ImageProcessorConfig struct {
	DoResize      bool
	ShortestEdge  int
	Resample      int
	DoCenterCrop  bool
	CropH, CropW  int
	DoRescale     bool
	RescaleFactor float64
	DoNormalize   bool
	Mean, Std     [3]float64
}

// DefaultImageProcessor is CLIPImageProcessor() with the crop and the
// shortest side set to size (224 for OpenAI's and OpenCLIP's towers).
func DefaultImageProcessor(size int) ImageProcessorConfig {
	return ImageProcessorConfig{
		DoResize: true, ShortestEdge: size, Resample: 3,
		DoCenterCrop: true, CropH: size, CropW: size,
		DoRescale: true, RescaleFactor: 1.0 / 255,
		DoNormalize: true,
		Mean:        [3]float64{0.48145466, 0.4578275, 0.40821073},
		Std:         [3]float64{0.26862954, 0.26130258, 0.27577711},
	}
}

// DefaultImageEncoder is where an adapter's image encoder is looked for
// when none is named: the image_encoder folder beside the adapter file, as
// h94/IP-Adapter lays out models/ and sdxl_models/.
func DefaultImageEncoder(adapterPath string) string {
	return filepath.Join(filepath.Dir(adapterPath), "image_encoder")
}

// LoadIPAdapter reads an IP-Adapter file for a U-Net with config unet and
// its image encoder folder (DefaultImageEncoder(path) when encoderDir is
// ""), and checks that they fit the U-Net and each other: a file for
// another family (another cross-attention width or layer count), an
// unsupported kind (Plus, FaceID), a missing encoder, or an encoder whose
// projection width is not the adapter's input is refused, naming the file.
func LoadIPAdapter(path, encoderDir string, unet nets.UNetConfig) (*IPAdapter, error) {
	unet.Defaults()
	if encoderDir == "" {
		encoderDir = DefaultImageEncoder(path)
	}
	a := &IPAdapter{Path: path, EncoderPath: encoderDir}
	if err := a.loadAdapter(unet); err != nil {
		a.Close()
		return nil, err
	}
	if err := a.loadEncoder(); err != nil {
		a.Close()
		return nil, err
	}
	if a.Encoder.ProjectionDim != a.Config.ImageEmbedDim {
		a.Close()
		return nil, fmt.Errorf("image encoder %s: projection_dim %d, but the ip-adapter %s projects %d-wide image embeddings (image_proj.proj takes %d); use the encoder it was trained with",
			encoderDir, a.Encoder.ProjectionDim, path, a.Config.ImageEmbedDim, a.Config.ImageEmbedDim)
	}
	return a, nil
}

func (a *IPAdapter) loadAdapter(unet nets.UNetConfig) error {
	if err := CheckIPAdapterFiles(a.Path, a.EncoderPath); err != nil {
		return err
	}
	f, err := safetensors.Open(a.Path)
	if err != nil {
		return fmt.Errorf("ip-adapter: %w", err)
	}
	a.files = append(a.files, f)
	shapes := map[string][]int{}
	for _, ti := range f.Tensors() {
		shapes[ti.Name] = ti.Shape
	}
	projKey, normKey, prefix := "image_proj.proj.weight", "image_proj.norm.weight", ""
	switch {
	case shapes[projKey] != nil || hasPrefix(shapes, "ip_adapter.") || hasPrefix(shapes, "image_proj."):
		a.Layout = "h94"
	case hasPrefix(shapes, "encoder_hid_proj.") || hasPrefix(shapes, "unet.encoder_hid_proj."):
		a.Layout = "diffusers"
		if hasPrefix(shapes, "unet.") {
			prefix = "unet."
		}
		projKey = prefix + "encoder_hid_proj.image_projection_layers.0.image_embeds.weight"
		normKey = prefix + "encoder_hid_proj.image_projection_layers.0.norm.weight"
	default:
		return fmt.Errorf("ip-adapter %s: not an IP-Adapter: no image_proj.* / ip_adapter.* tensors (h94's layout) nor encoder_hid_proj.* (diffusers')", a.Path)
	}
	if kind := unsupportedIPKind(shapes); kind != "" {
		return fmt.Errorf("ip-adapter %s: %s is not supported (only the plain ImageProjection adapters: ip-adapter_sd15, ip-adapter_sd15_light, ip-adapter_sdxl)", a.Path, kind)
	}
	proj, norm := shapes[projKey], shapes[normKey]
	if len(proj) != 2 || len(norm) != 1 || norm[0] < 1 || proj[0]%norm[0] != 0 {
		return fmt.Errorf("ip-adapter %s: %s %v and %s %v do not describe an image projection (Linear P -> N*C, LayerNorm C)", a.Path, projKey, proj, normKey, norm)
	}
	ctx := norm[0]
	if ctx != unet.CrossAttentionDim {
		return fmt.Errorf("ip-adapter %s: made for a U-Net with cross-attention width %d (%s), the model's is %d (%s)",
			a.Path, ctx, familyOfWidth(ctx), unet.CrossAttentionDim, familyOfWidth(unet.CrossAttentionDim))
	}
	a.Config = nets.IPAdapterConfig{ImageEmbedDim: proj[1], NumTokens: proj[0] / ctx, UNet: unet}
	decls, err := nets.IPAdapterDecls(a.Config)
	if err != nil {
		return fmt.Errorf("ip-adapter %s: %w", a.Path, err)
	}
	if n, want := countLayers(shapes), (len(decls)-4)/2; a.Layout == "h94" && n != want {
		return fmt.Errorf("ip-adapter %s: %d cross-attention layers (ip_adapter.<k>.to_k_ip), the model's U-Net has %d: an adapter for another family", a.Path, n, want)
	}
	h94 := a.Layout == "h94"
	c := newComponent("ip_adapter", decls, h94, func(d nets.Decl) []string {
		if h94 {
			return []string{d.Orig}
		}
		return []string{prefix + d.Name}
	})
	var b builder
	for _, ti := range f.Tensors() {
		if !b.take(c, f, ti.Name) {
			b.unknown = append(b.unknown, ti.Name)
		}
	}
	b.missing(c)
	if len(b.problems) > 0 {
		return fmt.Errorf("ip-adapter: %w", b.fail(a.Path))
	}
	if bad := nonFiniteWeights(c.weights); bad != "" {
		return fmt.Errorf("ip-adapter %s: %s", a.Path, bad)
	}
	a.Weights = c.weights
	return nil
}

// unsupportedIPKind names the IP-Adapter variants this loader refuses.
func unsupportedIPKind(shapes map[string][]int) string {
	switch {
	case shapes["image_proj.latents"] != nil || hasPrefix(shapes, "image_proj.layers."):
		return "IP-Adapter Plus (a Resampler image projection: image_proj.latents)"
	case shapes["image_proj.proj.0.weight"] != nil:
		return "an MLP image projection (ip-adapter-full-face / FaceID: image_proj.proj.0)"
	case hasSuffix(shapes, ".to_k_lora.down.weight"):
		return "IP-Adapter FaceID (LoRA layers: to_k_lora)"
	}
	return ""
}

func hasPrefix(shapes map[string][]int, p string) bool {
	for k := range shapes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

func hasSuffix(shapes map[string][]int, s string) bool {
	for k := range shapes {
		if strings.HasSuffix(k, s) {
			return true
		}
	}
	return false
}

// countLayers counts the ip_adapter.<k>.to_k_ip tensors of an h94 file.
func countLayers(shapes map[string][]int) int {
	n := 0
	for k := range shapes {
		if strings.HasPrefix(k, "ip_adapter.") && strings.HasSuffix(k, ".to_k_ip.weight") {
			n++
		}
	}
	return n
}

// familyOfWidth names the family a cross-attention width belongs to.
func familyOfWidth(w int) string {
	switch w {
	case 768:
		return "SD 1.x"
	case 1024:
		return "SD 2.x"
	case 2048:
		return "SDXL"
	case 1280:
		return "SDXL refiner"
	}
	return "another model"
}

// nonFiniteWeights names the tensors holding NaN or Inf, or "".
func nonFiniteWeights(w nets.MapWeights) string {
	var bad []string
	for name, p := range w {
		if n := CountNonFinite(p.DType, p.Raw); n > 0 {
			bad = append(bad, fmt.Sprintf("%s (%d)", name, n))
		}
	}
	if len(bad) == 0 {
		return ""
	}
	sort.Strings(bad)
	return "weights hold NaN or Inf: " + strings.Join(bad, ", ")
}

// visionConfigFile is what LoadIPAdapter reads of the encoder's config.json.
type visionConfigFile struct {
	nets.VisionConfig
	ModelType     string   `json:"model_type"`
	Architectures []string `json:"architectures"`
	// A CLIPConfig (the whole CLIP model) nests the tower.
	VisionSub *nets.VisionConfig `json:"vision_config"`
}

func (a *IPAdapter) loadEncoder() error {
	dir := a.EncoderPath
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("image encoder %s: no such folder; the ip-adapter %s needs its CLIP vision encoder (h94/IP-Adapter keeps it in image_encoder/ beside the adapter file): give --image-encoder DIR", dir, a.Path)
	case err != nil:
		return fmt.Errorf("image encoder: %w", err)
	case !st.IsDir():
		return fmt.Errorf("image encoder %s: not a folder; want transformers' CLIPVisionModelWithProjection folder (config.json, model.safetensors, preprocessor_config.json)", dir)
	}
	cfgPath := filepath.Join(dir, "config.json")
	data, err := readConfig(cfgPath)
	if err != nil {
		return fmt.Errorf("image encoder %s: %w", dir, err)
	}
	var cf visionConfigFile
	if err := decodeJSON(cfgPath, data, &cf); err != nil {
		return err
	}
	switch {
	case cf.ModelType == "clip_vision_model":
	case cf.ModelType == "clip" && cf.VisionSub != nil:
		proj := cf.ProjectionDim
		cf.VisionConfig = *cf.VisionSub
		if cf.VisionConfig.ProjectionDim == 0 {
			cf.VisionConfig.ProjectionDim = proj
		}
	default:
		return fmt.Errorf("image encoder %s: model_type %q is not a CLIP vision model (want clip_vision_model, CLIPVisionModelWithProjection)", cfgPath, cf.ModelType)
	}
	a.Encoder = cf.VisionConfig
	a.Encoder.Defaults()
	wf, err := weightFile(dir, "model")
	if err != nil {
		return fmt.Errorf("image encoder: %w", err)
	}
	f, err := safetensors.Open(wf)
	if err != nil {
		return fmt.Errorf("image encoder: %w", err)
	}
	a.files = append(a.files, f)
	decls, err := nets.VisionDecls(a.Encoder)
	if err != nil {
		return fmt.Errorf("image encoder %s: %w", cfgPath, err)
	}
	c := newComponent("image_encoder", decls, false, func(d nets.Decl) []string { return []string{d.Name} })
	var b builder
	for _, ti := range f.Tensors() {
		if b.take(c, f, ti.Name) {
			continue
		}
		// A whole CLIPModel file also holds the text tower and buffers.
		if strings.HasPrefix(ti.Name, "text_model.") || strings.HasSuffix(ti.Name, "position_ids") ||
			ti.Name == "text_projection.weight" || ti.Name == "logit_scale" {
			continue
		}
		b.unknown = append(b.unknown, ti.Name)
	}
	b.missing(c)
	if len(b.problems) > 0 {
		return fmt.Errorf("image encoder: %w", b.fail(wf))
	}
	if bad := nonFiniteWeights(c.weights); bad != "" {
		return fmt.Errorf("image encoder %s: %s", wf, bad)
	}
	a.EncoderWeights = c.weights
	a.Processor, err = readImageProcessor(filepath.Join(dir, "preprocessor_config.json"), a.Encoder.ImageSize)
	if err != nil {
		return err
	}
	if a.Processor.CropH != a.Encoder.ImageSize || a.Processor.CropW != a.Encoder.ImageSize || !a.Processor.DoCenterCrop {
		return fmt.Errorf("image encoder %s: the image processor crops %dx%d, the encoder takes %dx%d images", dir,
			a.Processor.CropW, a.Processor.CropH, a.Encoder.ImageSize, a.Encoder.ImageSize)
	}
	return nil
}

// readImageProcessor reads a CLIPImageProcessor preprocessor_config.json;
// without one it is CLIPImageProcessor's defaults at the encoder's size.
func readImageProcessor(path string, size int) (ImageProcessorConfig, error) {
	p := DefaultImageProcessor(size)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	data, err := readConfig(path)
	if err != nil {
		return p, fmt.Errorf("image processor: %w", err)
	}
	var f struct {
		DoResize      *bool           `json:"do_resize"`
		Size          json.RawMessage `json:"size"`
		Resample      *int            `json:"resample"`
		DoCenterCrop  *bool           `json:"do_center_crop"`
		CropSize      json.RawMessage `json:"crop_size"`
		DoRescale     *bool           `json:"do_rescale"`
		RescaleFactor *float64        `json:"rescale_factor"`
		DoNormalize   *bool           `json:"do_normalize"`
		Mean          []float64       `json:"image_mean"`
		Std           []float64       `json:"image_std"`
		Type          string          `json:"image_processor_type"`
		Extractor     string          `json:"feature_extractor_type"`
	}
	if err := decodeJSON(path, data, &f); err != nil {
		return p, err
	}
	if t := f.Type + f.Extractor; t != "" && !strings.Contains(t, "CLIP") {
		return p, cfgErr(path, "image processor %q is not a CLIPImageProcessor", t)
	}
	setB := func(dst *bool, v *bool) {
		if v != nil {
			*dst = *v
		}
	}
	setB(&p.DoResize, f.DoResize)
	setB(&p.DoCenterCrop, f.DoCenterCrop)
	setB(&p.DoRescale, f.DoRescale)
	setB(&p.DoNormalize, f.DoNormalize)
	if f.Resample != nil {
		p.Resample = *f.Resample
	}
	if f.RescaleFactor != nil {
		p.RescaleFactor = *f.RescaleFactor
	}
	if len(f.Size) > 0 {
		var n int
		var m map[string]int
		switch {
		case json.Unmarshal(f.Size, &n) == nil:
			p.ShortestEdge = n
		case json.Unmarshal(f.Size, &m) == nil && m["shortest_edge"] > 0:
			p.ShortestEdge = m["shortest_edge"]
		default:
			return p, cfgErr(path, "size %s: want {\"shortest_edge\": N} or N", clip(f.Size))
		}
	}
	if len(f.CropSize) > 0 {
		var n int
		var m map[string]int
		switch {
		case json.Unmarshal(f.CropSize, &n) == nil:
			p.CropH, p.CropW = n, n
		case json.Unmarshal(f.CropSize, &m) == nil && m["height"] > 0 && m["width"] > 0:
			p.CropH, p.CropW = m["height"], m["width"]
		default:
			return p, cfgErr(path, "crop_size %s: want {\"height\": H, \"width\": W} or N", clip(f.CropSize))
		}
	}
	for name, v := range map[string][]float64{"image_mean": f.Mean, "image_std": f.Std} {
		if v == nil {
			continue
		}
		if len(v) != 3 {
			return p, cfgErr(path, "%s has %d values, want 3", name, len(v))
		}
	}
	if f.Mean != nil {
		copy(p.Mean[:], f.Mean)
	}
	if f.Std != nil {
		copy(p.Std[:], f.Std)
	}
	for _, s := range p.Std {
		if !(s > 0) {
			return p, cfgErr(path, "image_std %v: every value must be positive", p.Std)
		}
	}
	if p.DoResize && (p.ShortestEdge < 1 || p.ShortestEdge > 4096) {
		return p, cfgErr(path, "size %d outside 1..4096", p.ShortestEdge)
	}
	if p.Resample != 3 && p.Resample != 2 {
		return p, cfgErr(path, "resample %d is not supported (want 3, bicubic, or 2, bilinear)", p.Resample)
	}
	return p, nil
}

// CheckIPAdapterFiles is the part of LoadIPAdapter's checks that needs no
// model: the adapter is a readable file that is not a pickle, and the
// image encoder folder (DefaultImageEncoder(path) when encoderDir is "")
// exists and holds a config.json. Front ends call it before loading a
// model, so a missing file is reported at once.
func CheckIPAdapterFiles(path, encoderDir string) error {
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return fmt.Errorf("ip-adapter: %w", err)
	case st.IsDir():
		return fmt.Errorf("ip-adapter %s: is a folder; name the adapter file (e.g. models/ip-adapter_sd15.safetensors)", path)
	}
	if err := refusePickle(path); err != nil {
		if errors.Is(err, ErrPickle) {
			return fmt.Errorf("ip-adapter %s: %w", path, ErrPickle)
		}
		return fmt.Errorf("ip-adapter %s: %w", path, err)
	}
	if encoderDir == "" {
		encoderDir = DefaultImageEncoder(path)
	}
	a := &IPAdapter{Path: path, EncoderPath: encoderDir}
	if st, err := os.Stat(encoderDir); err != nil || !st.IsDir() {
		return a.loadEncoder() // says which
	}
	if _, err := os.Stat(filepath.Join(encoderDir, "config.json")); err != nil {
		return fmt.Errorf("image encoder %s: no config.json (want transformers' CLIPVisionModelWithProjection folder): %w", encoderDir, err)
	}
	return nil
}
