package gl

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
)

func randn(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// benchOp times op (one call per iteration, waited for with Finish) and
// reports GFLOP/s given the op's flop count.
func benchOp(b *testing.B, d *Device, flops float64, op func() *gpu.Tensor) {
	b.Helper()
	d.Release(op()) // compile and warm up outside the timing
	require.NoError(b, d.Finish())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d.Release(op())
		require.NoError(b, d.Finish())
	}
	b.StopTimer()
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// benchMatMul times a 1024^3 MatMul: A·B (transB false) or A·B^T (a
// linear layer's layout, B of type dt).
func benchMatMul(b *testing.B, naive, scalar, transB bool, dt gpu.DType) {
	d := fresh(b)
	d.naiveMatMul = naive
	d.noVec4 = scalar
	r := rand.New(rand.NewPCG(1, 2))
	const n = 1024
	x := d.Upload(randn(r, n*n), n, n)
	var y *gpu.Tensor
	switch dt {
	case gpu.F16:
		y = d.UploadRaw(gpu.F16, ref.EncodeF16(randn(r, n*n)), n, n)
	default:
		y = d.Upload(randn(r, n*n), n, n)
	}
	benchOp(b, d, 2*n*n*n, func() *gpu.Tensor { return d.MatMul(x, y, gpu.MatMulOpts{TransB: transB}) })
}

// The variants of matmul.comp: Tiled is MM_NN4, TiledScalar MM_STRIDED,
// Naive MM_NAIVE, Linear MM_NT4.
func BenchmarkMatMul1024Tiled(b *testing.B)       { benchMatMul(b, false, false, false, gpu.F32) }
func BenchmarkMatMul1024TiledScalar(b *testing.B) { benchMatMul(b, false, true, false, gpu.F32) }
func BenchmarkMatMul1024Naive(b *testing.B)       { benchMatMul(b, true, false, false, gpu.F32) }
func BenchmarkMatMul1024LinearNT(b *testing.B)    { benchMatMul(b, false, false, true, gpu.F32) }
func BenchmarkMatMul1024LinearF16(b *testing.B)   { benchMatMul(b, false, false, true, gpu.F16) }

func benchConv(b *testing.B, c, hw int, scalar bool) {
	d := fresh(b)
	d.noVec4 = scalar
	r := rand.New(rand.NewPCG(3, 4))
	x := d.Upload(randn(r, c*hw*hw), 1, c, hw, hw)
	w := d.Upload(randn(r, c*c*9), c, c, 3, 3)
	bias := d.Upload(randn(r, c), c)
	flops := 2 * float64(c*c*9) * float64(hw*hw)
	benchOp(b, d, flops, func() *gpu.Tensor {
		return d.Conv2D(x, w, bias, gpu.Conv2DOpts{PadH: 1, PadW: 1})
	})
}

// benchConvAlgo times a batch-1 3x3 conv with F16 weights (the VAE's
// case) by the given algorithm.
func benchConvAlgo(b *testing.B, c, hw, algo int) { benchConvN(b, 1, c, hw, algo) }

// benchConvN is benchConvAlgo for n samples (2: the U-Net's CFG batch).
func benchConvN(b *testing.B, n, c, hw, algo int) {
	d := fresh(b)
	d.convAlgo = algo
	r := rand.New(rand.NewPCG(3, 4))
	x := d.Upload(randn(r, n*c*hw*hw), n, c, hw, hw)
	w := d.UploadRaw(gpu.F16, ref.EncodeF16(randn(r, c*c*9)), c, c, 3, 3)
	bias := d.UploadRaw(gpu.F16, ref.EncodeF16(randn(r, c)), c)
	flops := 2 * float64(c*c*9) * float64(n*hw*hw)
	benchOp(b, d, flops, func() *gpu.Tensor {
		return d.Conv2D(x, w, bias, gpu.Conv2DOpts{PadH: 1, PadW: 1})
	})
}

// The U-Net's CFG batch of two at SD 1.5's inner levels (512x512 image).
func BenchmarkConvDirect_N2_640_32x32(b *testing.B)    { benchConvN(b, 2, 640, 32, convDirect) }
func BenchmarkConvWinograd_N2_640_32x32(b *testing.B)  { benchConvN(b, 2, 640, 32, convWinograd) }
func BenchmarkConvDirect_N2_1280_16x16(b *testing.B)   { benchConvN(b, 2, 1280, 16, convDirect) }
func BenchmarkConvWinograd_N2_1280_16x16(b *testing.B) { benchConvN(b, 2, 1280, 16, convWinograd) }
func BenchmarkConvDirect_N2_1280_8x8(b *testing.B)     { benchConvN(b, 2, 1280, 8, convDirect) }
func BenchmarkConvWinograd_N2_1280_8x8(b *testing.B)   { benchConvN(b, 2, 1280, 8, convWinograd) }

// Direct-form GFLOP/s (2*C*O*9 per output pixel) for both algorithms.
func BenchmarkConvDirect_512_32x32(b *testing.B)     { benchConvAlgo(b, 512, 32, convDirect) }
func BenchmarkConvWinograd_512_32x32(b *testing.B)   { benchConvAlgo(b, 512, 32, convWinograd) }
func BenchmarkConvDirect_512_16x16(b *testing.B)     { benchConvAlgo(b, 512, 16, convDirect) }
func BenchmarkConvWinograd_512_16x16(b *testing.B)   { benchConvAlgo(b, 512, 16, convWinograd) }
func BenchmarkConvDirect_256_64x64(b *testing.B)     { benchConvAlgo(b, 256, 64, convDirect) }
func BenchmarkConvWinograd_256_64x64(b *testing.B)   { benchConvAlgo(b, 256, 64, convWinograd) }
func BenchmarkConvDirect_128_128x128(b *testing.B)   { benchConvAlgo(b, 128, 128, convDirect) }
func BenchmarkConvWinograd_128_128x128(b *testing.B) { benchConvAlgo(b, 128, 128, convWinograd) }
func BenchmarkConvDirect_320_64x64(b *testing.B)     { benchConvAlgo(b, 320, 64, convDirect) }
func BenchmarkConvWinograd_320_64x64(b *testing.B)   { benchConvAlgo(b, 320, 64, convWinograd) }

func BenchmarkConv3x3_320_64x64(b *testing.B)       { benchConv(b, 320, 64, false) }
func BenchmarkConv3x3_64_32x32(b *testing.B)        { benchConv(b, 64, 32, false) }
func BenchmarkConv3x3_320_64x64Scalar(b *testing.B) { benchConv(b, 320, 64, true) }
func BenchmarkConv3x3_64_32x32Scalar(b *testing.B)  { benchConv(b, 64, 32, true) }

func BenchmarkAttention4096x8x40(b *testing.B)      { benchAttention(b, 64) }
func BenchmarkAttention4096x8x40Loops(b *testing.B) { benchAttention(b, 0) }

// BenchmarkAttentionVAE1024x512 is the VAE's single-head attention (head dim
// 512, the loop variant) at 1024 tokens (a 256x256 image).
func BenchmarkAttentionVAE1024x512(b *testing.B) { benchAttentionShape(b, 64, 1024, 1, 512) }

func benchAttention(b *testing.B, unroll int) { benchAttentionShape(b, unroll, 4096, 8, 40) }

func benchAttentionShape(b *testing.B, unroll, l, h, dh int) {
	d := fresh(b)
	d.attnUnroll = unroll
	r := rand.New(rand.NewPCG(5, 6))
	q := d.Upload(randn(r, l*h*dh), 1, l, h*dh)
	k := d.Upload(randn(r, l*h*dh), 1, l, h*dh)
	v := d.Upload(randn(r, l*h*dh), 1, l, h*dh)
	flops := 4 * float64(l) * float64(l) * float64(h*dh)
	benchOp(b, d, flops, func() *gpu.Tensor { return d.Attention(q, k, v, gpu.AttentionOpts{Heads: h}) })
}

// BenchmarkTinyOps times a chain of 100 Scale ops on 4096 elements, the
// per-dispatch cost that dominates small models (reported per op).
func BenchmarkTinyOps(b *testing.B) {
	d := fresh(b)
	x := d.Upload(make([]float32, 4096), 4096)
	run := func() {
		y := x
		for i := 0; i < 100; i++ {
			z := d.Scale(y, 1, 1)
			if y != x {
				d.Release(y)
			}
			y = z
		}
		d.Release(y)
		require.NoError(b, d.Finish())
	}
	run()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		run()
	}
	b.StopTimer()
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N*100)*1e6, "us/op")
}

// benchLinear times a linear layer x [m, k] · w^T with F16 weights stored as
// PyTorch does ([n, k], matmul.comp's MM_NT4) or transposed ([k, n],
// MM_NN4).
func benchLinear(b *testing.B, m, k, n int, transposed bool) {
	d := fresh(b)
	r := rand.New(rand.NewPCG(7, 8))
	x := d.Upload(randn(r, m*k), m, k)
	if transposed {
		w := d.UploadRaw(gpu.F16, ref.EncodeF16(randn(r, k*n)), k, n)
		benchOp(b, d, 2*float64(m)*float64(k)*float64(n), func() *gpu.Tensor { return d.MatMul(x, w, gpu.MatMulOpts{}) })
		return
	}
	w := d.UploadRaw(gpu.F16, ref.EncodeF16(randn(r, k*n)), n, k)
	benchOp(b, d, 2*float64(m)*float64(k)*float64(n), func() *gpu.Tensor { return d.MatMul(x, w, gpu.MatMulOpts{TransB: true}) })
}

// The U-Net's feed-forward input projection at 512x512 (CFG batch of two:
// 8192 tokens, 320 -> 2560).
func BenchmarkLinearFF_NT(b *testing.B) { benchLinear(b, 8192, 320, 2560, false) }
func BenchmarkLinearFF_NN(b *testing.B) { benchLinear(b, 8192, 320, 2560, true) }

// CLIP ViT-L's layers on two prompts (2 x 77 rows), and U-Net projections
// at 256x256 (2 x 32 x 32 rows) for comparison.
func BenchmarkLinearText_154x768x768F16(b *testing.B)   { benchLinear(b, 154, 768, 768, false) }
func BenchmarkLinearText_154x3072x768F16(b *testing.B)  { benchLinear(b, 154, 3072, 768, false) }
func BenchmarkLinearUNet_2048x320x2560F16(b *testing.B) { benchLinear(b, 2048, 320, 2560, false) }

// benchDownsample times a U-Net downsampler (3x3, stride 2, padding 1, F16
// weights, CFG batch of two) from an hw x hw map: conv2d.comp (direct) or
// im2col.comp's columns times the weights (convAuto picks it).
func benchDownsample(b *testing.B, c, hw, algo int) {
	d := fresh(b)
	d.convAlgo = algo
	r := rand.New(rand.NewPCG(3, 4))
	x := d.Upload(randn(r, 2*c*hw*hw), 2, c, hw, hw)
	w := d.UploadRaw(gpu.F16, ref.EncodeF16(randn(r, c*c*9)), c, c, 3, 3)
	bias := d.UploadRaw(gpu.F16, ref.EncodeF16(randn(r, c)), c)
	flops := 2 * float64(c*c*9) * float64(2*hw*hw/4)
	benchOp(b, d, flops, func() *gpu.Tensor {
		return d.Conv2D(x, w, bias, gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1})
	})
}

// SD 1.5's three downsamplers at 512x512 (64, 32 and 16 latent pixels).
func BenchmarkDownsampleDirect_320_64(b *testing.B)  { benchDownsample(b, 320, 64, convDirect) }
func BenchmarkDownsampleIm2col_320_64(b *testing.B)  { benchDownsample(b, 320, 64, convAuto) }
func BenchmarkDownsampleDirect_640_32(b *testing.B)  { benchDownsample(b, 640, 32, convDirect) }
func BenchmarkDownsampleIm2col_640_32(b *testing.B)  { benchDownsample(b, 640, 32, convAuto) }
func BenchmarkDownsampleDirect_1280_16(b *testing.B) { benchDownsample(b, 1280, 16, convDirect) }
func BenchmarkDownsampleIm2col_1280_16(b *testing.B) { benchDownsample(b, 1280, 16, convAuto) }
