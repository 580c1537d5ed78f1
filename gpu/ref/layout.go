package ref

import (
	"fmt"
	"math"

	"github.com/stepwise/stepwise/gpu"
)

// Upsample2x implements gpu.Device: nearest-neighbour, out[y, x] = in[y/2, x/2].
func (d *Device) Upsample2x(x *gpu.Tensor) *gpu.Tensor {
	guess := func() gpu.Shape {
		s := shapeOf(x).Clone()
		if len(s) == 4 {
			s[2], s[3] = 2*s[2], 2*s[3]
		}
		return s
	}
	if !d.usable() || !d.need("Upsample2x", x) {
		return d.placeholder(guess())
	}
	if x.Rank() != 4 {
		d.shapeErr("Upsample2x", "want [N, C, H, W]", x)
		return d.placeholder(guess())
	}
	H, W := x.Dim(2), x.Dim(3)
	xv := d.read(x)
	out, ov := d.newF32(guess())
	for p := 0; p < x.Dim(0)*x.Dim(1); p++ {
		src, dst := xv[p*H*W:(p+1)*H*W], ov[p*4*H*W:(p+1)*4*H*W]
		for y := 0; y < 2*H; y++ {
			for xx := 0; xx < 2*W; xx++ {
				dst[y*2*W+xx] = src[(y/2)*W+xx/2]
			}
		}
	}
	return out
}

// normDim resolves a possibly negative dim against rank; ok is false if it
// is out of range.
func normDim(dim, rank int) (int, bool) {
	if dim < 0 {
		dim += rank
	}
	return dim, dim >= 0 && dim < rank
}

// Concat implements gpu.Device like torch.cat; dim may be negative.
func (d *Device) Concat(dim int, ts ...*gpu.Tensor) *gpu.Tensor {
	guess := func() gpu.Shape {
		if len(ts) == 0 || ts[0] == nil {
			return gpu.Shape{1}
		}
		s := ts[0].Shape.Clone()
		if dd, ok := normDim(dim, len(s)); ok {
			for _, t := range ts[1:] {
				if t != nil && t.Rank() == len(s) {
					s[dd] += t.Dim(dd)
				}
			}
		}
		return s
	}
	if !d.usable() || !d.need("Concat", ts...) {
		return d.placeholder(guess())
	}
	if len(ts) == 0 {
		d.Fail(fmt.Errorf("ref: Concat: no tensors"))
		return d.placeholder(guess())
	}
	rank := ts[0].Rank()
	dd, ok := normDim(dim, rank)
	if !ok {
		d.shapeErr("Concat", fmt.Sprintf("dim %d out of range", dim), ts...)
		return d.placeholder(guess())
	}
	shape := ts[0].Shape.Clone()
	shape[dd] = 0
	for _, t := range ts {
		same := t.Rank() == rank
		for i := 0; same && i < rank; i++ {
			same = i == dd || t.Dim(i) == shape[i]
		}
		if !same {
			d.shapeErr("Concat", fmt.Sprintf("shapes differ outside dim %d", dd), ts...)
			return d.placeholder(guess())
		}
		shape[dd] += t.Dim(dd)
	}
	outer := shape[:dd].Numel()
	srcs := make([][]float32, len(ts))
	for i, t := range ts {
		srcs[i] = d.read(t)
	}
	out, ov := d.newF32(shape)
	pos := 0
	for o := 0; o < outer; o++ {
		for i, t := range ts {
			chunk := t.Shape[dd:].Numel()
			pos += copy(ov[pos:], srcs[i][o*chunk:(o+1)*chunk])
		}
	}
	return out
}

// Slice implements gpu.Device: x[..., start:end, ...] along dim. dim may be
// negative (counted from the end); the range must satisfy
// 0 <= start < end <= size (no negative indices, no silent clamping).
func (d *Device) Slice(x *gpu.Tensor, dim, start, end int) *gpu.Tensor {
	s := shapeOf(x).Clone()
	dd, dimOK := normDim(dim, len(s))
	if dimOK && end > start {
		s[dd] = end - start
	}
	if !d.usable() || !d.need("Slice", x) {
		return d.placeholder(s)
	}
	if !dimOK || start < 0 || end > x.Dim(dd) || start >= end {
		d.shapeErr("Slice", fmt.Sprintf("bad range [%d, %d) of dim %d", start, end, dim), x)
		return d.placeholder(s)
	}
	xv := d.read(x)
	inner := x.Shape[dd+1:].Numel()
	outer := x.Shape[:dd].Numel()
	size := x.Dim(dd)
	out, ov := d.newF32(s)
	n := (end - start) * inner
	for o := 0; o < outer; o++ {
		copy(ov[o*n:(o+1)*n], xv[(o*size+start)*inner:(o*size+end)*inner])
	}
	return out
}

// Permute implements gpu.Device: out.Dim(i) = x.Dim(perm[i]), a contiguous
// copy. perm must hold each of 0..rank-1 once (no negative entries).
func (d *Device) Permute(x *gpu.Tensor, perm ...int) *gpu.Tensor {
	xs := shapeOf(x)
	p := make([]int, len(perm))
	seen := make([]bool, len(perm))
	valid := len(perm) == len(xs)
	for i, v := range perm {
		if v < 0 || v >= len(perm) || seen[v] {
			valid = false
			break
		}
		p[i], seen[v] = v, true
	}
	shape := xs.Clone()
	if valid {
		for i, v := range p {
			shape[i] = xs[v]
		}
	}
	if !d.usable() || !d.need("Permute", x) {
		return d.placeholder(shape)
	}
	if !valid {
		d.shapeErr("Permute", fmt.Sprintf("%v is not a permutation of %d dims", perm, x.Rank()), x)
		return d.placeholder(shape)
	}
	xv := d.read(x)
	out, ov := d.newF32(shape)
	// Input strides, reordered to follow the output's dims.
	inStride := make([]int, len(xs))
	step := 1
	for i := len(xs) - 1; i >= 0; i-- {
		inStride[i] = step
		step *= xs[i]
	}
	stride := make([]int, len(p))
	for i, v := range p {
		stride[i] = inStride[v]
	}
	idx := make([]int, len(shape))
	src := 0
	for i := range ov {
		ov[i] = xv[src]
		for dim := len(shape) - 1; dim >= 0; dim-- {
			idx[dim]++
			src += stride[dim]
			if idx[dim] < shape[dim] {
				break
			}
			src -= stride[dim] * shape[dim]
			idx[dim] = 0
		}
	}
	return out
}

// Cast implements gpu.Device: an F32 copy of x (F16/BF16 widened exactly).
func (d *Device) Cast(x *gpu.Tensor) *gpu.Tensor {
	if !d.usable() || !d.need("Cast", x) {
		return d.placeholder(shapeOf(x))
	}
	out, ov := d.newF32(x.Shape)
	copy(ov, d.read(x))
	return out
}

// Embedding implements gpu.Device: row ids[i] of table [V, C] becomes output
// row i. An id outside [0, V) is an error.
func (d *Device) Embedding(table *gpu.Tensor, ids []int32) *gpu.Tensor {
	guess := gpu.Shape{len(ids), 1}
	if ts := shapeOf(table); len(ts) == 2 {
		guess[1] = ts[1]
	}
	if !d.usable() || !d.need("Embedding", table) {
		return d.placeholder(guess)
	}
	if table.Rank() != 2 || len(ids) == 0 {
		d.shapeErr("Embedding", fmt.Sprintf("want table [V, C] and at least one id, got %d ids", len(ids)), table)
		return d.placeholder(guess)
	}
	V, C := table.Dim(0), table.Dim(1)
	for i, id := range ids {
		if id < 0 || int(id) >= V {
			d.shapeErr("Embedding", fmt.Sprintf("id %d at position %d is outside [0, %d)", id, i, V), table)
			return d.placeholder(guess)
		}
	}
	tv := d.read(table)
	out, ov := d.newF32(guess)
	for i, id := range ids {
		copy(ov[i*C:(i+1)*C], tv[int(id)*C:(int(id)+1)*C])
	}
	return out
}

// TimestepEmbedding implements gpu.Device, following diffusers'
// get_timestep_embedding step by step in float32 (as PyTorch computes it):
//
//	exponent_i = -ln(maxPeriod) * i / (half - shift)    i in [0, half)
//	arg_i      = t * exp(exponent_i)
//	emb        = [sin(arg), cos(arg)]   ([cos, sin] when flipSinToCos)
//
// with a zero column appended when dim is odd. Each float32 operation is
// rounded like PyTorch's; sin, cos and exp are evaluated in float64 on the
// float32 argument and rounded once.
func (d *Device) TimestepEmbedding(t []float32, dim int, flipSinToCos bool, shift float32, maxPeriod float32) *gpu.Tensor {
	shape := gpu.Shape{len(t), dim}
	if !d.usable() {
		return d.placeholder(shape)
	}
	half := dim / 2
	if len(t) == 0 || half < 1 || maxPeriod <= 0 || float32(half)-shift == 0 {
		d.Fail(&gpu.ShapeError{Op: "TimestepEmbedding", Shapes: []gpu.Shape{{len(t)}},
			Why: fmt.Sprintf("bad arguments: dim %d, shift %g, maxPeriod %g", dim, shift, maxPeriod)})
		return d.placeholder(shape)
	}
	negLog := float32(-math.Log(float64(maxPeriod)))
	freq := make([]float32, half)
	for i := range freq {
		e := float32(negLog*float32(i)) / (float32(half) - shift)
		freq[i] = float32(math.Exp(float64(e)))
	}
	out, ov := d.newF32(shape)
	for b, tb := range t {
		row := ov[b*dim : (b+1)*dim]
		for i, f := range freq {
			arg := float64(tb * f)
			s, c := float32(math.Sin(arg)), float32(math.Cos(arg))
			if flipSinToCos {
				s, c = c, s
			}
			row[i], row[half+i] = s, c
		}
	}
	return out
}
