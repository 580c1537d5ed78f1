package nets

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/stepwise/stepwise/gpu"
)

// Param is one parameter tensor as stored in a checkpoint: little-endian raw
// bytes of the given type. Shapes use diffusers/transformers conventions (the
// checkpoint loader converts LDM names and 1x1-conv attention weights).
type Param struct {
	DType gpu.DType
	Shape []int
	Raw   []byte
}

// Weights gives a network its parameters by diffusers name, relative to the
// component (e.g. "down_blocks.0.resnets.0.conv1.weight" for a U-Net,
// "text_model.encoder.layers.0.mlp.fc1.weight" for the text encoder).
type Weights interface {
	Get(name string) (Param, bool)
}

// MapWeights is a Weights backed by a map (tests, synthesised models).
type MapWeights map[string]Param

// Get implements Weights.
func (m MapWeights) Get(name string) (Param, bool) { p, ok := m[name]; return p, ok }

// IntOrList is a diffusers config value that is either one int for every
// block or one per block (attention_head_dim, transformer_layers_per_block).
type IntOrList []int

// UnmarshalJSON accepts 8, [5,10,20,20] and null.
func (v *IntOrList) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		*v = nil // unset (json.Unmarshal of null into an int would give 0)
		return nil
	}
	var one int
	if err := json.Unmarshal(b, &one); err == nil {
		*v = IntOrList{one}
		return nil
	}
	var many []int
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want an int or a list of ints, got %s", b)
	}
	*v = many
	return nil
}

// At returns the value for block i (the single value for every block).
func (v IntOrList) At(i int) int {
	if len(v) == 0 {
		return 0
	}
	if len(v) == 1 {
		return v[0]
	}
	if i < len(v) {
		return v[i]
	}
	return v[len(v)-1]
}

// UNetConfig is diffusers' UNet2DConditionModel config.json (the fields SD
// 1.x/2.x use). Zero values are filled from SD 1.5 by Defaults.
type UNetConfig struct {
	SampleSize           int       `json:"sample_size"`
	InChannels           int       `json:"in_channels"`
	OutChannels          int       `json:"out_channels"`
	DownBlockTypes       []string  `json:"down_block_types"`
	UpBlockTypes         []string  `json:"up_block_types"`
	MidBlockType         string    `json:"mid_block_type"`
	BlockOutChannels     []int     `json:"block_out_channels"`
	LayersPerBlock       int       `json:"layers_per_block"`
	AttentionHeadDim     IntOrList `json:"attention_head_dim"`  // diffusers' misnomer: SD 1.x heads count
	NumAttentionHeads    IntOrList `json:"num_attention_heads"` // when set, overrides AttentionHeadDim as heads
	CrossAttentionDim    int       `json:"cross_attention_dim"`
	NormNumGroups        int       `json:"norm_num_groups"`
	NormEps              float64   `json:"norm_eps"`
	ActFn                string    `json:"act_fn"`
	CenterInputSample    bool      `json:"center_input_sample"`
	FlipSinToCos         *bool     `json:"flip_sin_to_cos"`
	FreqShift            float64   `json:"freq_shift"`
	DownsamplePadding    *int      `json:"downsample_padding"`
	MidBlockScaleFactor  float64   `json:"mid_block_scale_factor"`
	UseLinearProjection  bool      `json:"use_linear_projection"`
	TransformerLayers    IntOrList `json:"transformer_layers_per_block"`
	UpcastAttention      bool      `json:"upcast_attention"`
	ConvInKernel         int       `json:"conv_in_kernel"`
	ConvOutKernel        int       `json:"conv_out_kernel"`
	ResnetTimeScaleShift string    `json:"resnet_time_scale_shift"`
	// SDXL's added conditioning: "text_time" adds add_embedding(pooled
	// text embedding ++ sinusoidal(time ids)) to the timestep embedding.
	AdditionEmbedType string `json:"addition_embed_type"`
	// TimeCondProjDim (LCM-distilled models): a guidance embedding of this
	// width goes through time_embedding.cond_proj and is added to the
	// timestep features before linear_1.
	TimeCondProjDim                   int `json:"time_cond_proj_dim"`
	AdditionTimeEmbedDim              int `json:"addition_time_embed_dim"`
	ProjectionClassEmbeddingsInputDim int `json:"projection_class_embeddings_input_dim"`
}

// Defaults fills unset fields with SD 1.5's values.
func (c *UNetConfig) Defaults() {
	setInt(&c.SampleSize, 64)
	setInt(&c.InChannels, 4)
	setInt(&c.OutChannels, 4)
	if len(c.DownBlockTypes) == 0 {
		c.DownBlockTypes = []string{"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}
	}
	if len(c.UpBlockTypes) == 0 {
		c.UpBlockTypes = []string{"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"}
	}
	if c.MidBlockType == "" {
		c.MidBlockType = "UNetMidBlock2DCrossAttn"
	}
	if len(c.BlockOutChannels) == 0 {
		c.BlockOutChannels = []int{320, 640, 1280, 1280}
	}
	setInt(&c.LayersPerBlock, 2)
	if len(c.AttentionHeadDim) == 0 {
		c.AttentionHeadDim = IntOrList{8}
	}
	setInt(&c.CrossAttentionDim, 768)
	setInt(&c.NormNumGroups, 32)
	if c.NormEps == 0 {
		c.NormEps = 1e-5
	}
	if c.ActFn == "" {
		c.ActFn = "silu"
	}
	if c.FlipSinToCos == nil {
		t := true
		c.FlipSinToCos = &t
	}
	if c.DownsamplePadding == nil {
		one := 1
		c.DownsamplePadding = &one
	}
	if c.MidBlockScaleFactor == 0 {
		c.MidBlockScaleFactor = 1
	}
	if len(c.TransformerLayers) == 0 {
		c.TransformerLayers = IntOrList{1}
	}
	setInt(&c.ConvInKernel, 3)
	setInt(&c.ConvOutKernel, 3)
	if c.ResnetTimeScaleShift == "" {
		c.ResnetTimeScaleShift = "default"
	}
}

// Heads returns the number of attention heads at down level i, following
// diffusers: num_attention_heads if given, else attention_head_dim (which SD
// 1.x/2.x configs use to mean the head count).
func (c *UNetConfig) Heads(i int) int {
	if len(c.NumAttentionHeads) > 0 {
		return c.NumAttentionHeads.At(i)
	}
	return c.AttentionHeadDim.At(i)
}

// VAEConfig is diffusers' AutoencoderKL config.json.
type VAEConfig struct {
	InChannels       int      `json:"in_channels"`
	OutChannels      int      `json:"out_channels"`
	DownBlockTypes   []string `json:"down_block_types"`
	UpBlockTypes     []string `json:"up_block_types"`
	BlockOutChannels []int    `json:"block_out_channels"`
	LayersPerBlock   int      `json:"layers_per_block"`
	ActFn            string   `json:"act_fn"`
	LatentChannels   int      `json:"latent_channels"`
	NormNumGroups    int      `json:"norm_num_groups"`
	SampleSize       int      `json:"sample_size"`
	ScalingFactor    float64  `json:"scaling_factor"`
	ShiftFactor      *float64 `json:"shift_factor"`
	// LatentsMean and LatentsStd (per latent channel), when set, replace the
	// scaling: the decoder sees latent * std / scaling_factor + mean (as
	// diffusers' SDXL pipeline does for VAEs that carry them).
	LatentsMean          []float64 `json:"latents_mean"`
	LatentsStd           []float64 `json:"latents_std"`
	UseQuantConv         *bool     `json:"use_quant_conv"`
	UsePostQuantConv     *bool     `json:"use_post_quant_conv"`
	MidBlockAddAttention *bool     `json:"mid_block_add_attention"`
	// LatentRGBFactors ([latent channels][3]) and LatentRGBBias project a
	// scaled latent linearly to RGB in [-1, 1] for free step previews. Not
	// a diffusers field: Stepwise's bundled model carries its own (fitted by
	// tools/train/latent_rgb.py); other models use SD 1.x's published ones.
	LatentRGBFactors [][]float32 `json:"latent_rgb_factors,omitempty"`
	LatentRGBBias    []float32   `json:"latent_rgb_bias,omitempty"`
}

// Defaults fills unset fields with SD 1.5's values.
func (c *VAEConfig) Defaults() {
	setInt(&c.InChannels, 3)
	setInt(&c.OutChannels, 3)
	if len(c.BlockOutChannels) == 0 {
		c.BlockOutChannels = []int{128, 256, 512, 512}
	}
	if len(c.DownBlockTypes) == 0 {
		for range c.BlockOutChannels {
			c.DownBlockTypes = append(c.DownBlockTypes, "DownEncoderBlock2D")
		}
	}
	if len(c.UpBlockTypes) == 0 {
		for range c.BlockOutChannels {
			c.UpBlockTypes = append(c.UpBlockTypes, "UpDecoderBlock2D")
		}
	}
	setInt(&c.LayersPerBlock, 2)
	if c.ActFn == "" {
		c.ActFn = "silu"
	}
	setInt(&c.LatentChannels, 4)
	setInt(&c.NormNumGroups, 32)
	setInt(&c.SampleSize, 512)
	if c.ScalingFactor == 0 {
		c.ScalingFactor = 0.18215
	}
	t := true
	if c.UseQuantConv == nil {
		c.UseQuantConv = &t
	}
	if c.UsePostQuantConv == nil {
		c.UsePostQuantConv = &t
	}
	if c.MidBlockAddAttention == nil {
		c.MidBlockAddAttention = &t
	}
}

// Downscale is the ratio of image size to latent size (8 for SD).
func (c *VAEConfig) Downscale() int { return 1 << (len(c.BlockOutChannels) - 1) }

// TextConfig is transformers' CLIPTextConfig.
type TextConfig struct {
	VocabSize             int     `json:"vocab_size"`
	HiddenSize            int     `json:"hidden_size"`
	IntermediateSize      int     `json:"intermediate_size"`
	ProjectionDim         int     `json:"projection_dim"`
	NumHiddenLayers       int     `json:"num_hidden_layers"`
	NumAttentionHeads     int     `json:"num_attention_heads"`
	MaxPositionEmbeddings int     `json:"max_position_embeddings"`
	HiddenAct             string  `json:"hidden_act"`
	LayerNormEps          float64 `json:"layer_norm_eps"`
	// Architectures is transformers' class list; CLIPTextModelWithProjection
	// adds text_projection (SDXL's second encoder, for the pooled vector).
	Architectures []string `json:"architectures,omitempty"`
}

// WithProjection reports a CLIPTextModelWithProjection.
func (c *TextConfig) WithProjection() bool {
	for _, a := range c.Architectures {
		if a == "CLIPTextModelWithProjection" {
			return true
		}
	}
	return false
}

// Defaults fills unset fields with SD 1.5's CLIP ViT-L/14 text model.
func (c *TextConfig) Defaults() {
	setInt(&c.VocabSize, 49408)
	setInt(&c.HiddenSize, 768)
	setInt(&c.IntermediateSize, 3072)
	setInt(&c.ProjectionDim, 768)
	setInt(&c.NumHiddenLayers, 12)
	setInt(&c.NumAttentionHeads, 12)
	setInt(&c.MaxPositionEmbeddings, 77)
	if c.HiddenAct == "" {
		c.HiddenAct = "quick_gelu"
	}
	if c.LayerNormEps == 0 {
		c.LayerNormEps = 1e-5
	}
}

func setInt(p *int, v int) {
	if *p == 0 {
		*p = v
	}
}
