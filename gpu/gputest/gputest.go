// Package gputest checks that a gpu.Device computes what the reference device
// (gpu/ref) computes: it runs every op on the same random inputs on both and
// compares the results element by element.
//
// A device's tests call it in one line:
//
//	func TestOps(t *testing.T) {
//		dev := gl.New(...)
//		gputest.RunOpSuite(t, dev, 1e-4)
//	}
//
// Every case is a subtest named "<Op>/<what>", so one op can be run alone
// with go test -run 'TestOps/Attention'. The cases use awkward sizes on
// purpose (7, 13, 33, 77, 300: nothing a multiple of a tile), batch > 1,
// channel counts not divisible by 4, F16 and BF16 weights, strides 1 and 2,
// padding 0 and 1, 1x1 and 3x3 kernels, causal and non-causal attention with
// Lq != Lk, and one 300-token attention.
//
// # Tolerance
//
// A result passes when every element satisfies
//
//	|got - want| <= tol * (1 + |want|)
//
// which is numpy.allclose with atol = rtol = tol: an absolute tolerance for
// values near 0 and a relative one for large values. NaN or Inf where the
// reference is finite always fails (NaN where the reference is NaN passes).
// A failure names the case, the output shape, the worst element (its index,
// got and want) and how many elements are out of tolerance, e.g.
//
//	GELU/3x5x7: out [3,5,7]: 38 of 105 elements differ by more than 0.0001 x
//	(1 + |want|): worst at [0 0 6]: got -0.007275694, want -0.007744936
//	(|diff| / (1 + |want|) = 0.000466)
//
// Besides values, each case checks that the device records no error, that the
// output shape matches, and that a PushScope/PopScope around the case frees
// every buffer the case allocated (Stats().Buffers returns to its value
// before the case).
//
// # Other suites
//
// RunLargeSuite repeats the comparison at Stable Diffusion 1.5 sizes (seconds
// on the reference device; skipped with -short). RunErrorSuite checks that bad
// calls record sticky errors instead of panicking, and RunMemorySuite checks
// scopes, Release and Stats. CheckCase, Exec and Compare are the pieces, for
// a device test that wants its own cases.
package gputest

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
)

// Input describes one random operand of a Case.
type Input struct {
	Shape []int
	DType gpu.DType // F32 tensors are made with Upload, F16/BF16 with UploadRaw
	// Values are Scale * N(0, 1) + Offset (Scale 0 means 1), rounded to DType.
	Scale, Offset float32
}

// Case is one op call on random inputs.
type Case struct {
	Name   string  // "<Op>/<what>", the subtest name
	Inputs []Input // made in order, from a seed derived from Name
	// Run calls the op on d with the uploaded inputs.
	Run func(d gpu.Device, in []*gpu.Tensor) *gpu.Tensor
}

// Values returns the host values of input i of c, exactly as uploaded (F16
// and BF16 values are already rounded to their type).
func (c Case) Values(i int) []float32 {
	in := c.Inputs[i]
	h := uint64(1469598103934665603)
	for _, b := range []byte(c.Name) {
		h = (h ^ uint64(b)) * 1099511628211
	}
	r := rand.New(rand.NewPCG(h, uint64(i)+1))
	scale := in.Scale
	if scale == 0 {
		scale = 1
	}
	v := make([]float32, gpu.Shape(in.Shape).Numel())
	for j := range v {
		x := float32(r.NormFloat64())*scale + in.Offset
		switch in.DType {
		case gpu.F16:
			x = ref.HalfToFloat(ref.FloatToHalf(x))
		case gpu.BF16:
			x = ref.BF16ToFloat(ref.FloatToBF16(x))
		}
		v[j] = x
	}
	return v
}

// Upload makes input i of c on d.
func (c Case) Upload(d gpu.Device, i int) *gpu.Tensor {
	in, v := c.Inputs[i], c.Values(i)
	switch in.DType {
	case gpu.F16:
		return d.UploadRaw(gpu.F16, ref.EncodeF16(v), in.Shape...)
	case gpu.BF16:
		return d.UploadRaw(gpu.BF16, ref.EncodeBF16(v), in.Shape...)
	}
	return d.Upload(v, in.Shape...)
}

// Result is what one device computed for a case.
type Result struct {
	Shape gpu.Shape
	Data  []float32
}

// Exec runs c on d inside a scope and returns the downloaded output. It
// fails if d records an error or if the scope leaks buffers.
func Exec(d gpu.Device, c Case) (Result, error) {
	if err := d.Err(); err != nil {
		return Result{}, fmt.Errorf("%s: device already failed: %w", d.Name(), err)
	}
	before := d.Stats().Buffers
	d.PushScope()
	ins := make([]*gpu.Tensor, len(c.Inputs))
	for i := range c.Inputs {
		ins[i] = c.Upload(d, i)
	}
	out := c.Run(d, ins)
	if out == nil {
		d.PopScope()
		return Result{}, fmt.Errorf("%s: the op returned a nil tensor", d.Name())
	}
	res := Result{Shape: out.Shape.Clone()}
	data, err := d.Download(out)
	d.PopScope()
	if err != nil {
		return res, fmt.Errorf("%s: %w", d.Name(), err)
	}
	if err := d.Err(); err != nil {
		return res, fmt.Errorf("%s: %w", d.Name(), err)
	}
	if after := d.Stats().Buffers; after != before {
		return res, fmt.Errorf("%s: %d buffers live before the scope, %d after it was popped", d.Name(), before, after)
	}
	res.Data = data
	return res, nil
}

// CheckCase runs c on the oracle (normally ref.New()) and on dev and compares
// the results with Compare. The error starts with the case name.
func CheckCase(oracle, dev gpu.Device, c Case, tol float64) error {
	want, err := Exec(oracle, c)
	if err != nil {
		return fmt.Errorf("%s: reference: %w", c.Name, err)
	}
	got, err := Exec(dev, c)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Name, err)
	}
	if !got.Shape.Equal(want.Shape) {
		return fmt.Errorf("%s: output shape %v, want %v", c.Name, got.Shape, want.Shape)
	}
	if err := Compare(want.Data, got.Data, want.Shape, tol); err != nil {
		return fmt.Errorf("%s: %w", c.Name, err)
	}
	return nil
}

// Compare checks got against want (both of the given shape) with the
// suite's tolerance rule, |got - want| <= tol * (1 + |want|), and describes
// the worst element when it fails.
func Compare(want, got []float32, shape gpu.Shape, tol float64) error {
	if len(got) != len(want) || len(want) != shape.Numel() {
		return fmt.Errorf("out %v: got %d values, want %d", shape, len(got), len(want))
	}
	worst, worstErr, bad := -1, 0.0, 0
	for i := range want {
		w, g := float64(want[i]), float64(got[i])
		var e float64
		switch {
		case w == g || math.IsNaN(w) && math.IsNaN(g):
			continue
		case math.IsNaN(g) || math.IsInf(g, 0) || math.IsNaN(w) || math.IsInf(w, 0):
			e = math.Inf(1)
		default:
			e = math.Abs(g-w) / (1 + math.Abs(w))
		}
		if e > tol {
			bad++
		}
		if e > worstErr {
			worst, worstErr = i, e
		}
	}
	if bad == 0 {
		return nil
	}
	return fmt.Errorf("out %v: %d of %d elements differ by more than %g x (1 + |want|): worst at %v: got %g, want %g (|diff| / (1 + |want|) = %.3g)",
		shape, bad, len(want), tol, Index(shape, worst), got[worst], want[worst], worstErr)
}

// Index converts a flat row-major offset into a multi-dimensional index.
func Index(shape gpu.Shape, flat int) []int {
	idx := make([]int, len(shape))
	for i := len(shape) - 1; i >= 0; i-- {
		idx[i] = flat % shape[i]
		flat /= shape[i]
	}
	return idx
}

// RunOpSuite runs every case of Cases on dev and on a fresh reference
// device, one subtest per case, and fails those whose results differ by more
// than tol (see the package doc for the exact rule). 1e-4 suits a float32
// device that sums in a different order; use 0 to demand identical results.
// dev must be healthy when called; once it records an error the remaining
// cases fail fast naming that error.
func RunOpSuite(t *testing.T, dev gpu.Device, tol float64) {
	t.Helper()
	oracle := ref.New()
	defer oracle.Close()
	for _, c := range Cases() {
		t.Run(c.Name, func(t *testing.T) {
			if err := CheckCase(oracle, dev, c, tol); err != nil {
				t.Error(err)
			}
		})
	}
}

// RunErrorSuite checks how a device handles bad calls: for each, on a fresh
// device from newDev, the call must not panic, must record an error (a
// *gpu.ShapeError for shape problems) and return a non-nil placeholder;
// later ops must not panic, and Download and Finish must return that first
// error.
func RunErrorSuite(t *testing.T, newDev func() gpu.Device) {
	t.Helper()
	up := func(d gpu.Device, shape ...int) *gpu.Tensor {
		return d.Upload(make([]float32, gpu.Shape(shape).Numel()), shape...)
	}
	cases := []struct {
		name  string
		shape bool // the error must be a *gpu.ShapeError
		call  func(d gpu.Device) *gpu.Tensor
	}{
		{"MatMul/inner", true, func(d gpu.Device) *gpu.Tensor {
			return d.MatMul(up(d, 2, 3), up(d, 4, 2), gpu.MatMulOpts{})
		}},
		{"MatMul/bias", true, func(d gpu.Device) *gpu.Tensor {
			return d.MatMul(up(d, 2, 3), up(d, 3, 2), gpu.MatMulOpts{Bias: up(d, 3)})
		}},
		{"Conv2D/channels", true, func(d gpu.Device) *gpu.Tensor {
			return d.Conv2D(up(d, 1, 3, 5, 5), up(d, 4, 2, 3, 3), nil, gpu.Conv2DOpts{})
		}},
		{"Conv2D/residual", true, func(d gpu.Device) *gpu.Tensor {
			return d.Conv2D(up(d, 1, 2, 5, 5), up(d, 4, 2, 3, 3), nil, gpu.Conv2DOpts{Residual: up(d, 1, 4, 5, 5)})
		}},
		{"GroupNorm/groups", true, func(d gpu.Device) *gpu.Tensor {
			return d.GroupNorm(up(d, 1, 6, 2, 2), nil, nil, 4, 1e-5)
		}},
		{"Attention/heads", true, func(d gpu.Device) *gpu.Tensor {
			q := up(d, 1, 3, 10)
			return d.Attention(q, q, q, gpu.AttentionOpts{Heads: 3})
		}},
		{"Attention/heads0", true, func(d gpu.Device) *gpu.Tensor {
			q := up(d, 1, 3, 10)
			return d.Attention(q, q, q, gpu.AttentionOpts{})
		}},
		{"Add/broadcast", true, func(d gpu.Device) *gpu.Tensor { return d.Add(up(d, 2, 3), up(d, 4)) }},
		{"Concat/dims", true, func(d gpu.Device) *gpu.Tensor { return d.Concat(1, up(d, 2, 3), up(d, 3, 3)) }},
		{"Slice/range", true, func(d gpu.Device) *gpu.Tensor { return d.Slice(up(d, 2, 3), 1, 1, 5) }},
		{"Slice/negative", true, func(d gpu.Device) *gpu.Tensor { return d.Slice(up(d, 2, 3), 1, -2, 3) }},
		{"Permute/perm", true, func(d gpu.Device) *gpu.Tensor { return d.Permute(up(d, 2, 3, 4), 0, 0, 1) }},
		{"Permute/negative", true, func(d gpu.Device) *gpu.Tensor { return d.Permute(up(d, 2, 3, 4), 0, 1, -1) }},
		{"Upload/count", true, func(d gpu.Device) *gpu.Tensor { return d.Upload(make([]float32, 5), 2, 3) }},
		{"View/count", false, func(d gpu.Device) *gpu.Tensor { return d.SiLU(up(d, 6).View(4, 2)) }},
		{"Embedding/id", false, func(d gpu.Device) *gpu.Tensor { return d.Embedding(up(d, 3, 2), []int32{0, 3}) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := newDev()
			defer d.Close()
			out := c.call(d)
			first := d.Err()
			var se *gpu.ShapeError
			switch {
			case first == nil:
				t.Fatal("no error recorded")
			case c.shape && !errors.As(first, &se):
				t.Errorf("error %q is not a *gpu.ShapeError", first)
			case out == nil:
				t.Fatal("nil placeholder")
			}
			y := d.GELU(d.Add(out, out))
			if _, err := d.Download(y); err != first {
				t.Errorf("Download returned %v, want the first error %v", err, first)
			}
			if err := d.Finish(); err != first {
				t.Errorf("Finish returned %v, want the first error %v", err, first)
			}
			d.Release(y)
			d.Release(out)
		})
	}
}

// RunMemorySuite checks a device's memory bookkeeping: uploads count as
// live buffers, PopScope frees all but the kept tensors, Release frees at
// once and twice is harmless, and Close leaves nothing resident. dev must be
// fresh; it is closed at the end.
func RunMemorySuite(t *testing.T, dev gpu.Device) {
	t.Helper()
	base := dev.Stats()
	a := dev.Upload(make([]float32, 1000), 10, 100)
	if s := dev.Stats(); s.Buffers != base.Buffers+1 || s.Resident < base.Resident+4000 {
		t.Errorf("after uploading 4000 bytes: %+v (before %+v)", s, base)
	}
	dev.PushScope()
	b := dev.Scale(a, 2, 1)
	c := dev.Add(a, b)
	_ = dev.Mul(c, c)
	dev.PopScope(c)
	if s := dev.Stats(); s.Buffers != base.Buffers+2 {
		t.Errorf("after a scope keeping 1 of 3 results: %d buffers, want %d", s.Buffers, base.Buffers+2)
	}
	if v, err := dev.Download(c); err != nil || len(v) != 1000 || v[0] != 1 {
		t.Errorf("kept tensor: err %v, first value %v, want 1", err, v)
	}
	dev.Release(c)
	dev.Release(c)
	if s := dev.Stats(); s.Buffers != base.Buffers+1 {
		t.Errorf("after releasing the kept tensor (twice): %d buffers, want %d", s.Buffers, base.Buffers+1)
	}
	if s := dev.Stats(); s.Peak < s.Resident+8000 {
		t.Errorf("peak %d does not cover the 3 live 4000-byte tensors seen", s.Peak)
	}
	if err := dev.Err(); err != nil {
		t.Errorf("device error: %v", err)
	}
	if err := dev.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if s := dev.Stats(); s.Buffers != 0 || s.Resident != 0 {
		t.Errorf("after Close: %+v", s)
	}
}
