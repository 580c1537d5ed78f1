package nets

import (
	"github.com/stepwise/stepwise/gpu"
)

// linear is a PyTorch nn.Linear: y = x·Wᵀ + b.
type linear struct{ w, b *gpu.Tensor }

func (b builder) linear(name string, in, out int, bias bool) linear {
	m := b.sub(name)
	l := linear{w: m.linearWeight("weight", out, in)}
	if bias {
		l.b = m.param("bias", out)
	}
	return l
}

func (l linear) apply(d gpu.Device, x *gpu.Tensor) *gpu.Tensor { return gpu.Linear(d, x, l.w, l.b) }

// applyAdd is apply(x) + res, the sum made by the product's store.
func (l linear) applyAdd(d gpu.Device, x, res *gpu.Tensor) *gpu.Tensor {
	return d.MatMul(x, l.w, gpu.MatMulOpts{TransB: true, Bias: l.b, Residual: res})
}

// conv is a PyTorch nn.Conv2d with bias and symmetric padding.
type conv struct {
	w, b *gpu.Tensor
	opts gpu.Conv2DOpts
}

func (b builder) conv(name string, in, out, kernel, stride, pad int) conv {
	m := b.sub(name)
	return conv{
		w:    m.param("weight", out, in, kernel, kernel),
		b:    m.param("bias", out),
		opts: gpu.Conv2DOpts{StrideH: stride, StrideW: stride, PadH: pad, PadW: pad},
	}
}

func (c conv) apply(d gpu.Device, x *gpu.Tensor) *gpu.Tensor { return d.Conv2D(x, c.w, c.b, c.opts) }

// applyAdd is apply(x) + res, the sum made by the convolution's store.
func (c conv) applyAdd(d gpu.Device, x, res *gpu.Tensor) *gpu.Tensor {
	o := c.opts
	o.Residual = res
	return d.Conv2D(x, c.w, c.b, o)
}

// norm is a GroupNorm (groups > 0) or a LayerNorm (groups == 0) with affine
// parameters.
type norm struct {
	gamma, beta *gpu.Tensor
	groups      int
	eps         float32
}

func (b builder) groupNorm(name string, channels, groups int, eps float64) norm {
	m := b.sub(name)
	return norm{gamma: m.param("weight", channels), beta: m.param("bias", channels), groups: groups, eps: float32(eps)}
}

func (b builder) layerNorm(name string, channels int, eps float64) norm {
	m := b.sub(name)
	return norm{gamma: m.param("weight", channels), beta: m.param("bias", channels), eps: float32(eps)}
}

// applySiLU is SiLU(apply(x)), fused for a GroupNorm.
func (n norm) applySiLU(d gpu.Device, x *gpu.Tensor) *gpu.Tensor {
	if n.groups > 0 {
		return d.GroupNormSiLU(x, n.gamma, n.beta, n.groups, n.eps)
	}
	return d.SiLU(d.LayerNorm(x, n.gamma, n.beta, n.eps))
}

func (n norm) apply(d gpu.Device, x *gpu.Tensor) *gpu.Tensor {
	if n.groups > 0 {
		return d.GroupNorm(x, n.gamma, n.beta, n.groups, n.eps)
	}
	return d.LayerNorm(x, n.gamma, n.beta, n.eps)
}

// resnet is diffusers' ResnetBlock2D (time-conditioned when temb is set):
// GroupNorm, SiLU, conv, + time projection, GroupNorm, SiLU, conv, then
// (shortcut(x) + h) / outScale.
type resnet struct {
	norm1, norm2 norm
	conv1, conv2 conv
	temb         *linear // nil in the VAE
	shortcut     *conv   // 1x1, when the channel count changes
	outScale     float32
}

// resnet declares a ResnetBlock2D; its original names are LDM's ResBlock
// (in_layers, emb_layers, out_layers, skip_connection) in a U-Net (tembDim
// > 0) and LDM's ResnetBlock (nin_shortcut) in a VAE.
func (b builder) resnet(name string, in, out, tembDim, groups int, eps, outScale float64) *resnet {
	m := b.sub(name)
	orig := map[string]string{"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
	if tembDim > 0 {
		orig = map[string]string{"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
			"norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
	}
	at := func(n string) builder { return m.as(n, orig[n]) }
	r := &resnet{
		norm1:    at("norm1").groupNorm("", in, groups, eps),
		conv1:    at("conv1").conv("", in, out, 3, 1, 1),
		norm2:    at("norm2").groupNorm("", out, groups, eps),
		conv2:    at("conv2").conv("", out, out, 3, 1, 1),
		outScale: float32(outScale),
	}
	if tembDim > 0 {
		l := at("time_emb_proj").linear("", tembDim, out, true)
		r.temb = &l
	}
	if in != out {
		c := at("conv_shortcut").conv("", in, out, 1, 1, 0)
		r.shortcut = &c
	}
	return r
}

// forward runs the block on x [B,C,H,W]; tembAct is SiLU(time embedding)
// [B,T] (nil in the VAE).
func (r *resnet) forward(d gpu.Device, x, tembAct *gpu.Tensor) *gpu.Tensor {
	return gpu.Scoped(d, func() *gpu.Tensor {
		var h *gpu.Tensor
		if r.temb != nil { // conv1(...) + the time projection, one value a channel
			t := r.temb.apply(d, tembAct)
			h = r.conv1.applyAdd(d, r.norm1.applySiLU(d, x), t.View(t.Dim(0), t.Dim(1), 1, 1))
		} else {
			h = r.conv1.apply(d, r.norm1.applySiLU(d, x))
		}
		skip := x
		if r.shortcut != nil {
			skip = r.shortcut.apply(d, x)
		}
		out := r.conv2.applyAdd(d, r.norm2.applySiLU(d, h), skip) // skip + conv2(...)
		if r.outScale != 1 {
			out = d.Scale(out, 1/r.outScale, 0)
		}
		return out
	})
}

// attention is diffusers' Attention with separate q/k/v projections and
// to_out.0 (dropout to_out.1 has no parameters).
type attention struct {
	q, k, v, out linear
	heads        int
}

func (b builder) attention(name string, queryDim, contextDim, heads int, qkvBias bool) attention {
	m := b.sub(name)
	return attention{
		q:     m.linear("to_q", queryDim, queryDim, qkvBias),
		k:     m.linear("to_k", contextDim, queryDim, qkvBias),
		v:     m.linear("to_v", contextDim, queryDim, qkvBias),
		out:   m.linear("to_out.0", queryDim, queryDim, true),
		heads: heads,
	}
}

// forward attends from x [B,L,C] to context [B,Lc,Cc] (x itself when nil).
func (a attention) forward(d gpu.Device, x, context *gpu.Tensor) *gpu.Tensor {
	return a.forwardAdd(d, x, context, nil)
}

// forwardAdd is forward(x, context) + res (nil: + 0), the sum made by the
// output projection.
func (a attention) forwardAdd(d gpu.Device, x, context, res *gpu.Tensor) *gpu.Tensor {
	if context == nil {
		context = x
	}
	q, k, v := a.q.apply(d, x), a.k.apply(d, context), a.v.apply(d, context)
	return a.out.applyAdd(d, d.Attention(q, k, v, gpu.AttentionOpts{Heads: a.heads}), res)
}

// upsample is diffusers' Upsample2D with a conv: nearest 2x, then 3x3 conv.
type upsample struct{ conv conv }

// upsample declares name.conv; orig is the conv's original name.
func (b builder) upsample(name, orig string, channels int) *upsample {
	return &upsample{conv: b.as(name+".conv", orig).conv("", channels, channels, 3, 1, 1)}
}

func (u *upsample) forward(d gpu.Device, x *gpu.Tensor) *gpu.Tensor {
	return gpu.Scoped(d, func() *gpu.Tensor { return u.conv.apply(d, d.Upsample2x(x)) })
}

// downsample is diffusers' Downsample2D with a conv: 3x3, stride 2, padding
// pad on every side, or (pad == 0) zero padding on the right and bottom only,
// as the VAE encoder does.
type downsample struct {
	conv       conv
	asymmetric bool
}

// downsample declares name.conv; orig is the conv's original name.
func (b builder) downsample(name, orig string, channels, pad int) *downsample {
	return &downsample{conv: b.as(name+".conv", orig).conv("", channels, channels, 3, 2, pad), asymmetric: pad == 0}
}

func (s *downsample) forward(d gpu.Device, x *gpu.Tensor) *gpu.Tensor {
	return gpu.Scoped(d, func() *gpu.Tensor {
		if s.asymmetric {
			n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
			x = d.Concat(3, x, d.Upload(make([]float32, n*c*h), n, c, h, 1))
			x = d.Concat(2, x, d.Upload(make([]float32, n*c*(w+1)), n, c, 1, w+1))
		}
		return s.conv.apply(d, x)
	})
}

// toTokens turns [B,C,H,W] into [B,H*W,C].
func toTokens(d gpu.Device, x *gpu.Tensor) *gpu.Tensor {
	b, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	return d.Permute(x.View(b, c, h*w), 0, 2, 1)
}

// fromTokens turns [B,H*W,C] back into [B,C,H,W].
func fromTokens(d gpu.Device, x *gpu.Tensor, h, w int) *gpu.Tensor {
	b, c := x.Dim(0), x.Dim(2)
	return d.Permute(x, 0, 2, 1).View(b, c, h, w)
}
