package gl

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
)

var quantTypes = []gpu.DType{gpu.Q8_0, gpu.Q4_0, gpu.Q4_K, gpu.Q5_K, gpu.F8E4M3, gpu.F8E5M2}

// Each quantized weight type through matmul.comp (MM_QBLOCK for the block
// formats, MM_NT4's vector loaders for fp8) against gpu/ref (which dequantizes to F32 and multiplies) on shapes whose M and
// N straddle the 8x8 tiles, batched A, with a bias or a residual, and a
// block count per row that makes Q8_0/Q4_0 rows start at odd byte offsets.
func TestMatMulQuantized(t *testing.T) {
	g := shared(t)
	r := ref.New()
	rnd := rand.New(rand.NewPCG(5, 6))
	for _, dt := range quantTypes {
		for _, c := range []struct {
			batch, m, n, k int
			bias           bool
		}{{1, 13, 37, 256, true}, {2, 9, 21, 768, false}, {1, 1, 3, 512, true}, {1, 515, 250, 64, false}} { // the last: 16-row blocks
			if c.k%dt.Block() != 0 {
				continue
			}
			a := randn(rnd, c.batch*c.m*c.k)
			w := randn(rnd, c.n*c.k)
			bias := randn(rnd, c.n)
			res := randn(rnd, c.batch*c.m*c.n)
			raw, err := ref.Quantize(dt, w)
			require.NoError(t, err)
			run := func(d gpu.Device) []float32 {
				o := gpu.MatMulOpts{TransB: true, Alpha: 0.5}
				if c.bias {
					o.Bias = d.Upload(bias, c.n)
				} else {
					o.Residual = d.Upload(res, c.batch, c.m, c.n)
				}
				out := d.MatMul(d.Upload(a, c.batch, c.m, c.k), d.UploadRaw(dt, raw, c.n, c.k), o)
				v, err := d.Download(out)
				require.NoError(t, err, "%v %+v", dt, c)
				return v
			}
			got, want := run(g), run(r)
			worst := 0.0
			for i := range want {
				worst = math.Max(worst, math.Abs(float64(got[i]-want[i]))/(1+math.Abs(float64(want[i]))))
			}
			t.Logf("%v %dx%dx%d (batch %d): worst relative difference %.2g", dt, c.m, c.n, c.k, c.batch, worst)
			assert.LessOrEqual(t, worst, tol, "%v %+v", dt, c)
		}
	}
}

// Quantized weights outside a linear layer are refused by name; a row
// whose length is not whole blocks cannot be uploaded.
func TestQuantizedRefused(t *testing.T) {
	d := fresh(t)
	raw, err := ref.Quantize(gpu.Q8_0, make([]float32, 64))
	require.NoError(t, err)
	w := d.UploadRaw(gpu.Q8_0, raw, 2, 32)
	x := d.Upload(make([]float32, 6), 3, 2)
	d.MatMul(x, w, gpu.MatMulOpts{}) // shapes fit, but B is not a linear weight
	assert.ErrorContains(t, d.Err(), "a quantized weight must be a 2-D [N, K] linear weight used with TransB")

	d2 := fresh(t)
	d2.Softmax(d2.UploadRaw(gpu.Q8_0, raw, 2, 32))
	assert.ErrorContains(t, d2.Err(), "Softmax: operand 0 is Q8_0: quantized weights only feed MatMul")

	d3 := fresh(t)
	d3.UploadRaw(gpu.Q4_0, raw[:34], 2, 16)
	assert.ErrorContains(t, d3.Err(), "Q4_0 blocks hold 32")

	d4 := fresh(t)
	q := d4.UploadRaw(gpu.Q8_0, raw, 1, 64)
	got, err := d4.Download(q)
	require.NoError(t, err)
	assert.Len(t, got, 64)
}

// benchLinearAs times an [m, k] x [n, k]^T linear layer whose weight is of
// type dt (F16 or a quantized type).
func benchLinearAs(b *testing.B, dt gpu.DType, m, k, n int) {
	d := fresh(b)
	r := rand.New(rand.NewPCG(1, 2))
	x := d.Upload(randn(r, m*k), m, k)
	raw := ref.EncodeF16(randn(r, n*k))
	if dt != gpu.F16 {
		var err error
		raw, err = ref.Quantize(dt, randn(r, n*k))
		require.NoError(b, err)
	}
	y := d.UploadRaw(dt, raw, n, k)
	benchOp(b, d, 2*float64(m)*float64(k)*float64(n), func() *gpu.Tensor { return d.MatMul(x, y, gpu.MatMulOpts{TransB: true}) })
}

// BenchmarkMatMulQ* time a 1024x1024x1024 linear layer with a quantized
// weight (compare BenchmarkMatMul1024Linear*, F32 and F16 weights).
func benchQuant(b *testing.B, dt gpu.DType) { benchLinearAs(b, dt, 1024, 1024, 1024) }

func BenchmarkMatMulQ8_0(b *testing.B)   { benchQuant(b, gpu.Q8_0) }
func BenchmarkMatMulQ4_0(b *testing.B)   { benchQuant(b, gpu.Q4_0) }
func BenchmarkMatMulQ4_K(b *testing.B)   { benchQuant(b, gpu.Q4_K) }
func BenchmarkMatMulQ5_K(b *testing.B)   { benchQuant(b, gpu.Q5_K) }
func BenchmarkMatMulF8E4M3(b *testing.B) { benchQuant(b, gpu.F8E4M3) }

// BenchmarkFluxQKV* time one of Flux's linear layers at 512x512 in each
// weight format: the 1536 tokens (1024 image + 512 T5) of a step through a
// 3072 -> 9216 projection (a double block's qkv), 87 GFLOP a call. The
// linear layers are ~92% of a Flux step's FLOPs, so a step's seconds per
// format follow from these rates (README, "Quantized weights").
func benchFluxQKV(b *testing.B, dt gpu.DType) { benchLinearAs(b, dt, 1536, 3072, 9216) }

func BenchmarkFluxQKVF16(b *testing.B)    { benchFluxQKV(b, gpu.F16) }
func BenchmarkFluxQKVQ8_0(b *testing.B)   { benchFluxQKV(b, gpu.Q8_0) }
func BenchmarkFluxQKVQ4_0(b *testing.B)   { benchFluxQKV(b, gpu.Q4_0) }
func BenchmarkFluxQKVQ4_K(b *testing.B)   { benchFluxQKV(b, gpu.Q4_K) }
func BenchmarkFluxQKVQ5_K(b *testing.B)   { benchFluxQKV(b, gpu.Q5_K) }
func BenchmarkFluxQKVF8E4M3(b *testing.B) { benchFluxQKV(b, gpu.F8E4M3) }
