// Package gpu defines the compute device that Stepwise's networks run on: the
// Device interface, the Tensor it computes with, and the small helpers (shapes,
// scopes, linear layers) that let model code read like the network's diagram.
//
// Two devices implement it: gpu/gl (OpenGL 4.3 compute shaders) and gpu/ref
// (plain Go, written for clarity; the oracle every GL kernel is tested against).
//
// Conventions shared by every device:
//
//   - Layout is PyTorch's: row-major, images NCHW, sequences [B, L, C].
//   - Activations are F32. Weight-facing arguments (the B operand and bias of
//     MatMul, conv weights and bias, norm gamma/beta) may also be F16 or BF16;
//     they are kept packed on the device and widened in the kernel. Arithmetic is
//     always F32. Use Cast to widen anything else.
//   - Ops never panic on bad shapes. A device records the first error it meets
//     (a shape mismatch, a failed allocation, a lost context) and returns it from
//     Err and from every later Download; ops after the first error return
//     placeholder tensors and do no work. Check Err once after a forward pass.
//   - Ops may run asynchronously: a device waits for its kernels only when a
//     tensor is read back with Download (or Finish is called).
package gpu

import (
	"errors"
	"fmt"
	"strings"
)

// DType is the element type of a tensor's storage.
type DType uint8

// Storage types. F32 is the compute type; F16 and BF16 are storage-only types
// for weights. The types after BF16 are quantized weight formats (see
// gpu/ref/quant.go for their bytes): a device need only accept one as the
// weight operand B of a MatMul with TransB (a linear layer's [N, K]
// weight, K a multiple of the block) and in Download; gpu/ref reads them
// anywhere, gpu/gl refuses them elsewhere. The loaders widen every other
// weight to F16 at load.
const (
	F32 DType = iota
	F16
	BF16
	Q8_0   // ggml's Q8_0: blocks of 32, fp16 scale + 32 int8
	Q4_0   // ggml's Q4_0: blocks of 32, fp16 scale + 16 bytes of nibbles
	Q4_K   // ggml's Q4_K: super-blocks of 256, 144 bytes
	Q5_K   // ggml's Q5_K: super-blocks of 256, 176 bytes
	F8E4M3 // float8 e4m3fn (safetensors F8_E4M3), one byte an element
	F8E5M2 // float8 e5m2 (safetensors F8_E5M2), one byte an element
	numDTypes
)

// Size is the number of bytes one element occupies: 1 for the fp8 types,
// 0 for the block formats (use Bytes).
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case F8E4M3, F8E5M2:
		return 1
	}
	return 0
}

// Block is the number of elements of one block of a block format (32 or
// 256), 1 for the element types.
func (d DType) Block() int {
	switch d {
	case Q8_0, Q4_0:
		return 32
	case Q4_K, Q5_K:
		return 256
	}
	return 1
}

// BlockBytes is the bytes of one block (the element size for element
// types).
func (d DType) BlockBytes() int {
	switch d {
	case Q8_0:
		return 34
	case Q4_0:
		return 18
	case Q4_K:
		return 144
	case Q5_K:
		return 176
	}
	return d.Size()
}

// Quantized reports whether d is one of the weight-only formats after BF16.
func (d DType) Quantized() bool { return d > BF16 && d < numDTypes }

// Valid reports whether d is a known storage type.
func (d DType) Valid() bool { return d < numDTypes }

// Bytes is the storage n elements of type d take, or -1 when n is not a
// whole number of blocks.
func (d DType) Bytes(n int) int {
	b := d.Block()
	if n%b != 0 || !d.Valid() {
		return -1
	}
	return n / b * d.BlockBytes()
}

func (d DType) String() string {
	switch d {
	case F32:
		return "F32"
	case F16:
		return "F16"
	case BF16:
		return "BF16"
	case Q8_0:
		return "Q8_0"
	case Q4_0:
		return "Q4_0"
	case Q4_K:
		return "Q4_K"
	case Q5_K:
		return "Q5_K"
	case F8E4M3:
		return "F8_E4M3"
	case F8E5M2:
		return "F8_E5M2"
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// Shape is a tensor's dimensions, outermost first.
type Shape []int

// Numel is the number of elements (1 for a scalar shape).
func (s Shape) Numel() int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// Equal reports whether two shapes are identical.
func (s Shape) Equal(o Shape) bool {
	if len(s) != len(o) {
		return false
	}
	for i := range s {
		if s[i] != o[i] {
			return false
		}
	}
	return true
}

// Clone returns a copy that does not alias s.
func (s Shape) Clone() Shape { return append(Shape(nil), s...) }

func (s Shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// Storage is one allocation on a device. Several tensors (reshaped views) may
// share it. Handle belongs to the device that made it.
type Storage struct {
	Handle any   // device-specific buffer
	Bytes  int64 // size in bytes
	Dev    Device
	freed  bool
}

// Tensor is an n-dimensional array on a device. The zero Tensor is invalid.
// Tensors are values handed out by a Device; model code never builds one.
type Tensor struct {
	Shape Shape
	DType DType
	Store *Storage
}

// NewTensor is for Device implementations: it wraps a fresh storage and
// registers it with the current scope of tr (if any).
func NewTensor(tr *Tracker, shape Shape, dt DType, st *Storage) *Tensor {
	t := &Tensor{Shape: shape.Clone(), DType: dt, Store: st}
	tr.track(st)
	return t
}

// Numel is the number of elements.
func (t *Tensor) Numel() int { return t.Shape.Numel() }

// Dim returns dimension i; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.Shape)
	}
	return t.Shape[i]
}

// Rank is the number of dimensions.
func (t *Tensor) Rank() int { return len(t.Shape) }

// Reshape returns a view with the same storage and element count. One
// dimension may be -1 and is inferred. A bad shape returns an error.
func (t *Tensor) Reshape(shape ...int) (*Tensor, error) {
	s := Shape(shape).Clone()
	infer, known := -1, 1
	for i, d := range s {
		switch {
		case d == -1 && infer < 0:
			infer = i
		case d <= 0:
			return nil, fmt.Errorf("reshape %v to %v: bad dimension %d", t.Shape, s, d)
		default:
			known *= d
		}
	}
	if infer >= 0 {
		if known == 0 || t.Numel()%known != 0 {
			return nil, fmt.Errorf("reshape %v to %v: cannot infer -1", t.Shape, s)
		}
		s[infer] = t.Numel() / known
	}
	if s.Numel() != t.Numel() {
		return nil, fmt.Errorf("reshape %v to %v: element count %d != %d", t.Shape, s, t.Numel(), s.Numel())
	}
	return &Tensor{Shape: s, DType: t.DType, Store: t.Store}, nil
}

// View is Reshape for model code: on a bad shape it records the error on the
// tensor's device and returns a placeholder of the requested shape, so a
// forward pass can be written without error checks and checked once via Err.
func (t *Tensor) View(shape ...int) *Tensor {
	v, err := t.Reshape(shape...)
	if err != nil {
		if t.Store != nil && t.Store.Dev != nil {
			t.Store.Dev.Fail(err)
		}
		s := Shape(shape).Clone()
		for i := range s {
			if s[i] <= 0 {
				s[i] = 1
			}
		}
		return &Tensor{Shape: s, DType: t.DType, Store: t.Store}
	}
	return v
}

func (t *Tensor) String() string { return fmt.Sprintf("Tensor%v %v", t.Shape, t.DType) }

// MatMulOpts modifies MatMul.
type MatMulOpts struct {
	TransA, TransB bool    // use the transpose of the last two dims of A / B
	Bias           *Tensor // [N], added to every output row (may be F16/BF16)
	// BiasRows makes Bias [M], added to every output column instead (a 1x1
	// convolution's bias, one value an output channel, as a product W·X).
	BiasRows bool
	Alpha    float32 // scales A·B before the bias; 0 means 1
	// Residual, when set, is an F32 tensor of the output's shape added
	// after the bias (a transformer block's skip connection, in the same
	// pass).
	Residual *Tensor
}

// Conv2DOpts are a convolution's geometry. Zero values mean stride 1, no padding.
type Conv2DOpts struct {
	StrideH, StrideW int
	PadH, PadW       int
	// Residual, when set, is an F32 tensor added to the result in the same
	// pass: of the output's shape (a ResNet block's skip connection), or
	// [N, O, 1, 1], one value a sample and output channel (a U-Net
	// ResNet block's time embedding).
	Residual *Tensor
}

// AttentionOpts modifies Attention.
type AttentionOpts struct {
	Heads  int     // number of heads; the channel dim is Heads*HeadDim
	Causal bool    // query i attends to keys 0..i only (CLIP's mask)
	Scale  float32 // score scale; 0 means 1/sqrt(HeadDim)
}

// MemStats reports device memory held by tensors.
type MemStats struct {
	Resident int64 // bytes held now
	Peak     int64 // most bytes held at once since the device was made
	Buffers  int   // live allocations
}

// Device runs tensor operations. Every op allocates and returns a new F32
// tensor (views aside); shapes follow the PyTorch op of the same name.
// Implementations are used from one goroutine at a time.
type Device interface {
	// Name describes the device, e.g. "gl: llvmpipe (LLVM 15.0.6, 256 bits)".
	Name() string

	// Upload copies F32 host data to a new tensor.
	Upload(data []float32, shape ...int) *Tensor
	// UploadRaw copies little-endian raw bytes of the given type (as stored in
	// a safetensors file) to a new tensor that keeps that storage type.
	UploadRaw(dt DType, raw []byte, shape ...int) *Tensor
	// UploadFill is UploadRaw for bytes the caller writes itself: fill gets
	// dst, exactly dt.Bytes(numel) bytes, and must write all of it (in
	// UploadRaw's layout). Where the device can, dst is the tensor's own
	// storage mapped for writing, so weights read from a mapped file are
	// copied once, by Go code that can guard the read (safefile.Guard),
	// instead of into a host buffer and again inside a driver. fill runs
	// once, before UploadFill returns, possibly on another goroutine (the
	// GL thread); it must not keep dst or call the device. It is not
	// called when the device has failed or the shape or type is invalid.
	UploadFill(dt DType, fill func(dst []byte), shape ...int) *Tensor
	// Download waits for pending work and returns t's elements as F32.
	Download(t *Tensor) ([]float32, error)
	// Release frees t's storage now. Releasing twice is harmless.
	Release(t *Tensor)
	// Finish waits for all queued work and returns the device's error, if any.
	Finish() error
	// Err returns the first error the device recorded, or nil.
	Err() error
	// Fail records err as the device's error if none is recorded yet.
	Fail(err error)
	// Stats reports memory use.
	Stats() MemStats
	// PushScope starts a scope: tensors allocated until the matching PopScope
	// are released by it, except the ones passed to PopScope (which move to
	// the enclosing scope, if any).
	PushScope()
	PopScope(keep ...*Tensor)
	// Close releases everything the device holds.
	Close() error

	// MatMul multiplies the last two dims: A [..., M, K] · B [..., K, N] ->
	// [..., M, N] (after the transposes in o). Leading dims broadcast; a 2-D B
	// is shared by every batch (a weight).
	MatMul(a, b *Tensor, o MatMulOpts) *Tensor
	// Conv2D: x [N, C, H, W], w [O, C, KH, KW], bias [O] or nil -> [N, O, H', W'].
	Conv2D(x, w, bias *Tensor, o Conv2DOpts) *Tensor
	// GroupNorm normalises x [N, C, ...] over groups of C/groups channels and
	// all spatial positions, then applies gamma, beta [C].
	GroupNorm(x, gamma, beta *Tensor, groups int, eps float32) *Tensor
	// GroupNormSiLU is SiLU(GroupNorm(x, ...)), the pair every ResNet block
	// opens with, in one pass over the output.
	GroupNormSiLU(x, gamma, beta *Tensor, groups int, eps float32) *Tensor
	// LayerNorm normalises over the last dim, then applies gamma, beta [C].
	LayerNorm(x, gamma, beta *Tensor, eps float32) *Tensor
	// RMSNorm normalises over the last dim by the root mean square (no mean
	// subtracted, no bias: T5's layer norm), then scales by gamma [C] (nil: 1).
	RMSNorm(x, gamma *Tensor, eps float32) *Tensor
	// Softmax over the last dim.
	Softmax(x *Tensor) *Tensor
	// Attention is multi-head scaled-dot-product attention: q [B, Lq, H*D],
	// k [B, Lk, H*D], v [B, Lk, H*Dv] -> [B, Lq, H*Dv]. It never materialises
	// the full score matrix for long sequences.
	Attention(q, k, v *Tensor, o AttentionOpts) *Tensor

	SiLU(x *Tensor) *Tensor      // x * sigmoid(x)
	GELU(x *Tensor) *Tensor      // erf form (PyTorch's default)
	GELUTanh(x *Tensor) *Tensor  // tanh approximation
	QuickGELU(x *Tensor) *Tensor // x * sigmoid(1.702 x), CLIP's activation
	ReLU(x *Tensor) *Tensor      // max(x, 0)
	// SoftClamp returns s * tanh(x / s): TAESD's bound on its input.
	SoftClamp(x *Tensor, s float32) *Tensor
	// GEGLU splits the last dim in halves (a, g) and returns a * GELU(g).
	GEGLU(x *Tensor) *Tensor

	// Add and Mul are element-wise with NumPy broadcasting.
	Add(a, b *Tensor) *Tensor
	Mul(a, b *Tensor) *Tensor
	// Scale returns x*s + b.
	Scale(x *Tensor, s, b float32) *Tensor

	// Upsample2x is nearest-neighbour 2x upsampling of [N, C, H, W].
	Upsample2x(x *Tensor) *Tensor
	// Concat joins tensors along dim; the other dims must agree.
	Concat(dim int, ts ...*Tensor) *Tensor
	// Slice keeps indices [start, end) of dim.
	Slice(x *Tensor, dim, start, end int) *Tensor
	// Permute reorders dims (a copy), like torch.permute(...).contiguous().
	Permute(x *Tensor, perm ...int) *Tensor
	// Cast converts to F32 (F16/BF16 weights to compute type).
	Cast(x *Tensor) *Tensor
	// Embedding gathers rows of table [V, C] (any storage type) -> [len(ids), C].
	Embedding(table *Tensor, ids []int32) *Tensor
	// TimestepEmbedding is the sinusoidal embedding of diffusers' get_timestep_embedding:
	// t [B] -> [B, dim]; half = dim/2, freq_i = exp(-ln(maxPeriod) * i / (half - shift)),
	// output [sin(t*freq), cos(t*freq)], swapped to [cos, sin] when flipSinToCos.
	TimestepEmbedding(t []float32, dim int, flipSinToCos bool, shift float32, maxPeriod float32) *Tensor
}

// ErrClosed is returned by ops on a closed device.
var ErrClosed = errors.New("gpu: device is closed")

// ShapeError describes operands whose shapes an op cannot accept.
type ShapeError struct {
	Op     string
	Shapes []Shape
	Why    string
}

func (e *ShapeError) Error() string {
	s := make([]string, len(e.Shapes))
	for i, sh := range e.Shapes {
		s[i] = sh.String()
	}
	return fmt.Sprintf("gpu: %s(%s): %s", e.Op, strings.Join(s, ", "), e.Why)
}

// OOMError is returned when an allocation does not fit.
type OOMError struct {
	Bytes    int64 // requested
	Resident int64 // already held
	Device   string
}

func (e *OOMError) Error() string {
	return fmt.Sprintf("gpu: %s: out of memory allocating %.1f MiB (%.1f MiB already resident)",
		e.Device, float64(e.Bytes)/(1<<20), float64(e.Resident)/(1<<20))
}
