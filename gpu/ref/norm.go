package ref

import (
	"fmt"
	"math"

	"github.com/stepwise/stepwise/gpu"
)

// GroupNorm implements gpu.Device like torch.nn.functional.group_norm: the
// biased mean and variance of each (image, group) are computed in float64,
// then y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c]. gamma or beta
// may be nil (scale 1, shift 0).
func (d *Device) GroupNorm(x, gamma, beta *gpu.Tensor, groups int, eps float32) *gpu.Tensor {
	if !d.usable() || !d.need("GroupNorm", x) || !d.allow("GroupNorm", gamma, beta) {
		return d.placeholder(shapeOf(x))
	}
	why := ""
	switch {
	case x.Rank() < 2:
		why = "want x [N, C, ...]"
	case groups <= 0 || x.Dim(1)%groups != 0:
		why = fmt.Sprintf("%d channels do not split into %d groups", x.Dim(1), groups)
	case gamma != nil && gamma.Numel() != x.Dim(1), beta != nil && beta.Numel() != x.Dim(1):
		why = fmt.Sprintf("gamma/beta must have %d elements", x.Dim(1))
	}
	if why != "" {
		d.shapeErr("GroupNorm", why, x, gamma, beta)
		return d.placeholder(x.Shape)
	}
	N, C := x.Dim(0), x.Dim(1)
	spatial := x.Numel() / (N * C)
	per := C / groups
	xv, gv, bv := d.read(x), d.readOpt(gamma), d.readOpt(beta)
	out, ov := d.newF32(x.Shape)
	d.parallel(N*groups, 3*per*spatial, func(lo, hi int) {
		for task := lo; task < hi; task++ {
			n, grp := task/groups, task%groups
			base := (n*C + grp*per) * spatial
			seg := xv[base : base+per*spatial]
			mean, variance := meanVar(seg)
			rstd := 1 / math.Sqrt(variance+float64(eps))
			for ci := 0; ci < per; ci++ {
				c := grp*per + ci
				sc, sh := affine(gv, bv, c)
				src := seg[ci*spatial : (ci+1)*spatial]
				dst := ov[base+ci*spatial : base+(ci+1)*spatial]
				for i, v := range src {
					dst[i] = float32((float64(v)-mean)*rstd*sc + sh)
				}
			}
		}
	})
	return out
}

// GroupNormSiLU implements gpu.Device: SiLU of GroupNorm, as two ops.
func (d *Device) GroupNormSiLU(x, gamma, beta *gpu.Tensor, groups int, eps float32) *gpu.Tensor {
	n := d.GroupNorm(x, gamma, beta, groups, eps)
	y := d.SiLU(n)
	d.Release(n)
	return y
}

// LayerNorm implements gpu.Device like torch.nn.functional.layer_norm over
// the last dim, with float64 statistics. gamma or beta may be nil.
func (d *Device) LayerNorm(x, gamma, beta *gpu.Tensor, eps float32) *gpu.Tensor {
	if !d.usable() || !d.need("LayerNorm", x) || !d.allow("LayerNorm", gamma, beta) {
		return d.placeholder(shapeOf(x))
	}
	if x.Rank() < 1 {
		d.shapeErr("LayerNorm", "want rank >= 1", x, gamma, beta)
		return d.placeholder(x.Shape)
	}
	C := x.Dim(-1)
	if gamma != nil && gamma.Numel() != C || beta != nil && beta.Numel() != C {
		d.shapeErr("LayerNorm", fmt.Sprintf("gamma/beta must have %d elements", C), x, gamma, beta)
		return d.placeholder(x.Shape)
	}
	rows := x.Numel() / C
	xv, gv, bv := d.read(x), d.readOpt(gamma), d.readOpt(beta)
	out, ov := d.newF32(x.Shape)
	d.parallel(rows, 3*C, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			src, dst := xv[r*C:(r+1)*C], ov[r*C:(r+1)*C]
			mean, variance := meanVar(src)
			rstd := 1 / math.Sqrt(variance+float64(eps))
			for c, v := range src {
				sc, sh := affine(gv, bv, c)
				dst[c] = float32((float64(v)-mean)*rstd*sc + sh)
			}
		}
	})
	return out
}

// RMSNorm implements gpu.Device like transformers' T5LayerNorm: x /
// sqrt(mean(x^2) + eps) * gamma over the last dim, float64 statistics.
// gamma may be nil.
func (d *Device) RMSNorm(x, gamma *gpu.Tensor, eps float32) *gpu.Tensor {
	if !d.usable() || !d.need("RMSNorm", x) || !d.allow("RMSNorm", gamma) {
		return d.placeholder(shapeOf(x))
	}
	if x.Rank() < 1 {
		d.shapeErr("RMSNorm", "want rank >= 1", x, gamma)
		return d.placeholder(x.Shape)
	}
	C := x.Dim(-1)
	if gamma != nil && gamma.Numel() != C {
		d.shapeErr("RMSNorm", fmt.Sprintf("gamma must have %d elements", C), x, gamma)
		return d.placeholder(x.Shape)
	}
	rows := x.Numel() / C
	xv, gv := d.read(x), d.readOpt(gamma)
	out, ov := d.newF32(x.Shape)
	d.parallel(rows, 2*C, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			src, dst := xv[r*C:(r+1)*C], ov[r*C:(r+1)*C]
			var ms float64
			for _, v := range src {
				ms += float64(v) * float64(v)
			}
			rstd := 1 / math.Sqrt(ms/float64(C)+float64(eps))
			for c, v := range src {
				sc, _ := affine(gv, nil, c)
				dst[c] = float32(float64(v) * rstd * sc)
			}
		}
	})
	return out
}

// meanVar returns the mean and biased variance of v in float64 (two passes).
func meanVar(v []float32) (mean, variance float64) {
	for _, x := range v {
		mean += float64(x)
	}
	mean /= float64(len(v))
	for _, x := range v {
		dx := float64(x) - mean
		variance += dx * dx
	}
	return mean, variance / float64(len(v))
}

// affine returns channel c's scale and shift (1 and 0 where absent).
func affine(gamma, beta []float32, c int) (scale, shift float64) {
	scale = 1
	if gamma != nil {
		scale = float64(gamma[c])
	}
	if beta != nil {
		shift = float64(beta[c])
	}
	return scale, shift
}

// Softmax implements gpu.Device over the last dim: exp(x - max) / sum, with
// the exponentials and the sum in float64. A row of all -Inf gives NaN, as in
// PyTorch.
func (d *Device) Softmax(x *gpu.Tensor) *gpu.Tensor {
	if !d.usable() || !d.need("Softmax", x) {
		return d.placeholder(shapeOf(x))
	}
	if x.Rank() < 1 {
		d.shapeErr("Softmax", "want rank >= 1", x)
		return d.placeholder(x.Shape)
	}
	C := x.Dim(-1)
	rows := x.Numel() / C
	xv := d.read(x)
	out, ov := d.newF32(x.Shape)
	d.parallel(rows, 4*C, func(lo, hi int) {
		e := make([]float64, C)
		for r := lo; r < hi; r++ {
			src, dst := xv[r*C:(r+1)*C], ov[r*C:(r+1)*C]
			m := math.Inf(-1)
			for _, v := range src {
				m = math.Max(m, float64(v))
			}
			var sum float64
			for c, v := range src {
				e[c] = math.Exp(float64(v) - m)
				sum += e[c]
			}
			for c := range dst {
				dst[c] = float32(e[c] / sum)
			}
		}
	})
	return out
}
