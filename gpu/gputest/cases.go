package gputest

import (
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
)

// in is a shorthand for an F32 input.
func in(shape ...int) Input { return Input{Shape: shape} }

// typed is an input of storage type dt.
func typed(dt gpu.DType, shape ...int) Input { return Input{Shape: shape, DType: dt} }

// Cases returns the conformance cases, every op of gpu.Device at least once.
// The list is built fresh on each call; inputs are deterministic.
func Cases() []Case {
	var cs []Case
	add := func(name string, run func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor, inputs ...Input) {
		cs = append(cs, Case{Name: name, Inputs: inputs, Run: run})
	}
	const F16, BF16 = gpu.F16, gpu.BF16

	// --- uploads and casts ---
	identity := func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return x[0] }
	add("Upload/f32_7x13", identity, in(7, 13))
	cast := func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Cast(x[0]) }
	add("Cast/f16_7x9", cast, typed(F16, 7, 9))
	add("Cast/bf16_13", cast, typed(BF16, 13))
	add("Cast/f32_5x3", cast, in(5, 3))
	add("Download/f16_direct", identity, typed(F16, 3, 11)) // Download widens F16 itself

	// --- MatMul ---
	mm := func(o gpu.MatMulOpts, bias bool) func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			if bias {
				o.Bias = x[2]
			}
			return d.MatMul(x[0], x[1], o)
		}
	}
	add("MatMul/7x33_33x13", mm(gpu.MatMulOpts{}, false), in(7, 33), in(33, 13))
	add("MatMul/linear_f16_2x7x33_w13x33_bias", mm(gpu.MatMulOpts{TransB: true}, true),
		in(2, 7, 33), typed(F16, 13, 33), typed(F16, 13))
	add("MatMul/linear_bf16_1x77x64_w192x64", mm(gpu.MatMulOpts{TransB: true}, true),
		in(1, 77, 64), typed(BF16, 192, 64), typed(BF16, 192))
	add("MatMul/transA_batched_2x33x7_2x33x13_alpha", mm(gpu.MatMulOpts{TransA: true, Alpha: 0.125}, false),
		in(2, 33, 7), in(2, 33, 13))
	add("MatMul/4d_scores_2x3x5x17_transB", mm(gpu.MatMulOpts{TransB: true, Alpha: 0.25}, false),
		in(2, 3, 5, 17), in(2, 3, 9, 17))
	add("MatMul/4d_2x3x5x17_2x3x17x9", mm(gpu.MatMulOpts{}, false), in(2, 3, 5, 17), in(2, 3, 17, 9))
	add("MatMul/sharedA_1x7x33_3x33x13", mm(gpu.MatMulOpts{}, false), in(1, 7, 33), in(3, 33, 13))
	add("MatMul/both_trans_2x9x6_w6x11", mm(gpu.MatMulOpts{TransA: true, TransB: true}, true),
		in(2, 9, 6), in(11, 9), in(11))
	add("MatMul/large_300x129_129x67_bias", mm(gpu.MatMulOpts{}, true), in(300, 129), in(129, 67), in(67))
	add("MatMul/vector_1x1x128_w128x128_f16", mm(gpu.MatMulOpts{TransB: true}, true),
		in(1, 128), typed(F16, 128, 128), typed(F16, 128))
	// mmRes adds the last input as the residual (a transformer block's skip).
	mmRes := func(o gpu.MatMulOpts, bias bool) func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			if bias {
				o.Bias = x[2]
			}
			o.Residual = x[len(x)-1]
			return d.MatMul(x[0], x[1], o)
		}
	}
	add("MatMul/residual_linear_f16_2x7x33_w13x33_bias", mmRes(gpu.MatMulOpts{TransB: true}, true),
		in(2, 7, 33), typed(F16, 13, 33), typed(F16, 13), in(2, 7, 13))
	// W·Xᵀ + bias per row + residual: a 1x1 conv's output from tokens.
	add("MatMul/biasrows_residual_w9x12_2x7x12_transB", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.MatMul(x[0], x[1], gpu.MatMulOpts{TransB: true, Bias: x[2], BiasRows: true, Residual: x[3]})
	}, typed(F16, 9, 12), in(2, 7, 12), typed(F16, 9), in(2, 9, 7))
	add("MatMul/biasrows_strided_transA_2x5x7_5x3", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.MatMul(x[0], x[1], gpu.MatMulOpts{TransA: true, Bias: x[2], BiasRows: true})
	}, in(2, 5, 7), in(5, 3), in(7))
	add("MatMul/residual_9x20_20x11_nobias", mmRes(gpu.MatMulOpts{}, false), in(9, 20), in(20, 11), in(9, 11))
	add("MatMul/residual_strided_transA_alpha_2x33x7_2x33x13", mmRes(gpu.MatMulOpts{TransA: true, Alpha: 0.5}, false),
		in(2, 33, 7), in(2, 33, 13), in(2, 7, 13))

	// --- Conv2D ---
	conv := func(o gpu.Conv2DOpts, bias bool) func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			var b *gpu.Tensor
			if bias {
				b = x[2]
			}
			return d.Conv2D(x[0], x[1], b, o)
		}
	}
	p1 := gpu.Conv2DOpts{PadH: 1, PadW: 1}
	// convRes adds the last input as the residual (a ResNet's skip).
	convRes := func(o gpu.Conv2DOpts, bias bool) func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			var b *gpu.Tensor
			if bias {
				b = x[2]
			}
			o.Residual = x[len(x)-1]
			return d.Conv2D(x[0], x[1], b, o)
		}
	}
	add("Conv2D/residual_3x3_s2_p1_2x5x9x11_to6", convRes(gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, true),
		in(2, 5, 9, 11), in(6, 5, 3, 3), in(6), in(2, 6, 5, 6))
	add("Conv2D/residual_3x3_p1_1x8x33x35_to12_f16", convRes(p1, true),
		in(1, 8, 33, 35), typed(F16, 12, 8, 3, 3), typed(F16, 12), in(1, 12, 33, 35))
	add("Conv2D/residual_1x1_2x12x5x4_to7_nobias", convRes(gpu.Conv2DOpts{}, false),
		in(2, 12, 5, 4), in(7, 12, 1, 1), in(2, 7, 5, 4))
	add("Conv2D/residual_3x3_p1_2x4x6x6_to8_direct", convRes(p1, false), in(2, 4, 6, 6), in(8, 4, 3, 3), in(2, 8, 6, 6))
	// A residual of one value a sample and output channel (a time embedding).
	add("Conv2D/residual_plane_3x3_p1_2x8x9x11_to12_f16", convRes(p1, true),
		in(2, 8, 9, 11), typed(F16, 12, 8, 3, 3), typed(F16, 12), in(2, 12, 1, 1))
	add("Conv2D/residual_plane_3x3_p1_2x8x2x2_to9_pairs", convRes(p1, true), in(2, 8, 2, 2), in(9, 8, 3, 3), in(9), in(2, 9, 1, 1))
	add("Conv2D/residual_plane_1x1_2x12x5x4_to7", convRes(gpu.Conv2DOpts{}, true),
		in(2, 12, 5, 4), in(7, 12, 1, 1), in(7), in(2, 7, 1, 1))
	add("Conv2D/3x3_p1_2x3x13x11_to5_f16", conv(p1, true), in(2, 3, 13, 11), typed(F16, 5, 3, 3, 3), typed(F16, 5))
	add("Conv2D/3x3_s2_p1_1x6x13x13_to7", conv(gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, true),
		in(1, 6, 13, 13), in(7, 6, 3, 3), in(7))
	add("Conv2D/3x3_s2_p0_2x5x12x10_to3", conv(gpu.Conv2DOpts{StrideH: 2, StrideW: 2}, true),
		in(2, 5, 12, 10), in(3, 5, 3, 3), in(3))
	add("Conv2D/1x1_2x7x9x5_to6_nobias", conv(gpu.Conv2DOpts{}, false), in(2, 7, 9, 5), in(6, 7, 1, 1))
	add("Conv2D/1x1_bf16_1x33x8x8_to35", conv(gpu.Conv2DOpts{}, true), in(1, 33, 8, 8), typed(BF16, 35, 33, 1, 1), in(35))
	add("Conv2D/3x3_p0_1x4x7x9_to8", conv(gpu.Conv2DOpts{}, true), in(1, 4, 7, 9), in(8, 4, 3, 3), in(8))
	add("Conv2D/3x3_p1_1x33x9x9_to35_f16", conv(p1, true), in(1, 33, 9, 9), typed(F16, 35, 33, 3, 3), typed(F16, 35))
	add("Conv2D/3x3_p1_1x16x64x64_to3", conv(p1, true), in(1, 16, 64, 64), in(3, 16, 3, 3), in(3))
	// The U-Net's deepest levels: 1x1 and 2x2 images under 3x3 kernels.
	add("Conv2D/3x3_p1_2x35x1x1_to33", conv(p1, true), in(2, 35, 1, 1), in(33, 35, 3, 3), in(33))
	add("Conv2D/3x3_s2_p1_1x9x2x2_to5", conv(gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, true),
		in(1, 9, 2, 2), in(5, 9, 3, 3), in(5))
	add("Conv2D/2x3_s1x2_p1x0_2x3x8x11_to4", conv(gpu.Conv2DOpts{StrideH: 1, StrideW: 2, PadH: 1}, true),
		in(2, 3, 8, 11), in(4, 3, 2, 3), in(4))

	// --- normalisation ---
	gn := func(groups int, eps float32, affine bool) func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			if !affine {
				return d.GroupNorm(x[0], nil, nil, groups, eps)
			}
			return d.GroupNorm(x[0], x[1], x[2], groups, eps)
		}
	}
	shifted := func(shape ...int) Input { return Input{Shape: shape, Scale: 3, Offset: 2} }
	add("GroupNorm/2x12x5x7_g3_f16", gn(3, 1e-5, true), shifted(2, 12, 5, 7), typed(F16, 12), typed(F16, 12))
	add("GroupNorm/1x32x8x8_g32", gn(32, 1e-6, true), in(1, 32, 8, 8), in(32), in(32))
	add("GroupNorm/2x6x13_g2_rank3", gn(2, 1e-5, true), shifted(2, 6, 13), in(6), in(6))
	add("GroupNorm/1x8x64x64_g8", gn(8, 1e-6, true), shifted(1, 8, 64, 64), in(8), in(8))
	add("GroupNorm/2x12x1x1_g3_spatial1", gn(3, 1e-5, true), shifted(2, 12, 1, 1), in(12), in(12))
	add("GroupNorm/2x4x3x3_g1_noaffine", gn(1, 1e-5, false), shifted(2, 4, 3, 3))
	gns := func(groups int, affine bool) func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			if !affine {
				return d.GroupNormSiLU(x[0], nil, nil, groups, 1e-6)
			}
			return d.GroupNormSiLU(x[0], x[1], x[2], groups, 1e-6)
		}
	}
	add("GroupNormSiLU/2x12x5x7_g3_f16", gns(3, true), shifted(2, 12, 5, 7), typed(F16, 12), typed(F16, 12))
	add("GroupNormSiLU/1x8x64x64_g4", gns(4, true), shifted(1, 8, 64, 64), in(8), in(8))
	add("GroupNormSiLU/2x8x40x41_g2_noaffine", gns(2, false), shifted(2, 8, 40, 41))
	ln := func(affine bool) func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			if !affine {
				return d.LayerNorm(x[0], nil, nil, 1e-5)
			}
			return d.LayerNorm(x[0], x[1], x[2], 1e-5)
		}
	}
	add("LayerNorm/2x77x64_f16", ln(true), shifted(2, 77, 64), typed(F16, 64), typed(F16, 64))
	add("LayerNorm/5x129", ln(true), shifted(5, 129), in(129), in(129))
	add("LayerNorm/3x33_noaffine", ln(false), in(3, 33))
	rms := func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		if len(x) == 1 {
			return d.RMSNorm(x[0], nil, 1e-6)
		}
		return d.RMSNorm(x[0], x[1], 1e-6)
	}
	add("RMSNorm/2x37x96_f16", rms, shifted(2, 37, 96), typed(F16, 96))
	add("RMSNorm/3x7x8_serial", rms, in(3, 7, 8), in(8))
	add("RMSNorm/5x1025_nogamma", rms, shifted(5, 1025))
	softmax := func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Softmax(x[0]) }
	add("Softmax/3x7x13", softmax, in(3, 7, 13))
	add("Softmax/2x300_large", softmax, Input{Shape: []int{2, 300}, Scale: 10, Offset: 50})

	// --- attention ---
	attn := func(o gpu.AttentionOpts) func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Attention(x[0], x[1], x[2], o) }
	}
	qkv := func(b, lq, lk, h, dk, dv int) []Input {
		return []Input{in(b, lq, h*dk), in(b, lk, h*dk), in(b, lk, h*dv)}
	}
	add("Attention/b2_lq13_lk7_h3_d5", attn(gpu.AttentionOpts{Heads: 3}), qkv(2, 13, 7, 3, 5, 5)...)
	add("Attention/clip_b2_l77_h4_d16_causal", attn(gpu.AttentionOpts{Heads: 4, Causal: true}), qkv(2, 77, 77, 4, 16, 16)...)
	add("Attention/cross_b2_lq9_lk77_h8_d4_dv6", attn(gpu.AttentionOpts{Heads: 8}), qkv(2, 9, 77, 8, 4, 6)...)
	add("Attention/causal_lq5_lk11_h2_d3", attn(gpu.AttentionOpts{Heads: 2, Causal: true}), qkv(1, 5, 11, 2, 3, 3)...)
	add("Attention/causal_lq11_lk5_h1_d7", attn(gpu.AttentionOpts{Heads: 1, Causal: true}), qkv(2, 11, 5, 1, 7, 7)...)
	add("Attention/one_token_b2_l1_h8_d16", attn(gpu.AttentionOpts{Heads: 8}), qkv(2, 1, 1, 8, 16, 16)...)
	add("Attention/one_query_lq1_lk77_h8_d16", attn(gpu.AttentionOpts{Heads: 8}), qkv(2, 1, 77, 8, 16, 16)...)
	add("Attention/long_l300_h2_d8", attn(gpu.AttentionOpts{Heads: 2}), qkv(1, 300, 300, 2, 8, 8)...)
	add("Attention/vae_l64_h1_d64_scale", attn(gpu.AttentionOpts{Heads: 1, Scale: 0.05}), qkv(1, 64, 64, 1, 64, 64)...)
	add("Attention/large_scores_l33_h2_d16", attn(gpu.AttentionOpts{Heads: 2, Scale: 2}), qkv(1, 33, 33, 2, 16, 16)...)
	// Few queries against many keys with wide heads (cheap, but the key
	// and value data of one head is large): SD1.5's 40- and 160-wide heads
	// at hundreds of tokens. LargeCases has the VAE's 512-wide head.
	add("Attention/wide_lq16_lk700_h1_d40", attn(gpu.AttentionOpts{Heads: 1}), qkv(1, 16, 700, 1, 40, 40)...)
	add("Attention/wide_lq16_lk700_h2_d40", attn(gpu.AttentionOpts{Heads: 2}), qkv(1, 16, 700, 2, 40, 40)...)
	add("Attention/wide_causal_lq9_lk333_h1_d160", attn(gpu.AttentionOpts{Heads: 1, Causal: true}), qkv(2, 9, 333, 1, 160, 160)...)

	// --- element-wise ---
	act := func(f func(d gpu.Device) func(*gpu.Tensor) *gpu.Tensor) func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return f(d)(x[0]) }
	}
	wide := Input{Shape: []int{3, 5, 7}, Scale: 3}
	add("SiLU/3x5x7", act(func(d gpu.Device) func(*gpu.Tensor) *gpu.Tensor { return d.SiLU }), wide)
	add("GELU/3x5x7", act(func(d gpu.Device) func(*gpu.Tensor) *gpu.Tensor { return d.GELU }), wide)
	add("GELUTanh/3x5x7", act(func(d gpu.Device) func(*gpu.Tensor) *gpu.Tensor { return d.GELUTanh }), wide)
	add("QuickGELU/3x5x7", act(func(d gpu.Device) func(*gpu.Tensor) *gpu.Tensor { return d.QuickGELU }), wide)
	add("ReLU/3x5x7", act(func(d gpu.Device) func(*gpu.Tensor) *gpu.Tensor { return d.ReLU }), wide)
	add("SoftClamp/extremes", act(func(d gpu.Device) func(*gpu.Tensor) *gpu.Tensor {
		return func(x *gpu.Tensor) *gpu.Tensor { return d.SoftClamp(x, 3) }
	}), Input{Shape: []int{101}, Scale: 40})
	add("SoftClamp/2x3x7x5", act(func(d gpu.Device) func(*gpu.Tensor) *gpu.Tensor {
		return func(x *gpu.Tensor) *gpu.Tensor { return d.SoftClamp(x, 2.5) }
	}), Input{Shape: []int{2, 3, 7, 5}, Scale: 4})
	add("GEGLU/2x7x26", act(func(d gpu.Device) func(*gpu.Tensor) *gpu.Tensor { return d.GEGLU }),
		Input{Shape: []int{2, 7, 26}, Scale: 3})
	add("SiLU/extremes", act(func(d gpu.Device) func(*gpu.Tensor) *gpu.Tensor { return d.SiLU }),
		Input{Shape: []int{101}, Scale: 40})

	addOp := func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Add(x[0], x[1]) }
	mulOp := func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Mul(x[0], x[1]) }
	add("Add/same_2x3x5x7", addOp, in(2, 3, 5, 7), in(2, 3, 5, 7))
	add("Add/2x3x4x5_plus_3x1x1", addOp, in(2, 3, 4, 5), in(3, 1, 1))
	add("Add/2x3x4x5_plus_2x3x1x1", addOp, in(2, 3, 4, 5), in(2, 3, 1, 1))
	add("Add/3x1_plus_1x4", addOp, in(3, 1), in(1, 4))
	add("Add/13_plus_2x7x13", addOp, in(13), in(2, 7, 13))
	add("Add/view_BC_to_BC11", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.Add(x[0], x[1].View(2, 5, 1, 1))
	}, in(2, 5, 3, 7), in(2, 5))
	add("Mul/same_2x3x5x7", mulOp, in(2, 3, 5, 7), in(2, 3, 5, 7))
	add("Mul/2x5x7_times_1x5x1", mulOp, in(2, 5, 7), in(1, 5, 1))
	add("Scale/13x7", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Scale(x[0], 0.18215, -0.5) }, in(13, 7))

	// --- layout ---
	add("Upsample2x/2x3x5x7", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Upsample2x(x[0]) }, in(2, 3, 5, 7))
	add("Upsample2x/1x9x1x1", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Upsample2x(x[0]) }, in(1, 9, 1, 1))
	add("Concat/dim1_2x3x5x5_2x4x5x5", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.Concat(1, x[0], x[1])
	}, in(2, 3, 5, 5), in(2, 4, 5, 5))
	add("Concat/dim-1_three", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.Concat(-1, x[0], x[1], x[2])
	}, in(2, 3, 5), in(2, 3, 1), in(2, 3, 7))
	add("Concat/dim0", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.Concat(0, x[0], x[1])
	}, in(1, 4, 8, 8), in(1, 4, 8, 8))
	add("Slice/dim1_2x9x5", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Slice(x[0], 1, 2, 7) }, in(2, 9, 5))
	add("Slice/dim-1_3x7x26", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Slice(x[0], -1, 13, 26) }, in(3, 7, 26))
	add("Slice/negative_dim_2x9x5", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Slice(x[0], -2, 4, 8) }, in(2, 9, 5))
	add("Slice/dim0_4x3", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Slice(x[0], 0, 1, 2) }, in(4, 3))
	perm := func(p ...int) func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Permute(x[0], p...) }
	}
	add("Permute/0213_2x3x5x7", perm(0, 2, 1, 3), in(2, 3, 5, 7))
	add("Permute/nchw_to_nhwc_2x3x5x7", perm(0, 2, 3, 1), in(2, 3, 5, 7))
	add("Permute/nhwc_to_nchw_2x5x7x3", perm(0, 3, 1, 2), in(2, 5, 7, 3))
	add("Permute/021_2x5x3", perm(0, 2, 1), in(2, 5, 3))
	add("Permute/10_13x7", perm(1, 0), in(13, 7))
	ids := []int32{0, 48, 7, 7, 13, 1, 48, 30}
	emb := func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Embedding(x[0], ids) }
	add("Embedding/f16_49x13", emb, typed(F16, 49, 13))
	add("Embedding/f32_49x6", emb, in(49, 6))
	ts := []float32{999, 500, 1, 937.25}
	add("TimestepEmbedding/dim32_flip_shift0", func(d gpu.Device, _ []*gpu.Tensor) *gpu.Tensor {
		return d.TimestepEmbedding(ts, 32, true, 0, 10000)
	})
	add("TimestepEmbedding/dim33_shift1", func(d gpu.Device, _ []*gpu.Tensor) *gpu.Tensor {
		return d.TimestepEmbedding(ts, 33, false, 1, 10000)
	})
	return cs
}

// LargeCases returns cases at Stable Diffusion 1.5 sizes (1024 tokens of 320
// channels, 320-channel 3x3 convolutions at 32x32), to test a device's tiling
// and work splitting under realistic loads. They take a few seconds on the
// reference device; RunLargeSuite runs them.
func LargeCases() []Case {
	var cs []Case
	add := func(name string, run func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor, inputs ...Input) {
		cs = append(cs, Case{Name: name, Inputs: inputs, Run: run})
	}
	const F16 = gpu.F16
	add("Attention/sd_self_l1024_h8_d40", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.Attention(x[0], x[1], x[2], gpu.AttentionOpts{Heads: 8})
	}, in(1, 1024, 320), in(1, 1024, 320), in(1, 1024, 320))
	add("Attention/sd_cross_b2_l1024_lk77_h8_d40", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.Attention(x[0], x[1], x[2], gpu.AttentionOpts{Heads: 8})
	}, in(2, 1024, 320), in(2, 77, 320), in(2, 77, 320))
	add("Attention/sd_vae_mid_lq64_lk1024_h1_d512", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.Attention(x[0], x[1], x[2], gpu.AttentionOpts{Heads: 1})
	}, in(1, 64, 512), in(1, 1024, 512), in(1, 1024, 512))
	add("Conv2D/sd_3x3_p1_1x320x32x32_to320_f16", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.Conv2D(x[0], x[1], x[2], gpu.Conv2DOpts{PadH: 1, PadW: 1})
	}, in(1, 320, 32, 32), Input{Shape: []int{320, 320, 3, 3}, DType: F16, Scale: 0.02}, typed(F16, 320))
	add("MatMul/sd_linear_1x1024x320_w1280x320_f16", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.MatMul(x[0], x[1], gpu.MatMulOpts{TransB: true, Bias: x[2]})
	}, in(1, 1024, 320), Input{Shape: []int{1280, 320}, DType: F16, Scale: 0.05}, typed(F16, 1280))
	add("GroupNorm/sd_2x320x32x32_g32", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.GroupNorm(x[0], x[1], x[2], 32, 1e-5)
	}, Input{Shape: []int{2, 320, 32, 32}, Scale: 3, Offset: 2}, typed(F16, 320), typed(F16, 320))
	add("LayerNorm/sd_2x1024x320", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.LayerNorm(x[0], x[1], x[2], 1e-5)
	}, Input{Shape: []int{2, 1024, 320}, Scale: 3, Offset: 2}, typed(F16, 320), typed(F16, 320))
	add("GEGLU/sd_1x1024x2560", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.GEGLU(x[0]) }, in(1, 1024, 2560))
	return cs
}

// RunLargeSuite is RunOpSuite over LargeCases; it is skipped with -short.
func RunLargeSuite(t *testing.T, dev gpu.Device, tol float64) {
	t.Helper()
	if testing.Short() {
		t.Skip("large conformance cases skipped in -short mode")
	}
	oracle := ref.New()
	defer oracle.Close()
	for _, c := range LargeCases() {
		t.Run(c.Name, func(t *testing.T) {
			if err := CheckCase(oracle, dev, c, tol); err != nil {
				t.Error(err)
			}
		})
	}
}
