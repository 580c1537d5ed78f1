package checkpoint

import (
	"strings"

	"github.com/stepwise/stepwise/models/safetensors"
)

// TextSpec is one text encoder of a family: where its weights live and how
// its output becomes the conditioning.
type TextSpec struct {
	// Role is the diffusers folder (and config-bundle key) of the encoder,
	// Tokenizer that of its tokenizer.
	Role, Tokenizer string
	// Prefix is the encoder's key prefix in an original single file.
	Prefix string
	// OpenCLIP: the single file uses OpenCLIP's names (transformer.resblocks,
	// fused in_proj) rather than transformers'.
	OpenCLIP bool
	// ExtraBlock: a single file holds one block more than the encoder uses
	// (SD 2.x conditions on OpenCLIP's penultimate block; diffusers stores
	// the encoder without the last one).
	ExtraBlock bool
	// Pad is the padding token id when the tokenizer files do not name one.
	Pad int32
	// Skip is the hidden state the conditioning takes at CLIP skip 1 (1 =
	// the last layer, 2 = the penultimate); FinalNorm applies the final
	// LayerNorm to it.
	Skip      int
	FinalNorm bool
	// Pooled: the encoder also gives the pooled, projected vector.
	Pooled bool
	// Act is transformers' hidden_act of the original encoder.
	Act string
}

// T5Spec is a family's T5 encoder: its diffusers folders and its key
// prefix in an original single file.
type T5Spec struct {
	Role, Tokenizer, Prefix string
}

// Family.Denoiser values: SD3's MM-DiT, Flux's transformer.
const (
	DenoiserMMDiT = "mmdit"
	DenoiserFlux  = "flux"
)

// Added conditioning kinds (Family.Added).
const (
	// AddedSizeTimeIDs: SDXL base's time ids (original size, crop
	// top-left, target size) and the pooled text vector.
	AddedSizeTimeIDs = "text_time"
	// AddedAestheticTimeIDs: the SDXL refiner's (original size, crop
	// top-left, aesthetic score).
	AddedAestheticTimeIDs = "text_time_aesthetic"
)

// Family is one row of the family table: which text encoders a model has
// and how their outputs become the conditioning, where its networks live in
// an original single file, its VAE scaling, native size, default scheduler,
// and how a file or folder is recognised. A new family is a new row (plus
// a network builder in package nets for a new kind of network).
type Family struct {
	Name  string
	Texts []TextSpec
	// UNetPrefix and VAEPrefix are the single-file prefixes of the
	// denoiser and the autoencoder.
	UNetPrefix, VAEPrefix string
	// Added is the U-Net's added conditioning ("" for none).
	Added string
	// NativeSize is the image side the family was trained at.
	NativeSize int
	// Scaling and Shift map VAE latents to the denoiser's: z = (x - shift) * scaling.
	Scaling, Shift float64
	// Scheduler is the family's default scheduler.
	Scheduler SchedulerConfig
	// ZeroEmptyNegative: an empty negative prompt is all zeros (SDXL's
	// force_zeros_for_empty_prompt), not the encoding of "".
	ZeroEmptyNegative bool
	// HeadWidth is the attention head width the family fixes (0: 8 heads
	// per block, SD 1.x), used when a single file's config is inferred.
	HeadWidth int
	// Pipelines are the diffusers model_index.json classes of the family.
	Pipelines []string
	// Denoiser is the kind of denoising network: "" (a U-Net) or
	// DenoiserMMDiT (SD3's transformer, folder "transformer").
	Denoiser string
	// T5 is the family's T5 text encoder, nil for none.
	T5 *T5Spec
	// MaxSequenceLength is the T5 token count by default (diffusers'
	// max_sequence_length: 256 for SD3).
	MaxSequenceLength int
	// keys recognises a single file from its tensor names.
	keys func(has func(prefix string) bool) bool
}

// HasPooled reports whether a family's conditioning includes a pooled vector.
func (f *Family) HasPooled() bool {
	for _, t := range f.Texts {
		if t.Pooled {
			return true
		}
	}
	return false
}

func eulerLeading() SchedulerConfig {
	s := DefaultScheduler()
	s.ClassName = "EulerDiscreteScheduler"
	return s
}

// flowMatch is FlowMatchEulerDiscreteScheduler with the given shift.
func flowMatch(shift float64) SchedulerConfig {
	return SchedulerConfig{ClassName: FlowMatchScheduler, NumTrainTimesteps: 1000, PredictionType: "flow",
		TimestepSpacing: "linspace", Shift: shift}
}

// Families is the family table, most specific first.
var Families = []*Family{
	{
		// Flux: CLIP-L's pooled output (final LayerNorm at the end token, no
		// projection) modulates; T5-XXL's tokens are the context. The
		// default T5 length is 512 (FLUX.1-dev), 256 without a guidance
		// embedding (schnell).
		Name: "Flux",
		Texts: []TextSpec{
			{Role: "text_encoder", Tokenizer: "tokenizer", Prefix: "text_encoders.clip_l.transformer.", Pad: 49407, Skip: 1, FinalNorm: true, Act: "quick_gelu"},
		},
		T5:         &T5Spec{Role: "text_encoder_2", Tokenizer: "tokenizer_2", Prefix: "text_encoders.t5xxl.transformer."},
		Denoiser:   DenoiserFlux,
		UNetPrefix: "model.diffusion_model.", VAEPrefix: "first_stage_model.",
		NativeSize: 1024, Scaling: 0.3611, Shift: 0.1159, MaxSequenceLength: 512,
		Scheduler: SchedulerConfig{ClassName: FlowMatchScheduler, NumTrainTimesteps: 1000, PredictionType: "flow", TimestepSpacing: "linspace",
			Shift: 3, UseDynamicShifting: true, BaseShift: 0.5, MaxShift: 1.15, BaseImageSeqLen: 256, MaxImageSeqLen: 4096, PipelineSigmas: true},
		Pipelines: []string{"FluxPipeline", "FluxImg2ImgPipeline"},
		keys: func(has func(string) bool) bool {
			return has("model.diffusion_model.double_blocks.") || has("double_blocks.")
		},
	},
	{
		// SD3's CLIP-L and CLIP-G give their penultimate states
		// (concatenated, zero-padded to T5's width) and both pooled
		// projections; T5-XXL's tokens follow the CLIP ones.
		Name: "SD3",
		Texts: []TextSpec{
			{Role: "text_encoder", Tokenizer: "tokenizer", Prefix: "text_encoders.clip_l.transformer.", Pad: 49407, Skip: 2, Pooled: true, Act: "quick_gelu"},
			{Role: "text_encoder_2", Tokenizer: "tokenizer_2", Prefix: "text_encoders.clip_g.transformer.", Pad: 0, Skip: 2, Pooled: true, Act: "gelu"},
		},
		T5:         &T5Spec{Role: "text_encoder_3", Tokenizer: "tokenizer_3", Prefix: "text_encoders.t5xxl.transformer."},
		Denoiser:   DenoiserMMDiT,
		UNetPrefix: "model.diffusion_model.", VAEPrefix: "first_stage_model.",
		NativeSize: 1024, Scaling: 1.5305, Shift: 0.0609, Scheduler: flowMatch(3.0), MaxSequenceLength: 256,
		Pipelines: []string{"StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline"},
		keys:      func(has func(string) bool) bool { return has("model.diffusion_model.joint_blocks.") },
	},
	{
		Name: "SDXL",
		Texts: []TextSpec{
			{Role: "text_encoder", Tokenizer: "tokenizer", Prefix: "conditioner.embedders.0.transformer.", Pad: 49407, Skip: 2, Act: "quick_gelu"},
			{Role: "text_encoder_2", Tokenizer: "tokenizer_2", Prefix: "conditioner.embedders.1.model.", OpenCLIP: true, Pad: 0, Skip: 2, Pooled: true, Act: "gelu"},
		},
		UNetPrefix: "model.diffusion_model.", VAEPrefix: "first_stage_model.",
		Added: AddedSizeTimeIDs, NativeSize: 1024, Scaling: 0.13025, Scheduler: eulerLeading(),
		ZeroEmptyNegative: true, HeadWidth: 64,
		Pipelines: []string{"StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline"},
		keys: func(has func(string) bool) bool {
			return has("conditioner.embedders.0.transformer.") || has("conditioner.embedders.1.model.")
		},
	},
	{
		Name: "SDXL refiner",
		Texts: []TextSpec{
			{Role: "text_encoder_2", Tokenizer: "tokenizer_2", Prefix: "conditioner.embedders.0.model.", OpenCLIP: true, Pad: 0, Skip: 2, Pooled: true, Act: "gelu"},
		},
		UNetPrefix: "model.diffusion_model.", VAEPrefix: "first_stage_model.",
		Added: AddedAestheticTimeIDs, NativeSize: 1024, Scaling: 0.13025, Scheduler: eulerLeading(),
		ZeroEmptyNegative: false, HeadWidth: 64,
		Pipelines: []string{"StableDiffusionXLImg2ImgPipeline"},
		keys:      func(has func(string) bool) bool { return has("conditioner.embedders.0.model.") },
	},
	{
		Name: "SD 2.x",
		Texts: []TextSpec{
			{Role: "text_encoder", Tokenizer: "tokenizer", Prefix: "cond_stage_model.model.", OpenCLIP: true, ExtraBlock: true, Pad: 0, Skip: 1, FinalNorm: true, Act: "gelu"},
		},
		UNetPrefix: "model.diffusion_model.", VAEPrefix: "first_stage_model.",
		NativeSize: 768, Scaling: 0.18215, Scheduler: DefaultScheduler(), HeadWidth: 64,
		Pipelines: []string{"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"},
		keys:      func(has func(string) bool) bool { return has("cond_stage_model.model.") },
	},
	{
		Name: "SD 1.x",
		Texts: []TextSpec{
			{Role: "text_encoder", Tokenizer: "tokenizer", Prefix: "cond_stage_model.transformer.", Pad: 49407, Skip: 1, FinalNorm: true, Act: "quick_gelu"},
		},
		UNetPrefix: "model.diffusion_model.", VAEPrefix: "first_stage_model.",
		NativeSize: 512, Scaling: 0.18215, Scheduler: DefaultScheduler(),
		Pipelines: []string{"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"},
		keys: func(has func(string) bool) bool {
			return has("cond_stage_model.transformer.") || has("model.diffusion_model.")
		},
	},
}

// FamilyNamed returns the family called name, or nil.
func FamilyNamed(name string) *Family {
	for _, f := range Families {
		if strings.EqualFold(f.Name, name) {
			return f
		}
	}
	return nil
}

// singleFileFamily recognises a single file's family from its keys, and says
// which keys gave it away.
func singleFileFamily(infos []safetensors.TensorInfo) (*Family, string) {
	prefixes := map[string]bool{}
	has := func(p string) bool {
		if v, ok := prefixes[p]; ok {
			return v
		}
		found := false
		for _, t := range infos {
			if strings.HasPrefix(t.Name, p) {
				found = true
				break
			}
		}
		prefixes[p] = found
		return found
	}
	for _, f := range Families {
		if f.keys(has) {
			var why []string
			for _, t := range f.Texts {
				why = append(why, t.Prefix+"*")
			}
			return f, "keys " + strings.Join(why, ", ")
		}
	}
	return nil, ""
}

// folderFamily recognises a diffusers folder's family from model_index.json
// and the text encoder configs.
func folderFamily(idx modelIndex, hasText1, hasText2 bool, text1 textInfo) (*Family, string) {
	cls := idx.ClassName
	switch {
	case hasText2 && hasText1:
		return FamilyNamed("SDXL"), "text_encoder and text_encoder_2 (" + orUnknown(cls) + ")"
	case hasText2:
		return FamilyNamed("SDXL refiner"), "text_encoder_2 only (" + orUnknown(cls) + ")"
	case text1.act == "gelu" || text1.linearProj:
		return FamilyNamed("SD 2.x"), "one text encoder with gelu / linear projections (" + orUnknown(cls) + ")"
	}
	return FamilyNamed("SD 1.x"), "one CLIP text encoder (" + orUnknown(cls) + ")"
}

type textInfo struct {
	act        string
	linearProj bool
}

func orUnknown(s string) string {
	if s == "" {
		return "no model_index.json"
	}
	return s
}
