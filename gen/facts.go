package gen

import (
	"fmt"
	"image"
	"slices"
	"strings"

	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/tokenizer"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
	"github.com/stepwise/stepwise/sampler"
)

// Facts are what a user interface needs to know about a loaded model,
// copied from the pipeline when it loads: settings can then be validated
// and previews drawn on any goroutine, while the goroutine that owns the
// pipeline may close it at any time (a device recovery, a model switch).
// Facts hold no reference to the pipeline or its device.
type Facts struct {
	Name           string // the pipeline's display name
	Family         string // the model family ("SD 1.x", "SDXL", ...)
	Downscale      int    // image size / latent size (8 for SD)
	SizeMultiple   int    // what image sides must be multiples of (64 for SD 1.x/2.x, 32 for SDXL)
	Levels         int    // U-Net levels
	NativeSize     int    // the size the model was trained at
	LatentChannels int
	// Inpainting: the U-Net takes the mask and the masked image's latents
	// as extra input channels (a 9-channel SD inpainting model).
	Inpainting bool
	// MaxSide is the largest image side the model takes (0: no limit; SD3:
	// its stored positional table's side x patch x VAE downscale).
	MaxSide int
	// GuidanceDistilled: an LCM model, guidance is an input (no CFG batch).
	GuidanceDistilled bool
	// MaxClipSkip is the largest clip skip every text encoder allows.
	MaxClipSkip int
	// TextHidden is the width of the text context (the encoders' widths
	// added); Encoders describes each ("text_encoder 12 layers").
	TextHidden int
	Encoders   []string
	// MaxSequenceLength is the number of T5 tokens in the text context
	// (SD3, Flux; 0 for models without T5).
	MaxSequenceLength int
	Scheduler         checkpoint.SchedulerConfig
	// LatentRGB is the linear latent -> RGB projection of step previews.
	LatentRGB     [][]float32
	LatentRGBBias [3]float32
	// Tokenizer is the model's tokenizer (immutable, safe for concurrent use).
	Tokenizer *tokenizer.Tokenizer
	// T5Tokenizer is the T5 tokenizer of a model that has one (SD3, Flux;
	// nil otherwise; immutable). Such models truncate the CLIP prompt to
	// 77 tokens and the T5 prompt to MaxSequenceLength.
	T5Tokenizer *tokenizer.Unigram

	// For Estimate: the U-Net's widths per level, resnets per block and
	// which levels attend; the VAE's widths; the weights' bytes; the
	// device's memory (0: unknown).
	UNetWidths    []int
	UNetLayers    int
	UNetAttention []bool
	VAEWidths     []int
	WeightBytes   int64
	DeviceMemory  int64

	// IF is set for a DeepFloyd IF cascade (Family IFFamily; see
	// deepif.go), whose frames are pixels.
	IF *IFFacts
}

// FactsOf copies p's facts. Call it on the goroutine that owns p, before
// anything may close it.
func FactsOf(p *models.Pipeline) *Facts {
	factors, bias := p.LatentRGB()
	f := &Facts{
		Name: p.Name, Family: p.Model.Family, Downscale: p.Downscale(), SizeMultiple: p.SizeMultiple(),
		Levels: len(p.Model.UNet.BlockOutChannels), NativeSize: p.NativeSize(), LatentChannels: p.LatentChannels(), Inpainting: p.Inpainting(),
		TextHidden: p.Model.UNet.CrossAttentionDim, MaxClipSkip: 1 << 30, GuidanceDistilled: p.GuidanceDistilled(),
		Scheduler: p.Model.Scheduler, LatentRGBBias: bias, Tokenizer: p.Tokenizer(),
	}
	for _, t := range p.Model.Texts {
		f.MaxClipSkip = min(f.MaxClipSkip, t.Config.NumHiddenLayers-t.Spec.Skip+1)
		f.Encoders = append(f.Encoders, fmt.Sprintf("%s %d layers", t.Spec.Role, t.Config.NumHiddenLayers))
	}
	if tc := p.Model.Transformer; tc != nil {
		f.MaxSide = tc.PosEmbedMaxSize * tc.PatchSize * f.Downscale
	}
	if t5 := p.Model.T5; t5 != nil { // SD3: the context is T5-wide
		f.TextHidden, f.MaxSequenceLength = t5.Config.DModel, p.MaxSequenceLength
		f.T5Tokenizer = p.T5Tokenizer()
		f.Encoders = append(f.Encoders, fmt.Sprintf("%s %d layers", t5.Spec.Role, t5.Config.NumLayers))
	}
	f.Scheduler.TrainedBetas = slices.Clone(f.Scheduler.TrainedBetas)
	u := p.Model.UNet
	f.UNetWidths, f.UNetLayers, f.VAEWidths = slices.Clone(u.BlockOutChannels), u.LayersPerBlock, slices.Clone(p.Model.VAE.BlockOutChannels)
	for _, t := range u.DownBlockTypes {
		f.UNetAttention = append(f.UNetAttention, strings.Contains(t, "Attn"))
	}
	for _, c := range p.Model.Stats() {
		f.WeightBytes += c.Bytes
	}
	f.DeviceMemory = DeviceMemory(p.Device())
	for _, row := range factors {
		f.LatentRGB = append(f.LatentRGB, slices.Clone(row))
	}
	return f
}

// Validate checks settings against what the model can do; see the
// package function Validate.
func (f *Facts) Validate(s presets.Settings) error {
	if err := validate(f, s); err != nil {
		return err
	}
	return f.CheckMemory(s)
}

// SamplerSettings converts image settings to a sampling run's settings for
// this model; see the package function SamplerSettings.
func (f *Facts) SamplerSettings(s presets.Settings) sampler.Settings {
	return samplerSettings(f.Downscale, f.LatentChannels, f.GuidanceDistilled, f.Scheduler, s)
}

// Preview renders batch row i of a latent as RGB without the VAE; see
// PreviewFor.
func (f *Facts) Preview(l sampler.Latent, i int) *image.RGBA {
	if f.IF != nil { // pixels
		c, h, w := l.Shape[1], l.Shape[2], l.Shape[3]
		if n := c * h * w; c == 3 && (i+1)*n <= len(l.Data) {
			return IFPreview(sampler.Latent{Shape: [4]int{1, c, h, w}, Data: l.Data[i*n : (i+1)*n]})
		}
	}
	return preview(f.LatentRGB, f.LatentRGBBias, l, i)
}

// preview is PreviewFor with the projection given.
func preview(factors [][]float32, bias [3]float32, l sampler.Latent, i int) *image.RGBA {
	c, h, w := l.Shape[1], l.Shape[2], l.Shape[3]
	n := c * h * w
	if c != len(factors) || (i+1)*n > len(l.Data) {
		return image.NewRGBA(image.Rect(0, 0, w, h))
	}
	return render.LatentToRGB(l.Data[i*n:(i+1)*n], c, h, w, factors, bias)
}
