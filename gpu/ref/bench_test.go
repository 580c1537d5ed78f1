package ref

import (
	"testing"

	"github.com/stepwise/stepwise/gpu"
)

// Benchmarks of the heavy ops at Stable Diffusion 1.5 sizes. Each reports
// GFLOP/s (a multiply-add counts as two operations). They are slow on a
// small machine; run them one at a time, e.g.
//
//	go test ./gpu/ref -run '^$' -bench Conv3x3_64 -benchtime=1x

// benchOp times f and reports its arithmetic rate.
func benchOp(b *testing.B, d *Device, flops float64, f func() *gpu.Tensor) {
	b.Helper()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d.Release(f())
	}
	b.StopTimer()
	if err := d.Err(); err != nil {
		b.Fatal(err)
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(flops/sec/1e9, "GFLOP/s")
}

func BenchmarkMatMul1024(b *testing.B) {
	const n = 1024
	d := New()
	x, y := d.Upload(randVals(1, n*n), n, n), d.Upload(randVals(2, n*n), n, n)
	benchOp(b, d, 2*n*n*n, func() *gpu.Tensor { return d.MatMul(x, y, gpu.MatMulOpts{}) })
}

// BenchmarkLinear1024 is MatMul with TransB (nn.Linear's layout).
func BenchmarkLinear1024(b *testing.B) {
	const n = 1024
	d := New()
	x, w := d.Upload(randVals(1, n*n), n, n), d.Upload(randVals(2, n*n), n, n)
	benchOp(b, d, 2*n*n*n, func() *gpu.Tensor { return d.MatMul(x, w, gpu.MatMulOpts{TransB: true}) })
}

func benchConv(b *testing.B, c, o, hw int) {
	d := New()
	x := d.Upload(randVals(3, c*hw*hw), 1, c, hw, hw)
	w := d.Upload(randVals(4, o*c*9), o, c, 3, 3)
	bias := d.Upload(randVals(5, o), o)
	flops := 2 * float64(o) * float64(c) * 9 * float64(hw*hw)
	benchOp(b, d, flops, func() *gpu.Tensor {
		return d.Conv2D(x, w, bias, gpu.Conv2DOpts{PadH: 1, PadW: 1})
	})
}

func BenchmarkConv3x3_320x64(b *testing.B) { benchConv(b, 320, 320, 64) }

func BenchmarkConv3x3_64x32(b *testing.B) { benchConv(b, 64, 64, 32) }

func BenchmarkAttention4096(b *testing.B) {
	const L, H, D = 4096, 8, 40
	d := New()
	q := d.Upload(randVals(6, L*H*D), 1, L, H*D)
	k := d.Upload(randVals(7, L*H*D), 1, L, H*D)
	v := d.Upload(randVals(8, L*H*D), 1, L, H*D)
	flops := 4 * float64(L) * float64(L) * float64(H*D) // QK^T and PV
	benchOp(b, d, flops, func() *gpu.Tensor {
		return d.Attention(q, k, v, gpu.AttentionOpts{Heads: H})
	})
}

// BenchmarkConv3x3_64x32Direct is BenchmarkConv3x3_64x32 on the general
// (any-stride) loop, for comparison with the stride-1 path.
func BenchmarkConv3x3_64x32Direct(b *testing.B) {
	d := New()
	d.directConv = true
	x := d.Upload(randVals(3, 64*32*32), 1, 64, 32, 32)
	w := d.Upload(randVals(4, 64*64*9), 64, 64, 3, 3)
	benchOp(b, d, 2*64*64*9*32*32, func() *gpu.Tensor {
		return d.Conv2D(x, w, nil, gpu.Conv2DOpts{PadH: 1, PadW: 1})
	})
}

func BenchmarkAttention1024(b *testing.B) {
	const L, H, D = 1024, 8, 40
	d := New()
	q := d.Upload(randVals(6, L*H*D), 1, L, H*D)
	k := d.Upload(randVals(7, L*H*D), 1, L, H*D)
	v := d.Upload(randVals(8, L*H*D), 1, L, H*D)
	benchOp(b, d, 4*float64(L)*float64(L)*float64(H*D), func() *gpu.Tensor {
		return d.Attention(q, k, v, gpu.AttentionOpts{Heads: H})
	})
}
