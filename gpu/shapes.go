package gpu

import "fmt"

// BroadcastShape returns the NumPy broadcast of two shapes.
func BroadcastShape(a, b Shape) (Shape, error) {
	n := len(a)
	if len(b) > n {
		n = len(b)
	}
	out := make(Shape, n)
	for i := 0; i < n; i++ {
		da, db := 1, 1
		if j := len(a) - n + i; j >= 0 {
			da = a[j]
		}
		if j := len(b) - n + i; j >= 0 {
			db = b[j]
		}
		switch {
		case da == db:
			out[i] = da
		case da == 1:
			out[i] = db
		case db == 1:
			out[i] = da
		default:
			return nil, fmt.Errorf("shapes %v and %v do not broadcast (dim %d: %d vs %d)", a, b, i, da, db)
		}
	}
	return out, nil
}

// MatMulGeom is the resolved geometry of a MatMul.
type MatMulGeom struct {
	Out     Shape // output shape
	Batch   int   // number of output matrices
	M, K, N int
	// BatchA and BatchB are the number of distinct A and B matrices; a batch
	// index i uses A matrix i%BatchA... only when they are 1 or Batch.
	BatchA, BatchB int
}

// MatMulShape checks operands and returns the geometry of a MatMul.
// Leading dims must be equal, or one side must have none (or all ones).
func MatMulShape(a, b Shape, o MatMulOpts) (MatMulGeom, error) {
	var g MatMulGeom
	if len(a) < 2 || len(b) < 2 {
		return g, fmt.Errorf("matmul needs rank >= 2, got %v and %v", a, b)
	}
	m, ka := a[len(a)-2], a[len(a)-1]
	if o.TransA {
		m, ka = ka, m
	}
	kb, n := b[len(b)-2], b[len(b)-1]
	if o.TransB {
		kb, n = n, kb
	}
	if ka != kb {
		return g, fmt.Errorf("matmul inner dims differ: %v x %v (transA=%v transB=%v)", a, b, o.TransA, o.TransB)
	}
	la, lb := a[:len(a)-2], b[:len(b)-2]
	ba, bb := la.Numel(), lb.Numel()
	var lead Shape
	switch {
	case ba == bb && (len(la) == len(lb) || ba == 1):
		lead = la
		if len(lb) > len(la) {
			lead = lb
		}
	case bb == 1:
		lead = la
	case ba == 1:
		lead = lb
	default:
		return g, fmt.Errorf("matmul batch dims %v and %v differ", la, lb)
	}
	if ba == bb && len(la) == len(lb) && !la.Equal(lb) {
		return g, fmt.Errorf("matmul batch dims %v and %v differ", la, lb)
	}
	if o.Bias != nil && o.BiasRows && o.Bias.Numel() != m {
		return g, fmt.Errorf("matmul row bias %v does not match M=%d", o.Bias.Shape, m)
	}
	if o.Bias != nil && !o.BiasRows && o.Bias.Numel() != n {
		return g, fmt.Errorf("matmul bias %v does not match N=%d", o.Bias.Shape, n)
	}
	g.Out = append(lead.Clone(), m, n)
	if r := o.Residual; r != nil && (!r.Shape.Equal(g.Out) || r.DType != F32) {
		return g, fmt.Errorf("matmul residual %v %v is not the F32 output %v", r.Shape, r.DType, g.Out)
	}
	g.Batch, g.M, g.K, g.N = lead.Numel(), m, ka, n
	g.BatchA, g.BatchB = ba, bb
	return g, nil
}

// ConvGeom is the resolved geometry of a Conv2D.
type ConvGeom struct {
	N, C, H, W     int
	O, KH, KW      int
	OH, OW         int
	SH, SW, PH, PW int
}

// Conv2DShape checks operands and returns the geometry of a Conv2D.
func Conv2DShape(x, w Shape, bias *Tensor, o Conv2DOpts) (ConvGeom, error) {
	var g ConvGeom
	if len(x) != 4 || len(w) != 4 {
		return g, fmt.Errorf("conv2d needs x [N,C,H,W] and w [O,C,KH,KW], got %v and %v", x, w)
	}
	if x[1] != w[1] {
		return g, fmt.Errorf("conv2d: x has %d channels, w expects %d", x[1], w[1])
	}
	g.N, g.C, g.H, g.W = x[0], x[1], x[2], x[3]
	g.O, g.KH, g.KW = w[0], w[2], w[3]
	g.SH, g.SW, g.PH, g.PW = o.StrideH, o.StrideW, o.PadH, o.PadW
	if g.SH == 0 {
		g.SH = 1
	}
	if g.SW == 0 {
		g.SW = 1
	}
	if g.SH < 0 || g.SW < 0 || g.PH < 0 || g.PW < 0 {
		return g, fmt.Errorf("conv2d: negative stride or padding %+v", o)
	}
	g.OH = (g.H+2*g.PH-g.KH)/g.SH + 1
	g.OW = (g.W+2*g.PW-g.KW)/g.SW + 1
	if g.OH <= 0 || g.OW <= 0 {
		return g, fmt.Errorf("conv2d: kernel %dx%d larger than padded input %dx%d", g.KH, g.KW, g.H+2*g.PH, g.W+2*g.PW)
	}
	if bias != nil && bias.Numel() != g.O {
		return g, fmt.Errorf("conv2d: bias %v does not match %d output channels", bias.Shape, g.O)
	}
	if r := o.Residual; r != nil && !r.Shape.Equal(Shape{g.N, g.O, g.OH, g.OW}) && !r.Shape.Equal(Shape{g.N, g.O, 1, 1}) {
		return g, fmt.Errorf("conv2d: residual %v is neither the output's shape [%d,%d,%d,%d] nor [%d,%d,1,1]", r.Shape, g.N, g.O, g.OH, g.OW, g.N, g.O)
	}
	return g, nil
}

// Linear applies a PyTorch nn.Linear: x [..., in] · w[out, in]^T + b -> [..., out].
func Linear(d Device, x, w, b *Tensor) *Tensor {
	return d.MatMul(x, w, MatMulOpts{TransB: true, Bias: b})
}
