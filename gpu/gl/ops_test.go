package gl

import (
	"errors"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/gputest"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tol is the GL tolerance against gpu/ref: |got - want| <= tol * (1 + |want|)
// (float32 sums in a different order).
const tol = 1e-4

func inp(shape ...int) gputest.Input { return gputest.Input{Shape: shape} }

func typed(dt gpu.DType, shape ...int) gputest.Input {
	return gputest.Input{Shape: shape, DType: dt}
}

// glCases are GL-specific cases beyond the shared suite: sizes that straddle
// the 8x8 tiles and the 8-key attention blocks, every weight type on every
// weight-facing input, strides, paddings and kernel sizes of the U-Net and
// VAE, long attention, and grids larger than one dispatch dimension.
func glCases() []gputest.Case {
	var cs []gputest.Case
	add := func(name string, run func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor, ins ...gputest.Input) {
		cs = append(cs, gputest.Case{Name: name, Inputs: ins, Run: run})
	}
	mm := func(o gpu.MatMulOpts, bias bool) func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			if bias {
				o.Bias = x[2]
			}
			return d.MatMul(x[0], x[1], o)
		}
	}
	add("MatMul/tile_edges_17x9_9x23", mm(gpu.MatMulOpts{}, false), inp(17, 9), inp(9, 23))
	add("MatMul/batched_3x65x31_31x15", mm(gpu.MatMulOpts{}, false), inp(3, 65, 31), inp(3, 31, 15))
	add("MatMul/linear_f16_bias_bf16", mm(gpu.MatMulOpts{TransB: true}, true), inp(2, 41, 70), typed(gpu.F16, 37, 70), typed(gpu.BF16, 37))
	add("MatMul/linear_bf16_bias_f16", mm(gpu.MatMulOpts{TransB: true}, true), inp(1, 9, 33), typed(gpu.BF16, 35, 33), typed(gpu.F16, 35))
	add("MatMul/transA_transB_alpha", mm(gpu.MatMulOpts{TransA: true, TransB: true, Alpha: 0.37}, false), inp(2, 13, 11), inp(2, 19, 13))
	add("MatMul/nt4_f32_bias_2x13x36_w29x36", mm(gpu.MatMulOpts{TransB: true}, true), inp(2, 13, 36), inp(29, 36), inp(29))
	add("MatMul/nt4_f16_1x70x132_w17x132", mm(gpu.MatMulOpts{TransB: true, Alpha: 2}, false), inp(1, 70, 132), typed(gpu.F16, 17, 132))
	add("MatMul/nt4_bf16_bias_f16_9x4_w3x4", mm(gpu.MatMulOpts{TransB: true}, true), inp(9, 4), typed(gpu.BF16, 3, 4), typed(gpu.F16, 3))
	add("MatMul/nt4_batched_2x3x11x8_2x3x9x8", mm(gpu.MatMulOpts{TransB: true}, false), inp(2, 3, 11, 8), inp(2, 3, 9, 8))
	add("MatMul/nt4_sharedB_3x5x12_1x7x12", mm(gpu.MatMulOpts{TransB: true}, false), inp(3, 5, 12), inp(1, 7, 12))
	add("MatMul/nn4_f32_bias_2x13x36_36x28", mm(gpu.MatMulOpts{}, true), inp(2, 13, 36), inp(36, 28), inp(28))
	add("MatMul/nn4_n4_edge_9x8_8x12", mm(gpu.MatMulOpts{Alpha: -1}, false), inp(9, 8), inp(8, 12))
	// Large enough for 16-row blocks (tallTiles), M not a multiple of 16
	// nor N of 8: NT4 with F16 weights, bias and a residual, batched NN4,
	// and a 1x1 convolution (NN4 with row bias).
	add("MatMul/tall_nt4_f16_bias_res_1x515x36_w250x36", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.MatMul(x[0], x[1], gpu.MatMulOpts{TransB: true, Bias: x[2], Residual: x[3]})
	}, inp(1, 515, 36), typed(gpu.F16, 250, 36), inp(250), inp(1, 515, 250))
	add("MatMul/tall_nn4_batched_2x515x20_2x20x252", mm(gpu.MatMulOpts{Alpha: 0.5}, false), inp(2, 515, 20), inp(2, 20, 252))
	add("MatMul/nn4_n4_only_3x4_4x4_f16", mm(gpu.MatMulOpts{}, false), inp(3, 4), typed(gpu.F16, 4, 4))
	add("MatMul/nn4_batched_bf16_2x3x11x8_2x3x8x20", mm(gpu.MatMulOpts{}, true), inp(2, 3, 11, 8), typed(gpu.BF16, 2, 3, 8, 20), inp(20))
	add("MatMul/nn4_sharedA_1x5x12_3x12x16", mm(gpu.MatMulOpts{}, false), inp(1, 5, 12), inp(3, 12, 16))
	add("MatMul/k1_5x1_1x7", mm(gpu.MatMulOpts{}, false), inp(5, 1), inp(1, 7))
	add("MatMul/long_k_3x1031_1031x5", mm(gpu.MatMulOpts{}, false), inp(3, 1031), inp(1031, 5))

	conv := func(o gpu.Conv2DOpts, bias bool) func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			var b *gpu.Tensor
			if bias {
				b = x[2]
			}
			return d.Conv2D(x[0], x[1], b, o)
		}
	}
	add("Conv2D/4x4_s2_p1_2x5x17x15_to9", conv(gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, true), inp(2, 5, 17, 15), inp(9, 5, 4, 4), inp(9))
	add("Conv2D/4x4_s1_p0_1x3x9x10_to5_bf16", conv(gpu.Conv2DOpts{}, true), inp(1, 3, 9, 10), typed(gpu.BF16, 5, 3, 4, 4), typed(gpu.BF16, 5))
	add("Conv2D/3x3_s2_p1_2x7x16x16_to11_f16", conv(gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, true), inp(2, 7, 16, 16), typed(gpu.F16, 11, 7, 3, 3), typed(gpu.F16, 11))
	add("Conv2D/1x1_3x10x5x19_to17_nobias", conv(gpu.Conv2DOpts{}, false), inp(3, 10, 5, 19), inp(17, 10, 1, 1))
	add("Conv2D/tall_1x1_2x12x8x9_to515", conv(gpu.Conv2DOpts{}, true), inp(2, 12, 8, 9), inp(515, 12, 1, 1), inp(515)) // 16-row blocks (tallTiles)
	add("Conv2D/3x3_p1_1x19x23x21_to13", conv(gpu.Conv2DOpts{PadH: 1, PadW: 1}, true), inp(1, 19, 23, 21), inp(13, 19, 3, 3), inp(13))
	add("Conv2D/c4_3x3_p1_2x8x13x19_to11", conv(gpu.Conv2DOpts{PadH: 1, PadW: 1}, true), inp(2, 8, 13, 19), inp(11, 8, 3, 3), inp(11))
	add("Conv2D/c4_3x2_s2_p1_1x12x17x18_to5_f16", conv(gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, true), inp(1, 12, 17, 18), typed(gpu.F16, 5, 12, 3, 2), typed(gpu.F16, 5))
	add("Conv2D/4x4_s2_p1_1x12x9x10_to5_f16", conv(gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, true), inp(1, 12, 9, 10), typed(gpu.F16, 5, 12, 4, 4), typed(gpu.F16, 5))
	add("Conv2D/c4_1x1_2x4x7x9_to9_bf16", conv(gpu.Conv2DOpts{}, false), inp(2, 4, 7, 9), typed(gpu.BF16, 9, 4, 1, 1))
	add("Conv2D/c4_3x3_s2_p0_1x8x15x12_to17_bf16", conv(gpu.Conv2DOpts{StrideH: 2, StrideW: 2}, true), inp(1, 8, 15, 12), typed(gpu.BF16, 17, 8, 3, 3), inp(17))
	add("Conv2D/c4_2x3_s1x2_p1x0_1x4x6x11_to3", conv(gpu.Conv2DOpts{StrideW: 2, PadH: 1}, false), inp(1, 4, 6, 11), inp(3, 4, 2, 3))
	add("Conv2D/5x3_p2x1_1x2x9x9_to3", conv(gpu.Conv2DOpts{PadH: 2, PadW: 1}, false), inp(1, 2, 9, 9), inp(3, 2, 5, 3))
	// Narrow outputs pick conv2d.comp's PX 1, 2 and 4 and its small local size.
	add("Conv2D/px1_c4_3x3_p1_2x12x3x1_to19_f16", conv(gpu.Conv2DOpts{PadH: 1, PadW: 1}, true), inp(2, 12, 3, 1), typed(gpu.F16, 19, 12, 3, 3), typed(gpu.F16, 19))
	add("Conv2D/px2_c4_3x3_p1_2x20x2x2_to13", conv(gpu.Conv2DOpts{PadH: 1, PadW: 1}, true), inp(2, 20, 2, 2), inp(13, 20, 3, 3), inp(13))
	add("Conv2D/px2_3x3_s2_p1_1x7x4x3_to9_bf16", conv(gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, false), inp(1, 7, 4, 3), typed(gpu.BF16, 9, 7, 3, 3))
	add("Conv2D/px4_c4_1x1_2x36x3x3_to17", conv(gpu.Conv2DOpts{}, true), inp(2, 36, 3, 3), inp(17, 36, 1, 1), inp(17))
	add("Conv2D/px4_3x3_p1_1x5x5x4_to3_f16", conv(gpu.Conv2DOpts{PadH: 1, PadW: 1}, true), inp(1, 5, 5, 4), typed(gpu.F16, 3, 5, 3, 3), inp(3))
	add("Conv2D/px8_c4_3x3_s2_p1_2x8x9x13_to70", conv(gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, true), inp(2, 8, 9, 13), inp(70, 8, 3, 3), inp(70))
	// Strided convolutions as im2col.comp's columns times the weights
	// (useIm2col; TestIm2colChosen): with a bias, F16 weights, no bias, a
	// residual of the output's shape and one of a value a plane.
	add("Conv2D/im2col_3x3_s2_p1_2x12x16x16_to10_f16", conv(gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, true), inp(2, 12, 16, 16), typed(gpu.F16, 10, 12, 3, 3), typed(gpu.F16, 10))
	add("Conv2D/im2col_4x4_s2_p1_1x8x9x10_to6_nobias", conv(gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, false), inp(1, 8, 9, 10), inp(6, 8, 4, 4))
	add("Conv2D/im2col_res_3x3_s2x1_p1_1x4x7x8_to5", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.Conv2D(x[0], x[1], x[2], gpu.Conv2DOpts{StrideH: 2, PadH: 1, PadW: 1, Residual: x[3]})
	}, inp(1, 4, 7, 8), inp(5, 4, 3, 3), inp(5), inp(1, 5, 4, 8))
	add("Conv2D/im2col_plane_3x3_s2_p1_2x4x8x8_to7", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.Conv2D(x[0], x[1], x[2], gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, Residual: x[3]})
	}, inp(2, 4, 8, 8), inp(7, 4, 3, 3), inp(7), inp(2, 7, 1, 1))
	// Short maps stack PY rows per invocation (C4, stride 1 only).
	add("Conv2D/py2_px2_c4_3x3_p1_2x16x3x2_to9", conv(gpu.Conv2DOpts{PadH: 1, PadW: 1}, true), inp(2, 16, 3, 2), inp(9, 16, 3, 3), inp(9))
	add("Conv2D/py4_px2_c4_3x3_p1_1x8x5x2_to17_bf16", conv(gpu.Conv2DOpts{PadH: 1, PadW: 1}, true), inp(1, 8, 5, 2), typed(gpu.BF16, 17, 8, 3, 3), inp(17))
	add("Conv2D/py2_px4_c4_3x3_p0_2x4x6x6_to8_f16", conv(gpu.Conv2DOpts{}, true), inp(2, 4, 6, 6), typed(gpu.F16, 8, 4, 3, 3), typed(gpu.F16, 8))
	add("Conv2D/py4_px1_c4_3x3_p1_1x12x7x1_to5", conv(gpu.Conv2DOpts{PadH: 1, PadW: 1}, false), inp(1, 12, 7, 1), inp(5, 12, 3, 3))
	add("Conv2D/py2_px4_c4_1x1_2x8x2x3_to11", conv(gpu.Conv2DOpts{}, true), inp(2, 8, 2, 3), inp(11, 8, 1, 1), inp(11))
	add("Conv2D/py2_px2_c4_2x3_p1_1x4x3x2_to3_s1x2", conv(gpu.Conv2DOpts{PadH: 1, PadW: 1, StrideW: 2}, false), inp(1, 4, 3, 3), inp(3, 4, 2, 3))
	// Tiles of at most 4 pixels fold two samples into one invocation (NT 2),
	// an odd batch leaves the last one alone.
	add("Conv2D/nt2_odd_batch_c4_3x3_p1_3x8x2x2_to9_f16", conv(gpu.Conv2DOpts{PadH: 1, PadW: 1}, true), inp(3, 8, 2, 2), typed(gpu.F16, 9, 8, 3, 3), inp(9))
	add("Conv2D/nt2_s2_c4_3x3_p1_5x4x4x3_to10", conv(gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, true), inp(5, 4, 4, 3), inp(10, 4, 3, 3), inp(10))
	add("Conv2D/nt2_1x1_c4_2x12x1x3_to7_bf16", conv(gpu.Conv2DOpts{}, false), inp(2, 12, 1, 3), typed(gpu.BF16, 7, 12, 1, 1))
	add("Conv2D/9x9_p4_1x2x12x12_to3", conv(gpu.Conv2DOpts{PadH: 4, PadW: 4}, false), inp(1, 2, 12, 12), inp(3, 2, 9, 9))

	attn := func(h int, causal bool) func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			return d.Attention(x[0], x[1], x[2], gpu.AttentionOpts{Heads: h, Causal: causal})
		}
	}
	add("Attention/l333_h2_d40", attn(2, false), inp(2, 333, 80), inp(2, 333, 80), inp(2, 333, 80))
	add("Attention/l333_h2_d40_causal", attn(2, true), inp(1, 333, 80), inp(1, 333, 80), inp(1, 333, 80))
	add("Attention/lq301_lk77_h3_d24_dv8", attn(3, false), inp(2, 301, 72), inp(2, 77, 72), inp(2, 77, 24))
	add("Attention/lq7_lk301_h1_d80_causal", attn(1, true), inp(1, 7, 80), inp(1, 301, 80), inp(1, 301, 80))
	add("Attention/vae_l130_h1_d200", attn(1, false), inp(1, 130, 200), inp(1, 130, 200), inp(1, 130, 200))
	add("Attention/vae_l70_h1_d512", attn(1, false), inp(1, 70, 512), inp(1, 70, 512), inp(1, 70, 512))

	add("Scale/2d_grid_5M", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Scale(x[0], -1.5, 0.25) }, inp(5, 1000, 1001))
	add("Add/bias_nchw_2x7x33x35_7x1x1", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Add(x[0], x[1]) }, inp(2, 7, 33, 35), inp(7, 1, 1))
	add("Mul/f16_operand", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Mul(x[0], x[1]) }, inp(3, 5, 9), typed(gpu.F16, 5, 1))
	add("GroupNorm/bf16_2x64x9x11_g32", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.GroupNorm(x[0], x[1], x[2], 32, 1e-6)
	}, inp(2, 64, 9, 11), typed(gpu.BF16, 64), typed(gpu.BF16, 64))
	// Rows longer than serialRow take the work-group-per-row variant.
	add("GroupNorm/wide_groups_1x8x33x35_g2", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.GroupNorm(x[0], x[1], x[2], 2, 1e-5)
	}, inp(1, 8, 33, 35), inp(8), typed(gpu.F16, 8))
	// Rows of at least splitNormRow with S % 4 == 0 take the three-kernel
	// split (chunks of normChunk, the last one partial); S % 4 != 0 does not.
	offset := func(shape ...int) gputest.Input { return gputest.Input{Shape: shape, Scale: 2, Offset: 5} }
	add("GroupNorm/split_2x6x96x100_g3_f16", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.GroupNorm(x[0], x[1], x[2], 3, 1e-6)
	}, offset(2, 6, 96, 100), typed(gpu.F16, 6), typed(gpu.F16, 6))
	add("GroupNormSiLU/split_1x4x128x130_g1_noaffine", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.GroupNormSiLU(x[0], nil, nil, 1, 1e-5)
	}, offset(1, 4, 128, 130))
	add("GroupNormSiLU/split_1x8x64x64_g2_bf16", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.GroupNormSiLU(x[0], x[1], x[2], 2, 1e-5)
	}, offset(1, 8, 64, 64), typed(gpu.BF16, 8), inp(8))
	add("GroupNormSiLU/odd_spatial_1x4x127x131_g1", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.GroupNormSiLU(x[0], x[1], x[2], 1, 1e-5)
	}, offset(1, 4, 127, 131), inp(4), inp(4))
	add("Upsample2x/3x5x33x35", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Upsample2x(x[0]) }, inp(3, 5, 33, 35))
	add("LayerNorm/long_rows_3x1500", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.LayerNorm(x[0], x[1], x[2], 1e-5)
	}, inp(3, 1500), inp(1500), inp(1500))
	add("LayerNorm/serial_odd_rows_37x3", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.LayerNorm(x[0], nil, x[1], 1e-5)
	}, inp(37, 3), typed(gpu.F16, 3))
	add("LayerNorm/gamma_only_bf16", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.LayerNorm(x[0], x[1], nil, 1e-5)
	}, inp(3, 7, 257), typed(gpu.BF16, 257))
	add("Softmax/rows_1000x77", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Softmax(x[0]) }, inp(1000, 77))
	add("Embedding/bf16_table", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
		return d.Embedding(x[0], []int32{3, 0, 48, 3, 17})
	}, typed(gpu.BF16, 49, 11))
	add("Cast/bf16", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Cast(x[0]) }, typed(gpu.BF16, 3, 37))
	add("Permute/5d_collapse", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Permute(x[0], 0, 3, 1, 2, 4) }, inp(2, 3, 4, 5, 6))
	add("Concat/f16_and_f32_dim2", func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor { return d.Concat(2, x[0], x[1]) }, inp(2, 3, 4, 5), typed(gpu.F16, 2, 3, 7, 5))
	return cs
}

func TestGLCases(t *testing.T) {
	d := shared(t)
	oracle := ref.New()
	defer oracle.Close()
	for _, c := range glCases() {
		t.Run(c.Name, func(t *testing.T) {
			if err := gputest.CheckCase(oracle, d, c, tol); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestVariants runs the kernels that the default choices do not reach: the
// naive matmul (the benchmark baseline; for F32 operands), the scalar tiled
// matmul on the linear layout (MM_STRIDED instead of MM_NT4), conv2d.comp without C4
// where C4 would apply, and attention with loops
// instead of unrolled head dims (used for large head dims).
func TestVariants(t *testing.T) {
	d := fresh(t)
	d.naiveMatMul = true
	d.noVec4 = true
	d.attnUnroll = 0
	oracle := ref.New()
	defer oracle.Close()
	for _, c := range glCases() {
		if !strings.HasPrefix(c.Name, "MatMul/") && !strings.HasPrefix(c.Name, "Attention/") && !strings.HasPrefix(c.Name, "Conv2D/c4") ||
			strings.HasSuffix(c.Name, "d512") { // slow to compile, and D%4 == 0 never takes the scalar path
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			if err := gputest.CheckCase(oracle, d, c, tol); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestRawRoundTrip(t *testing.T) {
	d := shared(t)
	vals := []float32{0, 1, -2.5, 65504, -65504, 6e-8, 0.333}
	for _, dt := range []gpu.DType{gpu.F16, gpu.BF16} {
		var raw []byte
		if dt == gpu.F16 {
			raw = ref.EncodeF16(vals)
		} else {
			raw = ref.EncodeBF16(vals)
		}
		x := d.UploadRaw(dt, raw, len(vals))
		got, err := d.Download(x)
		if err != nil {
			t.Fatal(err)
		}
		cast, err := d.Download(d.Cast(x))
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			want := ref.HalfToFloat(ref.FloatToHalf(v))
			if dt == gpu.BF16 {
				want = ref.BF16ToFloat(ref.FloatToBF16(v))
			}
			if got[i] != want || cast[i] != want {
				t.Errorf("%v value %v: Download %v, Cast %v, want %v", dt, v, got[i], cast[i], want)
			}
		}
		d.Release(x)
	}
}

func TestShaderCompileError(t *testing.T) {
	d := fresh(t)
	x := d.Upload([]float32{1, 2}, 2)
	out := d.out(gpu.Shape{2})
	// unary.comp without an OP_ define stops at its #error.
	d.run("Broken", &launch{
		kernel: kernel{file: "unary.comp", defines: []string{"LX=64", loader("X", x)}},
		ins:    []input{in(x)}, out: out, ints: map[string]int{"n": 2}, groups: [3]int{1, 1, 1},
	})
	err := d.Finish()
	if err == nil {
		t.Fatal("no error for a shader that cannot compile")
	}
	for _, want := range []string{"unary.comp", "LX=64", "X_LOADER=LOADER_F32", "needs an OP_ define"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, derr := d.Download(out); derr != err {
		t.Errorf("Download returned %v, want the sticky error", derr)
	}
}

func TestOutOfMemory(t *testing.T) {
	d := fresh(t)
	huge := d.alloc(gpu.Shape{1 << 30, 2}, gpu.F32, nil) // 8 GiB
	err := d.Finish()
	if err == nil {
		d.Release(huge)
		t.Skip("this driver allocated an 8 GiB buffer; cannot provoke an out-of-memory error here")
	}
	var oom *gpu.OOMError
	if !errors.As(err, &oom) || oom.Bytes < 8<<30 {
		t.Fatalf("error %v (%T), want *gpu.OOMError for >= 8 GiB", err, err)
	}
	if y := d.SiLU(huge); y == nil {
		t.Error("op after OOM returned nil")
	}
	d.Release(huge)
}

func TestBigOutputFails(t *testing.T) {
	d := fresh(t)
	d.maxBlock = 1024 // pretend storage blocks hold 256 floats
	x := d.Upload(make([]float32, 5*256+1), 5*256+1)
	d.SiLU(x)
	if err := d.Err(); err == nil || !strings.Contains(err.Error(), "storage blocks") {
		t.Fatalf("output beyond five storage blocks: error %v", err)
	}
}

// TestOutputWindows runs the op suite on a device that pretends a storage
// block holds 1024 floats, so every output between 1024 and 5120 floats is
// written through two to five windows (OUT_WINDOWS); bigger ones must fail
// with a clear error and are counted.
func TestOutputWindows(t *testing.T) {
	oracle := ref.New()
	defer oracle.Close()
	newDev := func() *Device {
		d := fresh(t)
		d.maxBlock = 4096
		return d
	}
	d := newDev()
	windowed, tooBig := 0, 0
	for _, c := range append(gputest.Cases(), glCases()...) {
		res, err := gputest.Exec(d, c)
		if err != nil {
			if !strings.Contains(err.Error(), "storage blocks") {
				t.Errorf("%s: %v", c.Name, err)
			}
			tooBig++
			d = newDev()
			continue
		}
		if n := res.Shape.Numel(); n > 1024 {
			windowed++
			if err := gputest.CheckCase(oracle, d, c, tol); err != nil {
				t.Errorf("%s (%d floats): %v", c.Name, n, err)
			}
		}
	}
	t.Logf("%d cases wrote through windows, %d were too big", windowed, tooBig)
	if windowed < 15 {
		t.Errorf("only %d cases used windows", windowed)
	}
}

func TestClosed(t *testing.T) {
	d := fresh(t)
	x := d.Upload([]float32{1, 2, 3}, 3)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if y := d.SiLU(x); y == nil || !errors.Is(d.Err(), gpu.ErrClosed) {
		t.Errorf("op on a closed device: %v, error %v", y, d.Err())
	}
	if _, err := d.Download(x); !errors.Is(err, gpu.ErrClosed) {
		t.Errorf("Download on a closed device: %v", err)
	}
	if s := d.Stats(); s.Buffers != 0 || s.Resident != 0 {
		t.Errorf("after Close: %+v", s)
	}
}

func TestPoolReuse(t *testing.T) {
	d := fresh(t)
	x := d.Upload(make([]float32, 1000), 1000)
	d.Release(x)
	y := d.Upload([]float32{7, 8, 9}, 3)
	z := d.Scale(d.Upload(make([]float32, 999), 999), 1, 5) // same size class as x
	got, err := d.Download(z)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v != 5 {
			t.Fatalf("element %d of a result in a reused buffer = %v, want 5", i, v)
		}
	}
	if v, _ := d.Download(y); v[2] != 9 {
		t.Errorf("small upload reads %v", v)
	}
	if d.pooled != 0 {
		// Finish made the GL thread process the release and the reuse.
		t.Logf("pool holds %d bytes", d.pooled)
	}
}

func TestSizeClass(t *testing.T) {
	for _, c := range []struct{ n, want int64 }{{0, 272}, {1, 272}, {16, 272}, {255, 272}, {256, 272}, {257, 320}, {1000, 1040},
		{1025, 1280}, {3 << 20, 3<<20 + 256}, {(3 << 20) + 1, 7<<19 + 256}, {1 << 30, 1<<30 + 16 + 256}, {5 << 12, 5 << 12}} {
		assert.Equal(t, c.want, sizeClass(c.n), "sizeClass(%d)", c.n)
	}
	for n := int64(1); n < 1<<32; n = n*5/4 + 1 {
		got := sizeClass(n)
		assert.True(t, got >= n && got%16 == 0 && got&(got-1) != 0 && got <= n+n/4+272 && (got>>8)&0xff != 0,
			"sizeClass(%d) = %d: want a 16-byte multiple covering it, not a power of two, with a bit among bits 8-15, at most 25%% (or 272 bytes) more", n, got)
	}
}

func TestCollapse(t *testing.T) {
	// [2,3,4,5] + [3,1,1] broadcast: b's strides (0,1,0,0) -> dims [2,3,20].
	out := gpu.Shape{2, 3, 4, 5}
	dims, st := collapse(out, broadcastStrides(out, out), broadcastStrides(gpu.Shape{3, 1, 1}, out))
	if len(dims) != 3 || dims[0] != 2 || dims[1] != 3 || dims[2] != 20 {
		t.Fatalf("dims %v", dims)
	}
	if st[0][0] != 60 || st[0][1] != 20 || st[0][2] != 1 || st[1][0] != 0 || st[1][1] != 1 || st[1][2] != 0 {
		t.Errorf("strides %v", st)
	}
}

// TestWorkGroupLimit: on a device whose work groups are smaller than a
// kernel's (the specification allows 1024 invocations; llvmpipe has more), the
// op fails with the limit named instead of dispatching a program the driver
// would refuse.
func TestWorkGroupLimit(t *testing.T) {
	d := fresh(t)
	require.Positive(t, d.maxInvoc, "the device reports its invocation limit")
	require.Positive(t, d.maxLocal[0], "the device reports its local size limit")
	d.maxLocal[0] = elemLX / 2 // read by the GL thread only after the first op below
	x := d.Upload([]float32{1, -2, 3}, 3)
	_, err := d.Download(d.Scale(x, 2, 1))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "work group size 256 along x exceeds this device's limit 128")
	assert.Contains(t, err.Error(), "unary.comp")
}
