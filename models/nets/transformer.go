package nets

import (
	"github.com/stepwise/stepwise/gpu"
)

// transformer2D is diffusers' Transformer2DModel on continuous inputs (the
// U-Net's spatial transformer): GroupNorm, proj_in, BasicTransformerBlocks on
// the H*W tokens, proj_out, plus the input as a residual.
type transformer2D struct {
	norm       norm
	linearProj bool   // proj_in/proj_out are Linear (SD 2.x) rather than 1x1 convs
	projInL    linear // when linearProj
	projOutL   linear
	projInC    conv // otherwise
	projOutC   conv
	blocks     []*basicBlock
}

// basicBlock is diffusers' BasicTransformerBlock: pre-LayerNorm
// self-attention, cross-attention on the context, and a GEGLU feed-forward,
// each added back to its input.
type basicBlock struct {
	norm1, norm2, norm3 norm
	attn1, attn2        attention
	ffIn, ffOut         linear    // ff.net.0.proj (to 2x inner, GEGLU) and ff.net.2
	ip                  *ipAttach // an attached IP-Adapter's layer, or nil
}

// transformer2D declares a spatial transformer over channels with the given
// head count, depth and context width.
func (b builder) transformer2D(name string, channels, heads, depth, contextDim, groups int, linearProj bool) *transformer2D {
	m := b.sub(name)
	t := &transformer2D{norm: m.groupNorm("norm", channels, groups, 1e-6), linearProj: linearProj}
	if linearProj {
		t.projInL = m.linear("proj_in", channels, channels, true)
	} else {
		t.projInC = m.conv("proj_in", channels, channels, 1, 1, 0)
	}
	for i := 0; i < depth; i++ {
		bb := m.at("transformer_blocks.%d", i)
		inner := 4 * channels
		t.blocks = append(t.blocks, &basicBlock{
			norm1: bb.layerNorm("norm1", channels, 1e-5),
			attn1: bb.attention("attn1", channels, channels, heads, false),
			norm2: bb.layerNorm("norm2", channels, 1e-5),
			attn2: bb.attention("attn2", channels, contextDim, heads, false),
			norm3: bb.layerNorm("norm3", channels, 1e-5),
			ffIn:  bb.linear("ff.net.0.proj", channels, 2*inner, true),
			ffOut: bb.linear("ff.net.2", inner, channels, true),
		})
	}
	if linearProj {
		t.projOutL = m.linear("proj_out", channels, channels, true)
	} else {
		t.projOutC = m.conv("proj_out", channels, channels, 1, 1, 0)
	}
	return t
}

// forward runs the transformer on x [B,C,H,W] with context [B,L,ctx].
func (t *transformer2D) forward(d gpu.Device, x, context *gpu.Tensor) *gpu.Tensor {
	return gpu.Scoped(d, func() *gpu.Tensor {
		hgt, wid := x.Dim(2), x.Dim(3)
		h := t.norm.apply(d, x)
		if t.linearProj {
			h = t.projInL.apply(d, toTokens(d, h))
		} else { // the 1x1 conv straight to tokens: h[b]ᵀ·Wᵀ + bias
			b, c := h.Dim(0), h.Dim(1)
			w := t.projInC.w
			h = d.MatMul(h.View(b, c, hgt*wid), w.View(w.Dim(0), c), gpu.MatMulOpts{TransA: true, TransB: true, Bias: t.projInC.b})
		}
		for _, blk := range t.blocks {
			h = blk.forward(d, h, context)
		}
		if t.linearProj {
			return d.Add(fromTokens(d, t.projOutL.apply(d, h), hgt, wid), x)
		}
		// The 1x1 conv straight from tokens, W·h[b]ᵀ + bias + x: no
		// transposed copy of h.
		b, c := x.Dim(0), x.Dim(1)
		w := t.projOutC.w
		out := d.MatMul(w.View(c, w.Dim(1)), h, gpu.MatMulOpts{TransB: true, Bias: t.projOutC.b, BiasRows: true,
			Residual: x.View(b, c, hgt*wid)})
		return out.View(b, c, hgt, wid)
	})
}

func (b *basicBlock) forward(d gpu.Device, x, context *gpu.Tensor) *gpu.Tensor {
	return gpu.Scoped(d, func() *gpu.Tensor {
		// Each residual sum is made by the output projection's store.
		x = b.attn1.forwardAdd(d, b.norm1.apply(d, x), nil, x)
		if ip := b.ip; ip != nil && ip.tokens != nil && ip.scale != 0 {
			x = d.Add(b.attn2.forwardIP(d, b.norm2.apply(d, x), context, ip), x)
		} else {
			x = b.attn2.forwardAdd(d, b.norm2.apply(d, x), context, x)
		}
		return b.ffOut.applyAdd(d, d.GEGLU(b.ffIn.apply(d, b.norm3.apply(d, x))), x)
	})
}
