// Package faulty wraps a gpu.Device to inject the faults a real device
// shows, at a chosen moment: a lost context, a shader that does not compile,
// an out-of-memory allocation, or a NaN in a read-back. Tests use it to
// check that every fault is reported and that the program recovers.
//
// The injected device errors are sticky, as gpu.Device requires (and as GL's
// are): the wrapped device records the error, every later op does no work,
// and Err and every Download return it until the device is replaced. A NaN is
// not a device error: only the poisoned read-back changes.
package faulty

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/stepwise/stepwise/gpu"
)

// Kind is a class of fault.
type Kind int

// The faults a Device injects.
const (
	// LostContext: the GL context is lost (a driver reset); the op that
	// meets it and every later one fail.
	LostContext Kind = iota + 1
	// CompileError: the op's shader does not compile; the error names the
	// shader file and carries the driver's log, as gpu/gl's does.
	CompileError
	// OOM: the op's output allocation does not fit (*gpu.OOMError).
	OOM
	// NaN: the chosen Download returns a NaN in the middle of its data.
	NaN
)

func (k Kind) String() string {
	switch k {
	case LostContext:
		return "lost context"
	case CompileError:
		return "shader compile failure"
	case OOM:
		return "out of memory"
	case NaN:
		return "NaN in a read-back"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ErrContextLost is the error of an injected LostContext.
var ErrContextLost = errors.New("gl: the OpenGL context was lost (GL_CONTEXT_LOST, a GPU reset); every later call fails")

// Trigger says when a Plan fires. Ops are every method of gpu.Device that
// computes or allocates (Upload, UploadRaw, UploadFill and the kernels), not Download,
// Release, scopes or queries.
type Trigger struct {
	// Op restricts the count to ops of this name ("Conv2D", "Attention",
	// ...); "" counts every op.
	Op string
	// After fires on the After-th counted op (1 = the next one). With
	// Downloads > 0 it is ignored.
	After int
	// Downloads fires on the Downloads-th Download instead of an op.
	Downloads int
}

// Plan is one fault to inject, shared by the devices made with it: it fires
// once, on the first device that reaches its trigger, so a device reopened
// after the fault runs clean. Arm and ArmKind re-arm it. A Plan is safe to
// share between goroutines; set Kind and Trigger directly only before the
// devices using it run.
type Plan struct {
	Kind Kind
	Trigger

	mu       sync.Mutex
	ops, dls int
	fired    bool
	armed    bool
	firedAt  string
}

// NewPlan returns an armed plan.
func NewPlan(k Kind, t Trigger) *Plan { return &Plan{Kind: k, Trigger: t, armed: true} }

// Arm re-arms the plan with a new trigger (counts start again).
func (p *Plan) Arm(t Trigger) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Trigger, p.ops, p.dls, p.fired, p.armed, p.firedAt = t, 0, 0, false, true, ""
}

// ArmKind re-arms the plan with another fault and trigger.
func (p *Plan) ArmKind(k Kind, t Trigger) {
	p.mu.Lock()
	p.Kind = k
	p.mu.Unlock()
	p.Arm(t)
}

// Disarm stops the plan from firing.
func (p *Plan) Disarm() {
	p.mu.Lock()
	p.armed = false
	p.mu.Unlock()
}

// Fired reports whether the fault was injected, and on which op (or
// "Download") it was.
func (p *Plan) Fired() (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fired, p.firedAt
}

// Counts returns how many matching ops and Downloads the plan has seen.
func (p *Plan) Counts() (ops, downloads int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ops, p.dls
}

// op counts an op and reports whether the plan fires on it, with which
// fault. A NaN plan never fires on an op.
func (p *Plan) op(name string) (Kind, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.armed || p.fired || p.Kind == NaN || p.Downloads > 0 || (p.Op != "" && p.Op != name) {
		return 0, false
	}
	p.ops++
	if p.ops < max(p.After, 1) {
		return 0, false
	}
	p.fired, p.firedAt = true, name
	return p.Kind, true
}

// download counts a Download and reports whether the plan fires on it,
// with which fault.
func (p *Plan) download() (Kind, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.armed || p.fired || p.Downloads <= 0 {
		return 0, false
	}
	p.dls++
	if p.dls < p.Downloads {
		return 0, false
	}
	p.fired, p.firedAt = true, "Download"
	return p.Kind, true
}

// Device injects a Plan's fault into the wrapped device. A nil Plan
// injects nothing.
type Device struct {
	gpu.Device
	Plan *Plan
}

// Interrupt implements gpu.Interrupter by passing it on.
func (d *Device) Interrupt() { gpu.Interrupt(d.Device) }

// Resume implements gpu.Interrupter by passing it on.
func (d *Device) Resume() { gpu.Resume(d.Device) }

// Wrap returns d with plan's fault.
func Wrap(d gpu.Device, plan *Plan) *Device { return &Device{Device: d, Plan: plan} }

// shaderFiles names the compute shader of the ops that have one, so that an
// injected compile failure looks like gpu/gl's.
var shaderFiles = map[string]string{
	"MatMul": "matmul.comp", "Conv2D": "conv2d.comp", "GroupNorm": "groupnorm.comp", "GroupNormSiLU": "groupnorm.comp",
	"LayerNorm": "groupnorm.comp", "RMSNorm": "groupnorm.comp", "Softmax": "softmax.comp", "Attention": "attention.comp",
	"SiLU": "unary.comp", "GELU": "unary.comp", "GELUTanh": "unary.comp", "QuickGELU": "unary.comp",
	"ReLU": "unary.comp", "SoftClamp": "unary.comp",
	"GEGLU": "unary.comp", "Scale": "unary.comp", "Add": "binary.comp", "Mul": "binary.comp",
	"Upsample2x": "upsample.comp", "Concat": "copy.comp", "Slice": "copy.comp",
	"Permute": "copy.comp", "Cast": "copy.comp", "Embedding": "embedding.comp",
}

// FaultError builds the error a fault of kind k shows on op, with the
// device's resident bytes for an OOM.
func FaultError(k Kind, op string, resident int64) error {
	switch k {
	case LostContext:
		return fmt.Errorf("%s: %w", op, ErrContextLost)
	case CompileError:
		file := shaderFiles[op]
		if file == "" {
			file = "unary.comp"
		}
		return fmt.Errorf("gl: shader %s [LOCAL 256] does not compile: 0:42(7): error: `acc' undeclared (injected fault)", file)
	case OOM:
		return &gpu.OOMError{Bytes: 3 << 30, Resident: resident, Device: "faulty"}
	}
	return fmt.Errorf("faulty: no device error for %v", k)
}

// before runs ahead of every op: when the plan fires, the wrapped device
// records the fault, and the op (run next) returns a placeholder.
func (d *Device) before(op string) {
	if d.Plan == nil {
		return
	}
	if k, fire := d.Plan.op(op); fire {
		d.Device.Fail(FaultError(k, op, d.Device.Stats().Resident))
	}
}

// Download implements gpu.Device; a NaN plan poisons the chosen read-back.
func (d *Device) Download(t *gpu.Tensor) ([]float32, error) {
	var k Kind
	var fire bool
	if d.Plan != nil {
		k, fire = d.Plan.download()
	}
	if fire && k != NaN {
		d.Device.Fail(FaultError(k, "Download", d.Device.Stats().Resident))
	}
	out, err := d.Device.Download(t)
	if fire && k == NaN && err == nil && len(out) > 0 {
		out[len(out)/2] = float32(math.NaN())
	}
	return out, err
}

// Upload implements gpu.Device.
func (d *Device) Upload(data []float32, shape ...int) *gpu.Tensor {
	d.before("Upload")
	return d.Device.Upload(data, shape...)
}

// UploadRaw implements gpu.Device.
func (d *Device) UploadRaw(dt gpu.DType, raw []byte, shape ...int) *gpu.Tensor {
	d.before("UploadRaw")
	return d.Device.UploadRaw(dt, raw, shape...)
}

// UploadFill implements gpu.Device.
func (d *Device) UploadFill(dt gpu.DType, fill func(dst []byte), shape ...int) *gpu.Tensor {
	d.before("UploadFill")
	return d.Device.UploadFill(dt, fill, shape...)
}

// MatMul implements gpu.Device.
func (d *Device) MatMul(a, b *gpu.Tensor, o gpu.MatMulOpts) *gpu.Tensor {
	d.before("MatMul")
	return d.Device.MatMul(a, b, o)
}

// Conv2D implements gpu.Device.
func (d *Device) Conv2D(x, w, bias *gpu.Tensor, o gpu.Conv2DOpts) *gpu.Tensor {
	d.before("Conv2D")
	return d.Device.Conv2D(x, w, bias, o)
}

// GroupNorm implements gpu.Device.
func (d *Device) GroupNorm(x, gamma, beta *gpu.Tensor, groups int, eps float32) *gpu.Tensor {
	d.before("GroupNorm")
	return d.Device.GroupNorm(x, gamma, beta, groups, eps)
}

// GroupNormSiLU implements gpu.Device.
func (d *Device) GroupNormSiLU(x, gamma, beta *gpu.Tensor, groups int, eps float32) *gpu.Tensor {
	d.before("GroupNormSiLU")
	return d.Device.GroupNormSiLU(x, gamma, beta, groups, eps)
}

// LayerNorm implements gpu.Device.
func (d *Device) LayerNorm(x, gamma, beta *gpu.Tensor, eps float32) *gpu.Tensor {
	d.before("LayerNorm")
	return d.Device.LayerNorm(x, gamma, beta, eps)
}

// Softmax implements gpu.Device.
func (d *Device) Softmax(x *gpu.Tensor) *gpu.Tensor {
	d.before("Softmax")
	return d.Device.Softmax(x)
}

// Attention implements gpu.Device.
func (d *Device) Attention(q, k, v *gpu.Tensor, o gpu.AttentionOpts) *gpu.Tensor {
	d.before("Attention")
	return d.Device.Attention(q, k, v, o)
}

// SiLU implements gpu.Device.
func (d *Device) SiLU(x *gpu.Tensor) *gpu.Tensor {
	d.before("SiLU")
	return d.Device.SiLU(x)
}

// GELU implements gpu.Device.
func (d *Device) GELU(x *gpu.Tensor) *gpu.Tensor {
	d.before("GELU")
	return d.Device.GELU(x)
}

// GELUTanh implements gpu.Device.
func (d *Device) GELUTanh(x *gpu.Tensor) *gpu.Tensor {
	d.before("GELUTanh")
	return d.Device.GELUTanh(x)
}

// QuickGELU implements gpu.Device.
func (d *Device) QuickGELU(x *gpu.Tensor) *gpu.Tensor {
	d.before("QuickGELU")
	return d.Device.QuickGELU(x)
}

// MaxTensorBytes forwards the wrapped device's limit.
func (d *Device) MaxTensorBytes() int64 { return gpu.MaxTensorBytes(d.Device) }

// ReLU implements gpu.Device.
func (d *Device) ReLU(x *gpu.Tensor) *gpu.Tensor {
	d.before("ReLU")
	return d.Device.ReLU(x)
}

// SoftClamp implements gpu.Device.
func (d *Device) SoftClamp(x *gpu.Tensor, s float32) *gpu.Tensor {
	d.before("SoftClamp")
	return d.Device.SoftClamp(x, s)
}

// RMSNorm implements gpu.Device.
func (d *Device) RMSNorm(x, gamma *gpu.Tensor, eps float32) *gpu.Tensor {
	d.before("RMSNorm")
	return d.Device.RMSNorm(x, gamma, eps)
}

// GEGLU implements gpu.Device.
func (d *Device) GEGLU(x *gpu.Tensor) *gpu.Tensor {
	d.before("GEGLU")
	return d.Device.GEGLU(x)
}

// Add implements gpu.Device.
func (d *Device) Add(a, b *gpu.Tensor) *gpu.Tensor {
	d.before("Add")
	return d.Device.Add(a, b)
}

// Mul implements gpu.Device.
func (d *Device) Mul(a, b *gpu.Tensor) *gpu.Tensor {
	d.before("Mul")
	return d.Device.Mul(a, b)
}

// Scale implements gpu.Device.
func (d *Device) Scale(x *gpu.Tensor, s, b float32) *gpu.Tensor {
	d.before("Scale")
	return d.Device.Scale(x, s, b)
}

// Upsample2x implements gpu.Device.
func (d *Device) Upsample2x(x *gpu.Tensor) *gpu.Tensor {
	d.before("Upsample2x")
	return d.Device.Upsample2x(x)
}

// Concat implements gpu.Device.
func (d *Device) Concat(dim int, ts ...*gpu.Tensor) *gpu.Tensor {
	d.before("Concat")
	return d.Device.Concat(dim, ts...)
}

// Slice implements gpu.Device.
func (d *Device) Slice(x *gpu.Tensor, dim, start, end int) *gpu.Tensor {
	d.before("Slice")
	return d.Device.Slice(x, dim, start, end)
}

// Permute implements gpu.Device.
func (d *Device) Permute(x *gpu.Tensor, perm ...int) *gpu.Tensor {
	d.before("Permute")
	return d.Device.Permute(x, perm...)
}

// Cast implements gpu.Device.
func (d *Device) Cast(x *gpu.Tensor) *gpu.Tensor {
	d.before("Cast")
	return d.Device.Cast(x)
}

// Embedding implements gpu.Device.
func (d *Device) Embedding(table *gpu.Tensor, ids []int32) *gpu.Tensor {
	d.before("Embedding")
	return d.Device.Embedding(table, ids)
}

// TimestepEmbedding implements gpu.Device.
func (d *Device) TimestepEmbedding(t []float32, dim int, flipSinToCos bool, shift float32, maxPeriod float32) *gpu.Tensor {
	d.before("TimestepEmbedding")
	return d.Device.TimestepEmbedding(t, dim, flipSinToCos, shift, maxPeriod)
}

var _ gpu.Device = (*Device)(nil)
