package nets

import (
	"fmt"

	"github.com/stepwise/stepwise/gpu"
)

// VAE is diffusers' AutoencoderKL: Decode turns latents into images, Encode
// turns images into the moments (mean, logvar) of the latent distribution.
// Neither applies the scaling factor: callers divide latents by
// Config.ScalingFactor before Decode and multiply samples after Encode.
type VAE struct {
	// Config is the configuration the network was built from, with defaults
	// filled in.
	Config VAEConfig
	// Trace, when set, is called with the output of each stage under
	// diffusers' module names ("post_quant_conv", "decoder.conv_in",
	// "decoder.mid_block", "decoder.up_blocks.i", "decoder.conv_norm_out",
	// "decoder.conv_out"; "encoder.conv_in", "encoder.down_blocks.i",
	// "encoder.mid_block", "encoder.conv_norm_out", "encoder.conv_out",
	// "quant_conv"). The tensor is freed after the call returns. For debugging.
	Trace func(name string, t *gpu.Tensor)

	d      gpu.Device
	params []*gpu.Tensor
	named  map[string]*gpu.Tensor // params by declared name

	encIn   conv
	encDown []*vaeLevel
	encMid  *vaeMid
	encNorm norm
	encOut  conv
	quant   *conv
	postQnt *conv
	decIn   conv
	decMid  *vaeMid
	decUp   []*vaeLevel
	decNorm norm
	decOut  conv
}

// vaeLevel is a DownEncoderBlock2D or UpDecoderBlock2D.
type vaeLevel struct {
	resnets []*resnet
	down    *downsample
	up      *upsample
}

// vaeMid is UNetMidBlock2D: resnet, single-head self-attention over the
// pixels (optional), resnet.
type vaeMid struct {
	res0, res1 *resnet
	attnNorm   norm
	attn       *attention
}

// NewVAE checks w against the parameters c calls for (reporting every missing
// or mis-shaped one in a single *WeightsError) and uploads them to d, keeping
// their storage type. Call it outside any device scope.
func NewVAE(d gpu.Device, c VAEConfig, w Weights) (*VAE, error) {
	c.Defaults()
	v, params, named, err := construct(d, w, "vae", func(b builder) (*VAE, error) { return buildVAE(b, c) })
	if err != nil {
		return nil, err
	}
	v.d, v.params, v.named = d, params, named
	return v, nil
}

// ExpectedVAE lists every parameter an AutoencoderKL with config c uses
// (diffusers names, relative to the vae) with its shape; unset fields take SD
// 1.5's values. It returns nil when c is not a supported configuration
// (NewVAE says why).
func ExpectedVAE(c VAEConfig) map[string][]int {
	c.Defaults()
	m, err := expected(func(b builder) (*VAE, error) { return buildVAE(b, c) })
	if err != nil {
		return nil
	}
	return m
}

// Release frees the network's weights on the device.
func (v *VAE) Release() { releaseAll(v.d, v.params) }

// ParamBytes is the device memory the weights occupy.
func (v *VAE) ParamBytes() int64 { return paramBytes(v.params) }

func checkVAEConfig(c VAEConfig) error {
	n := len(c.BlockOutChannels)
	switch {
	case n == 0:
		return fmt.Errorf("block_out_channels is empty")
	case len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n:
		return fmt.Errorf("%d down_block_types and %d up_block_types for %d block_out_channels",
			len(c.DownBlockTypes), len(c.UpBlockTypes), n)
	case c.ActFn != "silu" && c.ActFn != "swish":
		return fmt.Errorf("act_fn %q is not supported (want silu)", c.ActFn)
	case c.LayersPerBlock < 1 || c.NormNumGroups < 1 || c.LatentChannels < 1:
		return fmt.Errorf("layers_per_block %d, norm_num_groups %d, latent_channels %d must be positive",
			c.LayersPerBlock, c.NormNumGroups, c.LatentChannels)
	}
	for i, ch := range c.BlockOutChannels {
		if ch < 1 || ch%c.NormNumGroups != 0 {
			return fmt.Errorf("block_out_channels[%d] = %d is not a positive multiple of norm_num_groups %d", i, ch, c.NormNumGroups)
		}
	}
	for i, t := range c.DownBlockTypes {
		if t != "DownEncoderBlock2D" {
			return fmt.Errorf("down_block_types[%d] %q is not supported (want DownEncoderBlock2D)", i, t)
		}
	}
	for i, t := range c.UpBlockTypes {
		if t != "UpDecoderBlock2D" {
			return fmt.Errorf("up_block_types[%d] %q is not supported (want UpDecoderBlock2D)", i, t)
		}
	}
	return nil
}

// VAE resnets and norms use eps 1e-6 whatever the config says (diffusers
// hard-codes it in Encoder and Decoder).
const vaeEps = 1e-6

// vaeMid declares UNetMidBlock2D; originally mid.block_1, mid.attn_1 (1x1
// convolutions q, k, v, proj_out) and mid.block_2.
func (b builder) vaeMid(name, orig string, ch, groups int, withAttn bool) *vaeMid {
	m := b.as(name, orig)
	mid := &vaeMid{res0: m.as("resnets.0", "block_1").resnet("", ch, ch, 0, groups, vaeEps, 1)}
	if withAttn {
		a := m.as("attentions.0", "attn_1")
		mid.attnNorm = a.as("group_norm", "norm").groupNorm("", ch, groups, vaeEps)
		sq := func(n, o string) linear {
			return a.as(n, o).stored(Decl{Squeeze: true}).linear("", ch, ch, true)
		}
		mid.attn = &attention{q: sq("to_q", "q"), k: sq("to_k", "k"), v: sq("to_v", "v"), out: sq("to_out.0", "proj_out"), heads: 1}
	}
	mid.res1 = m.as("resnets.1", "block_2").resnet("", ch, ch, 0, groups, vaeEps, 1)
	return mid
}

func (m *vaeMid) forward(d gpu.Device, x *gpu.Tensor) *gpu.Tensor {
	return gpu.Scoped(d, func() *gpu.Tensor {
		h := m.res0.forward(d, x, nil)
		if m.attn != nil {
			hgt, wid := h.Dim(2), h.Dim(3)
			a := gpu.Scoped(d, func() *gpu.Tensor {
				t := m.attn.forward(d, toTokens(d, m.attnNorm.apply(d, h)), nil)
				return d.Add(fromTokens(d, t, hgt, wid), h)
			})
			h = a
		}
		return m.res1.forward(d, h, nil)
	})
}

// buildVAE declares (and, with a device, uploads) the autoencoder following
// diffusers' Encoder/Decoder constructors.
func buildVAE(b builder, c VAEConfig) (*VAE, error) {
	if err := checkVAEConfig(c); err != nil {
		return nil, err
	}
	v := &VAE{Config: c}
	ch, n, groups, lat := c.BlockOutChannels, len(c.BlockOutChannels), c.NormNumGroups, c.LatentChannels
	top := ch[n-1]

	e := b.at("encoder")
	v.encIn = e.conv("conv_in", c.InChannels, ch[0], 3, 1, 1)
	out := ch[0]
	for i := 0; i < n; i++ {
		in := out
		out = ch[i]
		lb := e.as(fmt.Sprintf("down_blocks.%d", i), fmt.Sprintf("down.%d", i))
		lvl := &vaeLevel{}
		for j := 0; j < c.LayersPerBlock; j++ {
			rin := out
			if j == 0 {
				rin = in
			}
			lvl.resnets = append(lvl.resnets, lb.as(fmt.Sprintf("resnets.%d", j), fmt.Sprintf("block.%d", j)).resnet("", rin, out, 0, groups, vaeEps, 1))
		}
		if i < n-1 {
			lvl.down = lb.downsample("downsamplers.0", "downsample.conv", out, 0)
		}
		v.encDown = append(v.encDown, lvl)
	}
	v.encMid = e.vaeMid("mid_block", "mid", top, groups, *c.MidBlockAddAttention)
	v.encNorm = e.as("conv_norm_out", "norm_out").groupNorm("", top, groups, vaeEps)
	v.encOut = e.conv("conv_out", top, 2*lat, 3, 1, 1)
	if *c.UseQuantConv {
		q := b.conv("quant_conv", 2*lat, 2*lat, 1, 1, 0)
		v.quant = &q
	}

	if *c.UsePostQuantConv {
		q := b.conv("post_quant_conv", lat, lat, 1, 1, 0)
		v.postQnt = &q
	}
	dc := b.at("decoder")
	v.decIn = dc.conv("conv_in", lat, top, 3, 1, 1)
	v.decMid = dc.vaeMid("mid_block", "mid", top, groups, *c.MidBlockAddAttention)
	out = top
	for i := 0; i < n; i++ {
		prev := out
		out = ch[n-1-i]
		lb := dc.as(fmt.Sprintf("up_blocks.%d", i), fmt.Sprintf("up.%d", n-1-i))
		lvl := &vaeLevel{}
		for j := 0; j <= c.LayersPerBlock; j++ {
			rin := out
			if j == 0 {
				rin = prev
			}
			lvl.resnets = append(lvl.resnets, lb.as(fmt.Sprintf("resnets.%d", j), fmt.Sprintf("block.%d", j)).resnet("", rin, out, 0, groups, vaeEps, 1))
		}
		if i < n-1 {
			lvl.up = lb.upsample("upsamplers.0", "upsample.conv", out)
		}
		v.decUp = append(v.decUp, lvl)
	}
	v.decNorm = dc.as("conv_norm_out", "norm_out").groupNorm("", ch[0], groups, vaeEps)
	v.decOut = dc.conv("conv_out", ch[0], c.OutChannels, 3, 1, 1)
	return v, nil
}

func (v *VAE) trace(name string, t *gpu.Tensor) {
	if v.Trace != nil {
		v.Trace(name, t)
	}
}

// normSiLU replaces h by SiLU(n(h)), in one kernel unless a Trace wants
// the norm's output (traced as name).
func (v *VAE) normSiLU(d gpu.Device, h *gpu.Tensor, n norm, name string) *gpu.Tensor {
	if v.Trace == nil {
		return advance(d, h, func(h *gpu.Tensor) *gpu.Tensor { return n.applySiLU(d, h) })
	}
	h = advance(d, h, func(h *gpu.Tensor) *gpu.Tensor { return n.apply(d, h) })
	v.trace(name, h)
	return advance(d, h, func(h *gpu.Tensor) *gpu.Tensor { return d.SiLU(h) })
}

// advance replaces h by f(h) and frees h (which must not be the caller's).
func advance(d gpu.Device, h *gpu.Tensor, f func(*gpu.Tensor) *gpu.Tensor) *gpu.Tensor {
	next := gpu.Scoped(d, func() *gpu.Tensor { return f(h) })
	d.Release(h)
	return next
}

// forward runs the level's resnets, then its downsampler or upsampler,
// freeing each intermediate as soon as the next exists.
func (l *vaeLevel) forward(d gpu.Device, h *gpu.Tensor) *gpu.Tensor {
	for _, r := range l.resnets {
		h = advance(d, h, func(h *gpu.Tensor) *gpu.Tensor { return r.forward(d, h, nil) })
	}
	if l.down != nil {
		h = advance(d, h, func(h *gpu.Tensor) *gpu.Tensor { return l.down.forward(d, h) })
	}
	if l.up != nil {
		h = advance(d, h, func(h *gpu.Tensor) *gpu.Tensor { return l.up.forward(d, h) })
	}
	return h
}

// Decode turns latents z [B,latent,h,w] (already divided by the scaling
// factor) into images [B,3,8h,8w], roughly in [-1,1] and not clamped.
// Errors are reported by the device's Err.
func (v *VAE) Decode(z *gpu.Tensor) *gpu.Tensor {
	d, c := v.d, &v.Config
	if z == nil || z.Rank() != 4 || z.Dim(1) != c.LatentChannels {
		return failed(d, fmt.Errorf("vae: Decode wants latents [B,%d,h,w], got %v", c.LatentChannels, z), c.OutChannels, nil)
	}
	d.PushScope()
	h := z
	if v.postQnt != nil {
		h = v.postQnt.apply(d, h)
		v.trace("post_quant_conv", h)
	}
	h = v.decIn.apply(d, h)
	v.trace("decoder.conv_in", h)
	h = advance(d, h, func(h *gpu.Tensor) *gpu.Tensor { return v.decMid.forward(d, h) })
	v.trace("decoder.mid_block", h)
	for i, lvl := range v.decUp {
		h = lvl.forward(d, h)
		v.trace(fmt.Sprintf("decoder.up_blocks.%d", i), h)
	}
	h = v.normSiLU(d, h, v.decNorm, "decoder.conv_norm_out")
	h = advance(d, h, func(h *gpu.Tensor) *gpu.Tensor { return v.decOut.apply(d, h) })
	v.trace("decoder.conv_out", h)
	d.PopScope(h)
	return h
}

// Encode turns images x [B,3,H,W] in [-1,1] into moments [B,2*latent,H/8,W/8]:
// the mean in the first latent channels, the log-variance (unclamped) in the
// rest. Errors are reported by the device's Err.
func (v *VAE) Encode(x *gpu.Tensor) *gpu.Tensor {
	d, c := v.d, &v.Config
	if x == nil || x.Rank() != 4 || x.Dim(1) != c.InChannels {
		return failed(d, fmt.Errorf("vae: Encode wants images [B,%d,H,W], got %v", c.InChannels, x), 2*c.LatentChannels, nil)
	}
	d.PushScope()
	h := v.encIn.apply(d, x)
	v.trace("encoder.conv_in", h)
	for i, lvl := range v.encDown {
		h = lvl.forward(d, h)
		v.trace(fmt.Sprintf("encoder.down_blocks.%d", i), h)
	}
	h = advance(d, h, func(h *gpu.Tensor) *gpu.Tensor { return v.encMid.forward(d, h) })
	v.trace("encoder.mid_block", h)
	h = v.normSiLU(d, h, v.encNorm, "encoder.conv_norm_out")
	h = advance(d, h, func(h *gpu.Tensor) *gpu.Tensor { return v.encOut.apply(d, h) })
	v.trace("encoder.conv_out", h)
	if v.quant != nil {
		h = advance(d, h, func(h *gpu.Tensor) *gpu.Tensor { return v.quant.apply(d, h) })
		v.trace("quant_conv", h)
	}
	d.PopScope(h)
	return h
}
