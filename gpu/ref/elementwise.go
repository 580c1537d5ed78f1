package ref

import (
	"math"

	"github.com/stepwise/stepwise/gpu"
)

// unary applies f to every element, computing in float64 and rounding once.
func (d *Device) unary(op string, x *gpu.Tensor, f func(float64) float64) *gpu.Tensor {
	if !d.usable() || !d.need(op, x) {
		return d.placeholder(shapeOf(x))
	}
	xv := d.read(x)
	out, ov := d.newF32(x.Shape)
	for i, v := range xv {
		ov[i] = float32(f(float64(v)))
	}
	return out
}

// ReLU implements gpu.Device: max(x, 0).
func (d *Device) ReLU(x *gpu.Tensor) *gpu.Tensor {
	return d.unary("ReLU", x, func(v float64) float64 { return math.Max(v, 0) })
}

// SoftClamp implements gpu.Device: s * tanh(x / s).
func (d *Device) SoftClamp(x *gpu.Tensor, s float32) *gpu.Tensor {
	return d.unary("SoftClamp", x, func(v float64) float64 { return float64(s) * math.Tanh(v/float64(s)) })
}

// SiLU implements gpu.Device: x * sigmoid(x).
func (d *Device) SiLU(x *gpu.Tensor) *gpu.Tensor { return d.unary("SiLU", x, silu) }

// GELU implements gpu.Device: x/2 * (1 + erf(x/sqrt(2))).
func (d *Device) GELU(x *gpu.Tensor) *gpu.Tensor { return d.unary("GELU", x, gelu) }

// GELUTanh implements gpu.Device: x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))).
func (d *Device) GELUTanh(x *gpu.Tensor) *gpu.Tensor {
	return d.unary("GELUTanh", x, func(v float64) float64 {
		return 0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v)))
	})
}

// QuickGELU implements gpu.Device: x * sigmoid(1.702 x).
func (d *Device) QuickGELU(x *gpu.Tensor) *gpu.Tensor {
	return d.unary("QuickGELU", x, func(v float64) float64 { return v / (1 + math.Exp(-1.702*v)) })
}

func silu(v float64) float64 { return v / (1 + math.Exp(-v)) }

func gelu(v float64) float64 { return 0.5 * v * (1 + math.Erf(v/math.Sqrt2)) }

// GEGLU implements gpu.Device: the last dim 2C splits into a = x[..., :C] and
// g = x[..., C:], and the result [..., C] is a * GELU(g) (diffusers' GEGLU).
func (d *Device) GEGLU(x *gpu.Tensor) *gpu.Tensor {
	guess := func() gpu.Shape {
		s := shapeOf(x).Clone()
		if len(s) > 0 {
			s[len(s)-1] /= 2
		}
		return s
	}
	if !d.usable() || !d.need("GEGLU", x) {
		return d.placeholder(guess())
	}
	if x.Rank() < 1 || x.Dim(-1)%2 != 0 {
		d.shapeErr("GEGLU", "last dim must be even", x)
		return d.placeholder(guess())
	}
	C2 := x.Dim(-1)
	C := C2 / 2
	xv := d.read(x)
	out, ov := d.newF32(guess())
	for r := 0; r < x.Numel()/C2; r++ {
		a, g := xv[r*C2:r*C2+C], xv[r*C2+C:(r+1)*C2]
		dst := ov[r*C : (r+1)*C]
		for c := range dst {
			dst[c] = a[c] * float32(gelu(float64(g[c])))
		}
	}
	return out
}

// Add implements gpu.Device: a + b in float32 with NumPy broadcasting.
func (d *Device) Add(a, b *gpu.Tensor) *gpu.Tensor {
	return d.binary("Add", a, b, func(x, y float32) float32 { return x + y })
}

// Mul implements gpu.Device: a * b in float32 with NumPy broadcasting.
func (d *Device) Mul(a, b *gpu.Tensor) *gpu.Tensor {
	return d.binary("Mul", a, b, func(x, y float32) float32 { return x * y })
}

// binary applies f element-wise over the broadcast of a and b.
func (d *Device) binary(op string, a, b *gpu.Tensor, f func(x, y float32) float32) *gpu.Tensor {
	if !d.usable() || !d.need(op, a, b) {
		return d.placeholder(shapeOf(a))
	}
	shape, err := gpu.BroadcastShape(a.Shape, b.Shape)
	if err != nil {
		d.shapeErr(op, err.Error(), a, b)
		return d.placeholder(a.Shape)
	}
	av, bv := d.read(a), d.read(b)
	out, ov := d.newF32(shape)
	if a.Shape.Equal(b.Shape) {
		for i := range ov {
			ov[i] = f(av[i], bv[i])
		}
		return out
	}
	sa, sb := broadcastStrides(a.Shape, shape), broadcastStrides(b.Shape, shape)
	// Walk the output in order with an odometer over its index, keeping the
	// two input offsets in step.
	idx := make([]int, len(shape))
	ia, ib := 0, 0
	for i := range ov {
		ov[i] = f(av[ia], bv[ib])
		for dim := len(shape) - 1; dim >= 0; dim-- {
			idx[dim]++
			ia += sa[dim]
			ib += sb[dim]
			if idx[dim] < shape[dim] {
				break
			}
			ia -= sa[dim] * shape[dim]
			ib -= sb[dim] * shape[dim]
			idx[dim] = 0
		}
	}
	return out
}

// broadcastStrides returns, for each dim of out, the element stride of a
// tensor of shape s broadcast to out (0 where s has size 1 or no such dim).
func broadcastStrides(s, out gpu.Shape) []int {
	strides := make([]int, len(out))
	step := 1
	for i := len(s) - 1; i >= 0; i-- {
		j := len(out) - len(s) + i
		if s[i] != 1 {
			strides[j] = step
		}
		step *= s[i]
	}
	return strides
}

// Scale implements gpu.Device: x*s + b in float32.
func (d *Device) Scale(x *gpu.Tensor, s, b float32) *gpu.Tensor {
	if !d.usable() || !d.need("Scale", x) {
		return d.placeholder(shapeOf(x))
	}
	xv := d.read(x)
	out, ov := d.newF32(x.Shape)
	for i, v := range xv {
		ov[i] = float32(v*s) + b // two roundings, as x.mul(s).add(b); no fused multiply-add
	}
	return out
}
