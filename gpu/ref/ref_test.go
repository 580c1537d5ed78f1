package ref

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stepwise/stepwise/gpu"
)

// --- helpers -------------------------------------------------------------

func randVals(seed uint64, n int) []float32 {
	r := rand.New(rand.NewPCG(seed, 7))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func down(t *testing.T, d *Device, x *gpu.Tensor) []float32 {
	t.Helper()
	v, err := d.Download(x)
	if err != nil {
		t.Fatalf("download %v: %v", x, err)
	}
	return v
}

// near fails unless |got-want| <= tol*(1+|want|) element-wise.
func near(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if float64(got[i]) == want[i] {
			continue // also equal infinities
		}
		if diff := math.Abs(float64(got[i]) - want[i]); !(diff <= tol*(1+math.Abs(want[i]))) {
			t.Fatalf("%s: element %d = %v, want %v (diff %g)", what, i, got[i], want[i], diff)
		}
	}
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func wantShape(t *testing.T, x *gpu.Tensor, shape ...int) {
	t.Helper()
	if !x.Shape.Equal(shape) {
		t.Fatalf("shape %v, want %v", x.Shape, gpu.Shape(shape))
	}
}

// --- MatMul ----------------------------------------------------------------

func TestMatMulHand(t *testing.T) {
	d := New()
	a := d.Upload([]float32{1, 2, 3, 4, 5, 6}, 2, 3)
	b := d.Upload([]float32{7, 8, 9, 10, 11, 12}, 3, 2)
	bias := d.Upload([]float32{0.5, -1}, 2)
	got := down(t, d, d.MatMul(a, b, gpu.MatMulOpts{Bias: bias, Alpha: 2}))
	// [1 2 3]·[[7 8][9 10][11 12]] = [58 64], [4 5 6]·... = [139 154]
	near(t, "matmul", got, []float64{2*58 + 0.5, 2*64 - 1, 2*139 + 0.5, 2*154 - 1}, 0)
}

// matmul64 is the float64 triple loop on row-major A [M,K], B [K,N].
func matmul64(a, b []float32, M, K, N int) []float64 {
	out := make([]float64, M*N)
	for m := 0; m < M; m++ {
		for n := 0; n < N; n++ {
			var s float64
			for k := 0; k < K; k++ {
				s += float64(a[m*K+k]) * float64(b[k*N+n])
			}
			out[m*N+n] = s
		}
	}
	return out
}

func transpose(v []float32, rows, cols int) []float32 {
	out := make([]float32, len(v))
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			out[c*rows+r] = v[r*cols+c]
		}
	}
	return out
}

func TestMatMulRandom(t *testing.T) {
	const B, M, K, N = 3, 7, 33, 13
	for _, tc := range []struct {
		name           string
		transA, transB bool
		batchB         bool
	}{
		{"plain", false, false, false},
		{"transB", false, true, false},
		{"transA", true, false, false},
		{"both", true, true, true},
		{"batchedB", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := New()
			av := randVals(1, B*M*K)
			nb := 1
			if tc.batchB {
				nb = B
			}
			bv := randVals(2, nb*K*N)
			bias := randVals(3, N)
			// Operands as uploaded (maybe transposed) and the plain [M,K]/[K,N] truth.
			upA := make([]float32, 0, len(av))
			for i := 0; i < B; i++ {
				m := av[i*M*K : (i+1)*M*K]
				if tc.transA {
					m = transpose(m, M, K)
				}
				upA = append(upA, m...)
			}
			upB := make([]float32, 0, len(bv))
			for i := 0; i < nb; i++ {
				m := bv[i*K*N : (i+1)*K*N]
				if tc.transB {
					m = transpose(m, K, N)
				}
				upB = append(upB, m...)
			}
			ash := []int{B, M, K}
			if tc.transA {
				ash = []int{B, K, M}
			}
			bsh := []int{K, N}
			if tc.transB {
				bsh = []int{N, K}
			}
			if tc.batchB {
				bsh = append([]int{B}, bsh...)
			}
			out := d.MatMul(d.Upload(upA, ash...), d.Upload(upB, bsh...), gpu.MatMulOpts{
				TransA: tc.transA, TransB: tc.transB, Bias: d.Upload(bias, N), Alpha: 0.5})
			wantShape(t, out, B, M, N)
			var want []float64
			for i := 0; i < B; i++ {
				bm := bv[:K*N]
				if tc.batchB {
					bm = bv[i*K*N : (i+1)*K*N]
				}
				w := matmul64(av[i*M*K:(i+1)*M*K], bm, M, K, N)
				for j := range w {
					w[j] = 0.5*w[j] + float64(bias[j%N])
				}
				want = append(want, w...)
			}
			near(t, "matmul", down(t, d, out), want, 1e-5)
		})
	}
}

func TestMatMulBroadcastA(t *testing.T) {
	// A with batch 1 is shared by every batch of B.
	d := New()
	av, bv := randVals(4, 5*6), randVals(5, 2*6*3)
	out := d.MatMul(d.Upload(av, 1, 5, 6), d.Upload(bv, 2, 6, 3), gpu.MatMulOpts{})
	wantShape(t, out, 2, 5, 3)
	want := append(matmul64(av, bv[:18], 5, 6, 3), matmul64(av, bv[18:], 5, 6, 3)...)
	near(t, "matmul", down(t, d, out), want, 1e-5)
}

func TestParallelMatchesSerial(t *testing.T) {
	// Big enough to run on several goroutines; results must not depend on
	// how the work is split.
	par, ser := New(), New()
	par.workers, ser.workers = 3, 1
	run := func(d *Device) [][]float32 {
		const M, K, N = 67, 129, 71
		mm := d.MatMul(d.Upload(randVals(6, M*K), M, K), d.Upload(randVals(7, K*N), K, N), gpu.MatMulOpts{})
		cv := d.Conv2D(d.Upload(randVals(8, 2*9*17*15), 2, 9, 17, 15), d.Upload(randVals(9, 11*9*9), 11, 9, 3, 3), nil,
			gpu.Conv2DOpts{PadH: 1, PadW: 1})
		q := d.Upload(randVals(10, 2*70*24), 2, 70, 24)
		at := d.Attention(q, q, q, gpu.AttentionOpts{Heads: 3, Causal: true})
		gn := d.GroupNorm(d.Upload(randVals(11, 2*8*40*40), 2, 8, 40, 40), nil, nil, 4, 1e-5)
		return [][]float32{down(t, d, mm), down(t, d, cv), down(t, d, at), down(t, d, gn)}
	}
	p, s := run(par), run(ser)
	for i := range p {
		near(t, "parallel vs serial", p[i], f64(s[i]), 0)
	}
	near(t, "matmul vs float64", p[0], matmul64(randVals(6, 67*129), randVals(7, 129*71), 67, 129, 71), 1e-5)
}

// --- Conv2D ----------------------------------------------------------------

func TestConv2DHand(t *testing.T) {
	d := New()
	// 3x3 image 1..9, 2x2 kernel [[1,0],[0,-1]] -> x[y,x] - x[y+1,x+1] = -4 everywhere.
	x := d.Upload([]float32{1, 2, 3, 4, 5, 6, 7, 8, 9}, 1, 1, 3, 3)
	w := d.Upload([]float32{1, 0, 0, -1}, 1, 1, 2, 2)
	b := d.Upload([]float32{10}, 1)
	out := d.Conv2D(x, w, b, gpu.Conv2DOpts{})
	wantShape(t, out, 1, 1, 2, 2)
	near(t, "conv", down(t, d, out), []float64{6, 6, 6, 6}, 0)
	// Padding 1, stride 2: outputs at (-1,-1), (-1,1), (1,-1), (1,1) of the padded grid.
	out = d.Conv2D(x, w, nil, gpu.Conv2DOpts{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1})
	wantShape(t, out, 1, 1, 2, 2)
	// (oy,ox)=(0,0): 0 - x[0,0] = -1; (0,1): 0 - x[0,2] = -3; (1,0): 0 - x[2,0] = -7; (1,1): x[1,1]-x[2,2] = 5-9.
	near(t, "conv s2p1", down(t, d, out), []float64{-1, -3, -7, -4}, 0)
}

// conv64 is a direct float64 convolution.
func conv64(x, w, bias []float32, N, C, H, W, O, KH, KW, SH, SW, PH, PW int) ([]float64, int, int) {
	OH, OW := (H+2*PH-KH)/SH+1, (W+2*PW-KW)/SW+1
	out := make([]float64, N*O*OH*OW)
	for n := 0; n < N; n++ {
		for o := 0; o < O; o++ {
			for oy := 0; oy < OH; oy++ {
				for ox := 0; ox < OW; ox++ {
					s := 0.0
					if bias != nil {
						s = float64(bias[o])
					}
					for c := 0; c < C; c++ {
						for ky := 0; ky < KH; ky++ {
							for kx := 0; kx < KW; kx++ {
								iy, ix := oy*SH-PH+ky, ox*SW-PW+kx
								if iy < 0 || iy >= H || ix < 0 || ix >= W {
									continue
								}
								s += float64(x[((n*C+c)*H+iy)*W+ix]) * float64(w[((o*C+c)*KH+ky)*KW+kx])
							}
						}
					}
					out[((n*O+o)*OH+oy)*OW+ox] = s
				}
			}
		}
	}
	return out, OH, OW
}

func TestConv2DRandom(t *testing.T) {
	const N, C, H, W, O = 2, 3, 7, 9, 5
	for _, g := range []struct{ KH, KW, SH, SW, PH, PW int }{
		{3, 3, 1, 1, 1, 1}, {3, 3, 2, 2, 1, 1}, {3, 3, 1, 1, 0, 0}, {1, 1, 1, 1, 0, 0},
		{3, 1, 1, 2, 0, 1}, {2, 3, 2, 1, 1, 0}, {5, 5, 1, 1, 2, 2}, {3, 3, 3, 3, 2, 2},
	} {
		d := New()
		x, w, b := randVals(10, N*C*H*W), randVals(11, O*C*g.KH*g.KW), randVals(12, O)
		want, OH, OW := conv64(x, w, b, N, C, H, W, O, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW)
		out := d.Conv2D(d.Upload(x, N, C, H, W), d.Upload(w, O, C, g.KH, g.KW), d.Upload(b, O),
			gpu.Conv2DOpts{StrideH: g.SH, StrideW: g.SW, PadH: g.PH, PadW: g.PW})
		wantShape(t, out, N, O, OH, OW)
		near(t, "conv", down(t, d, out), want, 1e-5)
	}
}

func TestConv2DStride1PathMatchesDirect(t *testing.T) {
	// The padded stride-1 path must equal the general loop bit for bit.
	for _, g := range []struct{ N, C, H, W, O, KH, KW, PH, PW int }{
		{2, 5, 7, 9, 3, 3, 3, 1, 1}, {1, 3, 1, 1, 4, 3, 3, 1, 1}, {1, 4, 6, 5, 2, 1, 1, 0, 0},
		{1, 2, 5, 8, 3, 2, 3, 0, 1}, {2, 3, 4, 4, 2, 3, 3, 2, 0},
	} {
		fast, direct := New(), New()
		direct.directConv = true
		x, w, b := randVals(13, g.N*g.C*g.H*g.W), randVals(14, g.O*g.C*g.KH*g.KW), randVals(15, g.O)
		run := func(d *Device) []float32 {
			return down(t, d, d.Conv2D(d.Upload(x, g.N, g.C, g.H, g.W), d.Upload(w, g.O, g.C, g.KH, g.KW),
				d.Upload(b, g.O), gpu.Conv2DOpts{PadH: g.PH, PadW: g.PW}))
		}
		near(t, "stride-1 path vs direct", run(fast), f64(run(direct)), 0)
	}
}

// --- normalisation ---------------------------------------------------------

func TestGroupNorm(t *testing.T) {
	const N, C, H, W, G = 2, 6, 5, 3, 3
	d := New()
	x, gm, bt := randVals(20, N*C*H*W), randVals(21, C), randVals(22, C)
	for i := range x {
		x[i] = 3*x[i] + 2 // a mean and scale far from 0 and 1
	}
	out := down(t, d, d.GroupNorm(d.Upload(x, N, C, H, W), d.Upload(gm, C), d.Upload(bt, C), G, 1e-5))
	per, sp := C/G, H*W
	want := make([]float64, len(x))
	for n := 0; n < N; n++ {
		for g := 0; g < G; g++ {
			seg := x[(n*C+g*per)*sp : (n*C+(g+1)*per)*sp]
			var m, v float64
			for _, e := range seg {
				m += float64(e)
			}
			m /= float64(len(seg))
			for _, e := range seg {
				v += (float64(e) - m) * (float64(e) - m)
			}
			v /= float64(len(seg))
			for i, e := range seg {
				c := g*per + i/sp
				want[(n*C+g*per)*sp+i] = (float64(e)-m)/math.Sqrt(v+1e-5)*float64(gm[c]) + float64(bt[c])
			}
		}
	}
	near(t, "groupnorm", out, want, 1e-6)
}

func TestLayerNormHand(t *testing.T) {
	d := New()
	// Row [1,2,3,4]: mean 2.5, var 1.25.
	x := d.Upload([]float32{1, 2, 3, 4, 2, 2, 2, 2}, 2, 4)
	g := d.Upload([]float32{1, 2, 1, 1}, 4)
	b := d.Upload([]float32{0, 0, 0, 1}, 4)
	got := down(t, d, d.LayerNorm(x, g, b, 0))
	r := 1 / math.Sqrt(1.25)
	near(t, "layernorm", got[:4], []float64{-1.5 * r, -0.5 * r * 2, 0.5 * r, 1.5*r + 1}, 1e-7)
	// A constant row with eps 0 would divide 0 by 0; with eps > 0 it is beta.
	got = down(t, d, d.LayerNorm(x, g, b, 1e-5))
	near(t, "constant row", got[4:], []float64{0, 0, 0, 1}, 0)
	// nil gamma/beta: plain normalisation.
	got = down(t, d, d.LayerNorm(x, nil, nil, 0))
	near(t, "no affine", got[:4], []float64{-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r}, 1e-7)
}

func TestSoftmaxHand(t *testing.T) {
	d := New()
	x := d.Upload([]float32{1, 2, 3, 1000, 1000, 1000}, 2, 3)
	got := down(t, d, d.Softmax(x))
	e1, e2, e3 := math.Exp(1), math.Exp(2), math.Exp(3)
	s := e1 + e2 + e3
	near(t, "softmax", got, []float64{e1 / s, e2 / s, e3 / s, 1. / 3, 1. / 3, 1. / 3}, 1e-7)
}

// --- attention -------------------------------------------------------------

// attention64 computes softmax(scale Q K^T [+ causal mask]) V per head in float64.
func attention64(q, k, v []float32, B, Lq, Lk, H, D, Dv int, causal bool, scale float64) []float64 {
	out := make([]float64, B*Lq*H*Dv)
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			for i := 0; i < Lq; i++ {
				s := make([]float64, Lk)
				m := math.Inf(-1)
				for j := 0; j < Lk; j++ {
					if causal && j > i {
						s[j] = math.Inf(-1)
						continue
					}
					for c := 0; c < D; c++ {
						s[j] += float64(q[(b*Lq+i)*H*D+h*D+c]) * float64(k[(b*Lk+j)*H*D+h*D+c])
					}
					s[j] *= scale
					m = math.Max(m, s[j])
				}
				var z float64
				for j := range s {
					s[j] = math.Exp(s[j] - m)
					z += s[j]
				}
				for c := 0; c < Dv; c++ {
					var acc float64
					for j := range s {
						acc += s[j] / z * float64(v[(b*Lk+j)*H*Dv+h*Dv+c])
					}
					out[(b*Lq+i)*H*Dv+h*Dv+c] = acc
				}
			}
		}
	}
	return out
}

func TestAttention(t *testing.T) {
	for _, tc := range []struct {
		B, Lq, Lk, H, D, Dv int
		causal              bool
		scale               float32
	}{
		{2, 7, 13, 3, 5, 5, false, 0},
		{1, 13, 7, 2, 4, 3, false, 0.3},
		{2, 9, 9, 4, 3, 3, true, 0},
		{1, 5, 11, 1, 8, 8, true, 0}, // Lq < Lk: query i still sees keys 0..i
		{1, 11, 5, 2, 2, 2, true, 0}, // Lq > Lk: late queries see every key
	} {
		d := New()
		q := randVals(30, tc.B*tc.Lq*tc.H*tc.D)
		k := randVals(31, tc.B*tc.Lk*tc.H*tc.D)
		v := randVals(32, tc.B*tc.Lk*tc.H*tc.Dv)
		out := d.Attention(d.Upload(q, tc.B, tc.Lq, tc.H*tc.D), d.Upload(k, tc.B, tc.Lk, tc.H*tc.D),
			d.Upload(v, tc.B, tc.Lk, tc.H*tc.Dv), gpu.AttentionOpts{Heads: tc.H, Causal: tc.causal, Scale: tc.scale})
		wantShape(t, out, tc.B, tc.Lq, tc.H*tc.Dv)
		scale := float64(tc.scale)
		if scale == 0 {
			scale = 1 / math.Sqrt(float64(tc.D))
		}
		want := attention64(q, k, v, tc.B, tc.Lq, tc.Lk, tc.H, tc.D, tc.Dv, tc.causal, scale)
		near(t, "attention", down(t, d, out), want, 1e-5)
	}
}

func TestAttentionHand(t *testing.T) {
	d := New()
	// One query, two keys with scores 0 and ln 3 (scale 1): weights 1/4, 3/4.
	q := d.Upload([]float32{1}, 1, 1, 1)
	k := d.Upload([]float32{0, float32(math.Log(3))}, 1, 2, 1)
	v := d.Upload([]float32{4, 8, 0, 4}, 1, 2, 2)
	got := down(t, d, d.Attention(q, k, v, gpu.AttentionOpts{Heads: 1, Scale: 1}))
	near(t, "attention", got, []float64{1, 5}, 1e-6)
	// Causal: the first query sees only the first key.
	got = down(t, d, d.Attention(q, k, v, gpu.AttentionOpts{Heads: 1, Scale: 1, Causal: true}))
	near(t, "causal", got, []float64{4, 8}, 0)
}

// --- element-wise ----------------------------------------------------------

func TestActivations(t *testing.T) {
	d := New()
	xs := []float32{-20, -3.5, -1, -0.25, 0, 0.3, 1, 2.5, 9}
	x := d.Upload(xs, 3, 3)
	check := func(name string, got *gpu.Tensor, f func(float64) float64) {
		t.Helper()
		want := make([]float64, len(xs))
		for i, v := range xs {
			want[i] = f(float64(v))
		}
		near(t, name, down(t, d, got), want, 1e-6)
	}
	sig := func(v float64) float64 { return 1 / (1 + math.Exp(-v)) }
	check("silu", d.SiLU(x), func(v float64) float64 { return v * sig(v) })
	check("gelu", d.GELU(x), func(v float64) float64 { return v * 0.5 * math.Erfc(-v/math.Sqrt2) })
	check("gelu_tanh", d.GELUTanh(x), func(v float64) float64 {
		return 0.5 * v * (1 + math.Tanh(0.7978845608028654*(v+0.044715*v*v*v)))
	})
	check("quick_gelu", d.QuickGELU(x), func(v float64) float64 { return v * sig(1.702*v) })
	// Known values: GELU(1) = Phi(1) = 0.841344746, SiLU(1) = 0.731058579.
	near(t, "gelu(1)", down(t, d, d.GELU(d.Upload([]float32{1}, 1))), []float64{0.841344746}, 1e-7)
	near(t, "silu(1)", down(t, d, d.SiLU(d.Upload([]float32{1}, 1))), []float64{0.731058579}, 1e-7)
}

func TestGEGLU(t *testing.T) {
	d := New()
	xs := randVals(40, 2*3*10)
	out := d.GEGLU(d.Upload(xs, 2, 3, 10))
	wantShape(t, out, 2, 3, 5)
	var want []float64
	for r := 0; r < 6; r++ {
		for c := 0; c < 5; c++ {
			a, g := float64(xs[r*10+c]), float64(xs[r*10+5+c])
			want = append(want, a*0.5*g*(1+math.Erf(g/math.Sqrt2)))
		}
	}
	near(t, "geglu", down(t, d, out), want, 1e-6)
}

func TestAddMulBroadcast(t *testing.T) {
	d := New()
	av, bv := randVals(50, 2*3*4*5), randVals(51, 3)
	a, b := d.Upload(av, 2, 3, 4, 5), d.Upload(bv, 3, 1, 1)
	sum, prod := down(t, d, d.Add(a, b)), down(t, d, d.Mul(b, a))
	for i := range av {
		c := i / 20 % 3
		if sum[i] != av[i]+bv[c] || prod[i] != av[i]*bv[c] {
			t.Fatalf("element %d: add %v mul %v, want %v %v", i, sum[i], prod[i], av[i]+bv[c], av[i]*bv[c])
		}
	}
	// [B, C] added to an image [B, C, H, W] through a [B, C, 1, 1] view.
	emb := d.Upload([]float32{1, 2, 3, 4, 5, 6}, 2, 3)
	img := d.Upload(make([]float32, 2*3*2*2), 2, 3, 2, 2)
	got := down(t, d, d.Add(img, emb.View(2, 3, 1, 1)))
	for i, v := range got {
		if v != float32(i/4+1) {
			t.Fatalf("element %d = %v, want %d", i, v, i/4+1)
		}
	}
	// Both sides broadcast: [3,1] + [1,4] -> [3,4].
	got = down(t, d, d.Add(d.Upload([]float32{0, 10, 20}, 3, 1), d.Upload([]float32{1, 2, 3, 4}, 1, 4)))
	near(t, "outer sum", got, []float64{1, 2, 3, 4, 11, 12, 13, 14, 21, 22, 23, 24}, 0)
	got = down(t, d, d.Scale(d.Upload([]float32{1, -2}, 2), 3, 0.5))
	near(t, "scale", got, []float64{3.5, -5.5}, 0)
}

// TestBroadcastRandom checks Add and Mul on random broadcastable shape pairs
// against an independent multi-index computation.
func TestBroadcastRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 9))
	for n := 0; n < 60; n++ {
		rank := 1 + r.IntN(4)
		out := make([]int, rank)
		for i := range out {
			out[i] = 1 + r.IntN(4)
		}
		// Each operand drops some leading dims and sets some dims to 1.
		operand := func() []int {
			s := append([]int(nil), out[r.IntN(rank):]...)
			for i := range s {
				if r.IntN(3) == 0 {
					s[i] = 1
				}
			}
			if len(s) == 0 {
				s = []int{1}
			}
			return s
		}
		as, bs := operand(), operand()
		d := New()
		av, bv := randVals(uint64(n), gpu.Shape(as).Numel()), randVals(uint64(n+100), gpu.Shape(bs).Numel())
		sum := d.Add(d.Upload(av, as...), d.Upload(bv, bs...))
		prod := d.Mul(d.Upload(av, as...), d.Upload(bv, bs...))
		want, err := gpu.BroadcastShape(as, bs)
		if err != nil {
			t.Fatal(err)
		}
		wantShape(t, sum, want...)
		got, gotP := down(t, d, sum), down(t, d, prod)
		// at reads operand v of shape s at output index idx (right-aligned).
		at := func(v []float32, s []int, idx []int) float32 {
			off := 0
			for i := range s {
				j := idx[len(idx)-len(s)+i]
				if s[i] == 1 {
					j = 0
				}
				off = off*s[i] + j
			}
			return v[off]
		}
		for flat := range got {
			idx := make([]int, len(want))
			for i, f := len(want)-1, flat; i >= 0; i-- {
				idx[i], f = f%want[i], f/want[i]
			}
			x, y := at(av, as, idx), at(bv, bs, idx)
			if got[flat] != x+y || gotP[flat] != x*y {
				t.Fatalf("%v (+|*) %v at %v: got %v, %v want %v, %v", as, bs, idx, got[flat], gotP[flat], x+y, x*y)
			}
		}
	}
}

// TestConv2DRandomGeometry sweeps random small geometries against conv64.
func TestConv2DRandomGeometry(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 11))
	for n := 0; n < 40; n++ {
		N, C, O := 1+r.IntN(2), 1+r.IntN(5), 1+r.IntN(5)
		KH, KW := 1+r.IntN(4), 1+r.IntN(4)
		SH, SW, PH, PW := 1+r.IntN(3), 1+r.IntN(3), r.IntN(3), r.IntN(3)
		H, W := KH+r.IntN(8), KW+r.IntN(8)
		d := New()
		x, w, b := randVals(uint64(3*n), N*C*H*W), randVals(uint64(3*n+1), O*C*KH*KW), randVals(uint64(3*n+2), O)
		want, OH, OW := conv64(x, w, b, N, C, H, W, O, KH, KW, SH, SW, PH, PW)
		out := d.Conv2D(d.Upload(x, N, C, H, W), d.Upload(w, O, C, KH, KW), d.Upload(b, O),
			gpu.Conv2DOpts{StrideH: SH, StrideW: SW, PadH: PH, PadW: PW})
		wantShape(t, out, N, O, OH, OW)
		near(t, fmt.Sprintf("conv N%d C%d %dx%d O%d k%dx%d s%dx%d p%dx%d", N, C, H, W, O, KH, KW, SH, SW, PH, PW),
			down(t, d, out), want, 1e-5)
	}
}

// --- layout ----------------------------------------------------------------

func TestUpsampleConcatSlice(t *testing.T) {
	d := New()
	x := d.Upload([]float32{1, 2, 3, 4, 5, 6}, 1, 2, 1, 3)
	up := d.Upsample2x(x)
	wantShape(t, up, 1, 2, 2, 6)
	near(t, "upsample", down(t, d, up), []float64{1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3,
		4, 4, 5, 5, 6, 6, 4, 4, 5, 5, 6, 6}, 0)

	a := d.Upload([]float32{1, 2, 3, 4}, 2, 2)
	b := d.Upload([]float32{5, 6, 7, 8, 9, 10}, 2, 3)
	c := d.Concat(-1, a, b)
	wantShape(t, c, 2, 5)
	near(t, "concat", down(t, d, c), []float64{1, 2, 5, 6, 7, 3, 4, 8, 9, 10}, 0)
	c = d.Concat(0, a, d.Upload([]float32{0, 9}, 1, 2))
	wantShape(t, c, 3, 2)
	near(t, "concat0", down(t, d, c), []float64{1, 2, 3, 4, 0, 9}, 0)

	s := d.Slice(b, 1, 1, 3)
	wantShape(t, s, 2, 2)
	near(t, "slice", down(t, d, s), []float64{6, 7, 9, 10}, 0)
	s = d.Slice(b, -1, 2, 3)
	near(t, "slice neg dim", down(t, d, s), []float64{7, 10}, 0)
	s = d.Slice(b, 0, 1, 2)
	near(t, "slice rows", down(t, d, s), []float64{8, 9, 10}, 0)
}

func TestPermute(t *testing.T) {
	const A, B, C, D = 2, 3, 5, 7
	d := New()
	xs := randVals(60, A*B*C*D)
	out := d.Permute(d.Upload(xs, A, B, C, D), 0, 2, 1, 3)
	wantShape(t, out, A, C, B, D)
	got := down(t, d, out)
	for a := 0; a < A; a++ {
		for c := 0; c < C; c++ {
			for b := 0; b < B; b++ {
				for e := 0; e < D; e++ {
					if g, w := got[((a*C+c)*B+b)*D+e], xs[((a*B+b)*C+c)*D+e]; g != w {
						t.Fatalf("[%d,%d,%d,%d] = %v, want %v", a, c, b, e, g, w)
					}
				}
			}
		}
	}
	// NCHW -> NHWC.
	out = d.Permute(d.Upload([]float32{1, 2, 3, 4, 5, 6}, 1, 2, 3, 1), 0, 2, 3, 1)
	wantShape(t, out, 1, 3, 1, 2)
	near(t, "nhwc", down(t, d, out), []float64{1, 4, 2, 5, 3, 6}, 0)
}

func TestEmbeddingAndCast(t *testing.T) {
	d := New()
	vals := []float32{0, 1, -2, 0.5, 65504, 1.0 / 1024, -0.125, 3}
	tab := d.UploadRaw(gpu.F16, EncodeF16(vals), 4, 2)
	out := d.Embedding(tab, []int32{3, 0, 3, 2})
	wantShape(t, out, 4, 2)
	near(t, "embedding", down(t, d, out), []float64{-0.125, 3, 0, 1, -0.125, 3, 65504, 1.0 / 1024}, 0)
	near(t, "cast f16", down(t, d, d.Cast(tab)), f64(vals), 0)
	f32 := []float32{1.5, -0, float32(math.Inf(1)), 3e-39}
	near(t, "raw f32", down(t, d, d.UploadRaw(gpu.F32, EncodeF32(f32), 2, 2)), f64(f32), 0)
	bf := d.UploadRaw(gpu.BF16, EncodeBF16([]float32{1, -2.5, 1e30}), 3)
	near(t, "cast bf16", down(t, d, d.Cast(bf)), []float64{1, -2.5, float64(BF16ToFloat(FloatToBF16(1e30)))}, 0)
}

func TestTimestepEmbedding(t *testing.T) {
	d := New()
	ts := []float32{0, 999, 37.25}
	const dim = 9 // odd: a zero column is appended
	for _, flip := range []bool{false, true} {
		out := d.TimestepEmbedding(ts, dim, flip, 1, 10000)
		wantShape(t, out, 3, dim)
		got := down(t, d, out)
		half := dim / 2
		for b, tv := range ts {
			for i := 0; i < half; i++ {
				arg := float64(tv) * math.Exp(-math.Log(10000)*float64(i)/float64(half-1))
				s, c := math.Sin(arg), math.Cos(arg)
				if flip {
					s, c = c, s
				}
				// float32 rounding of arg (up to ~1000) moves sin/cos by ~1e-4.
				near(t, "first half", got[b*dim+i:b*dim+i+1], []float64{s}, 2e-4)
				near(t, "second half", got[b*dim+half+i:b*dim+half+i+1], []float64{c}, 2e-4)
			}
			if got[b*dim+dim-1] != 0 {
				t.Fatalf("padding column = %v", got[b*dim+dim-1])
			}
		}
	}
	// t = 0: sin 0 = 0, cos 0 = 1 exactly.
	got := down(t, d, d.TimestepEmbedding([]float32{0}, 4, true, 0, 10000))
	near(t, "t=0", got, []float64{1, 1, 0, 0}, 0)
}

// --- storage types -------------------------------------------------------

func TestHalfConversions(t *testing.T) {
	for _, c := range []struct {
		h uint16
		f float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 5.9604645e-8}, {0x03ff, 6.097555e-5},
		{0x0400, 6.1035156e-5}, {0x3555, 0.33325195}, {0x7c00, float32(math.Inf(1))},
		{0xfc00, float32(math.Inf(-1))}, {0x0000, 0},
	} {
		if got := HalfToFloat(c.h); got != c.f {
			t.Errorf("HalfToFloat(%#04x) = %v, want %v", c.h, got, c.f)
		}
		if got := FloatToHalf(c.f); got != c.h {
			t.Errorf("FloatToHalf(%v) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
	if got := FloatToHalf(float32(math.Copysign(0, -1))); got != 0x8000 {
		t.Errorf("-0 -> %#04x", got)
	}
	if !math.IsNaN(float64(HalfToFloat(0x7e00))) || !math.IsNaN(float64(HalfToFloat(FloatToHalf(float32(math.NaN()))))) {
		t.Error("NaN not preserved")
	}
	// Rounding: ties go to even, overflow to infinity, tiny values to zero.
	for _, c := range []struct {
		f float32
		h uint16
	}{
		{1 + 1.0/2048, 0x3c00}, {1 + 3.0/2048, 0x3c02}, {1 + 1.5/2048, 0x3c01},
		{65519, 0x7bff}, {65520, 0x7c00}, {1e6, 0x7c00},
		{2.9802322e-8, 0x0000}, {2.9802326e-8, 0x0001}, {8.940697e-8, 0x0002}, // 0.5, just over 0.5, 1.5 subnormal units
		{1e-10, 0},
	} {
		if got := FloatToHalf(c.f); got != c.h {
			t.Errorf("FloatToHalf(%v) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
	// Every finite half survives the round trip, and widening is monotone
	// against an independent formula.
	for h := 0; h < 1<<16; h++ {
		f := HalfToFloat(uint16(h))
		exp, mant := h>>10&0x1f, h&0x3ff
		if exp == 0x1f {
			continue
		}
		var want float64
		if exp == 0 {
			want = float64(mant) * math.Pow(2, -24)
		} else {
			want = (1 + float64(mant)/1024) * math.Pow(2, float64(exp-15))
		}
		if h&0x8000 != 0 {
			want = -want
		}
		if float64(f) != want {
			t.Fatalf("HalfToFloat(%#04x) = %v, want %v", h, f, want)
		}
		if back := FloatToHalf(f); back != uint16(h) {
			t.Fatalf("round trip %#04x -> %v -> %#04x", h, f, back)
		}
	}
	table := halfTable()
	for h := range table {
		if math.Float32bits(table[h]) != math.Float32bits(HalfToFloat(uint16(h))) {
			t.Fatalf("lookup table disagrees at %#04x", h)
		}
	}
	for h := 0; h < 1<<16; h++ {
		f := BF16ToFloat(uint16(h))
		if math.IsNaN(float64(f)) {
			continue
		}
		if back := FloatToBF16(f); back != uint16(h) {
			t.Fatalf("bf16 round trip %#04x -> %v -> %#04x", h, f, back)
		}
	}
	if b := FloatToBF16(float32(math.NaN())); !math.IsNaN(float64(BF16ToFloat(b))) {
		t.Errorf("bf16 NaN became %#04x", b)
	}
	if b := FloatToBF16(math.Float32frombits(0x7f800001)); b&0x7f80 != 0x7f80 || b&0x7f == 0 {
		t.Errorf("bf16 of a NaN with a low payload = %#04x, not a NaN", b)
	}
	if FloatToBF16(math.Float32frombits(0x3f808000)) != 0x3f80 || FloatToBF16(math.Float32frombits(0x3f818000)) != 0x3f82 {
		t.Error("bf16 ties not to even")
	}
}

// FloatToHalf must pick the nearest half (ties to the even pattern) for
// arbitrary floats: checked against both neighbours of its answer.
func TestFloatToHalfNearest(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for n := 0; n < 200000; n++ {
		f := math.Float32frombits(r.Uint32())
		if math.IsNaN(float64(f)) || math.Abs(float64(f)) > 65504 {
			continue
		}
		h := FloatToHalf(f)
		dist := func(h uint16) float64 { return math.Abs(float64(HalfToFloat(h)) - float64(f)) }
		best := dist(h)
		for _, nb := range []uint16{h + 1, h - 1} {
			if nb&0x7c00 == 0x7c00 || (h&0x7fff == 0 && nb&0x7fff == 0x7fff) {
				continue // stepped into inf/NaN, or from +-0 across the sign
			}
			if dn := dist(nb); dn < best || dn == best && nb&1 == 0 {
				t.Fatalf("FloatToHalf(%g) = %#04x (%g), but %#04x (%g) is nearer or an even tie",
					f, h, HalfToFloat(h), nb, HalfToFloat(nb))
			}
		}
	}
}

func TestF16Weights(t *testing.T) {
	// F16/BF16 weights must give exactly what their widened F32 copies give.
	d := New()
	round := func(v []float32) []float32 {
		out := make([]float32, len(v))
		for i, x := range v {
			out[i] = HalfToFloat(FloatToHalf(x))
		}
		return out
	}
	x := d.Upload(randVals(70, 2*5*7), 2, 5, 7)
	w := round(randVals(71, 3*7))
	b := round(randVals(72, 3))
	same := func(name string, a, b *gpu.Tensor) {
		t.Helper()
		near(t, name, down(t, d, a), f64(down(t, d, b)), 0)
	}
	same("matmul f16", d.MatMul(x, d.UploadRaw(gpu.F16, EncodeF16(w), 3, 7), gpu.MatMulOpts{TransB: true, Bias: d.UploadRaw(gpu.F16, EncodeF16(b), 3)}),
		d.MatMul(x, d.Upload(w, 3, 7), gpu.MatMulOpts{TransB: true, Bias: d.Upload(b, 3)}))
	wb := make([]float32, len(w))
	for i, v := range w {
		wb[i] = BF16ToFloat(FloatToBF16(v))
	}
	same("matmul bf16", d.MatMul(x, d.UploadRaw(gpu.BF16, EncodeBF16(wb), 3, 7), gpu.MatMulOpts{TransB: true}),
		d.MatMul(x, d.Upload(wb, 3, 7), gpu.MatMulOpts{TransB: true}))

	img := d.Upload(randVals(73, 2*4*6*5), 2, 4, 6, 5)
	cw := round(randVals(74, 3*4*3*3))
	same("conv f16", d.Conv2D(img, d.UploadRaw(gpu.F16, EncodeF16(cw), 3, 4, 3, 3), d.UploadRaw(gpu.F16, EncodeF16(b), 3), gpu.Conv2DOpts{PadH: 1, PadW: 1}),
		d.Conv2D(img, d.Upload(cw, 3, 4, 3, 3), d.Upload(b, 3), gpu.Conv2DOpts{PadH: 1, PadW: 1}))
	g := round(randVals(75, 4))
	same("groupnorm f16", d.GroupNorm(img, d.UploadRaw(gpu.F16, EncodeF16(g), 4), d.UploadRaw(gpu.F16, EncodeF16(g), 4), 2, 1e-6),
		d.GroupNorm(img, d.Upload(g, 4), d.Upload(g, 4), 2, 1e-6))
	same("layernorm f16", d.LayerNorm(x, d.UploadRaw(gpu.F16, EncodeF16(round(w[:7])), 7), nil, 1e-5),
		d.LayerNorm(x, d.Upload(round(w[:7]), 7), nil, 1e-5))
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
}

// --- memory, scopes, errors ---------------------------------------------

func TestScopesAndStats(t *testing.T) {
	d := New()
	w := d.Upload(make([]float32, 10), 10) // outside any scope: lives on
	d.PushScope()
	a := d.Upload(make([]float32, 100), 100)
	b := d.Scale(a, 2, 0)
	d.PushScope()
	c := d.Add(a, b)
	_ = d.Add(c, c)
	d.PopScope(c) // c moves to the outer scope
	if st := d.Stats(); st.Resident != 4*(10+300) || st.Buffers != 4 || st.Peak != 4*(10+400) {
		t.Fatalf("inner pop: %+v", st)
	}
	d.PopScope(b)
	if st := d.Stats(); st.Resident != 4*(10+100) || st.Buffers != 2 {
		t.Fatalf("outer pop: %+v", st)
	}
	if !a.Store.Freed() || b.Store.Freed() || !c.Store.Freed() {
		t.Fatal("scope freed the wrong tensors")
	}
	d.Release(b)
	d.Release(b) // harmless
	if st := d.Stats(); st.Resident != 40 || st.Buffers != 1 {
		t.Fatalf("after release: %+v", st)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats(); st.Resident != 0 || st.Buffers != 0 {
		t.Fatalf("after close: %+v", st)
	}
	_ = w
	d.Upload([]float32{1}, 1)
	if !errors.Is(d.Err(), gpu.ErrClosed) {
		t.Fatalf("op after Close: err %v", d.Err())
	}
}

func TestUseAfterRelease(t *testing.T) {
	d := New()
	d.PushScope()
	a := d.Upload([]float32{1, 2}, 2)
	d.PopScope()
	if !a.Store.Freed() {
		t.Fatal("scope did not free its tensor")
	}
	out := d.Scale(a, 1, 0)
	wantShape(t, out, 2)
	if d.Err() == nil {
		t.Fatal("use of a released tensor was not an error")
	}
	if _, err := d.Download(out); err == nil {
		t.Fatal("Download after an error succeeded")
	}
}

func TestShapeErrorsAreRecorded(t *testing.T) {
	x4 := func(d *Device) *gpu.Tensor { return d.Upload(make([]float32, 2*3*4*5), 2, 3, 4, 5) }
	cases := map[string]func(d *Device) *gpu.Tensor{
		"matmul inner": func(d *Device) *gpu.Tensor {
			return d.MatMul(d.Upload(make([]float32, 6), 2, 3), d.Upload(make([]float32, 8), 4, 2), gpu.MatMulOpts{})
		},
		"matmul rank": func(d *Device) *gpu.Tensor { return d.MatMul(d.Upload([]float32{1}, 1), x4(d), gpu.MatMulOpts{}) },
		"conv channels": func(d *Device) *gpu.Tensor {
			return d.Conv2D(x4(d), d.Upload(make([]float32, 4*2*9), 4, 2, 3, 3), nil, gpu.Conv2DOpts{})
		},
		"conv big kernel": func(d *Device) *gpu.Tensor {
			return d.Conv2D(x4(d), d.Upload(make([]float32, 3*36), 1, 3, 6, 6), nil, gpu.Conv2DOpts{})
		},
		"groupnorm groups": func(d *Device) *gpu.Tensor { return d.GroupNorm(x4(d), nil, nil, 2, 1e-5) },
		"layernorm gamma":  func(d *Device) *gpu.Tensor { return d.LayerNorm(x4(d), d.Upload([]float32{1}, 1), nil, 1e-5) },
		"attention heads": func(d *Device) *gpu.Tensor {
			q := d.Upload(make([]float32, 2*3*5), 2, 3, 5)
			return d.Attention(q, q, q, gpu.AttentionOpts{Heads: 2})
		},
		"attention rank": func(d *Device) *gpu.Tensor { return d.Attention(x4(d), x4(d), x4(d), gpu.AttentionOpts{Heads: 1}) },
		"attention no heads": func(d *Device) *gpu.Tensor {
			q := d.Upload(make([]float32, 6), 1, 2, 3)
			return d.Attention(q, q, q, gpu.AttentionOpts{})
		},
		"add":              func(d *Device) *gpu.Tensor { return d.Add(x4(d), d.Upload(make([]float32, 4), 4, 1, 1)) },
		"geglu odd":        func(d *Device) *gpu.Tensor { return d.GEGLU(x4(d)) },
		"upsample rank":    func(d *Device) *gpu.Tensor { return d.Upsample2x(d.Upload([]float32{1, 2}, 2)) },
		"concat":           func(d *Device) *gpu.Tensor { return d.Concat(1, x4(d), d.Upload([]float32{1}, 1, 1, 1, 1)) },
		"concat none":      func(d *Device) *gpu.Tensor { return d.Concat(0) },
		"slice":            func(d *Device) *gpu.Tensor { return d.Slice(x4(d), 1, 2, 7) },
		"slice dim":        func(d *Device) *gpu.Tensor { return d.Slice(x4(d), 4, 0, 1) },
		"slice negative":   func(d *Device) *gpu.Tensor { return d.Slice(x4(d), 1, -2, 3) },
		"permute":          func(d *Device) *gpu.Tensor { return d.Permute(x4(d), 0, 1, 1, 2) },
		"permute negative": func(d *Device) *gpu.Tensor { return d.Permute(x4(d), 0, 1, 2, -1) },
		"embedding id":     func(d *Device) *gpu.Tensor { return d.Embedding(d.Upload(make([]float32, 6), 3, 2), []int32{1, 3}) },
		"upload count":     func(d *Device) *gpu.Tensor { return d.Upload(make([]float32, 5), 2, 3) },
		"upload raw":       func(d *Device) *gpu.Tensor { return d.UploadRaw(gpu.F16, make([]byte, 5), 3) },
		"nil operand":      func(d *Device) *gpu.Tensor { return d.SiLU(nil) },
		"foreign tensor":   func(d *Device) *gpu.Tensor { return d.SiLU(New().Upload([]float32{1}, 1)) },
		"view": func(d *Device) *gpu.Tensor {
			return d.Scale(d.Upload(make([]float32, 6), 6).View(4, 2), 1, 0)
		},
		"timestep dim": func(d *Device) *gpu.Tensor { return d.TimestepEmbedding([]float32{1}, 1, false, 0, 10000) },
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			d := New()
			out := f(d)
			if d.Err() == nil {
				t.Fatal("no error recorded")
			}
			if out == nil || out.Numel() <= 0 {
				t.Fatalf("bad placeholder %v", out)
			}
			// Later ops do no work, keep the first error and do not panic.
			first := d.Err()
			y := d.SiLU(d.MatMul(out, out, gpu.MatMulOpts{}))
			if _, err := d.Download(y); err != first {
				t.Fatalf("Download error %v, want the first error %v", err, first)
			}
			if d.Finish() != first {
				t.Fatal("Finish lost the first error")
			}
			d.Release(y)
			t.Log(first)
		})
	}
	var se *gpu.ShapeError
	d := New()
	d.Add(d.Upload(make([]float32, 3), 3), d.Upload(make([]float32, 2), 2))
	if !errors.As(d.Err(), &se) || se.Op != "Add" {
		t.Fatalf("want a ShapeError from Add, got %v", d.Err())
	}
}

func TestName(t *testing.T) {
	if n := New().Name(); len(n) < 10 || n[:13] != "ref: plain Go" {
		t.Fatalf("name %q", n)
	}
}
