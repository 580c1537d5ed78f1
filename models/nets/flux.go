package nets

import (
	"fmt"
	"math"

	"github.com/stepwise/stepwise/gpu"
)

// FluxConfig is diffusers' FluxTransformer2DModel config.json.
type FluxConfig struct {
	PatchSize           int   `json:"patch_size"`
	InChannels          int   `json:"in_channels"`
	NumLayers           int   `json:"num_layers"`
	NumSingleLayers     int   `json:"num_single_layers"`
	AttentionHeadDim    int   `json:"attention_head_dim"`
	NumAttentionHeads   int   `json:"num_attention_heads"`
	JointAttentionDim   int   `json:"joint_attention_dim"`
	PooledProjectionDim int   `json:"pooled_projection_dim"`
	GuidanceEmbeds      bool  `json:"guidance_embeds"`
	AxesDimsRope        []int `json:"axes_dims_rope"`
}

// Defaults fills unset fields with FLUX.1-dev's transformer (guidance
// embeds stay as set: schnell has none).
func (c *FluxConfig) Defaults() {
	setInt(&c.PatchSize, 1)
	setInt(&c.InChannels, 64)
	setInt(&c.NumLayers, 19)
	setInt(&c.NumSingleLayers, 38)
	setInt(&c.AttentionHeadDim, 128)
	setInt(&c.NumAttentionHeads, 24)
	setInt(&c.JointAttentionDim, 4096)
	setInt(&c.PooledProjectionDim, 768)
	if len(c.AxesDimsRope) == 0 {
		c.AxesDimsRope = []int{16, 56, 56}
	}
}

// Flux is the FLUX.1 rectified-flow transformer (diffusers'
// FluxTransformer2DModel): packed 2x2 latent patches and T5 tokens, double-
// stream blocks (separate weights, joint attention, text first) then
// single-stream blocks over the joined sequence, q/k RMS norms, rotary
// position embeddings over (text, row, column) ids, and a timestep +
// guidance + pooled-CLIP modulation. Forward returns the velocity in the
// packed layout.
type Flux struct {
	// Config is the configuration the network was built from, with
	// defaults filled in.
	Config FluxConfig
	// Trace, when set, is called with intermediate outputs under diffusers'
	// module names. For tests and debugging; the tensor is freed after.
	Trace func(name string, t *gpu.Tensor)

	d      gpu.Device
	params []*gpu.Tensor

	xEmb, ctxEmb     linear
	t1, t2, g1, g2   linear
	p1, p2           linear
	double           []*fluxDouble
	single           []*fluxSingle
	normOut, projOut linear
}

type fluxDouble struct {
	x, ctx mmStream // mod: 6 chunks; out, ff1, ff2
}

type fluxSingle struct {
	mod          linear // 3 chunks
	q, k, v      linear
	normQ, normK *gpu.Tensor
	mlp, out     linear
}

// NewFlux checks w (diffusers names) against the parameters c calls for,
// reporting every missing or mis-shaped one in a single *WeightsError, and
// uploads them to d. Call it outside any device scope.
func NewFlux(d gpu.Device, c FluxConfig, w Weights) (*Flux, error) {
	c.Defaults()
	f, params, _, err := construct(d, w, "transformer", func(b builder) (*Flux, error) { return buildFlux(b, c) })
	if err != nil {
		return nil, err
	}
	f.d, f.params = d, params
	return f, nil
}

// FluxDecls lists every parameter of a Flux transformer with config c,
// under diffusers' names and Black Forest Labs' original ones.
func FluxDecls(c FluxConfig) ([]Decl, error) {
	c.Defaults()
	return decls(func(b builder) (*Flux, error) { return buildFlux(b, c) })
}

// Release frees the network's weights on the device.
func (f *Flux) Release() { releaseAll(f.d, f.params) }

func buildFlux(b builder, c FluxConfig) (*Flux, error) {
	inner, hd := c.NumAttentionHeads*c.AttentionHeadDim, c.AttentionHeadDim
	switch {
	case inner < 1 || c.InChannels < 1 || c.NumLayers < 0 || c.NumSingleLayers < 0 || c.JointAttentionDim < 1 || c.PooledProjectionDim < 1:
		return nil, fmt.Errorf("num_attention_heads x attention_head_dim %d, in_channels %d, joint_attention_dim %d, pooled_projection_dim %d must be positive",
			inner, c.InChannels, c.JointAttentionDim, c.PooledProjectionDim)
	case c.PatchSize != 1:
		return nil, fmt.Errorf("patch_size %d is not supported (Flux packs 2x2 outside the transformer: want 1)", c.PatchSize)
	case hd%2 != 0:
		return nil, fmt.Errorf("attention_head_dim %d must be even (rotary pairs)", hd)
	}
	sum := 0
	for _, a := range c.AxesDimsRope {
		if a < 2 || a%2 != 0 {
			return nil, fmt.Errorf("axes_dims_rope %v: every axis needs a positive even width", c.AxesDimsRope)
		}
		sum += a
	}
	if sum != hd || len(c.AxesDimsRope) != 3 {
		return nil, fmt.Errorf("axes_dims_rope %v must be 3 axes adding up to attention_head_dim %d", c.AxesDimsRope, hd)
	}
	f := &Flux{Config: c}
	// Each parameter is declared under diffusers' name and Black Forest
	// Labs' original one (flux1-dev.safetensors, ComfyUI and GGUF files):
	// img_in, txt_in, time_in / guidance_in / vector_in (in_layer,
	// out_layer), double_blocks.N (img_/txt_ mod, attn with fused qkv and
	// norm.{query,key}_norm.scale, mlp.0/2), single_blocks.N (modulation,
	// linear1 = q, k, v and the MLP input stacked, linear2, norm),
	// final_layer (adaLN_modulation.1 with shift and scale swapped, linear).
	f.xEmb = b.as("x_embedder", "img_in").linear("", c.InChannels, inner, true)
	f.ctxEmb = b.as("context_embedder", "txt_in").linear("", c.JointAttentionDim, inner, true)
	mlp2 := func(b builder, name, orig string, in int) (linear, linear) {
		m := b.as(name, orig)
		return m.as("linear_1", "in_layer").linear("", in, inner, true), m.as("linear_2", "out_layer").linear("", inner, inner, true)
	}
	te := b.as("time_text_embed", "")
	f.t1, f.t2 = mlp2(te, "timestep_embedder", "time_in", 256)
	if c.GuidanceEmbeds {
		f.g1, f.g2 = mlp2(te, "guidance_embedder", "guidance_in", 256)
	}
	f.p1, f.p2 = mlp2(te, "text_embedder", "vector_in", c.PooledProjectionDim)
	norm := func(b builder, name, orig string) *gpu.Tensor {
		return b.as(name, orig).stored(Decl{Orig: "scale"}).param("weight", hd)
	}
	for i := 0; i < c.NumLayers; i++ {
		blk := b.as(fmt.Sprintf("transformer_blocks.%d", i), fmt.Sprintf("double_blocks.%d", i))
		f.double = append(f.double, &fluxDouble{
			x: mmStream{
				mod:   blk.as("norm1.linear", "img_mod.lin").linear("", inner, 6*inner, true),
				q:     qkvPart(blk, "attn.to_q", "img_attn.qkv", 0, inner),
				k:     qkvPart(blk, "attn.to_k", "img_attn.qkv", 1, inner),
				v:     qkvPart(blk, "attn.to_v", "img_attn.qkv", 2, inner),
				out:   blk.as("attn.to_out.0", "img_attn.proj").linear("", inner, inner, true),
				normQ: norm(blk, "attn.norm_q", "img_attn.norm.query_norm"),
				normK: norm(blk, "attn.norm_k", "img_attn.norm.key_norm"),
				ff1:   blk.as("ff.net.0.proj", "img_mlp.0").linear("", inner, 4*inner, true),
				ff2:   blk.as("ff.net.2", "img_mlp.2").linear("", 4*inner, inner, true),
			},
			ctx: mmStream{
				mod:   blk.as("norm1_context.linear", "txt_mod.lin").linear("", inner, 6*inner, true),
				q:     qkvPart(blk, "attn.add_q_proj", "txt_attn.qkv", 0, inner),
				k:     qkvPart(blk, "attn.add_k_proj", "txt_attn.qkv", 1, inner),
				v:     qkvPart(blk, "attn.add_v_proj", "txt_attn.qkv", 2, inner),
				out:   blk.as("attn.to_add_out", "txt_attn.proj").linear("", inner, inner, true),
				normQ: norm(blk, "attn.norm_added_q", "txt_attn.norm.query_norm"),
				normK: norm(blk, "attn.norm_added_k", "txt_attn.norm.key_norm"),
				ff1:   blk.as("ff_context.net.0.proj", "txt_mlp.0").linear("", inner, 4*inner, true),
				ff2:   blk.as("ff_context.net.2", "txt_mlp.2").linear("", 4*inner, inner, true),
			},
		})
	}
	// linear1 stacks q, k, v (inner rows each) and the MLP input (4 inner).
	rows := 7 * inner
	part := func(b builder, name string, from, n int) linear {
		m := b.as(name, "linear1")
		return linear{
			w: m.stored(Decl{Orig: "weight", From: from, Of: rows}).linearWeight("weight", n, inner),
			b: m.stored(Decl{Orig: "bias", From: from, Of: rows}).param("bias", n),
		}
	}
	for i := 0; i < c.NumSingleLayers; i++ {
		blk := b.as(fmt.Sprintf("single_transformer_blocks.%d", i), fmt.Sprintf("single_blocks.%d", i))
		f.single = append(f.single, &fluxSingle{
			mod:   blk.as("norm.linear", "modulation.lin").linear("", inner, 3*inner, true),
			q:     part(blk, "attn.to_q", 0, inner),
			k:     part(blk, "attn.to_k", inner, inner),
			v:     part(blk, "attn.to_v", 2*inner, inner),
			normQ: norm(blk, "attn.norm_q", "norm.query_norm"),
			normK: norm(blk, "attn.norm_k", "norm.key_norm"),
			mlp:   part(blk, "proj_mlp", 3*inner, 4*inner),
			out:   blk.as("proj_out", "linear2").linear("", 5*inner, inner, true),
		})
	}
	fl := b.origSub("final_layer")
	f.normOut = fl.as("norm_out.linear", "adaLN_modulation.1").stored(Decl{Swap: true}).linear("", inner, 2*inner, true)
	f.projOut = fl.as("proj_out", "linear").linear("", inner, c.InChannels, true)
	return f, nil
}

func (f *Flux) trace(name string, t *gpu.Tensor) {
	if f.Trace != nil {
		f.Trace(name, t)
	}
}

// FluxRope returns the rotary tables cos and sin [L, head dim] for position
// ids [L][3] (text tokens (0,0,0), image patch (0,row,col)): per axis k of
// width d_k, pair j turns by id_k / theta^(2j/d_k), theta 10000, computed in
// float64 as diffusers does; each pair's value is repeated for its two
// (interleaved) elements.
func FluxRope(ids [][3]float64, axes []int) (cos, sin []float32) {
	D := 0
	for _, a := range axes {
		D += a
	}
	cos, sin = make([]float32, len(ids)*D), make([]float32, len(ids)*D)
	for l, id := range ids {
		off := 0
		for k, a := range axes {
			for j := 0; j < a/2; j++ {
				w := 1 / math.Pow(10000, float64(2*j)/float64(a))
				ang := id[k] * w
				c, s := float32(math.Cos(ang)), float32(math.Sin(ang))
				i := l*D + off + 2*j
				cos[i], cos[i+1], sin[i], sin[i+1] = c, c, s, s
			}
			off += a
		}
	}
	return cos, sin
}

// rope rotates the interleaved pairs of x [B,L,H*D] by the tables cos, sin
// [1,L,1,D]: (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin).
func rope(d gpu.Device, x, cos, sin *gpu.Tensor, heads int) *gpu.Tensor {
	B, L, C := x.Dim(0), x.Dim(1), x.Dim(2)
	D := C / heads
	p := x.View(B, L, heads, D/2, 2)
	rot := d.Concat(4, d.Scale(d.Slice(p, 4, 1, 2), -1, 0), d.Slice(p, 4, 0, 1)).View(B, L, heads, D)
	out := d.Add(d.Mul(x.View(B, L, heads, D), cos), d.Mul(rot, sin))
	return out.View(B, L, C)
}

// forward runs a double-stream block on image tokens x [B,N,C] and text
// tokens ctx [B,T,C].
func (blk *fluxDouble) forward(d gpu.Device, x, ctx, st, cos, sin *gpu.Tensor, heads int) (*gpu.Tensor, *gpu.Tensor) {
	d.PushScope()
	ln := func(t *gpu.Tensor) *gpu.Tensor { return d.LayerNorm(t, nil, nil, 1e-6) }
	xm, cm := blk.x.mod.apply(d, st), blk.ctx.mod.apply(d, st)
	hx := modulate(d, ln(x), chunk(d, xm, 0, 6), chunk(d, xm, 1, 6))
	hc := modulate(d, ln(ctx), chunk(d, cm, 0, 6), chunk(d, cm, 1, 6))
	qx, kx, vx := blk.x.qkv(d, hx, heads)
	qc, kc, vc := blk.ctx.qkv(d, hc, heads)
	T := ctx.Dim(1)
	q := rope(d, d.Concat(1, qc, qx), cos, sin, heads)
	k := rope(d, d.Concat(1, kc, kx), cos, sin, heads)
	a := d.Attention(q, k, d.Concat(1, vc, vx), gpu.AttentionOpts{Heads: heads})
	ax := blk.x.out.apply(d, d.Slice(a, 1, T, a.Dim(1)))
	ac := blk.ctx.out.apply(d, d.Slice(a, 1, 0, T))
	x = d.Add(x, d.Mul(chunk(d, xm, 2, 6), ax))
	h := modulate(d, ln(x), chunk(d, xm, 3, 6), chunk(d, xm, 4, 6))
	x = d.Add(x, d.Mul(chunk(d, xm, 5, 6), blk.x.ff2.apply(d, d.GELUTanh(blk.x.ff1.apply(d, h)))))
	ctx = d.Add(ctx, d.Mul(chunk(d, cm, 2, 6), ac))
	h = modulate(d, ln(ctx), chunk(d, cm, 3, 6), chunk(d, cm, 4, 6))
	ctx = d.Add(ctx, d.Mul(chunk(d, cm, 5, 6), blk.ctx.ff2.apply(d, d.GELUTanh(blk.ctx.ff1.apply(d, h)))))
	d.PopScope(x, ctx)
	return x, ctx
}

// forward runs a single-stream block on the joined tokens x [B,T+N,C].
func (blk *fluxSingle) forward(d gpu.Device, x, st, cos, sin *gpu.Tensor, heads int) *gpu.Tensor {
	return gpu.Scoped(d, func() *gpu.Tensor {
		m := blk.mod.apply(d, st)
		h := modulate(d, d.LayerNorm(x, nil, nil, 1e-6), chunk(d, m, 0, 3), chunk(d, m, 1, 3))
		s := mmStream{q: blk.q, k: blk.k, v: blk.v, normQ: blk.normQ, normK: blk.normK}
		q, k, v := s.qkv(d, h, heads)
		a := d.Attention(rope(d, q, cos, sin, heads), rope(d, k, cos, sin, heads), v, gpu.AttentionOpts{Heads: heads})
		mlp := d.GELUTanh(blk.mlp.apply(d, h))
		out := blk.out.apply(d, d.Concat(2, a, mlp))
		return d.Add(x, d.Mul(chunk(d, m, 2, 3), out))
	})
}

// Forward predicts the velocity for packed latents x [B,N,in_channels] at
// sigmas t (the transformer multiplies them, and the guidance, by 1000),
// guidance (one per row; nil for a model without guidance embeds), T5
// tokens context [B,T,joint_attention_dim], pooled CLIP pooled [B,P], and
// position ids of the text and image tokens ([T][3] and [N][3]).
func (f *Flux) Forward(x *gpu.Tensor, t, guidance []float32, context, pooled *gpu.Tensor, txtIDs, imgIDs [][3]float64) (*gpu.Tensor, error) {
	c, d := &f.Config, f.d
	if x.Rank() != 3 || x.Dim(2) != c.InChannels {
		return nil, fmt.Errorf("transformer: latents %v, want packed [B,N,%d]", x.Shape, c.InChannels)
	}
	B, N := x.Dim(0), x.Dim(1)
	if len(t) != B || context.Rank() != 3 || context.Dim(0) != B || context.Dim(2) != c.JointAttentionDim ||
		!pooled.Shape.Equal(gpu.Shape{B, c.PooledProjectionDim}) || len(imgIDs) != N || len(txtIDs) != context.Dim(1) {
		return nil, fmt.Errorf("transformer: %d timesteps, context %v, pooled %v, %d text and %d image ids for latents %v",
			len(t), context.Shape, pooled.Shape, len(txtIDs), len(imgIDs), x.Shape)
	}
	if c.GuidanceEmbeds != (guidance != nil) || guidance != nil && len(guidance) != B {
		return nil, fmt.Errorf("transformer: guidance_embeds %v but %d guidance values for batch %d", c.GuidanceEmbeds, len(guidance), B)
	}
	heads := c.NumAttentionHeads
	d.PushScope()
	hs := f.xEmb.apply(d, x)
	f.trace("x_embedder", hs)
	scaled := func(v []float32) []float32 {
		out := make([]float32, len(v))
		for i, s := range v {
			out[i] = s * 1000
		}
		return out
	}
	temb := f.t2.apply(d, d.SiLU(f.t1.apply(d, d.TimestepEmbedding(scaled(t), 256, true, 0, 10000))))
	f.trace("time_text_embed.timestep_embedder", temb)
	if guidance != nil {
		g := f.g2.apply(d, d.SiLU(f.g1.apply(d, d.TimestepEmbedding(scaled(guidance), 256, true, 0, 10000))))
		f.trace("time_text_embed.guidance_embedder", g)
		temb = d.Add(temb, g)
	}
	pe := f.p2.apply(d, d.SiLU(f.p1.apply(d, pooled)))
	f.trace("time_text_embed.text_embedder", pe)
	temb = d.Add(temb, pe)
	f.trace("time_text_embed", temb)
	st := d.SiLU(temb)
	ctx := f.ctxEmb.apply(d, context)
	f.trace("context_embedder", ctx)
	cosv, sinv := FluxRope(append(append([][3]float64(nil), txtIDs...), imgIDs...), c.AxesDimsRope)
	L, D := len(txtIDs)+N, c.AttentionHeadDim
	cos, sin := d.Upload(cosv, 1, L, 1, D), d.Upload(sinv, 1, L, 1, D)
	for i, blk := range f.double {
		hs, ctx = blk.forward(d, hs, ctx, st, cos, sin, heads)
		f.trace(fmt.Sprintf("transformer_blocks.%d.0", i), ctx)
		f.trace(fmt.Sprintf("transformer_blocks.%d.1", i), hs)
	}
	T := ctx.Dim(1)
	all := d.Concat(1, ctx, hs)
	for i, blk := range f.single {
		all = blk.forward(d, all, st, cos, sin, heads)
		f.trace(fmt.Sprintf("single_transformer_blocks.%d", i), all)
	}
	hs = d.Slice(all, 1, T, T+N)
	mod := f.normOut.apply(d, st)
	hs = modulate(d, d.LayerNorm(hs, nil, nil, 1e-6), chunk(d, mod, 1, 2), chunk(d, mod, 0, 2))
	f.trace("norm_out", hs)
	out := f.projOut.apply(d, hs)
	f.trace("proj_out", out)
	d.PopScope(out)
	if err := d.Err(); err != nil {
		d.Release(out)
		return nil, fmt.Errorf("transformer: %w", err)
	}
	return out, nil
}
