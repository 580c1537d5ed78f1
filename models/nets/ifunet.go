package nets

import (
	"fmt"

	"github.com/stepwise/stepwise/gpu"
)

// IFUNetConfig is the config.json of DeepFloyd IF's U-Nets (diffusers'
// UNet2DConditionModel with the options scripts/convert_if.py gives them):
// simple cross-attention blocks, ResNet up/down samplers, scale-shift time
// conditioning, a text projection and TextTimeEmbedding, and for stage II a
// timestep class embedding of the noise level.
type IFUNetConfig struct {
	SampleSize                int       `json:"sample_size"`
	InChannels                int       `json:"in_channels"`
	OutChannels               int       `json:"out_channels"`
	FlipSinToCos              *bool     `json:"flip_sin_to_cos"`
	FreqShift                 float64   `json:"freq_shift"`
	DownBlockTypes            []string  `json:"down_block_types"`
	MidBlockType              string    `json:"mid_block_type"`
	UpBlockTypes              []string  `json:"up_block_types"`
	OnlyCrossAttention        bool      `json:"only_cross_attention"`
	MidBlockOnlyCrossAttn     *bool     `json:"mid_block_only_cross_attention"`
	BlockOutChannels          []int     `json:"block_out_channels"`
	LayersPerBlock            IntOrList `json:"layers_per_block"`
	MidBlockScaleFactor       float64   `json:"mid_block_scale_factor"`
	ActFn                     string    `json:"act_fn"`
	NormNumGroups             int       `json:"norm_num_groups"`
	NormEps                   float64   `json:"norm_eps"`
	CrossAttentionDim         int       `json:"cross_attention_dim"`
	EncoderHidDim             int       `json:"encoder_hid_dim"`
	EncoderHidDimType         string    `json:"encoder_hid_dim_type"`
	AttentionHeadDim          IntOrList `json:"attention_head_dim"`
	ClassEmbedType            string    `json:"class_embed_type"`
	AdditionEmbedType         string    `json:"addition_embed_type"`
	AdditionEmbedTypeNumHeads int       `json:"addition_embed_type_num_heads"`
	ResnetTimeScaleShift      string    `json:"resnet_time_scale_shift"`
	ResnetSkipTimeAct         bool      `json:"resnet_skip_time_act"`
	ResnetOutScaleFactor      float64   `json:"resnet_out_scale_factor"`
	TimeEmbeddingDim          int       `json:"time_embedding_dim"`
	TimeEmbeddingActFn        string    `json:"time_embedding_act_fn"`
	CrossAttentionNorm        string    `json:"cross_attention_norm"`
	ConvInKernel              int       `json:"conv_in_kernel"`
	ConvOutKernel             int       `json:"conv_out_kernel"`
}

// Defaults fills unset fields with diffusers' defaults.
func (c *IFUNetConfig) Defaults() {
	if c.FlipSinToCos == nil {
		t := true
		c.FlipSinToCos = &t
	}
	if c.MidBlockScaleFactor == 0 {
		c.MidBlockScaleFactor = 1
	}
	if c.ResnetOutScaleFactor == 0 {
		c.ResnetOutScaleFactor = 1
	}
	if c.NormNumGroups == 0 {
		c.NormNumGroups = 32
	}
	if c.NormEps == 0 {
		c.NormEps = 1e-5
	}
	if c.ActFn == "" {
		c.ActFn = "silu"
	}
	if c.ConvInKernel == 0 {
		c.ConvInKernel = 3
	}
	if c.ConvOutKernel == 0 {
		c.ConvOutKernel = 3
	}
	if len(c.LayersPerBlock) == 0 {
		c.LayersPerBlock = IntOrList{2}
	}
	if c.AdditionEmbedTypeNumHeads == 0 {
		c.AdditionEmbedTypeNumHeads = 64
	}
	if c.EncoderHidDim > 0 && c.EncoderHidDimType == "" {
		c.EncoderHidDimType = "text_proj"
	}
	if c.ResnetTimeScaleShift == "" {
		c.ResnetTimeScaleShift = "default"
	}
}

// TextDim is the width of the text embeddings the U-Net takes: the
// encoder_hid_dim its projection maps from, or cross_attention_dim.
func (c IFUNetConfig) TextDim() int {
	if c.EncoderHidDim > 0 {
		return c.EncoderHidDim
	}
	return c.CrossAttentionDim
}

// IFUNet is a DeepFloyd IF U-Net (stage I base model or stage II
// super-resolution model). Its output has 2x the image channels: the noise
// prediction, then the learned-range variance interpolation values.
type IFUNet struct {
	// Config is the configuration the network was built from, with defaults
	// filled in.
	Config IFUNetConfig
	// Trace, when set, is called during Forward with intermediates under
	// diffusers' names ("time_embedding", "class_embedding",
	// "add_embedding", "encoder_hid_proj", "conv_in", "mid_block"). The
	// tensor is freed after the call returns. For debugging.
	Trace func(name string, t *gpu.Tensor)

	d      gpu.Device
	params []*gpu.Tensor
	named  map[string]*gpu.Tensor

	time1, time2   linear
	class          *[2]linear
	addNorm1       norm
	addPos         *gpu.Tensor
	addQ, addK     linear
	addV, addProj  linear
	addNorm2       norm
	hidProj        *linear
	convIn         conv
	down, up       []*ifLevel
	mid            *ifLevel
	normOut        norm
	convOut        conv
	spatialDivisor int
}

// ifLevel is one block: resnets with an optional simple cross-attention
// after each, and an optional resampling ResNet.
type ifLevel struct {
	resnets []*ifResnet
	attns   []*ifAttn
	resamp  *ifResnet
}

// ifResnet is ResnetBlock2D with time_embedding_norm "scale_shift" (or
// "default"), an activation other than SiLU, and optional 2x
// up/downsampling of both paths (nearest / average pooling).
type ifResnet struct {
	norm1, norm2 norm
	conv1, conv2 conv
	temb         linear
	shortcut     *conv
	scaleShift   bool
	up, down     bool
	outScale     float32
	act          func(gpu.Device, *gpu.Tensor) *gpu.Tensor
}

// ifAttn is diffusers' Attention with added key/value projections
// (AttnAddedKVProcessor): the text keys/values come first, followed by
// those of the normalised image features unless cross-only.
type ifAttn struct {
	q, k, v, addK, addV, out linear
	groupNorm, normCross     norm
	heads                    int
	onlyCross                bool
}

func ifActivation(name string) (func(gpu.Device, *gpu.Tensor) *gpu.Tensor, error) {
	switch name {
	case "silu", "swish":
		return func(d gpu.Device, x *gpu.Tensor) *gpu.Tensor { return d.SiLU(x) }, nil
	case "gelu":
		return func(d gpu.Device, x *gpu.Tensor) *gpu.Tensor { return d.GELU(x) }, nil
	}
	return nil, fmt.Errorf("activation %q is not supported (want silu or gelu)", name)
}

// NewIFUNet checks w against the parameters c calls for and uploads them
// to d. Call it outside any device scope.
func NewIFUNet(d gpu.Device, c IFUNetConfig, w Weights) (*IFUNet, error) {
	c.Defaults()
	u, params, named, err := construct(d, w, "unet", func(b builder) (*IFUNet, error) { return buildIFUNet(b, c) })
	if err != nil {
		return nil, err
	}
	u.d, u.params, u.named = d, params, named
	return u, nil
}

// ExpectedIFUNet lists every parameter an IF U-Net with config c uses, or
// nil when c is not supported.
func ExpectedIFUNet(c IFUNetConfig) map[string][]int {
	c.Defaults()
	m, err := expected(func(b builder) (*IFUNet, error) { return buildIFUNet(b, c) })
	if err != nil {
		return nil
	}
	return m
}

// Release frees the network's weights on the device.
func (u *IFUNet) Release() { releaseAll(u.d, u.params) }

// ParamBytes is the device memory the weights occupy.
func (u *IFUNet) ParamBytes() int64 { return paramBytes(u.params) }

func checkIFUNetConfig(c IFUNetConfig) error {
	n := len(c.BlockOutChannels)
	switch {
	case n == 0:
		return fmt.Errorf("block_out_channels is empty")
	case len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n:
		return fmt.Errorf("%d down_block_types and %d up_block_types for %d block_out_channels",
			len(c.DownBlockTypes), len(c.UpBlockTypes), n)
	case c.MidBlockType != "UNetMidBlock2DSimpleCrossAttn":
		return fmt.Errorf("mid_block_type %q is not supported (want UNetMidBlock2DSimpleCrossAttn)", c.MidBlockType)
	case c.ResnetTimeScaleShift != "scale_shift" && c.ResnetTimeScaleShift != "default":
		return fmt.Errorf("resnet_time_scale_shift %q is not supported", c.ResnetTimeScaleShift)
	case c.AdditionEmbedType != "" && c.AdditionEmbedType != "text":
		return fmt.Errorf("addition_embed_type %q is not supported (want text or none)", c.AdditionEmbedType)
	case c.ClassEmbedType != "" && c.ClassEmbedType != "timestep":
		return fmt.Errorf("class_embed_type %q is not supported (want timestep or none)", c.ClassEmbedType)
	case c.EncoderHidDim > 0 && c.EncoderHidDimType != "text_proj":
		return fmt.Errorf("encoder_hid_dim_type %q is not supported (want text_proj)", c.EncoderHidDimType)
	case c.CrossAttentionNorm != "" && c.CrossAttentionNorm != "group_norm":
		return fmt.Errorf("cross_attention_norm %q is not supported (want group_norm or none)", c.CrossAttentionNorm)
	case c.ConvInKernel%2 == 0 || c.ConvOutKernel%2 == 0:
		return fmt.Errorf("conv_in_kernel %d / conv_out_kernel %d must be odd", c.ConvInKernel, c.ConvOutKernel)
	case c.CrossAttentionDim < 1 || c.InChannels < 1 || c.OutChannels < 1:
		return fmt.Errorf("cross_attention_dim %d, in_channels %d, out_channels %d must be positive",
			c.CrossAttentionDim, c.InChannels, c.OutChannels)
	case c.AdditionEmbedType == "text" && c.TextDim()%c.AdditionEmbedTypeNumHeads != 0:
		return fmt.Errorf("text width %d does not split into addition_embed_type_num_heads %d", c.TextDim(), c.AdditionEmbedTypeNumHeads)
	}
	if _, err := ifActivation(c.ActFn); err != nil {
		return fmt.Errorf("act_fn: %w", err)
	}
	if c.TimeEmbeddingActFn != "" {
		if _, err := ifActivation(c.TimeEmbeddingActFn); err != nil {
			return fmt.Errorf("time_embedding_act_fn: %w", err)
		}
	}
	for i, ch := range c.BlockOutChannels {
		if ch < 1 || ch%c.NormNumGroups != 0 {
			return fmt.Errorf("block_out_channels[%d] = %d is not a positive multiple of norm_num_groups %d", i, ch, c.NormNumGroups)
		}
		if hd := c.AttentionHeadDim.At(i); hd < 1 || ch%hd != 0 {
			return fmt.Errorf("block_out_channels[%d] = %d does not split into heads of attention_head_dim %d", i, ch, hd)
		}
		if c.LayersPerBlock.At(i) < 1 {
			return fmt.Errorf("layers_per_block[%d] must be positive", i)
		}
	}
	if c.CrossAttentionNorm == "group_norm" && c.CrossAttentionDim%32 != 0 {
		return fmt.Errorf("cross_attention_dim %d is not a multiple of the cross-attention norm's 32 groups", c.CrossAttentionDim)
	}
	for i, t := range c.DownBlockTypes {
		if t != "ResnetDownsampleBlock2D" && t != "SimpleCrossAttnDownBlock2D" {
			return fmt.Errorf("down_block_types[%d] %q is not supported (want ResnetDownsampleBlock2D or SimpleCrossAttnDownBlock2D)", i, t)
		}
	}
	for i, t := range c.UpBlockTypes {
		if t != "ResnetUpsampleBlock2D" && t != "SimpleCrossAttnUpBlock2D" {
			return fmt.Errorf("up_block_types[%d] %q is not supported (want ResnetUpsampleBlock2D or SimpleCrossAttnUpBlock2D)", i, t)
		}
	}
	return nil
}

// buildIFUNet declares (and, with a device, uploads) the network following
// diffusers' UNet2DConditionModel constructor for IF's options.
func buildIFUNet(b builder, c IFUNetConfig) (*IFUNet, error) {
	if err := checkIFUNetConfig(c); err != nil {
		return nil, err
	}
	u := &IFUNet{Config: c}
	n := len(c.BlockOutChannels)
	ch := c.BlockOutChannels
	groups, eps := c.NormNumGroups, c.NormEps
	u.spatialDivisor = 1 << (n - 1)
	tembDim := c.TimeEmbeddingDim
	if tembDim == 0 {
		tembDim = 4 * ch[0]
	}
	act, _ := ifActivation(c.ActFn)

	u.time1 = b.at("time_embedding.linear_1").linear("", ch[0], tembDim, true)
	u.time2 = b.at("time_embedding.linear_2").linear("", tembDim, tembDim, true)
	if c.ClassEmbedType == "timestep" {
		u.class = &[2]linear{
			b.at("class_embedding.linear_1").linear("", ch[0], tembDim, true),
			b.at("class_embedding.linear_2").linear("", tembDim, tembDim, true),
		}
	}
	if c.AdditionEmbedType == "text" {
		td := c.TextDim()
		ab := b.at("add_embedding")
		u.addNorm1 = ab.layerNorm("norm1", td, 1e-5)
		pb := ab.at("pool")
		u.addPos = pb.param("positional_embedding", 1, td)
		u.addQ = pb.linear("q_proj", td, td, true)
		u.addK = pb.linear("k_proj", td, td, true)
		u.addV = pb.linear("v_proj", td, td, true)
		u.addProj = ab.linear("proj", td, tembDim, true)
		u.addNorm2 = ab.layerNorm("norm2", tembDim, 1e-5)
	}
	if c.EncoderHidDim > 0 {
		l := b.linear("encoder_hid_proj", c.EncoderHidDim, c.CrossAttentionDim, true)
		u.hidProj = &l
	}
	u.convIn = b.at("conv_in").conv("", c.InChannels, ch[0], c.ConvInKernel, 1, c.ConvInKernel/2)

	res := func(b builder, in, out int, scale float64, up, down bool) *ifResnet {
		r := &ifResnet{
			norm1:      b.groupNorm("norm1", in, groups, eps),
			conv1:      b.conv("conv1", in, out, 3, 1, 1),
			norm2:      b.groupNorm("norm2", out, groups, eps),
			conv2:      b.conv("conv2", out, out, 3, 1, 1),
			scaleShift: c.ResnetTimeScaleShift == "scale_shift",
			up:         up, down: down,
			outScale: float32(scale),
			act:      act,
		}
		tout := out
		if r.scaleShift {
			tout = 2 * out
		}
		r.temb = b.linear("time_emb_proj", tembDim, tout, true)
		if in != out {
			cv := b.conv("conv_shortcut", in, out, 1, 1, 0)
			r.shortcut = &cv
		}
		return r
	}
	attn := func(b builder, channels, headDim int, onlyCross bool) *ifAttn {
		a := &ifAttn{
			q:         b.linear("to_q", channels, channels, true),
			addK:      b.linear("add_k_proj", c.CrossAttentionDim, channels, true),
			addV:      b.linear("add_v_proj", c.CrossAttentionDim, channels, true),
			out:       b.linear("to_out.0", channels, channels, true),
			groupNorm: b.groupNorm("group_norm", channels, groups, 1e-5),
			heads:     channels / headDim,
			onlyCross: onlyCross,
		}
		if !onlyCross {
			a.k = b.linear("to_k", channels, channels, true)
			a.v = b.linear("to_v", channels, channels, true)
		}
		if c.CrossAttentionNorm == "group_norm" {
			a.normCross = b.groupNorm("norm_cross", c.CrossAttentionDim, 32, 1e-5)
		}
		return a
	}
	rsf := c.ResnetOutScaleFactor

	out := ch[0]
	for i := 0; i < n; i++ {
		in := out
		out = ch[i]
		lb := b.at("down_blocks.%d", i)
		lvl := &ifLevel{}
		cross := c.DownBlockTypes[i] == "SimpleCrossAttnDownBlock2D"
		for j := 0; j < c.LayersPerBlock.At(i); j++ {
			rin := out
			if j == 0 {
				rin = in
			}
			lvl.resnets = append(lvl.resnets, res(lb.at("resnets.%d", j), rin, out, rsf, false, false))
			if cross {
				lvl.attns = append(lvl.attns, attn(lb.at("attentions.%d", j), out, c.AttentionHeadDim.At(i), c.OnlyCrossAttention))
			}
		}
		if i < n-1 {
			lvl.resamp = res(lb.at("downsamplers.0"), out, out, rsf, false, true)
		}
		u.down = append(u.down, lvl)
	}

	top := ch[n-1]
	midOnly := c.OnlyCrossAttention
	if c.MidBlockOnlyCrossAttn != nil {
		midOnly = *c.MidBlockOnlyCrossAttn
	}
	mb := b.at("mid_block")
	u.mid = &ifLevel{
		resnets: []*ifResnet{
			res(mb.at("resnets.0"), top, top, c.MidBlockScaleFactor, false, false),
			res(mb.at("resnets.1"), top, top, c.MidBlockScaleFactor, false, false),
		},
		attns: []*ifAttn{attn(mb.at("attentions.0"), top, c.AttentionHeadDim.At(n-1), midOnly)},
	}

	out = top
	for i := 0; i < n; i++ {
		prev := out
		out = ch[n-1-i]
		skipIn := ch[max(n-2-i, 0)]
		lb := b.at("up_blocks.%d", i)
		lvl := &ifLevel{}
		cross := c.UpBlockTypes[i] == "SimpleCrossAttnUpBlock2D"
		layers := c.LayersPerBlock.At(n-1-i) + 1
		for j := 0; j < layers; j++ {
			rin := out
			if j == 0 {
				rin = prev
			}
			skip := out
			if j == layers-1 {
				skip = skipIn
			}
			lvl.resnets = append(lvl.resnets, res(lb.at("resnets.%d", j), rin+skip, out, rsf, false, false))
			if cross {
				lvl.attns = append(lvl.attns, attn(lb.at("attentions.%d", j), out, c.AttentionHeadDim.At(n-1-i), c.OnlyCrossAttention))
			}
		}
		if i < n-1 {
			lvl.resamp = res(lb.at("upsamplers.0"), out, out, rsf, true, false)
		}
		u.up = append(u.up, lvl)
	}

	u.normOut = b.at("conv_norm_out").groupNorm("", ch[0], groups, eps)
	u.convOut = b.at("conv_out").conv("", ch[0], c.OutChannels, c.ConvOutKernel, 1, c.ConvOutKernel/2)
	return u, nil
}

// avgPool2x is 2x2 average pooling with stride 2 of [N,C,H,W] (H, W even).
func avgPool2x(d gpu.Device, x *gpu.Tensor) *gpu.Tensor {
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	v := x.View(n, c, h/2, 2, w)
	rows := d.Add(d.Slice(v, 3, 0, 1), d.Slice(v, 3, 1, 2)).View(n, c, h/2, w/2, 2)
	s := d.Add(d.Slice(rows, 4, 0, 1), d.Slice(rows, 4, 1, 2))
	return d.Scale(s.View(n, c, h/2, w/2), 0.25, 0)
}

// forward runs the block; embAct is the (activated) time embedding [B,T].
func (r *ifResnet) forward(d gpu.Device, x, embAct *gpu.Tensor) *gpu.Tensor {
	return gpu.Scoped(d, func() *gpu.Tensor {
		h := r.act(d, r.norm1.apply(d, x))
		switch {
		case r.up:
			x, h = d.Upsample2x(x), d.Upsample2x(h)
		case r.down:
			x, h = avgPool2x(d, x), avgPool2x(d, h)
		}
		h = r.conv1.apply(d, h)
		t := r.temb.apply(d, embAct)
		b, c := t.Dim(0), h.Dim(1)
		if r.scaleShift {
			scale := d.Slice(t, 1, 0, c).View(b, c, 1, 1)
			shift := d.Slice(t, 1, c, 2*c).View(b, c, 1, 1)
			h = d.Add(d.Mul(r.norm2.apply(d, h), d.Scale(scale, 1, 1)), shift)
		} else {
			h = r.norm2.apply(d, d.Add(h, t.View(b, c, 1, 1)))
		}
		skip := x
		if r.shortcut != nil {
			skip = r.shortcut.apply(d, x)
		}
		out := r.conv2.applyAdd(d, r.act(d, h), skip)
		if r.outScale != 1 {
			out = d.Scale(out, 1/r.outScale, 0)
		}
		return out
	})
}

// forward attends from the image features x [B,C,H,W] to the projected
// text states ctx [B,L,cross] and adds the residual.
func (a *ifAttn) forward(d gpu.Device, x, ctx *gpu.Tensor) *gpu.Tensor {
	return gpu.Scoped(d, func() *gpu.Tensor {
		b, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
		if a.normCross.gamma != nil {
			l, cc := ctx.Dim(1), ctx.Dim(2)
			t := d.Permute(ctx, 0, 2, 1).View(b, cc, l, 1)
			ctx = d.Permute(a.normCross.apply(d, t).View(b, cc, l), 0, 2, 1)
		}
		hn := toTokens(d, a.groupNorm.apply(d, x))
		q := a.q.apply(d, hn)
		k, v := a.addK.apply(d, ctx), a.addV.apply(d, ctx)
		if !a.onlyCross {
			k = d.Concat(1, k, a.k.apply(d, hn))
			v = d.Concat(1, v, a.v.apply(d, hn))
		}
		o := a.out.apply(d, d.Attention(q, k, v, gpu.AttentionOpts{Heads: a.heads}))
		return d.Add(fromTokens(d, o, h, w).View(b, c, h, w), x)
	})
}

func (u *IFUNet) trace(name string, t *gpu.Tensor) {
	if u.Trace != nil {
		u.Trace(name, t)
	}
}

// textTime is TextTimeEmbedding: LayerNorm, attention pooling (a class
// token = mean + positional embedding attends over itself and the
// tokens), Linear, LayerNorm.
func (u *IFUNet) textTime(d gpu.Device, ehs *gpu.Tensor) *gpu.Tensor {
	b, l, c := ehs.Dim(0), ehs.Dim(1), ehs.Dim(2)
	x := u.addNorm1.apply(d, ehs)
	mean := make([]float32, l)
	for i := range mean {
		mean[i] = 1 / float32(l)
	}
	m := d.MatMul(d.Upload(mean, 1, 1, l), x, gpu.MatMulOpts{}) // [B,1,C]
	cls := d.Add(m, d.Cast(u.addPos))
	all := d.Concat(1, cls, x)
	q, k, v := u.addQ.apply(d, cls), u.addK.apply(d, all), u.addV.apply(d, all)
	a := d.Attention(q, k, v, gpu.AttentionOpts{Heads: u.Config.AdditionEmbedTypeNumHeads}).View(b, c)
	return u.addNorm2.apply(d, u.addProj.apply(d, a))
}

// Forward predicts [B,out,H,W] for the images x [B,in,H,W] at timesteps t
// [B] from the raw text states ehs [B,L,TextDim]; classLabels [B] are the
// stage II noise levels (nil for stage I). Errors are reported by the
// device's Err; the result is then a placeholder.
func (u *IFUNet) Forward(x *gpu.Tensor, t []float32, ehs *gpu.Tensor, classLabels []float32) *gpu.Tensor {
	d, c := u.d, &u.Config
	if x == nil || x.Rank() != 4 || x.Dim(1) != c.InChannels {
		return failed(d, fmt.Errorf("unet: sample must be [B,%d,H,W], got %v", c.InChannels, x), c.OutChannels, x)
	}
	bs, h, w := x.Dim(0), x.Dim(2), x.Dim(3)
	switch {
	case h%u.spatialDivisor != 0 || w%u.spatialDivisor != 0:
		return failed(d, fmt.Errorf("unet: image size %dx%d is not a multiple of %d", h, w, u.spatialDivisor), c.OutChannels, x)
	case len(t) != bs:
		return failed(d, fmt.Errorf("unet: %d timesteps for a batch of %d", len(t), bs), c.OutChannels, x)
	case ehs == nil || ehs.Rank() != 3 || ehs.Dim(0) != bs || ehs.Dim(2) != c.TextDim():
		return failed(d, fmt.Errorf("unet: encoder_hidden_states must be [%d,L,%d], got %v", bs, c.TextDim(), ehs), c.OutChannels, x)
	case u.class != nil && len(classLabels) != bs:
		return failed(d, fmt.Errorf("unet: this U-Net needs %d class labels (noise levels), got %d", bs, len(classLabels)), c.OutChannels, x)
	}
	d.PushScope()
	ch0 := c.BlockOutChannels[0]
	act, _ := ifActivation(c.ActFn)
	tp := d.TimestepEmbedding(t, ch0, *c.FlipSinToCos, float32(c.FreqShift), 10000)
	emb := u.time2.apply(d, act(d, u.time1.apply(d, tp)))
	u.trace("time_embedding", emb)
	if u.class != nil {
		cp := d.TimestepEmbedding(classLabels, ch0, *c.FlipSinToCos, float32(c.FreqShift), 10000)
		ce := u.class[1].apply(d, act(d, u.class[0].apply(d, cp)))
		u.trace("class_embedding", ce)
		emb = d.Add(emb, ce)
	}
	if c.AdditionEmbedType == "text" {
		ae := u.textTime(d, ehs)
		u.trace("add_embedding", ae)
		emb = d.Add(emb, ae)
	}
	if c.TimeEmbeddingActFn != "" {
		ta, _ := ifActivation(c.TimeEmbeddingActFn)
		emb = ta(d, emb)
	}
	if !c.ResnetSkipTimeAct {
		emb = act(d, emb) // each resnet's own activation of temb, done once
	}
	ctx := ehs
	if u.hidProj != nil {
		ctx = u.hidProj.apply(d, ehs)
		u.trace("encoder_hid_proj", ctx)
	}

	hs := u.convIn.apply(d, x)
	u.trace("conv_in", hs)
	skips := []*gpu.Tensor{hs}
	for _, lvl := range u.down {
		for j, r := range lvl.resnets {
			hs = r.forward(d, hs, emb)
			if len(lvl.attns) > 0 {
				hs = lvl.attns[j].forward(d, hs, ctx)
			}
			skips = append(skips, hs)
		}
		if lvl.resamp != nil {
			hs = lvl.resamp.forward(d, hs, emb)
			skips = append(skips, hs)
		}
	}
	hs = u.mid.resnets[0].forward(d, hs, emb)
	hs = u.mid.resnets[1].forward(d, u.mid.attns[0].forward(d, hs, ctx), emb)
	u.trace("mid_block", hs)

	for _, lvl := range u.up {
		for j, r := range lvl.resnets {
			s := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			hs = r.forward(d, d.Concat(1, hs, s), emb)
			if len(lvl.attns) > 0 {
				hs = lvl.attns[j].forward(d, hs, ctx)
			}
		}
		if lvl.resamp != nil {
			hs = lvl.resamp.forward(d, hs, emb)
		}
	}
	hs = u.convOut.apply(d, act(d, u.normOut.apply(d, hs)))
	d.PopScope(hs)
	return hs
}
