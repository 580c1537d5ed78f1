package nets

import (
	"fmt"

	"github.com/stepwise/stepwise/gpu"
)

// MMDiTConfig is diffusers' SD3Transformer2DModel config.json (SD3 and
// SD3.5).
type MMDiTConfig struct {
	SampleSize           int `json:"sample_size"`
	PatchSize            int `json:"patch_size"`
	InChannels           int `json:"in_channels"`
	OutChannels          int `json:"out_channels"`
	NumLayers            int `json:"num_layers"`
	AttentionHeadDim     int `json:"attention_head_dim"`
	NumAttentionHeads    int `json:"num_attention_heads"`
	JointAttentionDim    int `json:"joint_attention_dim"`
	CaptionProjectionDim int `json:"caption_projection_dim"`
	PooledProjectionDim  int `json:"pooled_projection_dim"`
	// PosEmbedMaxSize is the side of the stored positional table (192 for
	// SD3 medium); the latent's patch grid is cropped from its centre.
	PosEmbedMaxSize int `json:"pos_embed_max_size"`
	// QKNorm is SD3.5's "rms_norm" on queries and keys per head ("" none).
	QKNorm string `json:"qk_norm"`
	// DualAttentionLayers are SD3.5's MMDiT-X blocks with a second,
	// image-only attention.
	DualAttentionLayers []int `json:"dual_attention_layers"`
}

// Defaults fills unset fields with SD3 medium's transformer.
func (c *MMDiTConfig) Defaults() {
	setInt(&c.SampleSize, 128)
	setInt(&c.PatchSize, 2)
	setInt(&c.InChannels, 16)
	setInt(&c.NumLayers, 24)
	setInt(&c.AttentionHeadDim, 64)
	setInt(&c.NumAttentionHeads, 24)
	setInt(&c.JointAttentionDim, 4096)
	setInt(&c.CaptionProjectionDim, 1536)
	setInt(&c.PooledProjectionDim, 2048)
	setInt(&c.OutChannels, 16)
	setInt(&c.PosEmbedMaxSize, 192)
}

// Inner is the transformer width, heads x head dim.
func (c *MMDiTConfig) Inner() int { return c.NumAttentionHeads * c.AttentionHeadDim }

func (c *MMDiTConfig) dual(i int) bool {
	for _, l := range c.DualAttentionLayers {
		if l == i {
			return true
		}
	}
	return false
}

// MMDiT is Stable Diffusion 3's multimodal diffusion transformer (diffusers'
// SD3Transformer2DModel): the latent's patches and the text tokens run as
// two streams with their own weights that meet in a joint attention; each
// block is modulated by the timestep + pooled-text embedding (adaLN-Zero).
// Forward returns the flow-matching velocity.
type MMDiT struct {
	// Config is the configuration the network was built from, with defaults
	// filled in.
	Config MMDiTConfig
	// Trace, when set, is called with intermediate outputs under diffusers'
	// module names ("pos_embed", "time_text_embed", "context_embedder",
	// "transformer_blocks.N.0" (text) / ".1" (image), "norm_out",
	// "proj_out"). For tests and debugging; the tensor is freed after.
	Trace func(name string, t *gpu.Tensor)

	d      gpu.Device
	params []*gpu.Tensor

	patch      conv
	pos        *gpu.Tensor // [1, max*max, inner]
	t1, t2     linear      // timestep_embedder
	p1, p2     linear      // text_embedder (pooled)
	ctxEmb     linear
	blocks     []*mmBlock
	normOut    linear // (scale, shift)
	projOut    linear
	ones, zero *gpu.Tensor // LayerNorm without affine uses nil instead
}

// mmStream is one stream's half of a joint block.
type mmStream struct {
	mod          linear // adaLN: 6 (or 2 for context_pre_only, 9 dual) x inner
	q, k, v, out linear // out unset for a context_pre_only text stream
	normQ, normK *gpu.Tensor
	ff1, ff2     linear
}

// mmBlock is a JointTransformerBlock.
type mmBlock struct {
	x, ctx  mmStream
	preOnly bool // the text stream ends here (the last block)
	// attn2 is MMDiT-X's second, image-only attention.
	attn2 *mmStream
}

// NewMMDiT checks w (diffusers names) against the parameters c calls for,
// reporting every missing or mis-shaped one in a single *WeightsError, and
// uploads them to d keeping their storage type. Call it outside any device
// scope.
func NewMMDiT(d gpu.Device, c MMDiTConfig, w Weights) (*MMDiT, error) {
	c.Defaults()
	m, params, _, err := construct(d, w, "transformer", func(b builder) (*MMDiT, error) { return buildMMDiT(b, c) })
	if err != nil {
		return nil, err
	}
	m.d, m.params = d, params
	return m, nil
}

// MMDiTDecls lists every parameter of an SD3 transformer with config c in
// declaration order (originals: the MMDiT single file's names under
// model.diffusion_model.), or says why c is unsupported.
func MMDiTDecls(c MMDiTConfig) ([]Decl, error) {
	c.Defaults()
	return decls(func(b builder) (*MMDiT, error) { return buildMMDiT(b, c) })
}

// Release frees the network's weights on the device.
func (m *MMDiT) Release() { releaseAll(m.d, m.params) }

// ParamBytes is the device memory the weights occupy.
func (m *MMDiT) ParamBytes() int64 { return paramBytes(m.params) }

func buildMMDiT(b builder, c MMDiTConfig) (*MMDiT, error) {
	inner := c.Inner()
	switch {
	case c.PatchSize < 1 || c.InChannels < 1 || c.OutChannels < 1 || c.NumLayers < 1 || inner < 1:
		return nil, fmt.Errorf("patch_size %d, in_channels %d, out_channels %d, num_layers %d, heads x head dim %d must be positive",
			c.PatchSize, c.InChannels, c.OutChannels, c.NumLayers, inner)
	case c.CaptionProjectionDim != inner:
		return nil, fmt.Errorf("caption_projection_dim %d must equal num_attention_heads x attention_head_dim = %d (one width for both streams)",
			c.CaptionProjectionDim, inner)
	case c.JointAttentionDim < 1 || c.PooledProjectionDim < 1 || c.PosEmbedMaxSize < 1:
		return nil, fmt.Errorf("joint_attention_dim %d, pooled_projection_dim %d, pos_embed_max_size %d must be positive (a transformer without a stored pos_embed table is not supported)",
			c.JointAttentionDim, c.PooledProjectionDim, c.PosEmbedMaxSize)
	case c.QKNorm != "" && c.QKNorm != "rms_norm":
		return nil, fmt.Errorf("qk_norm %q is not supported (want rms_norm)", c.QKNorm)
	}
	for _, l := range c.DualAttentionLayers {
		if l < 0 || l >= c.NumLayers {
			return nil, fmt.Errorf("dual_attention_layers: %d is not a layer of %d", l, c.NumLayers)
		}
	}
	m := &MMDiT{Config: c}
	p := c.PatchSize
	m.patch = b.as("pos_embed.proj", "x_embedder.proj").conv("", c.InChannels, inner, p, p, 0)
	m.pos = b.stored(Decl{Orig: "pos_embed"}).param("pos_embed.pos_embed", 1, c.PosEmbedMaxSize*c.PosEmbedMaxSize, inner)
	te := b.as("time_text_embed.timestep_embedder", "t_embedder")
	m.t1 = te.as("linear_1", "mlp.0").linear("", 256, inner, true)
	m.t2 = te.as("linear_2", "mlp.2").linear("", inner, inner, true)
	pe := b.as("time_text_embed.text_embedder", "y_embedder")
	m.p1 = pe.as("linear_1", "mlp.0").linear("", c.PooledProjectionDim, inner, true)
	m.p2 = pe.as("linear_2", "mlp.2").linear("", inner, inner, true)
	m.ctxEmb = b.linear("context_embedder", c.JointAttentionDim, inner, true)
	qk := c.QKNorm != ""
	for i := 0; i < c.NumLayers; i++ {
		blk := b.as(fmt.Sprintf("transformer_blocks.%d", i), fmt.Sprintf("joint_blocks.%d", i))
		last := i == c.NumLayers-1
		dual := c.dual(i)
		xb, cb := blk.origSub("x_block"), blk.origSub("context_block")
		mb := &mmBlock{preOnly: last}
		nx := 6
		if dual {
			nx = 9
		}
		mb.x = mmStream{
			mod: xb.as("norm1.linear", "adaLN_modulation.1").linear("", inner, nx*inner, true),
			q:   qkvPart(xb, "attn.to_q", "attn.qkv", 0, inner),
			k:   qkvPart(xb, "attn.to_k", "attn.qkv", 1, inner),
			v:   qkvPart(xb, "attn.to_v", "attn.qkv", 2, inner),
			out: xb.as("attn.to_out.0", "attn.proj").linear("", inner, inner, true),
			ff1: xb.as("ff.net.0.proj", "mlp.fc1").linear("", inner, 4*inner, true),
			ff2: xb.as("ff.net.2", "mlp.fc2").linear("", 4*inner, inner, true),
		}
		nc := 6
		cmod := cb.as("norm1_context.linear", "adaLN_modulation.1")
		if last {
			nc = 2
			cmod = cmod.stored(Decl{Swap: true})
		}
		mb.ctx = mmStream{
			mod: cmod.linear("", inner, nc*inner, true),
			q:   qkvPart(cb, "attn.add_q_proj", "attn.qkv", 0, inner),
			k:   qkvPart(cb, "attn.add_k_proj", "attn.qkv", 1, inner),
			v:   qkvPart(cb, "attn.add_v_proj", "attn.qkv", 2, inner),
		}
		if !last {
			mb.ctx.out = cb.as("attn.to_add_out", "attn.proj").linear("", inner, inner, true)
			mb.ctx.ff1 = cb.as("ff_context.net.0.proj", "mlp.fc1").linear("", inner, 4*inner, true)
			mb.ctx.ff2 = cb.as("ff_context.net.2", "mlp.fc2").linear("", 4*inner, inner, true)
		}
		if qk {
			d := c.AttentionHeadDim
			mb.x.normQ = xb.as("attn.norm_q", "attn.ln_q").param("weight", d)
			mb.x.normK = xb.as("attn.norm_k", "attn.ln_k").param("weight", d)
			mb.ctx.normQ = cb.as("attn.norm_added_q", "attn.ln_q").param("weight", d)
			mb.ctx.normK = cb.as("attn.norm_added_k", "attn.ln_k").param("weight", d)
		}
		if dual {
			a2 := &mmStream{
				q:   qkvPart(xb, "attn2.to_q", "attn2.qkv", 0, inner),
				k:   qkvPart(xb, "attn2.to_k", "attn2.qkv", 1, inner),
				v:   qkvPart(xb, "attn2.to_v", "attn2.qkv", 2, inner),
				out: xb.as("attn2.to_out.0", "attn2.proj").linear("", inner, inner, true),
			}
			if qk {
				a2.normQ = xb.as("attn2.norm_q", "attn2.ln_q").param("weight", c.AttentionHeadDim)
				a2.normK = xb.as("attn2.norm_k", "attn2.ln_k").param("weight", c.AttentionHeadDim)
			}
			mb.attn2 = a2
		}
		m.blocks = append(m.blocks, mb)
	}
	fl := b.origSub("final_layer")
	m.normOut = fl.as("norm_out.linear", "adaLN_modulation.1").stored(Decl{Swap: true}).linear("", inner, 2*inner, true)
	m.projOut = fl.as("proj_out", "linear").linear("", inner, p*p*c.OutChannels, true)
	return m, nil
}

// origSub is b for a module that has no level of its own in diffusers but
// sits under orig in the original.
func (b builder) origSub(orig string) builder {
	b.orig += orig + "."
	b.mod = nil
	return b
}

// qkvPart declares one of q, k, v: separate in diffusers, fused (part of 3)
// in the original.
func qkvPart(b builder, name, orig string, part, inner int) linear {
	m := b.as(name, orig)
	return linear{
		w: m.stored(Decl{Orig: "weight", Part: part, Parts: 3}).linearWeight("weight", inner, inner),
		b: m.stored(Decl{Orig: "bias", Part: part, Parts: 3}).param("bias", inner),
	}
}

func (m *MMDiT) trace(name string, t *gpu.Tensor) {
	if m.Trace != nil {
		m.Trace(name, t)
	}
}

// chunk returns chunk i of n of emb [B, n*C] as [B, 1, C].
func chunk(d gpu.Device, emb *gpu.Tensor, i, n int) *gpu.Tensor {
	c := emb.Dim(1) / n
	return d.Slice(emb, 1, i*c, (i+1)*c).View(emb.Dim(0), 1, c)
}

// modulate is x * (1 + scale) + shift with [B,1,C] scale and shift.
func modulate(d gpu.Device, x, shift, scale *gpu.Tensor) *gpu.Tensor {
	return d.Add(d.Mul(x, d.Scale(scale, 1, 1)), shift)
}

// heads runs q, k, v of s on x and applies the per-head RMS norms.
func (s *mmStream) qkv(d gpu.Device, x *gpu.Tensor, heads int) (q, k, v *gpu.Tensor) {
	q, k, v = s.q.apply(d, x), s.k.apply(d, x), s.v.apply(d, x)
	if s.normQ != nil {
		B, L, C := q.Dim(0), q.Dim(1), q.Dim(2)
		q = d.RMSNorm(q.View(B, L, heads, C/heads), s.normQ, 1e-6).View(B, L, C)
		k = d.RMSNorm(k.View(B, L, heads, C/heads), s.normK, 1e-6).View(B, L, C)
	}
	return q, k, v
}

// forward runs one joint block on the image tokens x [B,N,C] and text
// tokens ctx [B,T,C] with st = SiLU(temb) [B,C]; ctx comes back nil after
// a context_pre_only block.
func (blk *mmBlock) forward(d gpu.Device, x, ctx, st *gpu.Tensor, heads int) (*gpu.Tensor, *gpu.Tensor) {
	d.PushScope()
	nx := 6
	if blk.attn2 != nil {
		nx = 9
	}
	xm := blk.x.mod.apply(d, st)
	ln := func(t *gpu.Tensor) *gpu.Tensor { return d.LayerNorm(t, nil, nil, 1e-6) }
	xn := ln(x)
	hx := modulate(d, xn, chunk(d, xm, 0, nx), chunk(d, xm, 1, nx))
	cm := blk.ctx.mod.apply(d, st)
	var hc *gpu.Tensor
	if blk.preOnly {
		// AdaLayerNormContinuous: (scale, shift), scale first.
		hc = modulate(d, ln(ctx), chunk(d, cm, 1, 2), chunk(d, cm, 0, 2))
	} else {
		hc = modulate(d, ln(ctx), chunk(d, cm, 0, 6), chunk(d, cm, 1, 6))
	}
	qx, kx, vx := blk.x.qkv(d, hx, heads)
	qc, kc, vc := blk.ctx.qkv(d, hc, heads)
	N := x.Dim(1)
	a := d.Attention(d.Concat(1, qx, qc), d.Concat(1, kx, kc), d.Concat(1, vx, vc), gpu.AttentionOpts{Heads: heads})
	ax := blk.x.out.apply(d, d.Slice(a, 1, 0, N))
	x = d.Add(x, d.Mul(chunk(d, xm, 2, nx), ax))
	if blk.attn2 != nil {
		h2 := modulate(d, xn, chunk(d, xm, 6, nx), chunk(d, xm, 7, nx))
		q, k, v := blk.attn2.qkv(d, h2, heads)
		a2 := blk.attn2.out.apply(d, d.Attention(q, k, v, gpu.AttentionOpts{Heads: heads}))
		x = d.Add(x, d.Mul(chunk(d, xm, 8, nx), a2))
	}
	h := modulate(d, ln(x), chunk(d, xm, 3, nx), chunk(d, xm, 4, nx))
	x = d.Add(x, d.Mul(chunk(d, xm, 5, nx), blk.x.ff2.apply(d, d.GELUTanh(blk.x.ff1.apply(d, h)))))
	if blk.preOnly {
		d.PopScope(x)
		return x, nil
	}
	ac := blk.ctx.out.apply(d, d.Slice(a, 1, N, a.Dim(1)))
	ctx = d.Add(ctx, d.Mul(chunk(d, cm, 2, 6), ac))
	h = modulate(d, ln(ctx), chunk(d, cm, 3, 6), chunk(d, cm, 4, 6))
	ctx = d.Add(ctx, d.Mul(chunk(d, cm, 5, 6), blk.ctx.ff2.apply(d, d.GELUTanh(blk.ctx.ff1.apply(d, h)))))
	d.PopScope(x, ctx)
	return x, ctx
}

// Forward predicts the velocity for latents x [B,C,H,W] at timesteps t
// (sigma x 1000, one per row, floats), text tokens context [B,T,
// joint_attention_dim] and pooled text pooled [B,pooled_projection_dim].
// H and W must be multiples of the patch size, their patch grid at most
// pos_embed_max_size on a side.
func (m *MMDiT) Forward(x *gpu.Tensor, t []float32, context, pooled *gpu.Tensor) (*gpu.Tensor, error) {
	c, d := &m.Config, m.d
	if x.Rank() != 4 || x.Dim(1) != c.InChannels {
		return nil, fmt.Errorf("transformer: latents %v, want [B,%d,H,W]", x.Shape, c.InChannels)
	}
	B, H, W, p := x.Dim(0), x.Dim(2), x.Dim(3), c.PatchSize
	if H%p != 0 || W%p != 0 {
		return nil, fmt.Errorf("transformer: latent size %dx%d is not a multiple of the patch size %d", W, H, p)
	}
	h, w := H/p, W/p
	if h > c.PosEmbedMaxSize || w > c.PosEmbedMaxSize {
		return nil, fmt.Errorf("transformer: latent size %dx%d is %dx%d patches, more than the positional table's %dx%d",
			W, H, w, h, c.PosEmbedMaxSize, c.PosEmbedMaxSize)
	}
	if len(t) != B || context.Rank() != 3 || context.Dim(0) != B || context.Dim(2) != c.JointAttentionDim ||
		!pooled.Shape.Equal(gpu.Shape{B, c.PooledProjectionDim}) {
		return nil, fmt.Errorf("transformer: %d timesteps, context %v, pooled %v for batch %d (want context [B,T,%d], pooled [B,%d])",
			len(t), context.Shape, pooled.Shape, B, c.JointAttentionDim, c.PooledProjectionDim)
	}
	d.PushScope()
	inner := c.Inner()
	// Patch embedding plus the stored positional table's centre crop.
	hs := toTokens(d, m.patch.apply(d, x))
	mx := c.PosEmbedMaxSize
	top, left := (mx-h)/2, (mx-w)/2
	pos := m.pos.View(mx, mx, inner)
	pos = d.Slice(d.Slice(pos, 0, top, top+h), 1, left, left+w).View(1, h*w, inner)
	hs = d.Add(hs, pos)
	m.trace("pos_embed", hs)
	tp := d.TimestepEmbedding(t, 256, true, 0, 10000)
	m.trace("time_text_embed.time_proj", tp)
	temb := m.t2.apply(d, d.SiLU(m.t1.apply(d, tp)))
	temb = d.Add(temb, m.p2.apply(d, d.SiLU(m.p1.apply(d, pooled))))
	m.trace("time_text_embed", temb)
	st := d.SiLU(temb)
	ctx := m.ctxEmb.apply(d, context)
	m.trace("context_embedder", ctx)
	for i, blk := range m.blocks {
		px, pc := hs, ctx
		hs, ctx = blk.forward(d, hs, ctx, st, c.NumAttentionHeads)
		if ctx != nil {
			m.trace(fmt.Sprintf("transformer_blocks.%d.0", i), ctx)
		}
		m.trace(fmt.Sprintf("transformer_blocks.%d.1", i), hs)
		d.Release(px)
		if pc != ctx {
			d.Release(pc)
		}
	}
	mod := m.normOut.apply(d, st)
	hs = modulate(d, d.LayerNorm(hs, nil, nil, 1e-6), chunk(d, mod, 1, 2), chunk(d, mod, 0, 2))
	m.trace("norm_out", hs)
	hs = m.projOut.apply(d, hs)
	m.trace("proj_out", hs)
	// Unpatchify: [B, h, w, p, q, C] -> [B, C, h, p, w, q].
	out := d.Permute(hs.View(B, h, w, p, p, c.OutChannels), 0, 5, 1, 3, 2, 4).View(B, c.OutChannels, H, W)
	d.PopScope(out)
	if err := d.Err(); err != nil {
		d.Release(out)
		return nil, fmt.Errorf("transformer: %w", err)
	}
	return out, nil
}
