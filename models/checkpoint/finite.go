package checkpoint

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/models/nets"
)

// NonFiniteTensor is one tensor holding NaN or Inf values.
type NonFiniteTensor struct {
	// Key is the tensor's name in the file (the LDM key for a single file),
	// Param its diffusers name within Component.
	Key, Component, Param string
	// File is the safetensors file the tensor was read from.
	File string
	// Count of the Total values are NaN or ±Inf.
	Count, Total int64
}

// NonFiniteError reports weights holding NaN or Inf values: a broken
// conversion or a diverged training run, which would turn every image into
// noise or black.
type NonFiniteError struct {
	Path    string // the checkpoint (file or folder)
	Tensors []NonFiniteTensor
}

func (e *NonFiniteError) Error() string {
	const show = 10
	var n int64
	for _, t := range e.Tensors {
		n += t.Count
	}
	var b strings.Builder
	fmt.Fprintf(&b, "checkpoint %s: %d non-finite weight value(s) (NaN or Inf) in %d tensor(s); the file is damaged or was saved from a diverged model:",
		e.Path, n, len(e.Tensors))
	for i, t := range e.Tensors {
		if i == show {
			fmt.Fprintf(&b, "\n  ... and %d more tensor(s)", len(e.Tensors)-show)
			break
		}
		where := ""
		if t.File != "" && t.File != e.Path {
			where = " in " + t.File
		}
		label := fmt.Sprintf("%q", t.Key)
		if t.Key != t.Param {
			label = fmt.Sprintf("%q (%s %s)", t.Key, t.Component, t.Param)
		}
		fmt.Fprintf(&b, "\n  - tensor %s%s: %d of %d values are NaN or Inf", label, where, t.Count, t.Total)
	}
	return b.String()
}

// origin is where one parameter's bytes came from.
type origin struct{ file, key string }

// setOrigins records, for messages, the file and key of every placed
// parameter of c.
func (m *Model) setOrigins(c *component, path func(name string) string) {
	if m.origins == nil {
		m.origins = map[string]origin{}
	}
	for name, key := range c.from {
		m.origins[c.name+"/"+name] = origin{file: path(name), key: key}
	}
}

// Components names the networks of a Model, in the order CheckFinite and
// pipelines use them: its text encoders, "unet", "vae".
func (m *Model) Components() []string {
	roles := m.textRoles()
	if m.T5 != nil {
		roles = append(roles, m.T5.Spec.Role)
	}
	return append(roles, m.Denoiser(), "vae")
}

func (m *Model) textRoles() []string {
	var out []string
	for _, t := range m.Texts {
		out = append(out, t.Spec.Role)
	}
	return out
}

func (m *Model) weightsOf(component string) (nets.Weights, error) {
	if w, ok := m.extra[component]; ok {
		return w, nil
	}
	switch component {
	case "unet":
		return m.UNetWeights, nil
	case "vae":
		return m.VAEWeights, nil
	case "transformer":
		if m.Transformer != nil || m.Flux != nil {
			return m.TransformerWeights, nil
		}
	}
	if m.T5 != nil && component == m.T5.Spec.Role {
		return m.T5.Weights, nil
	}
	if t := m.Text(component); t != nil {
		return t.Weights, nil
	}
	return nil, fmt.Errorf("checkpoint %s: no component %q (want one of %v)", m.Path, component, m.Components())
}

// CheckFinite scans the raw bytes of one component's weights ("unet",
// "vae" or "text_encoder"; all of them when none is named) for NaN and Inf
// values, a few tensors at a time in parallel, and returns a
// *NonFiniteError listing every tensor that holds any. Weights that are not
// nets.MapWeights are not scanned. (A pipeline's upload counts the same
// values as it copies them instead: see StartUpload.)
func (m *Model) CheckFinite(components ...string) error {
	if len(components) == 0 {
		components = m.Components()
	}
	var jobs []finiteJob
	for _, c := range components {
		w, err := m.weightsOf(c)
		if err != nil {
			return err
		}
		mw, ok := w.(nets.MapWeights)
		if !ok {
			continue
		}
		for name, p := range mw {
			jobs = append(jobs, finiteJob{c, name, p})
		}
	}
	counts, err := m.countFinite(jobs)
	if err != nil {
		return err
	}
	return m.nonFinite(jobs, counts)
}

// finiteJob is one tensor to scan for NaN and Inf.
type finiteJob struct {
	comp, name string
	p          nets.Param
}

// countFinite counts the non-finite values of each job's tensor, a few
// tensors at a time in parallel. The weights are mapped: a file truncated
// meanwhile faults on read (SIGBUS), which each goroutine turns into an
// error naming the file.
func (m *Model) countFinite(jobs []finiteJob) ([]int64, error) {
	// Largest first, so the workers finish together.
	order := make([]int, len(jobs))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(i, j int) bool { return len(jobs[order[i]].p.Raw) > len(jobs[order[j]].p.Raw) })
	counts := make([]int64, len(jobs))
	faults := make([]error, len(jobs))
	var next atomic.Int64
	var wg sync.WaitGroup
	workers := min(runtime.GOMAXPROCS(0), 4, len(jobs))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1) - 1)
				if k >= len(jobs) {
					return
				}
				i := order[k]
				j := jobs[i]
				faults[i] = safefile.Guard(m.fileOf(j.comp, j.name), func() { counts[i] = CountNonFinite(j.p.DType, j.p.Raw) })
				if faults[i] != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range faults {
		if err != nil {
			return nil, err
		}
	}
	return counts, nil
}

// nonFinite returns a *NonFiniteError listing every job whose count is not
// zero (sorted by file, then key), or nil.
func (m *Model) nonFinite(jobs []finiteJob, counts []int64) error {
	var bad []NonFiniteTensor
	for i, n := range counts {
		if n == 0 {
			continue
		}
		j := jobs[i]
		t := NonFiniteTensor{Key: j.name, Component: j.comp, Param: j.name, File: m.fileOf(j.comp, j.name), Count: n,
			Total: int64(len(j.p.Raw) / max(j.p.DType.Size(), 1))}
		if o, ok := m.origins[j.comp+"/"+j.name]; ok {
			t.Key, t.File = o.key, o.file
		}
		bad = append(bad, t)
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Slice(bad, func(i, j int) bool {
		if bad[i].File != bad[j].File {
			return bad[i].File < bad[j].File
		}
		return bad[i].Key < bad[j].Key
	})
	return &NonFiniteError{Path: m.Path, Tensors: bad}
}

// fileOf names the file a component's parameter was read from.
func (m *Model) fileOf(component, param string) string {
	if o, ok := m.origins[component+"/"+param]; ok && o.file != "" {
		return o.file
	}
	if w, ok := m.extra[component]; ok { // a side model's (Source): the file holding it
		if p, ok := w.Get(param); ok {
			if f := m.fileHolding(p.Raw); f != "" {
				return f
			}
		}
	}
	return m.Path
}

// GuardedWeights returns a component's weights for reading on the host
// (LoRA merges; pipelines upload with StartUpload, which copies once): each
// Get copies the parameter's bytes out of the mapped file under safefile.Guard,
// so that a file truncated while it is read gives an error, not a SIGBUS
// (the GL device reads upload bytes in C, where no fault can be caught).
// After the upload, Err says whether a read faulted; the parameters read
// then are zeros.
func (m *Model) GuardedWeights(component string) (*GuardedWeights, error) {
	w, err := m.weightsOf(component)
	if err != nil {
		return nil, err
	}
	return &GuardedWeights{m: m, comp: component, w: w}, nil
}

// GuardedWeights is a nets.Weights over mapped bytes; see Model.GuardedWeights.
type GuardedWeights struct {
	m    *Model
	comp string
	w    nets.Weights
	err  error
}

// Get implements nets.Weights.
func (g *GuardedWeights) Get(name string) (nets.Param, bool) {
	if g.w == nil {
		return nets.Param{}, false
	}
	p, ok := g.w.Get(name)
	if !ok {
		return p, ok
	}
	raw := make([]byte, len(p.Raw))
	if g.err == nil {
		g.err = safefile.Guard(g.m.fileOf(g.comp, name), func() { copy(raw, p.Raw) })
	}
	// The copy goes to the device; the mapped pages need not stay resident
	// (the file and the device's copy would otherwise both count).
	for _, f := range g.m.files {
		f.DropData(p.Raw)
	}
	p.Raw = raw
	return p, true
}

// Err reports a read that faulted because the file changed.
func (g *GuardedWeights) Err() error { return g.err }

// Lane masks of the exponent bits: a value is NaN or Inf exactly when its
// exponent bits are all ones.
const (
	f16Exp  = 0x7C00_7C00_7C00_7C00
	bf16Exp = 0x7F80_7F80_7F80_7F80
	f32Exp  = 0x7F800000_7F800000
	low15   = 0x7FFF_7FFF_7FFF_7FFF
	high16  = 0x8000_8000_8000_8000
	low31   = 0x7FFFFFFF_7FFFFFFF
	high32  = 0x80000000_80000000
)

// CountNonFinite counts the NaN and ±Inf values among the little-endian
// F16, BF16 or F32 values in raw (0 for other types). It reads eight bytes
// at a time and tests every lane at once: with y = (x & exp) ^ exp, a lane
// is non-finite when its y is 0, and y + 0x7FFF (0x7FFFFFFF for F32) sets
// the lane's top bit exactly when y is not 0, without carrying into the
// next lane since y never exceeds the exponent mask.
func CountNonFinite(dt gpu.DType, raw []byte) int64 {
	var exp, low, high uint64
	switch dt {
	case gpu.F16:
		exp, low, high = f16Exp, low15, high16
	case gpu.BF16:
		exp, low, high = bf16Exp, low15, high16
	case gpu.F32:
		exp, low, high = f32Exp, low31, high32
	default:
		return 0
	}
	lane := func(x uint64) int {
		y := (x & exp) ^ exp
		return bits.OnesCount64(^(y + low) & high)
	}
	var n int
	i := 0
	for ; i+32 <= len(raw); i += 32 {
		b := raw[i : i+32 : i+32]
		a0 := binary.LittleEndian.Uint64(b[0:])
		a1 := binary.LittleEndian.Uint64(b[8:])
		a2 := binary.LittleEndian.Uint64(b[16:])
		a3 := binary.LittleEndian.Uint64(b[24:])
		// Fast path: any all-ones exponent lane makes (x & exp) == exp for
		// that lane; test the four words together before counting.
		y0, y1, y2, y3 := (a0&exp)^exp, (a1&exp)^exp, (a2&exp)^exp, (a3&exp)^exp
		z := ^(y0 + low) | ^(y1 + low) | ^(y2 + low) | ^(y3 + low)
		if z&high == 0 {
			continue
		}
		n += lane(a0) + lane(a1) + lane(a2) + lane(a3)
	}
	for ; i+8 <= len(raw); i += 8 {
		n += lane(binary.LittleEndian.Uint64(raw[i:]))
	}
	// The tail: fewer than eight bytes, whole values only, zero-padded
	// (a zero lane is finite).
	if rest := len(raw) - i; rest > 0 {
		var buf [8]byte
		size := dt.Size()
		copy(buf[:], raw[i:i+rest/size*size])
		n += lane(binary.LittleEndian.Uint64(buf[:]))
	}
	return int64(n)
}
