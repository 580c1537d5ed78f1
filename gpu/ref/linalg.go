package ref

import (
	"fmt"
	"math"

	"github.com/stepwise/stepwise/gpu"
)

// MatMul implements gpu.Device: out = Alpha * (A · B) + Bias, each element
// summed over k in order in float32.
func (d *Device) MatMul(a, b *gpu.Tensor, o gpu.MatMulOpts) *gpu.Tensor {
	if !d.usable() || !d.need("MatMul", a, b) || !d.allow("MatMul", o.Bias, o.Residual) {
		return d.placeholder(guessMatMul(a, b, o))
	}
	g, err := gpu.MatMulShape(a.Shape, b.Shape, o)
	if err != nil {
		d.shapeErr("MatMul", err.Error(), a, b, o.Bias)
		return d.placeholder(guessMatMul(a, b, o))
	}
	av, bv, bias, res := d.read(a), d.read(b), d.readOpt(o.Bias), d.readOpt(o.Residual)
	alpha := o.Alpha
	if alpha == 0 {
		alpha = 1
	}
	M, K, N := g.M, g.K, g.N
	out, ov := d.newF32(g.Out)

	// Bring A to row-major [M, K] and B to row-major [K, N] (transposed
	// copies cost O(size), nothing next to the O(M*K*N) product).
	aMats := matrices(av, g.BatchA, M*K)
	if o.TransA {
		aMats = transposeAll(aMats, K, M)
	}
	bMats := matrices(bv, g.BatchB, K*N)
	if o.TransB {
		bMats = transposeAll(bMats, N, K)
	}

	// One task per output row: acc[n] += A[m,k] * B[k,:] for k in order,
	// so every element is summed over k in its natural order while the
	// inner loop runs over a contiguous row of B.
	d.parallel(g.Batch*M, K*N, func(lo, hi int) {
		acc := make([]float32, N)
		for row := lo; row < hi; row++ {
			bi, m := row/M, row%M
			am := aMats[pick(bi, g.BatchA)][m*K : (m+1)*K]
			bm := bMats[pick(bi, g.BatchB)]
			clear(acc)
			for k, x := range am {
				axpy(acc, x, bm[k*N:(k+1)*N])
			}
			dst := ov[row*N : (row+1)*N]
			for n, s := range acc {
				s *= alpha
				switch {
				case bias != nil && o.BiasRows:
					s += bias[m]
				case bias != nil:
					s += bias[n]
				}
				if res != nil {
					s += res[row*N+n]
				}
				dst[n] = s
			}
		}
	})
	return out
}

// guessMatMul is the output shape a failed MatMul pretends to have.
func guessMatMul(a, b *gpu.Tensor, o gpu.MatMulOpts) gpu.Shape {
	as, bs := shapeOf(a), shapeOf(b)
	if len(as) < 2 || len(bs) < 2 {
		return gpu.Shape{1, 1}
	}
	m, n := as[len(as)-2], bs[len(bs)-1]
	if o.TransA {
		m = as[len(as)-1]
	}
	if o.TransB {
		n = bs[len(bs)-2]
	}
	// The leading dims broadcast as in gpu.MatMulShape: a 2-D A (a
	// weight) times a batch of B takes B's.
	lead := as[:len(as)-2]
	if lb := bs[:len(bs)-2]; lb.Numel() > lead.Numel() || (lb.Numel() == lead.Numel() && len(lb) > len(lead)) {
		lead = lb
	}
	return append(lead.Clone(), m, n)
}

// matrices splits a flat batch of count matrices of size each.
func matrices(v []float32, count, size int) [][]float32 {
	ms := make([][]float32, count)
	for i := range ms {
		ms[i] = v[i*size : (i+1)*size]
	}
	return ms
}

// transposeAll returns copies of row-major [rows, cols] matrices transposed.
func transposeAll(ms [][]float32, rows, cols int) [][]float32 {
	out := make([][]float32, len(ms))
	for i, m := range ms {
		t := make([]float32, len(m))
		for r := 0; r < rows; r++ {
			for c := 0; c < cols; c++ {
				t[c*rows+r] = m[r*cols+c]
			}
		}
		out[i] = t
	}
	return out
}

// pick maps an output batch index to an operand's matrix (operands with one
// matrix are shared by every batch).
func pick(i, count int) int {
	if count == 1 {
		return 0
	}
	return i
}

// axpy adds a*x to y element-wise. It is unrolled by four (the compiler
// does not vectorise); each element still gets exactly one multiply-add.
func axpy(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	i := 0
	for ; i+4 <= len(y); i += 4 {
		yy, xx := y[i:i+4:i+4], x[i:i+4:i+4]
		yy[0] += a * xx[0]
		yy[1] += a * xx[1]
		yy[2] += a * xx[2]
		yy[3] += a * xx[3]
	}
	for ; i < len(y); i++ {
		y[i] += a * x[i]
	}
}

// Conv2D implements gpu.Device as a direct loop: every output element is the
// bias plus the sum over (c, ky, kx) in that order, in float32; padding reads
// zeros.
func (d *Device) Conv2D(x, w, bias *gpu.Tensor, o gpu.Conv2DOpts) *gpu.Tensor {
	guess := func() gpu.Shape {
		xs, ws := shapeOf(x), shapeOf(w)
		if len(xs) == 4 && len(ws) == 4 {
			return gpu.Shape{xs[0], ws[0], xs[2], xs[3]}
		}
		return gpu.Shape{1, 1, 1, 1}
	}
	if !d.usable() || !d.need("Conv2D", x, w) || !d.allow("Conv2D", bias) ||
		(o.Residual != nil && !d.need("Conv2D", o.Residual)) {
		return d.placeholder(guess())
	}
	g, err := gpu.Conv2DShape(x.Shape, w.Shape, bias, o)
	if err != nil {
		d.shapeErr("Conv2D", err.Error(), x, w, bias)
		return d.placeholder(guess())
	}
	xv, wv, bv := d.read(x), d.read(w), d.readOpt(bias)
	out, ov := d.newF32(gpu.Shape{g.N, g.O, g.OH, g.OW})
	if g.SH == 1 && g.SW == 1 && !d.directConv {
		d.convStride1(ov, xv, wv, bv, &g)
	} else {
		d.convDirect(ov, xv, wv, bv, &g)
	}
	if o.Residual != nil {
		rv := d.read(o.Residual)
		plane := len(ov) / len(rv) // 1, or OH*OW for a residual [N, O, 1, 1]
		for i := range ov {
			ov[i] += rv[i/plane]
		}
	}
	return out
}

// convStride1 computes a stride-1 convolution from zero-padded copies of the
// input planes. With the padded width Wp, tap (ky, kx) of output (oy, ox)
// reads padded[(oy+ky)*Wp + ox+kx]: for a fixed tap that is one contiguous
// run over an "extended" output of OH rows of Wp columns, so every tap is a
// single long axpy. The extended columns ox >= OW are scratch and dropped.
// Each output is still summed over (c, ky, kx) in order (the padding adds
// exact zeros), so the result equals convDirect's bit for bit.
func (d *Device) convStride1(ov, xv, wv, bv []float32, g *gpu.ConvGeom) {
	Hp, Wp := g.H+2*g.PH, g.W+2*g.PW
	inPlane, padPlane, plane := g.H*g.W, Hp*Wp, g.OH*g.OW
	padded := make([]float32, g.N*g.C*padPlane)
	for p := 0; p < g.N*g.C; p++ {
		for y := 0; y < g.H; y++ {
			copy(padded[p*padPlane+(y+g.PH)*Wp+g.PW:], xv[p*inPlane+y*g.W:p*inPlane+(y+1)*g.W])
		}
	}
	span := (g.OH-1)*Wp + g.OW // the last extended row needs only OW columns
	d.parallel(g.N*g.O, g.C*g.KH*g.KW*span, func(lo, hi int) {
		ext := make([]float32, span)
		for task := lo; task < hi; task++ {
			n, oc := task/g.O, task%g.O
			clear(ext)
			for c := 0; c < g.C; c++ {
				src := padded[(n*g.C+c)*padPlane : (n*g.C+c+1)*padPlane]
				for ky := 0; ky < g.KH; ky++ {
					for kx := 0; kx < g.KW; kx++ {
						wt := wv[((oc*g.C+c)*g.KH+ky)*g.KW+kx]
						off := ky*Wp + kx
						axpy(ext, wt, src[off:off+span])
					}
				}
			}
			var b float32
			if bv != nil {
				b = bv[oc]
			}
			dst := ov[task*plane : (task+1)*plane]
			for oy := 0; oy < g.OH; oy++ {
				row := dst[oy*g.OW : (oy+1)*g.OW]
				for ox := range row {
					row[ox] = ext[oy*Wp+ox] + b
				}
			}
		}
	})
}

// convDirect is the general convolution (any stride): for every output plane
// and every tap it adds the weighted input rows the tap reads.
func (d *Device) convDirect(ov, xv, wv, bv []float32, g *gpu.ConvGeom) {
	plane, inPlane := g.OH*g.OW, g.H*g.W
	// One task per (image, output channel): a whole output plane.
	d.parallel(g.N*g.O, g.C*g.KH*g.KW*plane, func(lo, hi int) {
		for task := lo; task < hi; task++ {
			n, oc := task/g.O, task%g.O
			dst := ov[task*plane : (task+1)*plane]
			for c := 0; c < g.C; c++ {
				src := xv[(n*g.C+c)*inPlane : (n*g.C+c+1)*inPlane]
				for ky := 0; ky < g.KH; ky++ {
					for kx := 0; kx < g.KW; kx++ {
						wt := wv[((oc*g.C+c)*g.KH+ky)*g.KW+kx]
						convTap(dst, src, wt, g, ky, kx)
					}
				}
			}
			if bv != nil {
				for i := range dst {
					dst[i] += bv[oc]
				}
			}
		}
	})
}

// convTap adds wt * x[iy, ix] to every output (oy, ox) that kernel tap
// (ky, kx) reads from inside the image.
func convTap(dst, src []float32, wt float32, g *gpu.ConvGeom, ky, kx int) {
	// Output columns whose input column ox*SW - PW + kx lies in [0, W).
	ox0 := ceilDiv(g.PW-kx, g.SW)
	if ox0 < 0 {
		ox0 = 0
	}
	ox1 := ceilDiv(g.W+g.PW-kx, g.SW) // exclusive
	if ox1 > g.OW {
		ox1 = g.OW
	}
	if ox0 >= ox1 {
		return
	}
	for oy := 0; oy < g.OH; oy++ {
		iy := oy*g.SH - g.PH + ky
		if iy < 0 || iy >= g.H {
			continue
		}
		orow := dst[oy*g.OW : (oy+1)*g.OW]
		irow := src[iy*g.W : (iy+1)*g.W]
		if g.SW == 1 {
			off := kx - g.PW
			in := irow[ox0+off : ox1+off]
			out := orow[ox0:ox1]
			for i, v := range in {
				out[i] += wt * v
			}
			continue
		}
		for ox := ox0; ox < ox1; ox++ {
			orow[ox] += wt * irow[ox*g.SW-g.PW+kx]
		}
	}
}

// ceilDiv is ceil(a/b) for b > 0 and any sign of a.
func ceilDiv(a, b int) int {
	if a >= 0 {
		return (a + b - 1) / b
	}
	return -((-a) / b)
}

// Attention implements gpu.Device: for every (batch, head, query) it forms
// the scores of that one query against the visible keys, applies a
// max-subtracted softmax and sums the values. Only one row of scores per
// goroutine exists at a time. Heads must be set (0 is an error, so that a
// forgotten head count cannot silently mean one head).
func (d *Device) Attention(q, k, v *gpu.Tensor, o gpu.AttentionOpts) *gpu.Tensor {
	guess := func() gpu.Shape {
		qs, vs := shapeOf(q), shapeOf(v)
		if len(qs) == 3 && len(vs) == 3 {
			return gpu.Shape{qs[0], qs[1], vs[2]}
		}
		return gpu.Shape{1, 1, 1}
	}
	if !d.usable() || !d.need("Attention", q, k, v) {
		return d.placeholder(guess())
	}
	heads := o.Heads
	why := ""
	switch {
	case q.Rank() != 3 || k.Rank() != 3 || v.Rank() != 3:
		why = "want q [B, Lq, H*D], k [B, Lk, H*D], v [B, Lk, H*Dv]"
	case q.Dim(0) != k.Dim(0) || k.Dim(0) != v.Dim(0):
		why = "batch sizes differ"
	case k.Dim(1) != v.Dim(1):
		why = "k and v have different lengths"
	case q.Dim(2) != k.Dim(2):
		why = "q and k have different widths"
	case heads <= 0 || q.Dim(2)%heads != 0 || v.Dim(2)%heads != 0:
		why = fmt.Sprintf("widths are not divisible by %d heads", heads)
	}
	if why != "" {
		d.shapeErr("Attention", why, q, k, v)
		return d.placeholder(guess())
	}
	B, Lq, Lk := q.Dim(0), q.Dim(1), k.Dim(1)
	Cq, Cv := q.Dim(2), v.Dim(2)
	D, Dv := Cq/heads, Cv/heads
	scale := o.Scale
	if scale == 0 {
		scale = float32(1 / math.Sqrt(float64(D)))
	}
	qv, kv, vv := d.read(q), d.read(k), d.read(v)
	out, ov := d.newF32(gpu.Shape{B, Lq, Cv})

	// Keys transposed per (batch, head) to [D, Lk], so that one query's
	// scores against all keys are D axpys over contiguous rows (each score is
	// still the dot product summed over the head dim in order).
	kT := make([]float32, B*heads*D*Lk)
	for b := 0; b < B; b++ {
		for j := 0; j < Lk; j++ {
			for h := 0; h < heads; h++ {
				for c := 0; c < D; c++ {
					kT[((b*heads+h)*D+c)*Lk+j] = kv[(b*Lk+j)*Cq+h*D+c]
				}
			}
		}
	}

	// One task per (batch, head, query).
	d.parallel(B*heads*Lq, Lk*(D+Dv), func(lo, hi int) {
		s := make([]float32, Lk)
		p := make([]float64, Lk)
		acc := make([]float64, Dv)
		for task := lo; task < hi; task++ {
			b, h, i := task/(heads*Lq), task/Lq%heads, task%Lq
			qi := qv[(b*Lq+i)*Cq+h*D : (b*Lq+i)*Cq+(h+1)*D]
			n := Lk
			if o.Causal && i+1 < Lk {
				n = i + 1
			}
			kbh := kT[(b*heads+h)*D*Lk : (b*heads+h+1)*D*Lk]
			clear(s[:n])
			for c, x := range qi {
				axpy(s[:n], x, kbh[c*Lk:c*Lk+n])
			}
			maxS := math.Inf(-1)
			for j := 0; j < n; j++ {
				p[j] = float64(s[j] * scale)
				maxS = math.Max(maxS, p[j])
			}
			var sum float64
			for j := 0; j < n; j++ {
				p[j] = math.Exp(p[j] - maxS)
				sum += p[j]
			}
			clear(acc)
			for j := 0; j < n; j++ {
				vj := vv[(b*Lk+j)*Cv+h*Dv : (b*Lk+j)*Cv+(h+1)*Dv]
				w := p[j] / sum
				for c, x := range vj {
					acc[c] += w * float64(x)
				}
			}
			dst := ov[(b*Lq+i)*Cv+h*Dv : (b*Lq+i)*Cv+(h+1)*Dv]
			for c, s := range acc {
				dst[c] = float32(s)
			}
		}
	})
	return out
}
