package nets

import (
	"fmt"
	"math"

	"github.com/stepwise/stepwise/gpu"
)

// UNet is diffusers' UNet2DConditionModel (SD 1.x/2.x topology): it predicts
// the noise (or v) of a latent at a timestep, conditioned on text embeddings.
type UNet struct {
	// Config is the configuration the network was built from, with defaults
	// filled in.
	Config UNetConfig
	// Trace, when set, is called during Forward with the output of each stage
	// under diffusers' module names ("time_proj", "time_embedding",
	// "conv_in", "down_blocks.i" and their skip tensors "down_blocks.i.resj",
	// "mid_block", "up_blocks.i", "conv_norm_out", "conv_out"). The tensor is
	// freed after the call returns; download it there. For debugging.
	Trace func(name string, t *gpu.Tensor)

	d              gpu.Device
	params         []*gpu.Tensor
	named          map[string]*gpu.Tensor // params by declared name
	timeDim        int
	time1, time2   linear
	convIn         conv
	down, up       []*unetLevel
	mid            *unetLevel
	normOut        norm
	convOut        conv
	spatialDivisor int
	// addEmb is SDXL's add_embedding (addition_embed_type "text_time").
	addEmb *[2]linear
	// condProj is LCM's time_embedding.cond_proj (time_cond_proj_dim).
	condProj *linear
	// ip is an attached IP-Adapter (ipadapter.go), or nil.
	ip *unetIP
}

// Added is SDXL's added conditioning (addition_embed_type "text_time"): the
// pooled text embedding [B,P] and per row the time ids (original size,
// crop top-left, target size: 6 values for the base model, 5 with the
// aesthetic score for the refiner), flattened [B*k].
type Added struct {
	TextEmbeds *gpu.Tensor
	TimeIDs    []float32
	// TimestepCond is an LCM model's guidance embedding [B,
	// time_cond_proj_dim] (GuidanceEmbedding); nil skips the term.
	TimestepCond *gpu.Tensor
	// ImageEmbeds are an attached IP-Adapter's image embeddings [B,n,P]
	// (diffusers' added_cond_kwargs["image_embeds"]).
	ImageEmbeds *gpu.Tensor
}

// GuidanceEmbedding is diffusers' get_guidance_scale_embedding for LCM
// models: w*1000 times dim/2 frequencies exp(-j ln(10000)/(dim/2-1)),
// sin then cos, in float32 as torch computes it. One row of dim values
// per w.
func GuidanceEmbedding(ws []float64, dim int) []float32 {
	half := dim / 2
	out := make([]float32, 0, len(ws)*dim)
	step := float32(math.Log(10000)) / float32(half-1)
	for _, w := range ws {
		w32 := float32(w) * 1000
		row := make([]float32, dim)
		for j := 0; j < half; j++ {
			f := float32(math.Exp(float64(float32(j) * -step)))
			a := w32 * f
			row[j] = float32(math.Sin(float64(a)))
			row[half+j] = float32(math.Cos(float64(a)))
		}
		out = append(out, row...)
	}
	return out
}

// unetLevel is one down, mid or up block: resnets, optionally a spatial
// transformer after each resnet, and an optional resampler.
type unetLevel struct {
	resnets []*resnet
	attns   []*transformer2D // empty, or one per resnet (mid: one per resnet after the first)
	down    *downsample
	up      *upsample
}

// NewUNet checks w against the parameters c calls for (reporting every
// missing or mis-shaped one in a single *WeightsError) and uploads them to d,
// keeping their storage type. Call it outside any device scope.
func NewUNet(d gpu.Device, c UNetConfig, w Weights) (*UNet, error) {
	c.Defaults()
	u, params, named, err := construct(d, w, "unet", func(b builder) (*UNet, error) { return buildUNet(b, c) })
	if err != nil {
		return nil, err
	}
	u.d, u.params, u.named = d, params, named
	return u, nil
}

// ExpectedUNet lists every parameter a U-Net with config c uses (diffusers
// names, relative to the unet) with its shape; unset config fields take SD
// 1.5's values. It returns nil when c is not a supported configuration
// (NewUNet says why).
func ExpectedUNet(c UNetConfig) map[string][]int {
	c.Defaults()
	m, err := expected(func(b builder) (*UNet, error) { return buildUNet(b, c) })
	if err != nil {
		return nil
	}
	return m
}

// Release frees the network's weights on the device.
func (u *UNet) Release() { releaseAll(u.d, u.params) }

// ParamBytes is the device memory the weights occupy.
func (u *UNet) ParamBytes() int64 { return paramBytes(u.params) }

// Param returns the uploaded parameter with the declared (diffusers) name,
// or nil.
func (u *UNet) Param(name string) *gpu.Tensor { return u.named[name] }

// ReplaceParam puts t in place of the uploaded parameter name: every layer
// that uses it computes with t from then on, without rebuilding the
// network (LoRA merges and unmerges). t must have the parameter's shape;
// its storage type may differ (a merge kept in F32 over F16 weights). The
// old storage is released and t's belongs to the network: do not release
// t, and make it outside any device scope (or keep it from the scope).
func (u *UNet) ReplaceParam(name string, t *gpu.Tensor) error {
	return replaceParam(u.d, u.named, name, t)
}

func checkUNetConfig(c UNetConfig) error {
	n := len(c.BlockOutChannels)
	switch {
	case n == 0:
		return fmt.Errorf("block_out_channels is empty")
	case len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n:
		return fmt.Errorf("%d down_block_types and %d up_block_types for %d block_out_channels",
			len(c.DownBlockTypes), len(c.UpBlockTypes), n)
	case c.ActFn != "silu" && c.ActFn != "swish":
		return fmt.Errorf("act_fn %q is not supported (want silu)", c.ActFn)
	case c.ResnetTimeScaleShift != "default":
		return fmt.Errorf("resnet_time_scale_shift %q is not supported (want default)", c.ResnetTimeScaleShift)
	case c.MidBlockType != "UNetMidBlock2DCrossAttn":
		return fmt.Errorf("mid_block_type %q is not supported (want UNetMidBlock2DCrossAttn)", c.MidBlockType)
	case c.ConvInKernel%2 == 0 || c.ConvOutKernel%2 == 0:
		return fmt.Errorf("conv_in_kernel %d / conv_out_kernel %d must be odd", c.ConvInKernel, c.ConvOutKernel)
	case c.LayersPerBlock < 1 || c.NormNumGroups < 1 || c.CrossAttentionDim < 1:
		return fmt.Errorf("layers_per_block %d, norm_num_groups %d, cross_attention_dim %d must be positive",
			c.LayersPerBlock, c.NormNumGroups, c.CrossAttentionDim)
	}
	for i, ch := range c.BlockOutChannels {
		if ch < 1 || ch%c.NormNumGroups != 0 {
			return fmt.Errorf("block_out_channels[%d] = %d is not a positive multiple of norm_num_groups %d", i, ch, c.NormNumGroups)
		}
	}
	for i, t := range c.DownBlockTypes {
		if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
			return fmt.Errorf("down_block_types[%d] %q is not supported (want CrossAttnDownBlock2D or DownBlock2D)", i, t)
		}
	}
	for i, t := range c.UpBlockTypes {
		if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
			return fmt.Errorf("up_block_types[%d] %q is not supported (want CrossAttnUpBlock2D or UpBlock2D)", i, t)
		}
	}
	return nil
}

// attnParams checks that a spatial transformer's channels split into its
// heads and that its depth is positive.
func attnParams(where string, channels, heads, depth int) error {
	if heads < 1 || channels%heads != 0 {
		return fmt.Errorf("%s: %d channels do not split into %d attention heads", where, channels, heads)
	}
	if depth < 1 {
		return fmt.Errorf("%s: transformer_layers_per_block %d must be positive", where, depth)
	}
	return nil
}

// buildUNet declares (and, with a device, uploads) the U-Net following
// diffusers' UNet2DConditionModel constructor.
func buildUNet(b builder, c UNetConfig) (*UNet, error) {
	if err := checkUNetConfig(c); err != nil {
		return nil, err
	}
	u := &UNet{Config: c}
	if err := u.buildDown(b); err != nil {
		return nil, err
	}
	n := len(c.BlockOutChannels)
	ch := c.BlockOutChannels
	groups, eps := c.NormNumGroups, c.NormEps
	tembDim := 4 * ch[0]
	top := ch[n-1]

	// Up blocks mirror the down blocks: diffusers reverses channels, heads and
	// depths, and each resnet eats one skip tensor from the end of the list.
	out := top
	idx := 0
	for i := 0; i < n; i++ {
		prev := out
		out = ch[n-1-i]
		skipIn := ch[max(n-2-i, 0)]
		lb := b.as(fmt.Sprintf("up_blocks.%d", i), "")
		lvl := &unetLevel{}
		cross := c.UpBlockTypes[i] == "CrossAttnUpBlock2D"
		heads, depth := c.Heads(n-1-i), c.TransformerLayers.At(n-1-i)
		if cross {
			if err := attnParams(fmt.Sprintf("up_blocks.%d", i), out, heads, depth); err != nil {
				return nil, err
			}
		}
		for j := 0; j <= c.LayersPerBlock; j++ {
			rin := out
			if j == 0 {
				rin = prev
			}
			skip := out
			if j == c.LayersPerBlock {
				skip = skipIn
			}
			blk := fmt.Sprintf("output_blocks.%d", idx)
			lvl.resnets = append(lvl.resnets, lb.as(fmt.Sprintf("resnets.%d", j), blk+".0").resnet("", rin+skip, out, tembDim, groups, eps, 1))
			if cross {
				lvl.attns = append(lvl.attns, lb.as(fmt.Sprintf("attentions.%d", j), blk+".1").transformer2D("", out, heads, depth, c.CrossAttentionDim, groups, c.UseLinearProjection))
			}
			if j == c.LayersPerBlock && i < n-1 {
				k := 1
				if cross {
					k = 2
				}
				lvl.up = lb.upsample("upsamplers.0", fmt.Sprintf("%s.%d.conv", blk, k), out)
			}
			idx++
		}
		u.up = append(u.up, lvl)
	}

	u.normOut = b.as("conv_norm_out", "out.0").groupNorm("", ch[0], groups, eps)
	u.convOut = b.as("conv_out", "out.2").conv("", ch[0], c.OutChannels, c.ConvOutKernel, 1, c.ConvOutKernel/2)
	return u, nil
}

// buildDown declares the time embedding, the added conditioning, conv_in,
// the down blocks and the mid block: the half of the U-Net that a
// ControlNet copies (same diffusers names; the original names are relative
// to the network's prefix, model.diffusion_model. or control_model.).
func (u *UNet) buildDown(b builder) error {
	c := u.Config
	n := len(c.BlockOutChannels)
	ch := c.BlockOutChannels
	groups, eps := c.NormNumGroups, c.NormEps
	u.timeDim, u.spatialDivisor = ch[0], 1<<(n-1)
	tembDim := 4 * ch[0]

	if c.TimeCondProjDim > 0 {
		l := b.as("time_embedding.cond_proj", "time_embed_cond_proj").linear("", c.TimeCondProjDim, ch[0], false)
		u.condProj = &l
	}
	u.time1 = b.as("time_embedding.linear_1", "time_embed.0").linear("", ch[0], tembDim, true)
	u.time2 = b.as("time_embedding.linear_2", "time_embed.2").linear("", tembDim, tembDim, true)
	if err := u.buildAdded(b, tembDim); err != nil {
		return err
	}
	u.convIn = b.as("conv_in", "input_blocks.0.0").conv("", c.InChannels, ch[0], c.ConvInKernel, 1, c.ConvInKernel/2)

	// Original (LDM/SGM) numbering: input_blocks 1.. hold one (resnet[,
	// transformer]) per layer and one downsampler per level but the last;
	// output_blocks mirror them with one layer more per level.
	idx := 1
	out := ch[0]
	for i := 0; i < n; i++ {
		in := out
		out = ch[i]
		lb := b.as(fmt.Sprintf("down_blocks.%d", i), "")
		lvl := &unetLevel{}
		cross := c.DownBlockTypes[i] == "CrossAttnDownBlock2D"
		heads, depth := c.Heads(i), c.TransformerLayers.At(i)
		if cross {
			if err := attnParams(fmt.Sprintf("down_blocks.%d", i), out, heads, depth); err != nil {
				return err
			}
		}
		for j := 0; j < c.LayersPerBlock; j++ {
			rin := out
			if j == 0 {
				rin = in
			}
			blk := fmt.Sprintf("input_blocks.%d", idx)
			lvl.resnets = append(lvl.resnets, lb.as(fmt.Sprintf("resnets.%d", j), blk+".0").resnet("", rin, out, tembDim, groups, eps, 1))
			if cross {
				lvl.attns = append(lvl.attns, lb.as(fmt.Sprintf("attentions.%d", j), blk+".1").transformer2D("", out, heads, depth, c.CrossAttentionDim, groups, c.UseLinearProjection))
			}
			idx++
		}
		if i < n-1 {
			lvl.down = lb.downsample("downsamplers.0", fmt.Sprintf("input_blocks.%d.0.op", idx), out, *c.DownsamplePadding)
			idx++
		}
		u.down = append(u.down, lvl)
	}

	top := ch[n-1]
	heads, depth := c.Heads(n-1), c.TransformerLayers.At(n-1)
	if err := attnParams("mid_block", top, heads, depth); err != nil {
		return err
	}
	mb := b.as("mid_block", "")
	u.mid = &unetLevel{
		resnets: []*resnet{
			mb.as("resnets.0", "middle_block.0").resnet("", top, top, tembDim, groups, eps, c.MidBlockScaleFactor),
			mb.as("resnets.1", "middle_block.2").resnet("", top, top, tembDim, groups, eps, c.MidBlockScaleFactor),
		},
		attns: []*transformer2D{mb.as("attentions.0", "middle_block.1").transformer2D("", top, heads, depth, c.CrossAttentionDim, groups, c.UseLinearProjection)},
	}

	return nil
}

// buildAdded declares SDXL's add_embedding (originally label_emb.0).
func (u *UNet) buildAdded(b builder, tembDim int) error {
	c := &u.Config
	switch c.AdditionEmbedType {
	case "":
		return nil
	case "text_time":
	default:
		return fmt.Errorf("addition_embed_type %q is not supported (want text_time or none)", c.AdditionEmbedType)
	}
	if c.AdditionTimeEmbedDim < 2 || c.AdditionTimeEmbedDim%2 != 0 || c.ProjectionClassEmbeddingsInputDim <= c.AdditionTimeEmbedDim {
		return fmt.Errorf("addition_time_embed_dim %d and projection_class_embeddings_input_dim %d do not describe text_time embeddings",
			c.AdditionTimeEmbedDim, c.ProjectionClassEmbeddingsInputDim)
	}
	u.addEmb = &[2]linear{
		b.as("add_embedding.linear_1", "label_emb.0.0").linear("", c.ProjectionClassEmbeddingsInputDim, tembDim, true),
		b.as("add_embedding.linear_2", "label_emb.0.2").linear("", tembDim, tembDim, true),
	}
	return nil
}

// addedEmbedding is add_embedding(cat(text_embeds, time_proj(time_ids))).
func (u *UNet) addedEmbedding(d gpu.Device, a *Added, batch int) (*gpu.Tensor, error) {
	c := &u.Config
	if a == nil || a.TextEmbeds == nil || a.TextEmbeds.Rank() != 2 || a.TextEmbeds.Dim(0) != batch {
		return nil, fmt.Errorf("unet: this U-Net needs added conditioning (pooled text embeddings [%d,P] and time ids)", batch)
	}
	if len(a.TimeIDs)%batch != 0 {
		return nil, fmt.Errorf("unet: %d time ids for a batch of %d", len(a.TimeIDs), batch)
	}
	k := len(a.TimeIDs) / batch
	if want := a.TextEmbeds.Dim(1) + k*c.AdditionTimeEmbedDim; want != c.ProjectionClassEmbeddingsInputDim {
		return nil, fmt.Errorf("unet: pooled width %d + %d time ids x %d = %d, but add_embedding takes %d",
			a.TextEmbeds.Dim(1), k, c.AdditionTimeEmbedDim, want, c.ProjectionClassEmbeddingsInputDim)
	}
	tp := d.TimestepEmbedding(a.TimeIDs, c.AdditionTimeEmbedDim, *c.FlipSinToCos, float32(c.FreqShift), 10000)
	u.trace("add_time_proj", tp)
	in := d.Concat(1, a.TextEmbeds, tp.View(batch, k*c.AdditionTimeEmbedDim))
	e := u.addEmb[1].apply(d, d.SiLU(u.addEmb[0].apply(d, in)))
	u.trace("add_embedding", e)
	return e, nil
}

func (u *UNet) trace(name string, t *gpu.Tensor) {
	if u.Trace != nil {
		u.Trace(name, t)
	}
}

// checkInputs validates Forward's operands.
func (u *UNet) checkInputs(x *gpu.Tensor, t []float32, context *gpu.Tensor) error {
	c := &u.Config
	if x == nil || x.Rank() != 4 || x.Dim(1) != c.InChannels {
		return fmt.Errorf("unet: sample must be [B,%d,H,W], got %v", c.InChannels, x)
	}
	b, h, w := x.Dim(0), x.Dim(2), x.Dim(3)
	if h%u.spatialDivisor != 0 || w%u.spatialDivisor != 0 {
		return fmt.Errorf("unet: latent size %dx%d is not a multiple of %d", h, w, u.spatialDivisor)
	}
	if len(t) != b {
		return fmt.Errorf("unet: %d timesteps for a batch of %d", len(t), b)
	}
	if context == nil || context.Rank() != 3 || context.Dim(0) != b || context.Dim(2) != c.CrossAttentionDim {
		return fmt.Errorf("unet: encoder_hidden_states must be [%d,L,%d], got %v", b, c.CrossAttentionDim, context)
	}
	return nil
}

// Forward predicts the model output for the latents x [B,C,H,W] at
// timesteps t [B] (fractional allowed) given the text embeddings context
// [B,L,ctx]. H and W must be multiples of 2^(levels-1) (8 for SD). Errors,
// including bad operand shapes, are reported by the device's Err; the result
// is then a placeholder.
func (u *UNet) Forward(x *gpu.Tensor, t []float32, context *gpu.Tensor) *gpu.Tensor {
	return u.ForwardAdded(x, t, context, nil)
}

// ForwardAdded is Forward with SDXL's added conditioning, which a U-Net
// with addition_embed_type "text_time" requires (and others ignore).
func (u *UNet) ForwardAdded(x *gpu.Tensor, t []float32, context *gpu.Tensor, added *Added) *gpu.Tensor {
	return u.ForwardControl(x, t, context, added, nil)
}

// Residuals are a ControlNet's outputs for one U-Net call (see
// ControlNet.Forward): one tensor per skip connection of the down path, in
// diffusers' order (conv_in's output, then each resnet/attention and
// downsampler output), and one for the mid block's output, already
// multiplied by the conditioning scale.
type Residuals struct {
	Down []*gpu.Tensor
	Mid  *gpu.Tensor
}

// ForwardControl is ForwardAdded with ControlNet residuals (nil: none)
// added as diffusers' UNet2DConditionModel adds down_block_additional_residuals
// and mid_block_additional_residual: residual j to skip tensor j once the
// down path is done, the mid residual to the mid block's output.
func (u *UNet) ForwardControl(x *gpu.Tensor, t []float32, context *gpu.Tensor, added *Added, res *Residuals) *gpu.Tensor {
	d, c := u.d, &u.Config
	if err := u.checkInputs(x, t, context); err != nil {
		return failed(d, err, c.OutChannels, x)
	}
	d.PushScope()
	if c.CenterInputSample {
		x = d.Scale(x, 2, -1)
	}
	embAct, err := u.embedding(d, x, t, added)
	if err != nil {
		d.PopScope()
		return failed(d, err, c.OutChannels, x)
	}
	if u.ip != nil {
		if err := u.ip.begin(d, added, x.Dim(0)); err != nil {
			d.PopScope()
			return failed(d, err, c.OutChannels, x)
		}
		defer u.ip.end()
	}
	h, skips := u.downMid(d, x, embAct, context, nil)
	if res != nil {
		if len(res.Down) != len(skips) || res.Mid == nil {
			d.PopScope()
			return failed(d, fmt.Errorf("unet: %d down residuals (mid %v) for %d skip connections", len(res.Down), res.Mid != nil, len(skips)), c.OutChannels, x)
		}
		for j, s := range skips {
			if !s.Shape.Equal(res.Down[j].Shape) {
				d.PopScope()
				return failed(d, fmt.Errorf("unet: down residual %d is %v, the skip connection %v", j, res.Down[j].Shape, s.Shape), c.OutChannels, x)
			}
			skips[j] = d.Add(s, res.Down[j])
			d.Release(s)
		}
		if !h.Shape.Equal(res.Mid.Shape) {
			d.PopScope()
			return failed(d, fmt.Errorf("unet: mid residual is %v, the mid block's output %v", res.Mid.Shape, h.Shape), c.OutChannels, x)
		}
		h = d.Add(h, res.Mid)
	}

	for i, lvl := range u.up {
		for j, r := range lvl.resnets {
			s := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			prev := h
			h = gpu.Scoped(d, func() *gpu.Tensor { return r.forward(d, d.Concat(1, prev, s), embAct) })
			d.Release(prev)
			d.Release(s)
			if len(lvl.attns) > 0 {
				prev = h
				h = lvl.attns[j].forward(d, h, context)
				d.Release(prev)
			}
		}
		if lvl.up != nil {
			prev := h
			h = lvl.up.forward(d, h)
			d.Release(prev)
		}
		u.trace(fmt.Sprintf("up_blocks.%d", i), h)
	}

	if u.Trace != nil { // the traced intermediate is the norm's output
		h = u.normOut.apply(d, h)
		u.trace("conv_norm_out", h)
		h = d.SiLU(h)
	} else {
		h = u.normOut.applySiLU(d, h)
	}
	h = u.convOut.apply(d, h)
	u.trace("conv_out", h)
	d.PopScope(h)
	return h
}

// embedding is SiLU of the timestep embedding (plus LCM's guidance and
// SDXL's added embeddings): what every resnet's time projection takes.
func (u *UNet) embedding(d gpu.Device, x *gpu.Tensor, t []float32, added *Added) (*gpu.Tensor, error) {
	c := &u.Config
	tp := d.TimestepEmbedding(t, u.timeDim, *c.FlipSinToCos, float32(c.FreqShift), 10000)
	u.trace("time_proj", tp)
	if u.condProj != nil && added != nil && added.TimestepCond != nil {
		w := added.TimestepCond
		if w.Rank() != 2 || w.Dim(0) != x.Dim(0) || w.Dim(1) != c.TimeCondProjDim {
			return nil, fmt.Errorf("unet: timestep_cond must be [%d,%d], got %v", x.Dim(0), c.TimeCondProjDim, w)
		}
		tp = d.Add(tp, u.condProj.apply(d, w))
		u.trace("cond_proj", tp)
	}
	emb := u.time2.apply(d, d.SiLU(u.time1.apply(d, tp)))
	u.trace("time_embedding", emb)
	if u.addEmb != nil {
		aug, err := u.addedEmbedding(d, added, x.Dim(0))
		if err != nil {
			return nil, err
		}
		emb = d.Add(emb, aug)
	}
	return d.SiLU(emb), nil
}

// downMid runs conv_in (plus extra, a ControlNet's conditioning embedding,
// when set), the down blocks and the mid block, and returns the mid
// block's output and the skip tensors in diffusers' order.
func (u *UNet) downMid(d gpu.Device, x, embAct, context, extra *gpu.Tensor) (*gpu.Tensor, []*gpu.Tensor) {
	var h *gpu.Tensor
	if extra != nil && u.Trace == nil {
		h = u.convIn.applyAdd(d, x, extra)
	} else {
		h = u.convIn.apply(d, x)
		u.trace("conv_in", h) // a ControlNet's own conv_in, before the embedding is added
		if extra != nil {
			h = d.Add(h, extra)
		}
	}
	skips := []*gpu.Tensor{h}
	for i, lvl := range u.down {
		first := len(skips)
		for j, r := range lvl.resnets {
			h = r.forward(d, h, embAct)
			if len(lvl.attns) > 0 {
				h = lvl.attns[j].forward(d, h, context)
			}
			skips = append(skips, h)
		}
		if lvl.down != nil {
			h = lvl.down.forward(d, h)
			skips = append(skips, h)
		}
		for j, s := range skips[first:] {
			u.trace(fmt.Sprintf("down_blocks.%d.res%d", i, j), s)
		}
		u.trace(fmt.Sprintf("down_blocks.%d", i), h)
	}

	h = u.mid.resnets[0].forward(d, h, embAct)
	for k, a := range u.mid.attns {
		h = u.mid.resnets[k+1].forward(d, a.forward(d, h, context), embAct)
	}
	u.trace("mid_block", h)
	return h, skips
}

// failed records err on d and returns a placeholder [B,outC,H,W] shaped like
// x where x allows it.
func failed(d gpu.Device, err error, outC int, x *gpu.Tensor) *gpu.Tensor {
	d.Fail(err)
	shape := []int{1, outC, 1, 1}
	if x != nil && x.Rank() == 4 {
		shape = []int{x.Dim(0), outC, x.Dim(2), x.Dim(3)}
	}
	return d.Upload(make([]float32, gpu.Shape(shape).Numel()), shape...)
}
