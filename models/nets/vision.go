package nets

import (
	"fmt"

	"github.com/stepwise/stepwise/gpu"
)

// VisionConfig is transformers' CLIPVisionConfig (the image tower of
// CLIPVisionModelWithProjection, IP-Adapter's image encoder).
type VisionConfig struct {
	HiddenSize        int     `json:"hidden_size"`
	IntermediateSize  int     `json:"intermediate_size"`
	ProjectionDim     int     `json:"projection_dim"`
	NumHiddenLayers   int     `json:"num_hidden_layers"`
	NumAttentionHeads int     `json:"num_attention_heads"`
	NumChannels       int     `json:"num_channels"`
	ImageSize         int     `json:"image_size"`
	PatchSize         int     `json:"patch_size"`
	HiddenAct         string  `json:"hidden_act"`
	LayerNormEps      float64 `json:"layer_norm_eps"`
}

// Defaults fills unset fields with OpenCLIP ViT-H/14's vision tower, the
// encoder h94's SD 1.5 IP-Adapters were trained with.
func (c *VisionConfig) Defaults() {
	setInt(&c.HiddenSize, 1280)
	setInt(&c.IntermediateSize, 5120)
	setInt(&c.ProjectionDim, 1024)
	setInt(&c.NumHiddenLayers, 32)
	setInt(&c.NumAttentionHeads, 16)
	setInt(&c.NumChannels, 3)
	setInt(&c.ImageSize, 224)
	setInt(&c.PatchSize, 14)
	if c.HiddenAct == "" {
		c.HiddenAct = "gelu"
	}
	if c.LayerNormEps == 0 {
		c.LayerNormEps = 1e-5
	}
}

// Tokens is the sequence length: one token per patch plus the class token.
func (c *VisionConfig) Tokens() int {
	g := c.ImageSize / c.PatchSize
	return g*g + 1
}

// VisionEncoder is transformers' CLIPVisionModelWithProjection: patch
// embedding (a strided convolution), a class token and learned positions,
// pre-LayerNorm, a pre-LayerNorm transformer without a mask, then the
// class token through post_layernorm and visual_projection.
type VisionEncoder struct {
	// Config is the configuration the network was built from, with defaults
	// filled in.
	Config VisionConfig

	d             gpu.Device
	params        []*gpu.Tensor
	patch         *gpu.Tensor // [hidden, channels, p, p], no bias
	class         *gpu.Tensor // [hidden]
	posEmb        *gpu.Tensor // [tokens, hidden]
	preNorm, post norm
	layers        []*clipLayer
	proj          *gpu.Tensor // visual_projection [projection_dim, hidden], no bias
	act           func(gpu.Device, *gpu.Tensor) *gpu.Tensor
	patchGeometry gpu.Conv2DOpts
}

// NewVisionEncoder checks w against the parameters c calls for (every
// missing or mis-shaped one in a single *WeightsError) and uploads them to
// d. Call it outside any device scope.
func NewVisionEncoder(d gpu.Device, c VisionConfig, w Weights) (*VisionEncoder, error) {
	c.Defaults()
	ve, params, _, err := construct(d, w, "image_encoder", func(b builder) (*VisionEncoder, error) { return buildVision(b, c) })
	if err != nil {
		return nil, err
	}
	ve.d, ve.params = d, params
	return ve, nil
}

// VisionDecls lists every parameter of a CLIP vision model with config c
// (transformers names) in declaration order, or says why c is unsupported.
func VisionDecls(c VisionConfig) ([]Decl, error) {
	c.Defaults()
	return decls(func(b builder) (*VisionEncoder, error) { return buildVision(b, c) })
}

// Release frees the network's weights on the device.
func (ve *VisionEncoder) Release() { releaseAll(ve.d, ve.params) }

// ParamBytes is the device memory the weights occupy.
func (ve *VisionEncoder) ParamBytes() int64 { return paramBytes(ve.params) }

func buildVision(b builder, c VisionConfig) (*VisionEncoder, error) {
	act, err := activation(c.HiddenAct)
	if err != nil {
		return nil, err
	}
	w, heads := c.HiddenSize, c.NumAttentionHeads
	switch {
	case w < 1 || heads < 1 || w%heads != 0:
		return nil, fmt.Errorf("hidden_size %d does not split into %d attention heads", w, heads)
	case c.PatchSize < 1 || c.ImageSize < c.PatchSize || c.ImageSize%c.PatchSize != 0:
		return nil, fmt.Errorf("image_size %d is not a positive multiple of patch_size %d", c.ImageSize, c.PatchSize)
	case c.NumHiddenLayers < 1 || c.IntermediateSize < 1 || c.ProjectionDim < 1 || c.NumChannels < 1:
		return nil, fmt.Errorf("num_hidden_layers %d, intermediate_size %d, projection_dim %d, num_channels %d must be positive",
			c.NumHiddenLayers, c.IntermediateSize, c.ProjectionDim, c.NumChannels)
	}
	p := c.PatchSize
	ve := &VisionEncoder{Config: c, act: act, patchGeometry: gpu.Conv2DOpts{StrideH: p, StrideW: p}}
	m := b.at("vision_model")
	e := m.at("embeddings")
	ve.class = e.param("class_embedding", w)
	ve.patch = e.at("patch_embedding").param("weight", w, c.NumChannels, p, p)
	ve.posEmb = e.at("position_embedding").param("weight", c.Tokens(), w)
	eps := c.LayerNormEps
	ve.preNorm = m.layerNorm("pre_layrnorm", w, eps) // sic: transformers' spelling
	for i := 0; i < c.NumHiddenLayers; i++ {
		l := m.at("encoder.layers.%d", i)
		ve.layers = append(ve.layers, &clipLayer{
			ln1: l.layerNorm("layer_norm1", w, eps),
			q:   l.linear("self_attn.q_proj", w, w, true),
			k:   l.linear("self_attn.k_proj", w, w, true),
			v:   l.linear("self_attn.v_proj", w, w, true),
			out: l.linear("self_attn.out_proj", w, w, true),
			ln2: l.layerNorm("layer_norm2", w, eps),
			fc1: l.linear("mlp.fc1", w, c.IntermediateSize, true),
			fc2: l.linear("mlp.fc2", c.IntermediateSize, w, true),
		})
	}
	ve.post = m.layerNorm("post_layernorm", w, eps)
	ve.proj = b.at("visual_projection").param("weight", c.ProjectionDim, w)
	return ve, nil
}

// VisionOutput is what EncodeImages returns (device tensors the caller
// releases).
type VisionOutput struct {
	// ImageEmbeds is visual_projection(post_layernorm(class token)) [B,P],
	// not normalised: IP-Adapter's image embedding.
	ImageEmbeds *gpu.Tensor
	// Hidden holds transformers' hidden_states when asked for: the
	// embeddings after pre_layrnorm, then each layer's output, [B,T,C]
	// each (Hidden[len-2] is the penultimate state IP-Adapter Plus reads).
	Hidden []*gpu.Tensor
}

// Release frees the output's tensors.
func (o *VisionOutput) Release(d gpu.Device) {
	for _, t := range append([]*gpu.Tensor{o.ImageEmbeds}, o.Hidden...) {
		if t != nil {
			d.Release(t)
		}
	}
}

// EncodeImages runs the encoder on preprocessed pixels [B,C,S,S] (S =
// image_size, normalised as the image processor does). With hidden, every
// hidden state is returned as well.
func (ve *VisionEncoder) EncodeImages(pixels *gpu.Tensor, hidden bool) (*VisionOutput, error) {
	c, d := &ve.Config, ve.d
	if pixels == nil || pixels.Rank() != 4 || pixels.Dim(1) != c.NumChannels || pixels.Dim(2) != c.ImageSize || pixels.Dim(3) != c.ImageSize {
		return nil, fmt.Errorf("image encoder: pixels must be [B,%d,%d,%d], got %v", c.NumChannels, c.ImageSize, c.ImageSize, pixels)
	}
	bsz, w, tokens := pixels.Dim(0), c.HiddenSize, c.Tokens()
	out := &VisionOutput{}
	d.PushScope()
	patches := toTokens(d, d.Conv2D(pixels, ve.patch, nil, ve.patchGeometry)) // [B, g*g, C]
	cls := d.Cast(ve.class).View(1, 1, w)
	rows := make([]*gpu.Tensor, 0, 2*bsz)
	for i := 0; i < bsz; i++ {
		rows = append(rows, cls)
	}
	clsB := d.Concat(0, rows...)
	pos := make([]int32, tokens)
	for i := range pos {
		pos[i] = int32(i)
	}
	x := d.Add(d.Concat(1, clsB, patches), d.Embedding(ve.posEmb, pos))
	x = ve.preNorm.apply(d, x)
	if hidden {
		out.Hidden = append(out.Hidden, x)
	}
	for _, l := range ve.layers {
		prev := x
		x = l.forwardMasked(d, x, c.NumAttentionHeads, false, ve.act)
		if hidden {
			out.Hidden = append(out.Hidden, x)
		} else {
			d.Release(prev)
		}
	}
	clsOut := d.Slice(x, 1, 0, 1).View(bsz, w)
	out.ImageEmbeds = gpu.Linear(d, ve.post.apply(d, clsOut), ve.proj, nil)
	d.PopScope(append([]*gpu.Tensor{out.ImageEmbeds}, out.Hidden...)...)
	if err := d.Err(); err != nil {
		out.Release(d)
		return nil, fmt.Errorf("image encoder: %w", err)
	}
	return out, nil
}
