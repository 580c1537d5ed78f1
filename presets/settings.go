// Package presets holds the settings of one image (Settings), their text forms
// (the AUTOMATIC1111 "parameters" infotext, TOML preset files, A1111 styles.csv)
// and the preset store. Of Stepwise it imports only the name registry
// (sampler/names), which imports nothing.
package presets

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode"

	"github.com/stepwise/stepwise/sampler/names"
)

// RNG names: which random number generator draws the initial noise.
const (
	// RNGTorchCPU reproduces torch.randn on the CPU (A1111 "RNG: CPU",
	// diffusers with a CPU torch.Generator).
	RNGTorchCPU = "torch-cpu"
	// RNGPhilox reproduces torch.randn on an NVIDIA GPU (Philox4x32; A1111
	// "RNG: NV" and its default "GPU" source on NVIDIA cards).
	RNGPhilox = "philox"
)

// Schedules lists the valid values of Settings.Schedule, from the name
// registry (sampler/names). The empty string means the sampler's default
// schedule (A1111 "Automatic").
var Schedules = names.ScheduleNames()

// Limits checked by Validate.
const (
	MinSize      = 16
	MaxSize      = 4096
	MaxSteps     = 1000
	MaxBatch     = 64
	MaxClipSkip  = 12
	MaxPromptLen = 64 << 10 // bytes
	MaxMaskBlur  = 64       // pixels (A1111's slider ends there)
	// DefaultStrength is the img2img denoising strength when none is
	// given (A1111's and stable-diffusion.cpp's default).
	DefaultStrength = 0.75
	// DefaultCannyLow and DefaultCannyHigh are the Canny thresholds of
	// A1111's canny preprocessor (OpenCV's usual 100/200).
	DefaultCannyLow  = 100
	DefaultCannyHigh = 200
	// MaxControlStrength caps the ControlNet weight (A1111's slider ends
	// at 2; larger values are allowed up to this).
	MaxControlStrength = 10
	// DefaultIPAdapterScale is the IP-Adapter weight when none is given;
	// MaxIPAdapterScale bounds it (ComfyUI's IPAdapter weight slider ends
	// at 5, and goes down to -1).
	DefaultIPAdapterScale = 1.0
	MaxIPAdapterScale     = 5.0
)

// Settings are the settings of one image (or one batch drawn from one seed).
// The zero value is not useful; start from Default.
type Settings struct {
	Prompt         string `toml:"prompt" json:"prompt"`
	NegativePrompt string `toml:"negative_prompt" json:"negative_prompt"`
	Steps          int    `toml:"steps" json:"steps"`
	// CFGScale is the classifier-free guidance scale w (1 = no unconditional pass).
	CFGScale float64 `toml:"cfg_scale" json:"cfg_scale"`
	// Sampler is an A1111-style sampler name ("Euler a", "DPM++ 2M"); see SamplerLabel.
	Sampler string `toml:"sampler" json:"sampler"`
	// Schedule is one of Schedules ("" = the sampler's default).
	Schedule string `toml:"schedule" json:"schedule"`
	// Seed of the initial noise; -1 asks for a random seed.
	Seed int64 `toml:"seed" json:"seed"`
	// RNG is RNGTorchCPU or RNGPhilox.
	RNG    string `toml:"rng" json:"rng"`
	Width  int    `toml:"width" json:"width"`
	Height int    `toml:"height" json:"height"`
	// Batch is the number of images drawn from one noise tensor [Batch,4,h,w].
	Batch int `toml:"batch" json:"batch"`
	// ClipSkip follows A1111: 1 = the last text-encoder layer, 2 = the penultimate.
	ClipSkip int `toml:"clip_skip" json:"clip_skip"`
	// GuidanceRescale is diffusers' guidance_rescale phi in [0,1] (0 = off).
	GuidanceRescale float64 `toml:"guidance_rescale" json:"guidance_rescale"`
	// Eta is the noise amount of ancestral/DDIM samplers; nil means the
	// sampler's default (1 for ancestral samplers, 0 for DDIM).
	Eta *float64 `toml:"eta,omitempty" json:"eta,omitempty"`
	// DistilledGuidance is FLUX.1-dev's distilled guidance (--guidance;
	// Forge's "Distilled CFG Scale"); nil means the model's default (3.5).
	// Models without a guidance embedding ignore it.
	DistilledGuidance *float64 `toml:"distilled_guidance,omitempty" json:"distilled_guidance,omitempty"`
	// SDXL's size conditioning (ComfyUI's CLIPTextEncodeSDXL, diffusers'
	// original_size, crops_coords_top_left, target_size); zero sizes mean
	// the image's own size.
	OriginalWidth  int `toml:"original_width,omitempty" json:"original_width,omitempty"`
	OriginalHeight int `toml:"original_height,omitempty" json:"original_height,omitempty"`
	CropLeft       int `toml:"crop_left,omitempty" json:"crop_left,omitempty"`
	CropTop        int `toml:"crop_top,omitempty" json:"crop_top,omitempty"`
	TargetWidth    int `toml:"target_width,omitempty" json:"target_width,omitempty"`
	TargetHeight   int `toml:"target_height,omitempty" json:"target_height,omitempty"`
	// InitImage is the image img2img and inpainting start from (a PNG or
	// JPEG path; "" = text to image). Strength is how much of it is
	// repainted (A1111's "Denoising strength"): the run starts at step
	// N - int(N*Strength) of N, as diffusers does.
	InitImage string  `toml:"init_image,omitempty" json:"init_image,omitempty"`
	Strength  float64 `toml:"strength" json:"strength"`
	// Mask is the inpainting mask (a PNG or JPEG path, the init image's
	// size; white = repaint, black = keep; "" = no mask). MaskBlur is the
	// Gaussian blur in pixels applied to it first (A1111's "Mask blur").
	Mask     string `toml:"mask,omitempty" json:"mask,omitempty"`
	MaskBlur int    `toml:"mask_blur,omitempty" json:"mask_blur,omitempty"`
	// ControlNet steers the run with a control image (stable-diffusion.cpp's
	// --control-net / --control-image): the ControlNet's path (a
	// .safetensors file or a diffusers folder; "" = none) and the image's
	// (a PNG or JPEG, resized to the output size). ControlStrength
	// multiplies its residuals (diffusers' controlnet_conditioning_scale,
	// A1111's "Weight"); ControlStart and ControlEnd are the fractions of
	// the run it acts in (control_guidance_start/end, A1111's "Guidance
	// Start/End"). Canny turns the control image into its edge map first
	// (OpenCV's Canny with thresholds CannyLow and CannyHigh, A1111's
	// "canny" preprocessor). ControlNetHash is the ControlNet's short hash
	// (set when it is loaded).
	ControlNet      string  `toml:"control_net,omitempty" json:"control_net,omitempty"`
	ControlImage    string  `toml:"control_image,omitempty" json:"control_image,omitempty"`
	ControlStrength float64 `toml:"control_strength" json:"control_strength"`
	ControlStart    float64 `toml:"control_start,omitempty" json:"control_start,omitempty"`
	ControlEnd      float64 `toml:"control_end" json:"control_end"`
	Canny           bool    `toml:"canny,omitempty" json:"canny,omitempty"`
	CannyLow        int     `toml:"canny_low" json:"canny_low"`
	CannyHigh       int     `toml:"canny_high" json:"canny_high"`
	ControlNetHash  string  `toml:"control_net_hash,omitempty" json:"control_net_hash,omitempty"`
	// IPAdapter is an IP-Adapter file (h94's ip-adapter_sd15.safetensors
	// layout, or diffusers' names; "" = none), IPAdapterImage the
	// reference image it conditions on (a PNG or JPEG path), IPAdapterScale
	// the weight of its image branch (diffusers' set_ip_adapter_scale,
	// ComfyUI's and A1111's weight) and ImageEncoder its CLIP vision
	// encoder folder ("" = image_encoder/ beside the adapter file).
	IPAdapter      string  `toml:"ip_adapter,omitempty" json:"ip_adapter,omitempty"`
	IPAdapterImage string  `toml:"ip_adapter_image,omitempty" json:"ip_adapter_image,omitempty"`
	IPAdapterScale float64 `toml:"ip_adapter_scale" json:"ip_adapter_scale"`
	ImageEncoder   string  `toml:"image_encoder,omitempty" json:"image_encoder,omitempty"`
	// Model is the model's display name; ModelHash its short hash (optional).
	Model     string `toml:"model" json:"model"`
	ModelHash string `toml:"model_hash,omitempty" json:"model_hash,omitempty"`
	// LoraHashes is A1111's "Lora hashes" of the prompt's <lora:NAME:W>
	// tags, "name: hash, name2: hash2" (set when the LoRAs are applied).
	LoraHashes string `toml:"lora_hashes,omitempty" json:"lora_hashes,omitempty"`
}

// Default returns SD 1.5-style settings: 20 Euler steps at CFG 7, 512x512,
// seed -1 (random), CPU torch RNG. Callers override the size for their model.
func Default() Settings {
	return Settings{
		Steps:    20,
		CFGScale: 7,
		Sampler:  "Euler",
		Schedule: "",
		Seed:     -1,
		RNG:      RNGTorchCPU,
		Width:    512,
		Height:   512,
		Batch:    1,
		ClipSkip: 1,
		Strength: DefaultStrength,

		ControlStrength: 1,
		ControlEnd:      1,
		CannyLow:        DefaultCannyLow,
		CannyHigh:       DefaultCannyHigh,
		// diffusers' scale after load_ip_adapter, ComfyUI's weight.
		IPAdapterScale: DefaultIPAdapterScale,
	}
}

// FieldError is one invalid setting found by Validate.
type FieldError struct {
	Field  string // the Settings field name, e.g. "Width"
	Reason string // what is wrong, e.g. "100 is not a multiple of 8"
}

func (e *FieldError) Error() string { return fieldLabel(e.Field) + ": " + e.Reason }

// fieldLabel writes a Settings field name as words: "CFGScale" -> "cfg
// scale", "RNG" -> "rng", "ClipSkip" -> "clip skip".
func fieldLabel(field string) string {
	var b strings.Builder
	rs := []rune(field)
	for i, r := range rs {
		upper := unicode.IsUpper(r)
		// A word starts at an upper-case letter that follows a lower-case
		// one, or that ends an acronym (the last capital before a
		// lower-case letter: the S of "CFGScale").
		if i > 0 && upper && (unicode.IsLower(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1]) && unicode.IsUpper(rs[i-1])) {
			b.WriteByte(' ')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// Validate checks what can be known without a model: sizes, step count,
// guidance, batch, CLIP skip, RNG and schedule names. It returns nil or the
// errors.Join of one *FieldError per bad field.
func (s Settings) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	for _, d := range []struct {
		name string
		v    int
	}{{"Width", s.Width}, {"Height", s.Height}} {
		switch {
		case d.v < MinSize || d.v > MaxSize:
			bad(d.name, "%d is outside [%d, %d]", d.v, MinSize, MaxSize)
		case d.v%8 != 0:
			bad(d.name, "%d is not a multiple of 8", d.v)
		}
	}
	if s.Steps < 1 || s.Steps > MaxSteps {
		bad("Steps", "%d is outside [1, %d]", s.Steps, MaxSteps)
	}
	if math.IsNaN(s.CFGScale) || math.IsInf(s.CFGScale, 0) {
		bad("CFGScale", "%v is not a finite number", s.CFGScale)
	} else if s.CFGScale < 0 || s.CFGScale > 100 {
		bad("CFGScale", "%g is outside [0, 100]", s.CFGScale)
	}
	if s.Batch < 1 || s.Batch > MaxBatch {
		bad("Batch", "%d is outside [1, %d]", s.Batch, MaxBatch)
	}
	if s.ClipSkip < 1 || s.ClipSkip > MaxClipSkip {
		bad("ClipSkip", "%d is outside [1, %d] (1 = last layer)", s.ClipSkip, MaxClipSkip)
	}
	if s.Seed < -1 {
		bad("Seed", "%d is negative (use -1 for a random seed)", s.Seed)
	}
	if s.RNG != RNGTorchCPU && s.RNG != RNGPhilox {
		bad("RNG", "%q is not one of %q, %q", s.RNG, RNGTorchCPU, RNGPhilox)
	}
	if !validSchedule(s.Schedule) {
		bad("Schedule", "%q is not one of %s", s.Schedule, strings.Join(quoteAll(Schedules), ", "))
	}
	if strings.TrimSpace(s.Sampler) == "" {
		bad("Sampler", "empty")
	}
	if g := s.GuidanceRescale; math.IsNaN(g) || g < 0 || g > 1 {
		bad("GuidanceRescale", "%v is outside [0, 1]", g)
	}
	if g := s.DistilledGuidance; g != nil && (math.IsNaN(*g) || math.IsInf(*g, 0) || *g < 0) {
		bad("DistilledGuidance", "%v is not a finite number >= 0", *g)
	}
	if s.Eta != nil {
		if e := *s.Eta; math.IsNaN(e) || math.IsInf(e, 0) || e < 0 {
			bad("Eta", "%v is not a finite number >= 0", e)
		}
	}
	if st := s.Strength; math.IsNaN(st) || st < 0 || st > 1 {
		bad("Strength", "%v is outside [0, 1]", st)
	} else if st == 0 && s.InitImage != "" {
		bad("Strength", "0 would leave the init image as it is; img2img needs a strength above 0")
	}
	if s.MaskBlur < 0 || s.MaskBlur > MaxMaskBlur {
		bad("MaskBlur", "%d is outside [0, %d]", s.MaskBlur, MaxMaskBlur)
	}
	if s.Mask != "" && s.InitImage == "" {
		bad("Mask", "a mask needs an init image to repaint")
	}
	if st := s.ControlStrength; math.IsNaN(st) || st < 0 || st > MaxControlStrength {
		bad("ControlStrength", "%v is outside [0, %d]", st, MaxControlStrength)
	}
	if a, b := s.ControlStart, s.ControlEnd; math.IsNaN(a) || math.IsNaN(b) || a < 0 || b > 1 || a >= b {
		bad("ControlEnd", "control start %v and end %v must satisfy 0 <= start < end <= 1", a, b)
	}
	if lo, hi := s.CannyLow, s.CannyHigh; lo < 0 || hi > 255*8 || lo > hi {
		bad("CannyHigh", "canny thresholds %d and %d must satisfy 0 <= low <= high <= %d", lo, hi, 255*8)
	}
	if s.ControlNet != "" && s.ControlImage == "" {
		bad("ControlImage", "a ControlNet needs a control image (--control-image)")
	}
	if s.ControlImage != "" && s.ControlNet == "" {
		bad("ControlNet", "a control image needs a ControlNet to read it (--control-net)")
	}
	if sc := s.IPAdapterScale; math.IsNaN(sc) || sc < -1 || sc > MaxIPAdapterScale {
		bad("IPAdapterScale", "%v is outside [-1, %g]", sc, MaxIPAdapterScale)
	}
	if s.IPAdapter != "" && s.IPAdapterImage == "" {
		bad("IPAdapterImage", "an IP-Adapter needs a reference image (--ip-adapter-image)")
	}
	if s.IPAdapterImage != "" && s.IPAdapter == "" {
		bad("IPAdapter", "a reference image needs an IP-Adapter file (--ip-adapter)")
	}
	if len(s.Prompt) > MaxPromptLen || len(s.NegativePrompt) > MaxPromptLen {
		bad("Prompt", "longer than %d bytes", MaxPromptLen)
	} else if err := s.roundTrip(); err != nil {
		bad("Prompt", "%v", err)
	}
	return errors.Join(errs...)
}

func validSchedule(name string) bool {
	for _, s := range Schedules {
		if s == name {
			return true
		}
	}
	return false
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = fmt.Sprintf("%q", n)
		if n == "" {
			out[i] = `"" (the sampler's default)`
		}
	}
	return out
}

// Float returns a pointer to v, for Settings.Eta.
func Float(v float64) *float64 { return &v }
