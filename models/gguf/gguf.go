// Package gguf reads and writes GGUF files (versions 2 and 3), the container
// of ggml, llama.cpp, stable-diffusion.cpp and ComfyUI-GGUF: a header, typed
// metadata key/values, tensor descriptions and aligned tensor data. Parsing
// treats the bytes as untrusted: every count, length and offset is bounded
// by the file before anything is allocated, and every problem is a
// *FormatError naming the file.
package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sort"
	"unicode/utf8"

	"github.com/stepwise/stepwise/gpu"
)

// Magic opens every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// MaxDims is the most dimensions a ggml tensor has.
const MaxDims = 4

// Metadata value types (gguf_type).
const (
	TypeUint8 uint32 = iota
	TypeInt8
	TypeUint16
	TypeInt16
	TypeUint32
	TypeInt32
	TypeFloat32
	TypeBool
	TypeString
	TypeArray
	TypeUint64
	TypeInt64
	TypeFloat64
)

// ggml tensor types this package maps to a gpu storage type.
var ggmlTypes = map[uint32]gpu.DType{
	0: gpu.F32, 1: gpu.F16, 2: gpu.Q4_0, 8: gpu.Q8_0, 12: gpu.Q4_K, 13: gpu.Q5_K, 30: gpu.BF16,
}

// ggmlNames names the other ggml types, for errors.
var ggmlNames = map[uint32]string{
	3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 14: "Q6_K", 15: "Q8_K",
	16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
	23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 34: "TQ1_0",
	35: "TQ2_0", 39: "MXFP4",
}

// GGMLType returns the ggml type number of a storage type (false for the
// fp8 types, which GGUF does not have).
func GGMLType(dt gpu.DType) (uint32, bool) {
	for k, v := range ggmlTypes {
		if v == dt {
			return k, true
		}
	}
	return 0, false
}

// FormatError reports a malformed or unsupported GGUF file.
type FormatError struct {
	Path   string
	Tensor string // "" for a header problem
	Msg    string
}

func (e *FormatError) Error() string {
	if e.Tensor != "" {
		return fmt.Sprintf("gguf %s: tensor %q: %s", e.Path, e.Tensor, e.Msg)
	}
	return fmt.Sprintf("gguf %s: %s", e.Path, e.Msg)
}

// Tensor describes one tensor of a file.
type Tensor struct {
	Name string
	// Shape is row-major, outermost first (GGUF stores ne[] innermost
	// first; it is reversed here).
	Shape []int
	DType gpu.DType
	// Offset is the byte offset of the data from the start of the data
	// section; Size its length in bytes.
	Offset, Size int64
}

// File is a parsed GGUF file held in (or mapped into) memory.
type File struct {
	Path    string
	Version uint32
	// Meta holds the metadata: uint8..uint64 as uint64, int8..int64 as
	// int64, float32/64 as float64, bool, string, and arrays as []any.
	Meta      map[string]any
	Tensors   []Tensor // in file order
	Alignment int
	// DataStart is the file offset of the data section.
	DataStart int64
	data      []byte
}

// Data returns the bytes of t (a slice of the file's bytes).
func (f *File) Data(t Tensor) []byte { return f.data[t.Offset : t.Offset+t.Size] }

// String returns the string metadata value key, or "".
func (f *File) String(key string) string {
	s, _ := f.Meta[key].(string)
	return s
}

// reader walks the bytes with bounds checks.
type reader struct {
	b   []byte
	pos int
	err error
}

func (r *reader) need(n uint64, what string) bool {
	if r.err != nil {
		return false
	}
	if n > uint64(len(r.b)-r.pos) {
		r.err = fmt.Errorf("%s at byte %d needs %d bytes, the file has %d left (truncated file?)", what, r.pos, n, len(r.b)-r.pos)
		return false
	}
	return true
}

func (r *reader) u8(what string) uint8 {
	if !r.need(1, what) {
		return 0
	}
	r.pos++
	return r.b[r.pos-1]
}

func (r *reader) u16(what string) uint16 {
	if !r.need(2, what) {
		return 0
	}
	r.pos += 2
	return binary.LittleEndian.Uint16(r.b[r.pos-2:])
}

func (r *reader) u32(what string) uint32 {
	if !r.need(4, what) {
		return 0
	}
	r.pos += 4
	return binary.LittleEndian.Uint32(r.b[r.pos-4:])
}

func (r *reader) u64(what string) uint64 {
	if !r.need(8, what) {
		return 0
	}
	r.pos += 8
	return binary.LittleEndian.Uint64(r.b[r.pos-8:])
}

func (r *reader) str(what string) string {
	n := r.u64(what + " length")
	if !r.need(n, what) {
		return ""
	}
	s := string(r.b[r.pos : r.pos+int(n)])
	r.pos += int(n)
	if !utf8.ValidString(s) {
		r.err = fmt.Errorf("%s at byte %d is not valid UTF-8", what, r.pos-int(n))
	}
	return s
}

// minSize is the fewest bytes a value of metadata type t occupies (0 for an
// unknown type).
func minSize(t uint32) uint64 {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64, TypeString:
		return 8
	case TypeArray:
		return 12
	}
	return 0
}

// value reads one metadata value of type t; arrays may not nest deeper
// than one level (ggml's own reader refuses arrays of arrays too).
func (r *reader) value(t uint32, key string, inArray bool) any {
	what := fmt.Sprintf("metadata %q", key)
	switch t {
	case TypeUint8:
		return uint64(r.u8(what))
	case TypeInt8:
		return int64(int8(r.u8(what)))
	case TypeUint16:
		return uint64(r.u16(what))
	case TypeInt16:
		return int64(int16(r.u16(what)))
	case TypeUint32:
		return uint64(r.u32(what))
	case TypeInt32:
		return int64(int32(r.u32(what)))
	case TypeFloat32:
		return float64(math.Float32frombits(r.u32(what)))
	case TypeBool:
		v := r.u8(what)
		if v > 1 && r.err == nil {
			r.err = fmt.Errorf("%s: bool byte %d is neither 0 nor 1", what, v)
		}
		return v == 1
	case TypeString:
		return r.str(what)
	case TypeUint64:
		return r.u64(what)
	case TypeInt64:
		return int64(r.u64(what))
	case TypeFloat64:
		return math.Float64frombits(r.u64(what))
	case TypeArray:
		if inArray {
			r.err = fmt.Errorf("%s: arrays of arrays are not supported", what)
			return nil
		}
		et := r.u32(what + " array type")
		n := r.u64(what + " array length")
		if r.err != nil {
			return nil
		}
		ms := minSize(et)
		if ms == 0 {
			r.err = fmt.Errorf("%s: unknown array element type %d", what, et)
			return nil
		}
		if n > uint64(len(r.b)-r.pos)/ms {
			r.err = fmt.Errorf("%s: array of %d elements cannot fit in the %d bytes left (truncated file?)", what, n, len(r.b)-r.pos)
			return nil
		}
		out := make([]any, 0, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			out = append(out, r.value(et, key, true))
		}
		return out
	}
	if r.err == nil {
		r.err = fmt.Errorf("%s: unknown value type %d", what, t)
	}
	return nil
}

// Parse reads a whole GGUF file held in b; path names it in errors. The
// File keeps b for Data.
func Parse(path string, b []byte) (*File, error) {
	fail := func(tensor, format string, args ...any) error {
		return &FormatError{Path: path, Tensor: tensor, Msg: fmt.Sprintf(format, args...)}
	}
	if len(b) < 4 || string(b[:4]) != Magic {
		n := min(len(b), 4)
		return nil, fail("", "bad magic %q: not a GGUF file (it starts with %q, want %q)", b[:n], b[:n], Magic)
	}
	r := &reader{b: b, pos: 4}
	f := &File{Path: path, Meta: map[string]any{}, Alignment: DefaultAlignment}
	f.Version = r.u32("version")
	if r.err == nil {
		switch {
		case f.Version == 1:
			return nil, fail("", "GGUF version 1 (32-bit counts) is not supported; convert the file with a current llama.cpp or stable-diffusion.cpp")
		case f.Version != 2 && f.Version != 3:
			if bits.ReverseBytes32(f.Version) == 2 || bits.ReverseBytes32(f.Version) == 3 {
				return nil, fail("", "big-endian GGUF files are not supported")
			}
			return nil, fail("", "unknown GGUF version %d (want 2 or 3)", f.Version)
		}
	}
	nt := r.u64("tensor count")
	nkv := r.u64("metadata count")
	if r.err != nil {
		return nil, fail("", "%v", r.err)
	}
	rest := uint64(len(b) - r.pos)
	if nkv > rest/(8+4+1) {
		return nil, fail("", "%d metadata entries cannot fit in the %d bytes left (truncated or corrupt file?)", nkv, rest)
	}
	if nt > rest/(8+4+8+4+8) {
		return nil, fail("", "%d tensors cannot fit in the %d bytes left (truncated or corrupt file?)", nt, rest)
	}
	for i := uint64(0); i < nkv; i++ {
		key := r.str("metadata key")
		t := r.u32(fmt.Sprintf("metadata %q type", key))
		v := r.value(t, key, false)
		if r.err != nil {
			return nil, fail("", "%v", r.err)
		}
		if _, dup := f.Meta[key]; dup {
			return nil, fail("", "duplicate metadata key %q", key)
		}
		f.Meta[key] = v
	}
	if a, ok := f.Meta["general.alignment"]; ok {
		u, ok := a.(uint64)
		if !ok || u == 0 || u&(u-1) != 0 || u > 1<<20 {
			return nil, fail("", "general.alignment %v is not a power of two up to 1 MiB", a)
		}
		f.Alignment = int(u)
	}
	seen := map[string]bool{}
	for i := uint64(0); i < nt; i++ {
		var t Tensor
		t.Name = r.str("tensor name")
		nd := r.u32(fmt.Sprintf("tensor %q dimension count", t.Name))
		if r.err == nil && (nd == 0 || nd > MaxDims) {
			return nil, fail(t.Name, "%d dimensions (want 1 to %d)", nd, MaxDims)
		}
		ne := make([]uint64, 0, MaxDims)
		for j := uint32(0); j < nd && r.err == nil; j++ {
			ne = append(ne, r.u64("tensor dimension"))
		}
		typ := r.u32("tensor type")
		off := r.u64("tensor offset")
		if r.err != nil {
			return nil, fail("", "%v", r.err)
		}
		if seen[t.Name] {
			return nil, fail(t.Name, "duplicate tensor name")
		}
		seen[t.Name] = true
		dt, ok := ggmlTypes[typ]
		if !ok {
			name := ggmlNames[typ]
			if name == "" {
				name = "unknown"
			}
			return nil, fail(t.Name, "ggml type %d (%s) is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K)", typ, name)
		}
		t.DType = dt
		numel := uint64(1)
		for _, d := range ne {
			if d == 0 || d > math.MaxInt32 || numel > math.MaxInt64/d {
				return nil, fail(t.Name, "dimensions %v overflow or are zero", ne)
			}
			numel *= d
		}
		if numel > math.MaxInt64/64 {
			return nil, fail(t.Name, "dimensions %v overflow", ne)
		}
		if ne[0]%uint64(dt.Block()) != 0 {
			return nil, fail(t.Name, "inner dimension %d is not a multiple of the %d-element %v block", ne[0], dt.Block(), dt)
		}
		t.Size = int64(numel) / int64(dt.Block()) * int64(dt.BlockBytes())
		if off > math.MaxInt64 {
			return nil, fail(t.Name, "offset %d overflows", off)
		}
		t.Offset = int64(off)
		if t.Offset%int64(f.Alignment) != 0 {
			return nil, fail(t.Name, "offset %d is not a multiple of the %d-byte alignment", off, f.Alignment)
		}
		t.Shape = make([]int, len(ne))
		for j, d := range ne {
			t.Shape[len(ne)-1-j] = int(d)
		}
		f.Tensors = append(f.Tensors, t)
	}
	start := (int64(r.pos) + int64(f.Alignment) - 1) / int64(f.Alignment) * int64(f.Alignment)
	if nt > 0 && start > int64(len(b)) {
		return nil, fail("", "the data section would start at byte %d, past the end of the %d-byte file (truncated file?)", start, len(b))
	}
	start = min(start, int64(len(b)))
	f.DataStart = start
	f.data = b[start:]
	size := int64(len(f.data))
	for _, t := range f.Tensors {
		if t.Offset > size || t.Size > size-t.Offset {
			return nil, fail(t.Name, "data [%d, %d) runs past the %d-byte data section (truncated file?)", t.Offset, t.Offset+t.Size, size)
		}
	}
	// Overlaps: sorted by offset, each must end before the next begins.
	byOff := append([]Tensor(nil), f.Tensors...)
	sort.Slice(byOff, func(i, j int) bool { return byOff[i].Offset < byOff[j].Offset })
	for i := 1; i < len(byOff); i++ {
		if p := byOff[i-1]; p.Offset+p.Size > byOff[i].Offset {
			return nil, fail(byOff[i].Name, "data overlaps tensor %q", p.Name)
		}
	}
	return f, nil
}
