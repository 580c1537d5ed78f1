// Package safetensors reads safetensors files: it validates the untrusted
// header completely when a file is opened and then hands out each tensor's
// raw little-endian bytes straight from a read-only memory mapping.
package safetensors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"time"
	"unsafe"

	"github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/safefile"
)

// MaxHeaderSize bounds the JSON header a file may declare (100 MiB).
const MaxHeaderSize = 100 << 20

// DType is a tensor element type as spelled in a safetensors header.
type DType string

// Element types of the safetensors format.
const (
	F64    DType = "F64"
	F32    DType = "F32"
	F16    DType = "F16"
	BF16   DType = "BF16"
	F8E4M3 DType = "F8_E4M3"
	F8E5M2 DType = "F8_E5M2"
	I64    DType = "I64"
	I32    DType = "I32"
	I16    DType = "I16"
	I8     DType = "I8"
	U64    DType = "U64"
	U32    DType = "U32"
	U16    DType = "U16"
	U8     DType = "U8"
	Bool   DType = "BOOL"
)

var dtypeSizes = map[DType]int{
	F64: 8, F32: 4, F16: 2, BF16: 2, F8E4M3: 1, F8E5M2: 1,
	I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, Bool: 1,
}

// Size is the number of bytes one element occupies, 0 for an unknown type.
func (d DType) Size() int { return dtypeSizes[d] }

// Block types of GGUF files read through FromMapped (never valid in a
// safetensors header).
const (
	Q8_0 DType = "Q8_0"
	Q4_0 DType = "Q4_0"
	Q4_K DType = "Q4_K"
	Q5_K DType = "Q5_K"
)

// GPU returns the matching gpu storage type: F32, F16, BF16, the fp8 types
// and the GGUF block types have one.
func (d DType) GPU() (gpu.DType, bool) {
	switch d {
	case F32:
		return gpu.F32, true
	case F16:
		return gpu.F16, true
	case BF16:
		return gpu.BF16, true
	case F8E4M3:
		return gpu.F8E4M3, true
	case F8E5M2:
		return gpu.F8E5M2, true
	case Q8_0:
		return gpu.Q8_0, true
	case Q4_0:
		return gpu.Q4_0, true
	case Q4_K:
		return gpu.Q4_K, true
	case Q5_K:
		return gpu.Q5_K, true
	}
	return 0, false
}

// FromGPU is GPU's inverse.
func FromGPU(dt gpu.DType) (DType, bool) {
	for _, d := range []DType{F32, F16, BF16, F8E4M3, F8E5M2, Q8_0, Q4_0, Q4_K, Q5_K} {
		if g, _ := d.GPU(); g == dt {
			return d, true
		}
	}
	return "", false
}

// TensorInfo describes one tensor of a file. Begin and End are byte offsets
// relative to the start of the data section (just after the header).
type TensorInfo struct {
	Name       string
	DType      DType
	Shape      []int
	Begin, End int64
}

// NumElements is the product of the shape (1 for a scalar).
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= int64(d)
	}
	return n
}

// FormatError reports a malformed file: which file, which tensor (empty
// when the problem is not about one tensor) and what is wrong.
type FormatError struct {
	Path   string
	Tensor string
	Msg    string
}

func (e *FormatError) Error() string {
	if e.Tensor != "" {
		return fmt.Sprintf("safetensors %s: tensor %q: %s", e.Path, e.Tensor, e.Msg)
	}
	return fmt.Sprintf("safetensors %s: %s", e.Path, e.Msg)
}

// File is an opened safetensors file. Its methods are safe for concurrent
// use until Close.
type File struct {
	path    string
	mm      mmap.MMap // nil for FromBytes
	data    []byte    // the data section
	tensors []TensorInfo
	index   map[string]int
	meta    map[string]string
	closed  bool
	// fd is the mapped file, kept open so that Changed asks about the
	// file mapped, wherever its path points now; size and mtime are its
	// when it was mapped.
	fd    *os.File
	size  int64
	mtime time.Time
}

// Open maps the file at path read-only and validates its header. Nothing is
// copied: a multi-gigabyte checkpoint opens in the time it takes to parse
// its header.
func Open(path string) (*File, error) {
	// Regular files only: a FIFO would block the open, a device map
	// garbage. The open never blocks.
	fd, st, err := safefile.Open(path)
	if err != nil {
		var nr *safefile.NotRegularError
		if errors.As(err, &nr) {
			return nil, &FormatError{Path: path, Msg: fmt.Sprintf("not a regular file: it is %s", nr.Kind)}
		}
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if st.Size() < 8 {
		fd.Close()
		return nil, &FormatError{Path: path, Msg: fmt.Sprintf("file is %d bytes, too short for the 8-byte header length (empty or truncated file?)", st.Size())}
	}
	if st.Size() > math.MaxInt {
		fd.Close()
		return nil, &FormatError{Path: path, Msg: "file too large to map"}
	}
	mm, err := mmap.Map(fd, mmap.RDONLY, 0)
	if err != nil {
		fd.Close()
		return nil, fmt.Errorf("safetensors %s: mapping: %w", path, err)
	}
	var f *File
	if ferr := safefile.Guard(path, func() { f, err = parse(path, mm) }); ferr != nil {
		err = ferr // truncated since the Stat above
	}
	if err != nil {
		mm.Unmap()
		fd.Close()
		return nil, err
	}
	f.mm, f.fd = mm, fd
	f.size, f.mtime = st.Size(), st.ModTime()
	return f, nil
}

// Changed returns a *safefile.ChangedError when the mapped file was
// written to since it was mapped (its size or modification time changed),
// else nil (also after Close and for FromBytes files). A file replaced or
// deleted under its path is not a change: the mapping keeps the old one.
// Readers of the mapping that have no guard, such as a device reading
// weights in place, call it before their work: a file truncated under them
// would crash the process.
func (f *File) Changed() error {
	if f.closed || f.fd == nil {
		return nil
	}
	st, err := f.fd.Stat()
	if err != nil || st.Size() != f.size || !st.ModTime().Equal(f.mtime) {
		return &safefile.ChangedError{Path: f.path}
	}
	return nil
}

// FromBytes validates an in-memory safetensors file (e.g. one embedded with
// go:embed). The File keeps data; name is used in errors and by Path.
func FromBytes(name string, data []byte) (*File, error) {
	return parse(name, data)
}

// Close releases the mapping. Slices returned by Data must not be used after.
func (f *File) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	f.data = nil
	if f.fd != nil {
		f.fd.Close()
		f.fd = nil
	}
	if f.mm != nil {
		mm := f.mm
		f.mm = nil
		if err := mm.Unmap(); err != nil {
			return fmt.Errorf("safetensors %s: unmapping: %w", f.path, err)
		}
	}
	return nil
}

// DropPages tells the kernel that the mapped pages are not needed now
// (madvise MADV_DONTNEED): they leave the process's resident memory and are
// read from the file again only if touched. Call it once the weights live
// on a device, so the file and the device's copy are not both resident.
// Data slices stay valid. A no-op for FromBytes files.
func (f *File) DropPages() error {
	if f.closed || f.mm == nil || len(f.mm) == 0 {
		return nil
	}
	if err := unix.Madvise(f.mm, unix.MADV_DONTNEED); err != nil {
		return fmt.Errorf("safetensors %s: madvise: %w", f.path, err)
	}
	return nil
}

// DropData is DropPages for the whole pages of the mapping that b (a slice
// returned by Data) covers; b outside the mapping is ignored.
func (f *File) DropData(b []byte) {
	if !f.Holds(b) {
		return
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(f.mm)))
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	page := uintptr(unix.Getpagesize())
	lo := (start - base + page - 1) / page * page
	hi := (start - base + uintptr(len(b))) / page * page
	if hi > lo {
		_ = unix.Madvise(f.mm[lo:hi], unix.MADV_DONTNEED) // advice only
	}
}

// Prefault maps the pages of the mapping that b (a slice returned by Data)
// covers into the process in one call (madvise MADV_POPULATE_READ),
// reading them from the file where needed, so that reading b then takes no
// page faults; b outside the mapping is ignored. Advice only: where the
// kernel cannot (a file truncated meanwhile, an old kernel), reading b
// faults as it would have.
func (f *File) Prefault(b []byte) {
	if !f.Holds(b) {
		return
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(f.mm)))
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	page := uintptr(unix.Getpagesize())
	lo := (start - base) / page * page
	hi := min((start-base+uintptr(len(b))+page-1)/page*page, uintptr(len(f.mm)))
	_ = unix.Madvise(f.mm[lo:hi], unix.MADV_POPULATE_READ) // advice only
}

// Holds reports whether b (not empty) lies within the file's mapping: its
// bytes are read from the file, and reading them faults (SIGBUS) once the
// file is truncated. False after Close and for FromBytes files.
func (f *File) Holds(b []byte) bool {
	if f.closed || len(f.mm) == 0 || len(b) == 0 {
		return false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(f.mm)))
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return start >= base && start+uintptr(len(b)) <= base+uintptr(len(f.mm))
}

// Reach returns b (a slice returned by Data) with its capacity extended to
// the end of the mapping, for a reader that may read a few bytes past it
// (gpu.MappedUploader); nil when b is not in the mapping.
func (f *File) Reach(b []byte) []byte {
	if !f.Holds(b) {
		return nil
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(f.mm)))
	off := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) - base)
	return []byte(f.mm)[off : off+len(b) : len(f.mm)]
}

// Path returns the path (or name) the file was opened with.
func (f *File) Path() string { return f.path }

// Tensors lists every tensor, sorted by name. The slice is a copy.
func (f *File) Tensors() []TensorInfo {
	out := make([]TensorInfo, len(f.tensors))
	copy(out, f.tensors)
	return out
}

// Lookup returns the description of the named tensor.
func (f *File) Lookup(name string) (TensorInfo, bool) {
	i, ok := f.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.tensors[i], true
}

// ErrClosed is returned by Data after Close.
var ErrClosed = errors.New("file already closed")

// Data returns the raw little-endian bytes of the named tensor, a slice of
// the mapping valid until Close. Do not modify it.
func (f *File) Data(name string) ([]byte, error) {
	if f.closed {
		return nil, fmt.Errorf("safetensors %s: %w", f.path, ErrClosed)
	}
	i, ok := f.index[name]
	if !ok {
		return nil, fmt.Errorf("safetensors %s: no tensor %q", f.path, name)
	}
	t := f.tensors[i]
	return f.data[t.Begin:t.End:t.End], nil
}

// Metadata returns a copy of the file's __metadata__ entry (nil if absent).
func (f *File) Metadata() map[string]string {
	if f.meta == nil {
		return nil
	}
	out := make(map[string]string, len(f.meta))
	for k, v := range f.meta {
		out[k] = v
	}
	return out
}

// parse validates the header of a whole file held in b and builds a File.
func parse(path string, b []byte) (*File, error) {
	fail := func(tensor, format string, args ...any) error {
		return &FormatError{Path: path, Tensor: tensor, Msg: fmt.Sprintf(format, args...)}
	}
	if len(b) < 8 {
		return nil, fail("", "file is %d bytes, too short for the 8-byte header length (empty or truncated file?)", len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > MaxHeaderSize {
		return nil, fail("", "header length %d exceeds the %d-byte limit", n, MaxHeaderSize)
	}
	if n > uint64(len(b)-8) {
		return nil, fail("", "header length %d exceeds the %d bytes after the length field (truncated file?)", n, len(b)-8)
	}
	hdr := b[8 : 8+n]
	data := b[8+n:]
	entries, meta, err := parseHeader(hdr)
	if err != nil {
		var he *headerError
		if errors.As(err, &he) {
			return nil, fail(he.tensor, "%s", he.msg)
		}
		return nil, fail("", "header: %v", err)
	}
	f := &File{path: path, data: data, meta: meta, tensors: entries, index: make(map[string]int, len(entries))}
	if err := f.check(); err != nil {
		return nil, err
	}
	return f, nil
}

// check validates sizes, bounds and overlaps of the parsed entries, then
// sorts them by name and builds the index.
func (f *File) check() error {
	size := int64(len(f.data))
	for _, t := range f.tensors {
		es, blk, bb := t.DType.Size(), 1, 0
		if es == 0 { // a GGUF block type (FromMapped)
			if g, ok := t.DType.GPU(); ok {
				es, blk, bb = 1, g.Block(), g.BlockBytes()
			}
		}
		numel := int64(1)
		for _, d := range t.Shape {
			if d < 0 {
				return &FormatError{f.path, t.Name, fmt.Sprintf("negative dimension in shape %v", t.Shape)}
			}
			if d != 0 && numel > math.MaxInt64/int64(d) {
				return &FormatError{f.path, t.Name, fmt.Sprintf("shape %v overflows", t.Shape)}
			}
			numel *= int64(d)
		}
		if numel > math.MaxInt64/int64(es) {
			return &FormatError{f.path, t.Name, fmt.Sprintf("shape %v overflows", t.Shape)}
		}
		if t.Begin < 0 || t.End < t.Begin {
			return &FormatError{f.path, t.Name, fmt.Sprintf("bad data_offsets [%d,%d]", t.Begin, t.End)}
		}
		if t.End > size {
			return &FormatError{f.path, t.Name, fmt.Sprintf("data_offsets [%d,%d] run past the %d-byte data section (truncated file?)", t.Begin, t.End, size)}
		}
		want := numel * int64(es)
		if blk > 1 {
			if numel%int64(blk) != 0 {
				return &FormatError{f.path, t.Name, fmt.Sprintf("%d elements is not a whole number of %s blocks of %d", numel, t.DType, blk)}
			}
			want = numel / int64(blk) * int64(bb)
		}
		if t.End-t.Begin != want {
			return &FormatError{f.path, t.Name, fmt.Sprintf("data_offsets [%d,%d] hold %d bytes, but %s %v needs %d", t.Begin, t.End, t.End-t.Begin, t.DType, t.Shape, want)}
		}
	}
	// Overlaps: sort a copy by offset; empty tensors cannot overlap.
	byOff := make([]TensorInfo, 0, len(f.tensors))
	for _, t := range f.tensors {
		if t.End > t.Begin {
			byOff = append(byOff, t)
		}
	}
	sort.Slice(byOff, func(i, j int) bool { return byOff[i].Begin < byOff[j].Begin })
	for i := 1; i < len(byOff); i++ {
		if byOff[i].Begin < byOff[i-1].End {
			return &FormatError{f.path, byOff[i].Name, fmt.Sprintf("data_offsets [%d,%d] overlap tensor %q [%d,%d]",
				byOff[i].Begin, byOff[i].End, byOff[i-1].Name, byOff[i-1].Begin, byOff[i-1].End)}
		}
	}
	sort.Slice(f.tensors, func(i, j int) bool { return f.tensors[i].Name < f.tensors[j].Name })
	for i, t := range f.tensors {
		f.index[t.Name] = i
	}
	return nil
}
