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

// benchOp times f and reports its arithmetic rate: GFLOP/s by the wall
// clock, and GFLOP/cpu-s by the process's CPU time, which stays comparable
// on a machine shared with other work (where it is reported).
func benchOp(b *testing.B, d *Device, flops float64, f func() *gpu.Tensor) {
	b.Helper()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		d.Release(f())
	}
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if err := d.Err(); err != nil {
		b.Fatal(err)
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(flops/sec/1e9, "GFLOP/s")
	if cpu > 0 {
		b.ReportMetric(flops*float64(b.N)/cpu.Seconds()/1e9, "GFLOP/cpu-s")
	}
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

func benchConv(b *testing.B, c, o, hw int, direct bool) {
	d := New()
	d.directConv = direct
	x := d.Upload(randVals(3, c*hw*hw), 1, c, hw, hw)
	w := d.Upload(randVals(4, o*c*9), o, c, 3, 3)
	bias := d.Upload(randVals(5, o), o)
	flops := 2 * float64(o) * float64(c) * 9 * float64(hw*hw)
	benchOp(b, d, flops, func() *gpu.Tensor {
		return d.Conv2D(x, w, bias, gpu.Conv2DOpts{PadH: 1, PadW: 1})
	})
}

func BenchmarkConv3x3_320x64(b *testing.B) { benchConv(b, 320, 320, 64, false) }

func BenchmarkConv3x3_64x32(b *testing.B) { benchConv(b, 64, 64, 32, false) }

// The general (any-stride) loop, for comparison with the stride-1 path, at
// a VAE-like size and at the U-Net's small latent sizes.
func BenchmarkConv3x3_64x32Direct(b *testing.B) { benchConv(b, 64, 64, 32, true) }

func BenchmarkConv3x3_128x8(b *testing.B) { benchConv(b, 128, 128, 8, false) }

func BenchmarkConv3x3_128x8Direct(b *testing.B) { benchConv(b, 128, 128, 8, true) }

func BenchmarkAttention4096(b *testing.B) { benchAttention(b, 4096) }

func BenchmarkAttention1024(b *testing.B) { benchAttention(b, 1024) }

// benchAttention times self-attention over L tokens with SD 1.5's first
// level's 8 heads of 40.
func benchAttention(b *testing.B, L int) {
	const H, D = 8, 40
	d := New()
	q := d.Upload(randVals(6, L*H*D), 1, L, H*D)
	k := d.Upload(randVals(7, L*H*D), 1, L, H*D)
	v := d.Upload(randVals(8, L*H*D), 1, L, H*D)
	flops := 4 * float64(L) * float64(L) * float64(H*D) // QK^T and PV
	benchOp(b, d, flops, func() *gpu.Tensor {
		return d.Attention(q, k, v, gpu.AttentionOpts{Heads: H})
	})
}
