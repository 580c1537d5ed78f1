package nets

import (
	"fmt"
	"sort"
	"strings"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
)

// QuantizableRow reports whether a weight of the given shape can stay in the
// quantized type dt on the device: a 2-D [out, in] linear weight whose rows
// are whole blocks (and whole 4-element vectors, for the fp8 loaders).
// Converters quantize only such weights; loaders widen the others to F16.
func QuantizableRow(dt gpu.DType, shape []int) bool {
	return len(shape) == 2 && shape[1]%dt.Block() == 0 && shape[1]%4 == 0
}

// WeightsError reports every expected parameter of a network that is missing
// from its Weights or does not match the config: one line per parameter,
// naming it and the expected shape.
type WeightsError struct {
	Component string   // "unet", "vae" or "text_encoder"
	Problems  []string // sorted by parameter name
}

func (e *WeightsError) Error() string {
	return fmt.Sprintf("%s: %d of the expected weights are missing or mis-shaped:\n  %s",
		e.Component, len(e.Problems), strings.Join(e.Problems, "\n  "))
}

// checkWeights compares w against the expected names and shapes and returns
// a *WeightsError listing every problem, or nil.
func checkWeights(component string, want map[string][]int, w Weights) error {
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	var problems []string
	for _, n := range names {
		shape := gpu.Shape(want[n])
		p, ok := w.Get(n)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: missing (want shape %v)", n, shape))
		case !p.DType.Valid():
			problems = append(problems, fmt.Sprintf("%s: unsupported storage type %v (want F32, F16, BF16, F8_E4M3, F8_E5M2, Q8_0, Q4_0, Q4_K or Q5_K)", n, p.DType))
		case !gpu.Shape(p.Shape).Equal(shape):
			problems = append(problems, fmt.Sprintf("%s: shape %v, want %v", n, gpu.Shape(p.Shape), shape))
		case len(p.Raw) != p.DType.Bytes(shape.Numel()):
			problems = append(problems, fmt.Sprintf("%s: %d bytes of data, want %d for %v %v",
				n, len(p.Raw), p.DType.Bytes(shape.Numel()), p.DType, shape))
		}
	}
	if len(problems) > 0 {
		return &WeightsError{Component: component, Problems: problems}
	}
	return nil
}

// Decl is one parameter a network declares: its diffusers/transformers name
// (relative to the component), its shape, and where the same tensor lives in
// the network's original code base (LDM/SGM for U-Nets and VAEs, OpenCLIP for
// OpenCLIP text towers; relative to the component's prefix in a single file).
// Key mapping, the expected-tensor list, config inference and `info` all
// read these declarations; nothing else names parameters.
type Decl struct {
	Name  string
	Shape []int
	// Orig is the original name. Several declarations may share one Orig
	// when the original fuses them (Part of Parts equal slices along
	// dimension 0, as OpenCLIP's attn.in_proj_weight holds q, k and v).
	Orig        string
	Part, Parts int
	// From and Of place an unequal part: the tensor is rows [From,
	// From+Shape[0]) of an original of Of rows along dimension 0 (Flux's
	// single-block linear1 holds q, k, v and the MLP input). Of is 0 for
	// the equal parts above and for unfused tensors.
	From, Of int
	// Squeeze: the original stores the [O,I] weight as a 1x1 convolution
	// [O,I,1,1]. Transpose: the original stores the [O,I] weight as [I,O]
	// (OpenCLIP's text_projection, applied as x @ W).
	Squeeze, Transpose bool
	// Swap: the original stores the two halves of dimension 0 in the
	// other order (SD3's final adaLN modulation is (shift, scale) in the
	// original, (scale, shift) in diffusers).
	Swap bool
}

// OrigShape is the shape of the tensor named Orig.
func (d Decl) OrigShape() []int {
	s := append([]int(nil), d.Shape...)
	switch {
	case d.Transpose && len(s) == 2:
		s[0], s[1] = s[1], s[0]
	case d.Squeeze:
		s = append(s, 1, 1)
	}
	if d.Parts > 1 {
		s[0] *= d.Parts
	}
	if d.Of > 0 {
		s[0] = d.Of
	}
	return s
}

// Fused reports whether the original holds this tensor together with
// others (equal Parts, or rows From of Of).
func (d Decl) Fused() bool { return d.Parts > 1 || d.Of > 0 }

// RowRange is the byte range of this tensor within its original's data
// (all of it when not fused), for an original of origBytes bytes.
func (d Decl) RowRange(origBytes int) (int, int) {
	switch {
	case d.Of > 0:
		row := origBytes / d.Of
		return d.From * row, (d.From + d.Shape[0]) * row
	case d.Parts > 1:
		n := origBytes / d.Parts
		return d.Part * n, (d.Part + 1) * n
	}
	return 0, origBytes
}

// buildState is shared by the builders of one network: the expected
// parameters and, when a device is set, the tensors uploaded so far.
type buildState struct {
	d      gpu.Device // nil: only record names and shapes
	w      Weights
	shapes map[string][]int
	decls  []Decl
	params []*gpu.Tensor
	named  map[string]*gpu.Tensor // params by declared name
	err    error                  // first inconsistency in the network's own description
}

// builder declares a network's parameters under a name prefix (and the
// prefix of the same module in the original code base). The same
// construction code runs twice: once without a device to list the expected
// parameters, then with one to upload them, so the list can never drift from
// what the network uses.
type builder struct {
	s            *buildState
	prefix, orig string
	// next, when set, describes how the next param's original is stored.
	mod *Decl
}

// at returns a builder for the sub-module prefix.name, named the same in the
// original.
func (b builder) at(format string, args ...any) builder {
	seg := fmt.Sprintf(format, args...)
	return b.as(seg, seg)
}

// as returns a builder for the sub-module name whose original is orig
// (relative to the original's current prefix; "" keeps that prefix).
func (b builder) as(name, orig string) builder {
	o := b.orig
	if orig != "" {
		o += orig + "."
	}
	return builder{s: b.s, prefix: b.prefix + name + ".", orig: o}
}

// sub is at(name), or b itself for "".
func (b builder) sub(name string) builder {
	if name == "" {
		return b
	}
	return b.at("%s", name)
}

// stored returns a builder whose parameters' originals are stored as
// described by mod (Squeeze, Transpose, Part/Parts; mod.Orig, when set,
// is the original name relative to the original prefix).
func (b builder) stored(mod Decl) builder {
	b.mod = &mod
	return b
}

// param declares the parameter prefix+name with the given shape and returns
// it uploaded (nil while only recording). A quantized weight (Q8_0, fp8,
// ...) is widened to F16 here: only linear layers read it packed (see
// linearWeight).
func (b builder) param(name string, shape ...int) *gpu.Tensor {
	return b.paramAs(name, false, shape...)
}

// linearWeight is param for the [out, in] weight of a linear layer: a
// quantized weight stays packed on the device when in is a whole number
// of its blocks (as the MatMul kernels need), else it is widened to F16
// as stable-diffusion.cpp keeps such rows.
func (b builder) linearWeight(name string, out, in int) *gpu.Tensor {
	return b.paramAs(name, true, out, in)
}

func (b builder) paramAs(name string, packed bool, shape ...int) *gpu.Tensor {
	full := b.prefix + name
	if prev, ok := b.s.shapes[full]; ok && !gpu.Shape(prev).Equal(shape) && b.s.err == nil {
		b.s.err = fmt.Errorf("parameter %s declared with shapes %v and %v", full, gpu.Shape(prev), gpu.Shape(shape))
	}
	if _, ok := b.s.shapes[full]; !ok {
		d := Decl{Name: full, Shape: append([]int(nil), shape...), Orig: b.orig + name}
		if m := b.mod; m != nil {
			d.Part, d.Parts, d.From, d.Of = m.Part, m.Parts, m.From, m.Of
			d.Squeeze, d.Transpose = m.Squeeze && len(shape) == 2, m.Transpose && len(shape) == 2
			d.Swap = m.Swap
			if m.Orig != "" {
				d.Orig = b.orig + m.Orig
			}
		}
		b.s.decls = append(b.s.decls, d)
	}
	b.s.shapes[full] = append([]int(nil), shape...)
	if b.s.d == nil {
		return nil
	}
	p, _ := b.s.w.Get(full)
	if t, ok := b.s.named[full]; ok { // declared twice: one tensor
		return t
	}
	dt, raw := p.DType, p.Raw
	if dt.Quantized() && !(packed && QuantizableRow(dt, shape)) {
		v, err := ref.Dequantize(dt, raw, gpu.Shape(shape).Numel())
		if err != nil {
			b.s.d.Fail(fmt.Errorf("%s: %w", full, err))
			return b.s.d.Upload(make([]float32, gpu.Shape(shape).Numel()), shape...)
		}
		dt, raw = gpu.F16, ref.EncodeF16(v)
	}
	t := b.s.d.UploadRaw(dt, raw, shape...)
	b.s.params = append(b.s.params, t)
	b.s.named[full] = t
	return t
}

// expected runs a network's construction without a device and returns the
// parameters it declares.
func expected[T any](build func(b builder) (T, error)) (map[string][]int, error) {
	s, err := declare(build)
	if err != nil {
		return nil, err
	}
	return s.shapes, nil
}

// declare runs a network's construction without a device.
func declare[T any](build func(b builder) (T, error)) (*buildState, error) {
	s := &buildState{shapes: map[string][]int{}}
	if _, err := build(builder{s: s}); err != nil {
		return nil, err
	}
	if s.err != nil {
		return nil, s.err
	}
	return s, nil
}

// construct validates w against the parameters build declares, then runs
// build again uploading them to d. On failure nothing stays on the device.
// It returns the uploaded parameters in order and by declared name.
func construct[T any](d gpu.Device, w Weights, component string, build func(b builder) (T, error)) (T, []*gpu.Tensor, map[string]*gpu.Tensor, error) {
	var zero T
	want, err := expected(build)
	if err != nil {
		return zero, nil, nil, fmt.Errorf("%s: %w", component, err)
	}
	if w == nil {
		w = MapWeights{}
	}
	if err := checkWeights(component, want, w); err != nil {
		return zero, nil, nil, err
	}
	s := &buildState{d: d, w: w, shapes: map[string][]int{}, named: map[string]*gpu.Tensor{}}
	net, err := build(builder{s: s})
	if err == nil {
		err = d.Err()
	}
	if err != nil {
		for _, t := range s.params {
			d.Release(t)
		}
		return zero, nil, nil, fmt.Errorf("%s: uploading weights: %w", component, err)
	}
	return net, s.params, s.named, nil
}

// replaceParam puts t in place of the uploaded parameter name of a network
// (see UNet.ReplaceParam).
func replaceParam(d gpu.Device, named map[string]*gpu.Tensor, name string, t *gpu.Tensor) error {
	old, ok := named[name]
	switch {
	case !ok:
		return fmt.Errorf("no parameter %s", name)
	case t == nil || t == old:
		return fmt.Errorf("parameter %s: no new tensor", name)
	case !old.Shape.Equal(t.Shape):
		return fmt.Errorf("parameter %s: shape %v, want %v", name, t.Shape, old.Shape)
	case !t.DType.Valid():
		return fmt.Errorf("parameter %s: unsupported storage type %v", name, t.DType)
	}
	// The layers hold the *gpu.Tensor itself: it takes t's storage, so
	// every use sees the new values without rebuilding the network.
	d.Release(old)
	*old = gpu.Tensor{Shape: old.Shape, DType: t.DType, Store: t.Store}
	return nil
}

// releaseAll frees uploaded parameters.
func releaseAll(d gpu.Device, params []*gpu.Tensor) {
	for _, t := range params {
		d.Release(t)
	}
}

// paramBytes is the device memory held by params.
func paramBytes(params []*gpu.Tensor) int64 {
	var n int64
	for _, t := range params {
		n += int64(max(t.DType.Bytes(t.Numel()), 0))
	}
	return n
}

func decls[T any](build func(b builder) (T, error)) ([]Decl, error) {
	s, err := declare(build)
	if err != nil {
		return nil, err
	}
	return s.decls, nil
}

// UNetDecls lists every parameter of a U-Net with config c (unset fields
// take SD 1.5's values) in declaration order, or says why c is unsupported.
func UNetDecls(c UNetConfig) ([]Decl, error) {
	c.Defaults()
	return decls(func(b builder) (*UNet, error) { return buildUNet(b, c) })
}

// VAEDecls lists every parameter of an AutoencoderKL with config c.
func VAEDecls(c VAEConfig) ([]Decl, error) {
	c.Defaults()
	return decls(func(b builder) (*VAE, error) { return buildVAE(b, c) })
}

// TextDecls lists every parameter of a CLIP text model with config c.
func TextDecls(c TextConfig) ([]Decl, error) {
	c.Defaults()
	return decls(func(b builder) (*TextEncoder, error) { return buildText(b, c) })
}
