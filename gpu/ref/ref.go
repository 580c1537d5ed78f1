// Package ref is the reference gpu.Device: every op written in plain Go for
// clarity, with PyTorch's semantics. It is the oracle that the OpenGL kernels
// (gpu/gl) and the networks (models) are tested against.
//
// Storage: F32 tensors hold a []float32; F16 and BF16 tensors stay packed as
// []uint16 and are widened exactly when an op reads them. Arithmetic is F32;
// where float32 rounding would make the reference itself drift from PyTorch
// (normalisation statistics, softmax sums, transcendental functions) the
// intermediate values are computed in float64 and rounded once.
//
// The heavy ops (MatMul, Conv2D, Attention) run on a few goroutines over
// independent output rows or channels; each output element is still summed in
// its natural order, so results do not depend on the number of goroutines.
//
// Where gpu.Device's docs leave a choice open, ref decides (and gpu/gputest
// holds other devices to the same):
//
//   - GroupNorm and LayerNorm accept nil gamma and beta (scale 1, shift 0).
//   - AttentionOpts.Heads must be at least 1 (0 is a shape error). With
//     Causal and Lq != Lk, query i sees keys 0..i (PyTorch's top-left aligned
//     is_causal mask).
//   - Concat and Slice accept a negative dim (counted from the end); Permute's
//     entries must be 0..rank-1. Slice's range must satisfy
//     0 <= start < end <= size: no negative indices and no clamping.
//   - Any operand may be F16 or BF16; it is widened exactly on read. Results
//     are always F32.
//   - Using a released tensor, a tensor of another device or a placeholder is
//     an error like a shape mismatch. Ops after Close record gpu.ErrClosed.
package ref

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/stepwise/stepwise/gpu"
)

// Device is the plain-Go reference device. Create it with New. Like every
// gpu.Device it is used from one goroutine at a time.
type Device struct {
	gpu.Tracker
	gpu.Stop // Interrupt: the heavy ops stop between blocks of rows
	workers  int
	closed   bool
	// directConv forces the general convolution loop (tests compare the
	// stride-1 fast path with it).
	directConv bool
	live       map[*gpu.Storage]struct{} // every storage not yet released
}

// buffer is the Handle of a ref storage: exactly one of the slices is set.
type buffer struct {
	f32 []float32 // F32 elements
	u16 []uint16  // F16 or BF16 bit patterns
	raw []byte    // quantized and fp8 weights, as stored (see quant.go)
}

// New returns a reference device that uses up to runtime.GOMAXPROCS(0)
// goroutines for its heavy ops.
func New() *Device {
	return &Device{workers: runtime.GOMAXPROCS(0), live: map[*gpu.Storage]struct{}{}}
}

var _ gpu.Device = (*Device)(nil)

// Name implements gpu.Device.
func (d *Device) Name() string {
	return fmt.Sprintf("ref: plain Go (%d goroutines)", d.workers)
}

// Upload implements gpu.Device.
func (d *Device) Upload(data []float32, shape ...int) *gpu.Tensor {
	if !d.usable() {
		return d.placeholder(shape)
	}
	if err := checkShape(shape); err != nil {
		d.Fail(fmt.Errorf("ref: Upload: %w", err))
		return d.placeholder(shape)
	}
	if n := gpu.Shape(shape).Numel(); n != len(data) {
		d.Fail(&gpu.ShapeError{Op: "Upload", Shapes: []gpu.Shape{shape},
			Why: fmt.Sprintf("%d values for %d elements", len(data), n)})
		return d.placeholder(shape)
	}
	t, out := d.newF32(shape)
	copy(out, data)
	return t
}

// UploadRaw implements gpu.Device.
func (d *Device) UploadRaw(dt gpu.DType, raw []byte, shape ...int) *gpu.Tensor {
	if !d.usable() {
		return d.placeholder(shape)
	}
	if err := checkShape(shape); err != nil {
		d.Fail(fmt.Errorf("ref: UploadRaw: %w", err))
		return d.placeholder(shape)
	}
	if !dt.Valid() {
		d.Fail(fmt.Errorf("ref: UploadRaw: unknown dtype %v", dt))
		return d.placeholder(shape)
	}
	n := gpu.Shape(shape).Numel()
	if want := dt.Bytes(n); len(raw) != want {
		d.Fail(&gpu.ShapeError{Op: "UploadRaw", Shapes: []gpu.Shape{shape},
			Why: fmt.Sprintf("%d bytes for %d %v elements (want %d; %v blocks hold %d)", len(raw), n, dt, want, dt, dt.Block())})
		return d.placeholder(shape)
	}
	return d.store(dt, raw, shape)
}

// UploadFill implements gpu.Device. fill writes a host buffer, which is then
// stored as UploadRaw stores its bytes (this device keeps F16 and BF16 as
// uint16s and F32 as float32s, so it has no storage in UploadRaw's layout to
// hand out); a quantized tensor's own storage is filled directly.
func (d *Device) UploadFill(dt gpu.DType, fill func(dst []byte), shape ...int) *gpu.Tensor {
	if !d.usable() {
		return d.placeholder(shape)
	}
	if err := checkShape(shape); err != nil {
		d.Fail(fmt.Errorf("ref: UploadFill: %w", err))
		return d.placeholder(shape)
	}
	if !dt.Valid() {
		d.Fail(fmt.Errorf("ref: UploadFill: unknown dtype %v", dt))
		return d.placeholder(shape)
	}
	n := gpu.Shape(shape).Numel()
	if dt.Bytes(n) < 0 {
		d.Fail(&gpu.ShapeError{Op: "UploadFill", Shapes: []gpu.Shape{shape},
			Why: fmt.Sprintf("%d %v elements are not whole blocks of %d", n, dt, dt.Block())})
		return d.placeholder(shape)
	}
	if dt.Quantized() {
		t := d.alloc(shape, dt)
		fill(t.Store.Handle.(*buffer).raw)
		return t
	}
	raw := make([]byte, dt.Bytes(n))
	fill(raw)
	return d.store(dt, raw, shape)
}

// store makes a tensor of type dt holding raw (validated by the caller).
func (d *Device) store(dt gpu.DType, raw []byte, shape []int) *gpu.Tensor {
	t := d.alloc(shape, dt)
	b := t.Store.Handle.(*buffer)
	if dt.Quantized() {
		copy(b.raw, raw)
	} else if dt == gpu.F32 {
		DecodeF32(b.f32, raw)
	} else {
		for i := range b.u16 {
			b.u16[i] = uint16(raw[2*i]) | uint16(raw[2*i+1])<<8
		}
	}
	return t
}

// Download implements gpu.Device: it returns a fresh F32 copy of t.
func (d *Device) Download(t *gpu.Tensor) ([]float32, error) {
	if err := d.Err(); err != nil {
		return nil, err
	}
	if d.Interrupted() {
		return nil, gpu.ErrInterrupted
	}
	if !d.usable() || !d.need("Download", t) {
		return nil, d.Err()
	}
	src := d.read(t)
	if t.DType == gpu.F32 {
		return append([]float32(nil), src...), nil
	}
	return src, nil // read already made a widened copy
}

// Release implements gpu.Device. Releasing twice, or releasing a placeholder,
// is harmless.
func (d *Device) Release(t *gpu.Tensor) {
	if t == nil {
		return
	}
	d.free(t.Store)
}

// free releases one storage if it is live on this device.
func (d *Device) free(st *gpu.Storage) {
	if st == nil {
		return
	}
	if _, ok := d.live[st]; !ok {
		return
	}
	delete(d.live, st)
	gpu.MarkFreed(st)
	d.Freed(st.Bytes)
	st.Handle = nil
}

// Finish implements gpu.Device; ref ops are synchronous.
func (d *Device) Finish() error { return d.Err() }

// PopScope implements gpu.Device: it releases what the innermost scope
// allocated, except the storages of keep.
func (d *Device) PopScope(keep ...*gpu.Tensor) {
	for _, st := range d.Tracker.PopScope(keep...) {
		d.free(st)
	}
}

// Close implements gpu.Device: it releases every live tensor; later ops
// record gpu.ErrClosed.
func (d *Device) Close() error {
	for st := range d.live {
		d.free(st)
	}
	d.closed = true
	return nil
}

// usable reports whether ops may run: no recorded error, not closed and
// not interrupted (an interrupted device returns placeholders at once,
// without recording an error: the caller discards what it computes).
func (d *Device) usable() bool {
	if d.closed {
		d.Fail(gpu.ErrClosed)
	}
	return d.Err() == nil && !d.Interrupted()
}

// need checks that every tensor is a live tensor of this device whose shape
// matches its storage; on failure it records an error naming op.
func (d *Device) need(op string, ts ...*gpu.Tensor) bool {
	for i, t := range ts {
		if err := d.check(t); err != nil {
			d.Fail(fmt.Errorf("ref: %s: operand %d: %w", op, i, err))
			return false
		}
	}
	return true
}

// allow is need for optional operands: nil tensors pass.
func (d *Device) allow(op string, ts ...*gpu.Tensor) bool {
	for i, t := range ts {
		if t == nil {
			continue
		}
		if err := d.check(t); err != nil {
			d.Fail(fmt.Errorf("ref: %s: optional operand %d: %w", op, i, err))
			return false
		}
	}
	return true
}

func (d *Device) check(t *gpu.Tensor) error {
	switch {
	case t == nil:
		return fmt.Errorf("nil tensor")
	case t.Store == nil:
		return fmt.Errorf("tensor %v has no storage", t.Shape)
	case t.Store.Dev != gpu.Device(d):
		return fmt.Errorf("tensor %v belongs to another device", t.Shape)
	case t.Store.Freed():
		return fmt.Errorf("tensor %v was released", t.Shape)
	}
	b, ok := t.Store.Handle.(*buffer)
	if !ok {
		return fmt.Errorf("tensor %v is a placeholder", t.Shape)
	}
	n, wrongKind := len(b.f32), b.u16 != nil || b.raw != nil
	switch {
	case t.DType.Quantized():
		n, wrongKind = t.Numel(), b.f32 != nil || b.u16 != nil || len(b.raw) != t.DType.Bytes(t.Numel())
	case t.DType != gpu.F32:
		n, wrongKind = len(b.u16), b.f32 != nil || b.raw != nil
	}
	if wrongKind || n != t.Numel() {
		return fmt.Errorf("tensor %v %v does not match its storage (%d elements)", t.Shape, t.DType, n)
	}
	return nil
}

// checkShape rejects shapes with a dimension below 1.
func checkShape(shape []int) error {
	for _, s := range shape {
		if s <= 0 {
			return fmt.Errorf("bad shape %v", gpu.Shape(shape))
		}
	}
	return nil
}

// alloc makes a zeroed tensor of the given type, tracked by the current scope.
func (d *Device) alloc(shape gpu.Shape, dt gpu.DType) *gpu.Tensor {
	n := shape.Numel()
	b := &buffer{}
	switch {
	case dt == gpu.F32:
		b.f32 = make([]float32, n)
	case dt.Quantized():
		b.raw = make([]byte, max(dt.Bytes(n), 0))
	default:
		b.u16 = make([]uint16, n)
	}
	st := &gpu.Storage{Handle: b, Bytes: int64(max(dt.Bytes(n), 0)), Dev: d}
	d.live[st] = struct{}{}
	d.Alloc(st.Bytes)
	return gpu.NewTensor(&d.Tracker, shape, dt, st)
}

// newF32 allocates an F32 result and returns it with its elements.
func (d *Device) newF32(shape gpu.Shape) (*gpu.Tensor, []float32) {
	t := d.alloc(shape, gpu.F32)
	return t, t.Store.Handle.(*buffer).f32
}

// placeholder is what ops return after an error: a tensor of a plausible
// shape with no storage behind it. It is neither allocated nor tracked.
func (d *Device) placeholder(shape gpu.Shape) *gpu.Tensor {
	s := shape.Clone()
	for i := range s {
		if s[i] <= 0 {
			s[i] = 1
		}
	}
	return &gpu.Tensor{Shape: s, DType: gpu.F32, Store: &gpu.Storage{Dev: d}}
}

// read returns t's elements as float32. For F32 it is the tensor's own
// storage (callers must not modify it); F16, BF16 and the quantized types
// are widened to a copy.
func (d *Device) read(t *gpu.Tensor) []float32 {
	b := t.Store.Handle.(*buffer)
	if t.DType.Quantized() {
		v, err := Dequantize(t.DType, b.raw, t.Numel())
		if err != nil { // a view whose element count is not whole blocks
			d.Fail(fmt.Errorf("ref: %w", err))
			return make([]float32, t.Numel())
		}
		return v
	}
	switch t.DType {
	case gpu.F16:
		table := halfTable()
		out := make([]float32, len(b.u16))
		for i, h := range b.u16 {
			out[i] = table[h]
		}
		return out
	case gpu.BF16:
		out := make([]float32, len(b.u16))
		for i, h := range b.u16 {
			out[i] = BF16ToFloat(h)
		}
		return out
	}
	return b.f32
}

// readOpt is read for optional operands: nil gives nil.
func (d *Device) readOpt(t *gpu.Tensor) []float32 {
	if t == nil {
		return nil
	}
	return d.read(t)
}

// shapeOf is t's shape, or nil for a nil tensor (for placeholder guesses).
func shapeOf(t *gpu.Tensor) gpu.Shape {
	if t == nil {
		return nil
	}
	return t.Shape
}

// shapeErr records a ShapeError for op and reports false.
func (d *Device) shapeErr(op, why string, ts ...*gpu.Tensor) {
	shapes := make([]gpu.Shape, len(ts))
	for i, t := range ts {
		shapes[i] = shapeOf(t)
	}
	d.Fail(&gpu.ShapeError{Op: op, Shapes: shapes, Why: why})
}

// minParallelWork is the number of inner-loop operations below which an op
// runs on the calling goroutine: starting goroutines costs more than it saves.
const minParallelWork = 1 << 16

// blockWork is about the inner-loop operations between two checks of the
// interrupt flag (a few milliseconds of work).
const blockWork = 1 << 22

// parallel calls f over [0, n) split into contiguous chunks on up to
// d.workers goroutines; work is the approximate cost of one index. Each
// chunk is run in blocks of about blockWork operations, and an interrupted
// device (see gpu.Interrupter) stops between blocks: the indices not done
// are left as they are.
func (d *Device) parallel(n, work int, f func(lo, hi int)) {
	if d.Interrupted() {
		return
	}
	w := d.workers
	if w > n {
		w = n
	}
	block := max(1, blockWork/max(work, 1))
	run := func(lo, hi int) {
		for b := lo; b < hi; b += block {
			if d.Interrupted() {
				return
			}
			f(b, min(b+block, hi))
		}
	}
	if w <= 1 || n*work < minParallelWork {
		run(0, n)
		return
	}
	var wg sync.WaitGroup
	for i := 0; i < w; i++ {
		lo, hi := i*n/w, (i+1)*n/w
		if lo == hi {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(lo, hi)
		}()
	}
	wg.Wait()
}
