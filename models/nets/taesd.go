package nets

import (
	"fmt"

	"github.com/stepwise/stepwise/gpu"
)

// TinyConfig is diffusers' AutoencoderTiny config.json (TAESD).
type TinyConfig struct {
	InChannels              int       `json:"in_channels"`
	OutChannels             int       `json:"out_channels"`
	LatentChannels          int       `json:"latent_channels"`
	EncoderBlockOutChannels []int     `json:"encoder_block_out_channels"`
	DecoderBlockOutChannels []int     `json:"decoder_block_out_channels"`
	NumEncoderBlocks        []int     `json:"num_encoder_blocks"`
	NumDecoderBlocks        []int     `json:"num_decoder_blocks"`
	ActFn                   string    `json:"act_fn"`
	UpsampleFn              string    `json:"upsample_fn"`
	UpsamplingScalingFactor int       `json:"upsampling_scaling_factor"`
	ScalingFactor           float64   `json:"scaling_factor"`
	LatentMagnitude         float64   `json:"latent_magnitude"`
	LatentShift             float64   `json:"latent_shift"`
	BlockOutChannels        IntOrList `json:"block_out_channels"` // legacy: both sides
	// DecoderOnly: no encoder (an original taesd_decoder file alone).
	DecoderOnly bool `json:"-"`
}

// Defaults fills unset fields with TAESD's published values (64 channels,
// encoder blocks 1,3,3,3, decoder blocks 3,3,3,1, 4 latent channels).
func (c *TinyConfig) Defaults() {
	setInt(&c.InChannels, 3)
	setInt(&c.OutChannels, 3)
	setInt(&c.LatentChannels, 4)
	if len(c.EncoderBlockOutChannels) == 0 {
		c.EncoderBlockOutChannels = []int{64, 64, 64, 64}
		if len(c.BlockOutChannels) > 0 {
			c.EncoderBlockOutChannels = append([]int(nil), c.BlockOutChannels...)
		}
	}
	if len(c.DecoderBlockOutChannels) == 0 {
		c.DecoderBlockOutChannels = []int{64, 64, 64, 64}
		if len(c.BlockOutChannels) > 0 {
			c.DecoderBlockOutChannels = append([]int(nil), c.BlockOutChannels...)
		}
	}
	if len(c.NumEncoderBlocks) == 0 {
		c.NumEncoderBlocks = []int{1, 3, 3, 3}
	}
	if len(c.NumDecoderBlocks) == 0 {
		c.NumDecoderBlocks = []int{3, 3, 3, 1}
	}
	if c.ActFn == "" {
		c.ActFn = "relu"
	}
	if c.UpsampleFn == "" {
		c.UpsampleFn = "nearest"
	}
	setInt(&c.UpsamplingScalingFactor, 2)
	if c.ScalingFactor == 0 {
		c.ScalingFactor = 1
	}
	if c.LatentMagnitude == 0 {
		c.LatentMagnitude = 3
	}
	if c.LatentShift == 0 {
		c.LatentShift = 0.5
	}
}

// Downscale is the ratio of image size to latent size (8 for TAESD).
func (c *TinyConfig) Downscale() int { return 1 << (len(c.EncoderBlockOutChannels) - 1) }

func checkTinyConfig(c TinyConfig) error {
	switch {
	case c.ActFn != "relu":
		return fmt.Errorf("act_fn %q is not supported (want relu)", c.ActFn)
	case c.UpsampleFn != "nearest" || c.UpsamplingScalingFactor != 2:
		return fmt.Errorf("upsampling %s x%d is not supported (want nearest x2)", c.UpsampleFn, c.UpsamplingScalingFactor)
	case len(c.EncoderBlockOutChannels) != len(c.NumEncoderBlocks) || len(c.DecoderBlockOutChannels) != len(c.NumDecoderBlocks):
		return fmt.Errorf("%d/%d encoder and %d/%d decoder channel/block counts do not pair up",
			len(c.EncoderBlockOutChannels), len(c.NumEncoderBlocks), len(c.DecoderBlockOutChannels), len(c.NumDecoderBlocks))
	case len(c.EncoderBlockOutChannels) == 0 || len(c.EncoderBlockOutChannels) > 6 || len(c.DecoderBlockOutChannels) != len(c.EncoderBlockOutChannels):
		return fmt.Errorf("%d encoder and %d decoder levels (want the same number, 1 to 6)", len(c.EncoderBlockOutChannels), len(c.DecoderBlockOutChannels))
	case c.InChannels < 1 || c.OutChannels < 1 || c.LatentChannels < 1:
		return fmt.Errorf("in %d, out %d, latent %d channels must be positive", c.InChannels, c.OutChannels, c.LatentChannels)
	case !(c.LatentMagnitude > 0):
		return fmt.Errorf("latent_magnitude %g must be positive", c.LatentMagnitude)
	}
	for i := range c.EncoderBlockOutChannels {
		if c.EncoderBlockOutChannels[i] < 1 || c.DecoderBlockOutChannels[i] < 1 || c.NumEncoderBlocks[i] < 0 || c.NumDecoderBlocks[i] < 0 ||
			c.NumEncoderBlocks[i] > 64 || c.NumDecoderBlocks[i] > 64 {
			return fmt.Errorf("level %d: channels %d/%d, blocks %d/%d out of range", i,
				c.EncoderBlockOutChannels[i], c.DecoderBlockOutChannels[i], c.NumEncoderBlocks[i], c.NumDecoderBlocks[i])
		}
	}
	return nil
}

// Tiny is diffusers' AutoencoderTiny (madebyollin's TAESD): a small conv
// autoencoder working directly in the diffusion model's latent space (no
// scaling factor to undo). Decode takes latents [B,C,h,w] and returns
// images [B,3,8h,8w] in about [-1, 1], unclamped; Encode takes images in
// [-1, 1] and returns latents.
type Tiny struct {
	Config TinyConfig

	d        gpu.Device
	params   []*gpu.Tensor
	enc, dec []tinyLayer
}

// tinyLayer is one entry of TAESD's nn.Sequential: a conv (optionally
// followed by ReLU), a block, or a 2x upsample.
type tinyLayer struct {
	conv     *conv
	relu     bool
	block    *tinyBlock
	upsample bool
}

// tinyBlock is AutoencoderTinyBlock: ReLU(conv3(ReLU(conv2(ReLU(conv1(x)))))
// + skip(x)), skip a bias-free 1x1 conv when the width changes.
type tinyBlock struct {
	c1, c2, c3 conv
	skip       *conv
}

// NewTiny checks w against the parameters c calls for and uploads them to d.
func NewTiny(d gpu.Device, c TinyConfig, w Weights) (*Tiny, error) {
	c.Defaults()
	t, params, _, err := construct(d, w, "taesd", func(b builder) (*Tiny, error) { return buildTiny(b, c) })
	if err != nil {
		return nil, err
	}
	t.d, t.params = d, params
	return t, nil
}

// TinyDecls lists every parameter of an AutoencoderTiny with config c. The
// original names are those of madebyollin's separate taesd_encoder /
// taesd_decoder files ("encoder." / "decoder." + the Sequential index;
// the original decoder starts with a parameter-free Clamp, so its indices
// are one more than diffusers').
func TinyDecls(c TinyConfig) ([]Decl, error) {
	c.Defaults()
	return decls(func(b builder) (*Tiny, error) { return buildTiny(b, c) })
}

// Release frees the network's weights on the device.
func (t *Tiny) Release() { releaseAll(t.d, t.params) }

func (b builder) tinyConv(name, orig string, in, out int, stride int, bias bool) conv {
	m := b.as(name, orig)
	c := conv{w: m.param("weight", out, in, 3, 3), opts: gpu.Conv2DOpts{StrideH: stride, StrideW: stride, PadH: 1, PadW: 1}}
	if bias {
		c.b = m.param("bias", out)
	}
	return c
}

func (b builder) tinyBlock(name, orig string, in, out int) *tinyBlock {
	m := b.as(name, orig)
	blk := &tinyBlock{
		c1: m.tinyConv("conv.0", "conv.0", in, out, 1, true),
		c2: m.tinyConv("conv.2", "conv.2", out, out, 1, true),
		c3: m.tinyConv("conv.4", "conv.4", out, out, 1, true),
	}
	if in != out {
		s := m.as("skip", "skip")
		c := conv{w: s.param("weight", out, in, 1, 1), opts: gpu.Conv2DOpts{StrideH: 1, StrideW: 1}}
		blk.skip = &c
	}
	return blk
}

// buildTiny follows diffusers' EncoderTiny and DecoderTiny constructors.
func buildTiny(b builder, c TinyConfig) (*Tiny, error) {
	if err := checkTinyConfig(c); err != nil {
		return nil, err
	}
	t := &Tiny{Config: c}
	if !c.DecoderOnly {
		t.buildEncoder(b)
	}
	t.buildDecoder(b)
	return t, nil
}

// buildEncoder follows EncoderTiny: conv, blocks, then per level a
// stride-2 bias-free conv and blocks, and the output conv.
func (t *Tiny) buildEncoder(b builder) {
	c := t.Config
	e := b.as("encoder.layers", "encoder")
	idx := 0
	ch := c.EncoderBlockOutChannels
	for i, nb := range c.NumEncoderBlocks {
		if i == 0 {
			cv := e.tinyConv(fmt.Sprint(idx), fmt.Sprint(idx), c.InChannels, ch[0], 1, true)
			t.enc = append(t.enc, tinyLayer{conv: &cv})
		} else {
			cv := e.tinyConv(fmt.Sprint(idx), fmt.Sprint(idx), ch[i-1], ch[i], 2, false)
			t.enc = append(t.enc, tinyLayer{conv: &cv})
		}
		idx++
		for j := 0; j < nb; j++ {
			t.enc = append(t.enc, tinyLayer{block: e.tinyBlock(fmt.Sprint(idx), fmt.Sprint(idx), ch[i], ch[i])})
			idx++
		}
	}
	cv := e.tinyConv(fmt.Sprint(idx), fmt.Sprint(idx), ch[len(ch)-1], c.LatentChannels, 1, true)
	t.enc = append(t.enc, tinyLayer{conv: &cv})
}

// buildDecoder follows DecoderTiny.
func (t *Tiny) buildDecoder(b builder) {
	c := t.Config

	// Decoder: conv, ReLU, then per level its blocks, an upsample and a
	// bias-free conv (the last level: no upsample, the output conv with a
	// bias). Original index = diffusers index + 1 (the leading Clamp).
	dl := b.as("decoder.layers", "decoder")
	dch := c.DecoderBlockOutChannels
	idx := 0
	name := func(i int) (string, string) { return fmt.Sprint(i), fmt.Sprint(i + 1) }
	n, o := name(idx)
	in := dl.tinyConv(n, o, c.LatentChannels, dch[0], 1, true)
	t.dec = append(t.dec, tinyLayer{conv: &in, relu: true})
	idx += 2 // the conv and its ReLU
	prev := dch[0]
	for i, nb := range c.NumDecoderBlocks {
		last := i == len(c.NumDecoderBlocks)-1
		for j := 0; j < nb; j++ {
			n, o := name(idx)
			t.dec = append(t.dec, tinyLayer{block: dl.tinyBlock(n, o, prev, dch[i])})
			prev = dch[i]
			idx++
		}
		if !last {
			t.dec = append(t.dec, tinyLayer{upsample: true})
			idx++
		}
		out := dch[i]
		if last {
			out = c.OutChannels
		}
		n, o := name(idx)
		cv := dl.tinyConv(n, o, prev, out, 1, last)
		t.dec = append(t.dec, tinyLayer{conv: &cv})
		prev = out
		idx++
	}
}

func (l tinyLayer) forward(d gpu.Device, x *gpu.Tensor) *gpu.Tensor {
	switch {
	case l.upsample:
		return d.Upsample2x(x)
	case l.block != nil:
		return gpu.Scoped(d, func() *gpu.Tensor {
			blk := l.block
			h := blk.c3.apply(d, d.ReLU(blk.c2.apply(d, d.ReLU(blk.c1.apply(d, x)))))
			skip := x
			if blk.skip != nil {
				skip = blk.skip.apply(d, x)
			}
			return d.ReLU(d.Add(h, skip))
		})
	}
	h := l.conv.apply(d, x)
	if l.relu {
		h = d.ReLU(h)
	}
	return h
}

func (t *Tiny) run(layers []tinyLayer, x *gpu.Tensor) *gpu.Tensor {
	d := t.d
	for _, l := range layers {
		prev := x
		x = l.forward(d, x)
		d.Release(prev)
	}
	return x
}

// Decode turns latents [B,latent,h,w] (diffusion space: no scaling factor
// to undo) into images [B,out,8h,8w]: tanh(z/3)*3, the decoder, *2-1 (not
// clamped).
func (t *Tiny) Decode(z *gpu.Tensor) *gpu.Tensor {
	d, c := t.d, &t.Config
	if z == nil || z.Rank() != 4 || z.Dim(1) != c.LatentChannels {
		return failed(d, fmt.Errorf("taesd: latents must be [B,%d,h,w], got %v", c.LatentChannels, z), c.OutChannels, z)
	}
	d.PushScope()
	x := t.run(t.dec, d.SoftClamp(z, float32(c.LatentMagnitude)))
	out := d.Scale(x, 2, -1)
	d.PopScope(out)
	return out
}

// Encode turns images [B,in,H,W] in [-1, 1] (H, W multiples of 8) into
// latents [B,latent,H/8,W/8] in diffusion space (no sampling, no scaling).
func (t *Tiny) Encode(img *gpu.Tensor) *gpu.Tensor {
	d, c := t.d, &t.Config
	if c.DecoderOnly {
		return failed(d, fmt.Errorf("taesd: this TAESD has no encoder (only taesd_decoder.safetensors was found)"), c.LatentChannels, img)
	}
	ds := c.Downscale()
	if img == nil || img.Rank() != 4 || img.Dim(1) != c.InChannels || img.Dim(2)%ds != 0 || img.Dim(3)%ds != 0 {
		return failed(d, fmt.Errorf("taesd: images must be [B,%d,H,W] with H, W multiples of %d, got %v", c.InChannels, ds, img), c.LatentChannels, img)
	}
	d.PushScope()
	out := t.run(t.enc, d.Scale(img, 0.5, 0.5))
	d.PopScope(out)
	return out
}
