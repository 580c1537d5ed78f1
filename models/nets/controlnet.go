package nets

import (
	"fmt"

	"github.com/stepwise/stepwise/gpu"
)

// ControlNetConfig is diffusers' ControlNetModel config.json: the U-Net
// fields of the half it copies (time embedding, conv_in, down blocks, mid
// block; SDXL's added conditioning) and the conditioning embedding.
type ControlNetConfig struct {
	UNetConfig
	// ConditioningChannels is the control image's channel count (3).
	ConditioningChannels int `json:"conditioning_channels"`
	// ConditioningEmbeddingOutChannels are the widths of the conditioning
	// embedding's levels (16, 32, 96, 256 in the original ControlNets).
	ConditioningEmbeddingOutChannels []int `json:"conditioning_embedding_out_channels"`
	// ChannelOrder is "rgb" or "bgr": the order the control image's
	// channels are given in.
	ChannelOrder string `json:"controlnet_conditioning_channel_order"`
	// GlobalPoolConditions (the shuffle ControlNet) averages every
	// residual over space; not supported.
	GlobalPoolConditions bool `json:"global_pool_conditions"`
}

// Defaults fills unset fields with the values of lllyasviel's SD 1.5
// ControlNets (diffusers' ControlNetModel defaults).
func (c *ControlNetConfig) Defaults() {
	// A ControlNet has no up path; the U-Net checks want the mirror of
	// the down blocks.
	if len(c.UpBlockTypes) != len(c.DownBlockTypes) {
		c.UpBlockTypes = nil
		for i := len(c.DownBlockTypes) - 1; i >= 0; i-- {
			t := "UpBlock2D"
			if c.DownBlockTypes[i] == "CrossAttnDownBlock2D" {
				t = "CrossAttnUpBlock2D"
			}
			c.UpBlockTypes = append(c.UpBlockTypes, t)
		}
	}
	c.UNetConfig.Defaults()
	setInt(&c.ConditioningChannels, 3)
	if len(c.ConditioningEmbeddingOutChannels) == 0 {
		c.ConditioningEmbeddingOutChannels = []int{16, 32, 96, 256}
	}
	if c.ChannelOrder == "" {
		c.ChannelOrder = "rgb"
	}
}

// Downscale is the ratio of control image size to latent size: the
// conditioning embedding halves the image once per level after the first.
func (c *ControlNetConfig) Downscale() int {
	return 1 << (len(c.ConditioningEmbeddingOutChannels) - 1)
}

func checkControlNetConfig(c ControlNetConfig) error {
	if err := checkUNetConfig(c.UNetConfig); err != nil {
		return err
	}
	switch {
	case c.ConditioningChannels < 1 || c.ConditioningChannels > 64:
		return fmt.Errorf("conditioning_channels %d is out of range", c.ConditioningChannels)
	case len(c.ConditioningEmbeddingOutChannels) < 1 || len(c.ConditioningEmbeddingOutChannels) > 6:
		return fmt.Errorf("%d conditioning_embedding_out_channels (want 1 to 6)", len(c.ConditioningEmbeddingOutChannels))
	case c.ChannelOrder != "rgb" && c.ChannelOrder != "bgr":
		return fmt.Errorf("controlnet_conditioning_channel_order %q (want rgb or bgr)", c.ChannelOrder)
	case c.GlobalPoolConditions:
		return fmt.Errorf("global_pool_conditions (the shuffle ControlNet) is not supported")
	case c.InChannels < 1:
		return fmt.Errorf("in_channels %d must be positive", c.InChannels)
	}
	for i, ch := range c.ConditioningEmbeddingOutChannels {
		if ch < 1 || ch > 1<<14 {
			return fmt.Errorf("conditioning_embedding_out_channels[%d] = %d is out of range", i, ch)
		}
	}
	return nil
}

// ControlNet is diffusers' ControlNetModel (lllyasviel's ControlNet): a
// copy of a U-Net's down half that also sees a control image, whose every
// skip tensor and mid output pass a 1x1 "zero" convolution and are added
// to the U-Net's (UNet.ForwardControl).
type ControlNet struct {
	Config ControlNetConfig

	d      gpu.Device
	params []*gpu.Tensor
	u      *UNet // the down half: embeddings, conv_in, down blocks, mid block
	// condIn, condBlocks, condOut: ControlNetConditioningEmbedding.
	condIn     conv
	condBlocks []conv
	condOut    conv
	zero       []conv // controlnet_down_blocks, one per skip tensor
	midOut     conv   // controlnet_mid_block
}

// NewControlNet checks w against the parameters c calls for (every
// missing or mis-shaped one in a single *WeightsError) and uploads them.
func NewControlNet(d gpu.Device, c ControlNetConfig, w Weights) (*ControlNet, error) {
	c.Defaults()
	cn, params, named, err := construct(d, w, "controlnet", func(b builder) (*ControlNet, error) { return buildControlNet(b, c) })
	if err != nil {
		return nil, err
	}
	cn.d, cn.params = d, params
	cn.u.d, cn.u.named = d, named
	return cn, nil
}

// ControlNetDecls lists every parameter of a ControlNet with config c. The
// original names are those of lllyasviel's cldm.ControlNet (relative to
// control_model.): time_embed, input_blocks, middle_block as in the
// U-Net, input_hint_block.N for the conditioning embedding, zero_convs.j.0
// and middle_block_out.0 for the zero convolutions.
func ControlNetDecls(c ControlNetConfig) ([]Decl, error) {
	c.Defaults()
	return decls(func(b builder) (*ControlNet, error) { return buildControlNet(b, c) })
}

// Release frees the network's weights on the device.
func (cn *ControlNet) Release() { releaseAll(cn.d, cn.params) }

// ParamBytes is the device memory the weights occupy.
func (cn *ControlNet) ParamBytes() int64 { return paramBytes(cn.params) }

// SetTrace sets the trace function of the down half (see UNet.Trace).
func (cn *ControlNet) SetTrace(f func(name string, t *gpu.Tensor)) { cn.u.Trace = f }

// buildControlNet follows diffusers' ControlNetModel constructor.
func buildControlNet(b builder, c ControlNetConfig) (*ControlNet, error) {
	if err := checkControlNetConfig(c); err != nil {
		return nil, err
	}
	cn := &ControlNet{Config: c, u: &UNet{Config: c.UNetConfig}}
	if err := cn.u.buildDown(b); err != nil {
		return nil, err
	}
	ch := c.BlockOutChannels
	emb := c.ConditioningEmbeddingOutChannels

	// Conditioning embedding: conv_in, then per level a 3x3 conv and a
	// stride-2 3x3 conv to the next width, conv_out to the U-Net's first
	// width. The original Sequential interleaves SiLUs: conv k of the
	// blocks is input_hint_block.(2k+2).
	e := b.as("controlnet_cond_embedding", "input_hint_block")
	cn.condIn = e.as("conv_in", "0").conv("", c.ConditioningChannels, emb[0], 3, 1, 1)
	k := 0
	for i := 0; i+1 < len(emb); i++ {
		cn.condBlocks = append(cn.condBlocks,
			e.as(fmt.Sprintf("blocks.%d", k), fmt.Sprint(2*k+2)).conv("", emb[i], emb[i], 3, 1, 1),
			e.as(fmt.Sprintf("blocks.%d", k+1), fmt.Sprint(2*k+4)).conv("", emb[i], emb[i+1], 3, 2, 1))
		k += 2
	}
	cn.condOut = e.as("conv_out", fmt.Sprint(2*k+2)).conv("", emb[len(emb)-1], ch[0], 3, 1, 1)

	// Zero convolutions, one per skip tensor: conv_in's width, then each
	// level's width per layer and for its downsampler.
	widths := []int{ch[0]}
	for i, w := range ch {
		for j := 0; j < c.LayersPerBlock; j++ {
			widths = append(widths, w)
		}
		if i < len(ch)-1 {
			widths = append(widths, w)
		}
	}
	for j, w := range widths {
		cn.zero = append(cn.zero, b.as(fmt.Sprintf("controlnet_down_blocks.%d", j), fmt.Sprintf("zero_convs.%d.0", j)).conv("", w, w, 1, 1, 0))
	}
	top := ch[len(ch)-1]
	cn.midOut = b.as("controlnet_mid_block", "middle_block_out.0").conv("", top, top, 1, 1, 0)
	return cn, nil
}

// Skips is the number of down residuals the network makes (12 for SD).
func (cn *ControlNet) Skips() int { return len(cn.zero) }

// Forward runs the ControlNet on the U-Net's input x [B,C,H,W] at
// timesteps t with text context [B,L,ctx] (and SDXL's added conditioning)
// and the control image cond [B,3,8H,8W] in [0, 1], and returns the
// residuals multiplied by scale, as diffusers' ControlNetModel does with
// guess_mode off. x may hold more channels than the ControlNet takes (an
// inpainting U-Net's input): the first in_channels are used. Errors are
// reported by the device's Err; the residuals are then nil.
func (cn *ControlNet) Forward(x *gpu.Tensor, t []float32, context, cond *gpu.Tensor, added *Added, scale float32) *Residuals {
	d, c := cn.d, &cn.Config
	u := cn.u
	if x != nil && x.Rank() == 4 && x.Dim(1) > c.InChannels {
		x = d.Slice(x, 1, 0, c.InChannels)
	}
	if err := u.checkInputs(x, t, context); err != nil {
		d.Fail(fmt.Errorf("controlnet: %w", err))
		return nil
	}
	b, h, w := x.Dim(0), x.Dim(2), x.Dim(3)
	ds := c.Downscale()
	if cond == nil || cond.Rank() != 4 || cond.Dim(0) != b || cond.Dim(1) != c.ConditioningChannels || cond.Dim(2) != h*ds || cond.Dim(3) != w*ds {
		d.Fail(fmt.Errorf("controlnet: the control image must be [%d,%d,%d,%d], got %v", b, c.ConditioningChannels, h*ds, w*ds, cond))
		return nil
	}
	d.PushScope()
	embAct, err := u.embedding(d, x, t, added)
	if err != nil {
		d.PopScope()
		d.Fail(fmt.Errorf("controlnet: %w", err))
		return nil
	}
	ce := gpu.Scoped(d, func() *gpu.Tensor {
		e := d.SiLU(cn.condIn.apply(d, cond))
		for _, blk := range cn.condBlocks {
			e = d.SiLU(blk.apply(d, e))
		}
		return cn.condOut.apply(d, e)
	})
	u.trace("controlnet_cond_embedding", ce)
	mid, skips := u.downMid(d, x, embAct, context, ce)
	res := &Residuals{}
	keep := make([]*gpu.Tensor, 0, len(skips)+1)
	for j, s := range skips {
		r := cn.zero[j].apply(d, s)
		if scale != 1 {
			r = d.Scale(r, scale, 0)
		}
		res.Down = append(res.Down, r)
		keep = append(keep, r)
	}
	res.Mid = cn.midOut.apply(d, mid)
	if scale != 1 {
		res.Mid = d.Scale(res.Mid, scale, 0)
	}
	keep = append(keep, res.Mid)
	d.PopScope(keep...)
	return res
}

// Release frees the residuals' device memory.
func (r *Residuals) Release(d gpu.Device) {
	if r == nil {
		return
	}
	for _, t := range r.Down {
		d.Release(t)
	}
	if r.Mid != nil {
		d.Release(r.Mid)
	}
}
