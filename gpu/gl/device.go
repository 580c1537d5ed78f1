// Package gl is Stepwise's OpenGL 4.3 compute device: it implements
// gpu.Device with the GLSL compute shaders of package shaders, on a context
// made without a display (an EGL device, which is how GPUs are used headless,
// or Mesa's llvmpipe on the CPU), with a hidden GLFW window as the fallback.
//
// One goroutine locked to its OS thread owns the context and makes every GL
// call; ops queue closures to it and return at once, and the caller waits
// only in Download and Finish. Tensors live in GL buffers; F16/BF16 weights
// stay packed and are widened in the kernels, which read their inputs through
// texture buffer views of those buffers and write through storage buffers.
//
// Building needs cgo with libegl-dev and libgl-dev, and for the GLFW
// fallback the X11 headers (libx11-dev libxrandr-dev libxinerama-dev
// libxcursor-dev libxi-dev libxxf86vm-dev); -tags noglfw leaves GLFW out.
// Running needs libegl1 and a driver: libegl-mesa0 and libgl1-mesa-dri for
// llvmpipe, or a GPU vendor's EGL.
//
// With STEPWISE_GL_PROFILE=1 in the environment, Close prints the time spent
// in each shader to stderr (=2: per shader, grid and integer uniforms).
// On llvmpipe, weights live in memory the device maps itself (see
// pinned.go; STEPWISE_GL_PINNED=off for the driver's own buffers).
// Linked programs are cached as GL program binaries in
// os.UserCacheDir()/stepwise/gl-programs (STEPWISE_GL_CACHE names another
// folder, or "off"), so a second start compiles no GLSL; see progcache.go.
package gl

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"sort"
	"sync"
	"time"
	"unsafe"

	gogl "github.com/go-gl/gl/v4.3-core/gl"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
)

// Device is the OpenGL compute device. Make one with New; use it from one
// goroutine at a time.
type Device struct {
	gpu.Tracker
	gpu.Stop // Interrupt: queued dispatches are skipped

	work chan func()   // closures for the GL thread, run in order
	done chan struct{} // closed when the GL thread has exited

	mu     sync.Mutex // guards the Tracker's error, which the GL thread records too
	closed bool       // Close was called (caller side)
	// storages are the live storages with a buffer (caller side), freed by Close.
	storages map[*gpu.Storage]struct{}

	// Set once by the GL thread before New returns, read-only afterwards.
	name      string
	how       string // which attempt made the context
	maxTexels int64  // largest texture buffer, in texels
	maxBlock  int64  // largest storage block binding, in bytes
	maxGroups [3]int // work group counts per dispatch dimension
	maxLocal  [3]int // local (work group) size per dimension
	maxInvoc  int    // invocations in one work group

	// GL-thread state.
	ctx glContext
	// pinned: UploadFill makes big buffers over host memory of its own,
	// cut from slab (pinned.go).
	pinned bool
	slab   *slab
	slabs  int // slabs mapped now
	progs  map[string]*program
	cache  progCache // linked program binaries on disk
	live   map[*buffer]struct{}
	pool   map[int64][]*buffer
	pooled int64
	// created counts the GL buffer objects made (not taken from the pool).
	created int
	// liveBytes sums the buffers in live; highWater is its maximum.
	liveBytes, highWater int64
	// exactLive sums the exact (weight) buffers in live; actHigh is the
	// maximum of liveBytes - exactLive, the most bytes of pooled-size
	// buffers (activations) ever live at once.
	exactLive, actHigh int64
	poolCap            int64 // poolLimit but in tests

	// standIn is what a launch binds where a kernel's optional residual
	// is absent (see residual): four F32 zeros, made with the context.
	standIn *gpu.Tensor
	// profile, with STEPWISE_GL_PROFILE=1, sums the time of each kernel's
	// dispatches (by its ops table name; GL thread; llvmpipe runs a dispatch
	// before returning).
	profile map[string]profileEntry
	// profileDetail (STEPWISE_GL_PROFILE=2) keys the profile by kernel,
	// grid and integer uniforms instead of by kernel alone.
	profileDetail bool

	// convAlgo picks Conv2D's algorithm (convAuto but in tests and
	// benchmarks); winogradChunk caps a Winograd intermediate (bytes).
	convAlgo      int
	noWinograd    bool // STEPWISE_GL_WINOGRAD=off
	winogradChunk int64
	tune          tuner // decisions between kernels, see autotune.go

	// naiveMatMul selects matmul.comp's MM_NAIVE variant for F32 MatMuls (tests, benchmarks).
	naiveMatMul bool
	// noFoldSamples turns off conv2d.comp's NT 2 (benchmarks).
	noFoldSamples bool
	// noVec4 turns off matmul.comp's MM_NT4 and MM_NN4 and conv2d.comp's C4 (tests, benchmarks).
	noVec4 bool
	// attnUnroll is the largest head dim for which attention.comp is compiled
	// with its head-dim loops unrolled when it fetches four elements at a time
	// (a quarter of it otherwise): about 1.3x faster, but the first compile of
	// a head dim of 64 takes seconds on llvmpipe (160: 9 s).
	attnUnroll int
	// attnUnfused lets big single-head attention run as matmuls (see
	// useUnfusedAttention); off in tests of attention.comp itself.
	attnUnfused    bool
	attnScoreBytes int64

	// dry (caller side) is set while CompileAhead runs its work: ops record
	// their programs in dryNeeds (first met first in dryOrder) and neither
	// allocate nor dispatch. warm (GL thread) holds the buffers its warm-up
	// dispatches bind.
	dry      bool
	dryNeeds map[string]need
	dryOrder []string
	warm     warmer

	// Compile workers (see compilers.go): programs they built in their
	// shared contexts wait in built (guarded by builtMu) until the GL thread
	// adopts them; Close waits for the workers.
	compilers sync.WaitGroup
	builtMu   sync.Mutex
	built     map[string]builtProgram
	adopted   int // programs the GL thread took from workers (for tests)
}

type profileEntry struct {
	calls int
	time  time.Duration
	first time.Duration // the first call, which includes the driver's compile
}

// buffer is one GL buffer object and the texture buffer views made over it.
type buffer struct {
	id   uint32
	size int64     // bytes allocated: a size class of the requested bytes, or exactSize's
	tex  [5]uint32 // views as R32F, R32UI, R32I, RGBA32F, RG32UI (made when first needed)
	// exact: size is exactSize's, and the buffer is deleted, not pooled,
	// when released (a weight's size seldom recurs).
	exact bool
	// host is the memory a pinned buffer is made over, cut from slab (see
	// pinned.go), given back when the buffer is deleted.
	host []byte
	slab *slab
	// drop is the whole pages of a mapped file that a buffer made by
	// UploadMapped lies over: let go after each dispatch that reads it.
	drop []byte
}

const (
	texF32   = iota // one F32 a texel
	texU32          // two F16/BF16 a texel
	texI32          // one int32 a texel
	texF32x4        // four F32 a texel
	texU32x2        // four F16/BF16 a texel
)

var texFormats = [5]uint32{gogl.R32F, gogl.R32UI, gogl.R32I, gogl.RGBA32F, gogl.RG32UI}

// poolLimit is the bytes of released buffers always kept for reuse
// (Device.poolCap; more while under the high-water mark, see glRelease).
const poolLimit = 512 << 20

// New makes an OpenGL 4.3 context (see the package doc for the order of
// attempts) and starts the GL thread. The error says what was tried and what
// to install.
func New() (*Device, error) {
	d := &Device{
		work:  make(chan func(), 1024),
		done:  make(chan struct{}),
		progs: map[string]*program{},
		live:  map[*buffer]struct{}{},
		pool:  map[int64][]*buffer{},

		storages:       map[*gpu.Storage]struct{}{},
		attnUnroll:     64,
		attnUnfused:    true,
		attnScoreBytes: unfusedScores,

		winogradChunk: winogradChunk,
		poolCap:       poolLimit,
	}
	d.noWinograd = os.Getenv("STEPWISE_GL_WINOGRAD") == "off"
	switch os.Getenv("STEPWISE_GL_PROFILE") {
	case "1":
		d.profile = map[string]profileEntry{}
	case "2":
		d.profile = map[string]profileEntry{}
		d.profileDetail = true
	}
	ready := make(chan error)
	go d.loop(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return d, nil
}

// BuffersCreated is how many GL buffer objects the device has made so far;
// allocations served from its pool of released buffers do not count. A
// sampler step that reuses the previous step's buffers adds none.
func (d *Device) BuffersCreated() int {
	var n int
	d.call(func() { n = d.created })
	return n
}

// Name describes the renderer and the GL version.
func (d *Device) Name() string { return d.name }

// Context says how the context was made (e.g. "EGL device platform").
func (d *Device) Context() string { return d.how }

// Err returns the first error the device recorded.
func (d *Device) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.Tracker.Err()
}

// Fail records err if no error is recorded yet.
func (d *Device) Fail(err error) {
	d.mu.Lock()
	d.Tracker.Fail(err)
	d.mu.Unlock()
}

// enqueue hands f to the GL thread without waiting.
func (d *Device) enqueue(f func()) {
	if d.closed {
		d.Fail(gpu.ErrClosed)
		return
	}
	d.work <- f
}

// call runs f on the GL thread and waits for it.
func (d *Device) call(f func()) {
	if d.closed {
		d.Fail(gpu.ErrClosed)
		return
	}
	ch := make(chan struct{})
	d.work <- func() {
		defer close(ch)
		f()
	}
	<-ch
}

// sizeClass rounds n up to a size with at most three significant bits (at
// most 25% slack), a multiple of 16 bytes, so released buffers can be reused,
// shaped so that every buffer looks the same to llvmpipe's variant key.
// llvmpipe compiles a program once per combination of its texture views'
// static state, which includes whether the buffer's bytes are a power of two
// and whether bits 8-15 of its byte size are zero (for a buffer view the
// size shares its bits with a texture view's last mip level, and "level 0
// only" is part of the key). Views of buffers of both kinds would compile
// every program up to twice per input (seconds each for the big kernels),
// and a program built ahead (CompileAhead) would be built again. So a size
// is never a power of two (a power of two gets 16 more bytes, so that the
// views of every format, 4, 8 or 16 bytes a texel, have widths that are not
// powers of two either), always has a bit among bits 8-15 (256 more bytes
// where it has none), and is at least 272 bytes.
func sizeClass(n int64) int64 {
	if n <= 256 {
		return 272
	}
	shift := 0
	for (n >> shift) >= 8 {
		shift++
	}
	return variantSafe(((n + (1 << shift) - 1) >> shift) << shift)
}

// exactSize is the buffer size for a tensor that is never pooled (the
// weights UploadRaw and UploadFill make): n rounded up to 16 bytes only, with
// sizeClass's two adjustments for llvmpipe's variant key. A size class
// would leave up to 25% of each weight unused (8% of SD 1.5's U-Net).
func exactSize(n int64) int64 {
	if n <= 256 {
		return 272
	}
	return variantSafe((n + 15) &^ 15)
}

// variantSafe adjusts c (a multiple of 16 above 256) as sizeClass explains:
// 16 more bytes for a power of two, then 256 more when bits 8-15 are zero.
func variantSafe(c int64) int64 {
	if c&(c-1) == 0 {
		c += 16
	}
	if (c>>8)&0xff == 0 {
		c += 256
	}
	return c
}

// syncUpload is the size from which uploads wait for the GL thread instead
// of queueing a copy of the caller's data (no second copy of big weights).
const syncUpload = 1 << 20

// alloc makes a tensor whose storage is a new buffer, filled with raw when
// raw is not nil. The buffer is made on the GL thread. raw must not change
// until the GL thread has used it: callers pass data they own, or borrowed
// data of at least syncUpload bytes with borrowed set (alloc then waits).
func (d *Device) alloc(shape gpu.Shape, dt gpu.DType, raw []byte, borrowed ...bool) *gpu.Tensor {
	bytes := int64(max(dt.Bytes(shape.Numel()), 0))
	buf := &buffer{size: sizeClass(max(bytes, 1))}
	st, resident := d.track(buf, bytes)
	switch {
	case d.dry: // nothing is dispatched in a dry run: no buffer is needed
	case len(borrowed) > 0 && borrowed[0]:
		d.call(func() { d.glAlloc(buf, raw, bytes, resident) })
	default:
		d.enqueue(func() { d.glAlloc(buf, raw, bytes, resident) })
	}
	return gpu.NewTensor(&d.Tracker, shape, dt, st)
}

// track accounts for a new tensor's storage of the given bytes, held in
// buf, and returns it with the bytes resident before it (for OOMError).
func (d *Device) track(buf *buffer, bytes int64) (*gpu.Storage, int64) {
	st := &gpu.Storage{Handle: buf, Bytes: bytes, Dev: d}
	resident := d.Stats().Resident
	d.Alloc(bytes)
	d.storages[st] = struct{}{}
	return st, resident
}

// placeholder is the tensor ops return after an error: right shape, no buffer.
func (d *Device) placeholder(shape gpu.Shape) *gpu.Tensor {
	s := shape.Clone()
	for i := range s {
		if s[i] <= 0 {
			s[i] = 1
		}
	}
	return &gpu.Tensor{Shape: s, DType: gpu.F32, Store: &gpu.Storage{Dev: d}}
}

// Upload copies F32 host data to a new tensor.
func (d *Device) Upload(data []float32, shape ...int) *gpu.Tensor {
	s := gpu.Shape(shape)
	if !d.usable() {
		return d.placeholder(s)
	}
	if err := checkShape(s); err != nil || s.Numel() != len(data) {
		if err == nil {
			err = fmt.Errorf("%d values for %d elements", len(data), s.Numel())
		}
		d.Fail(&gpu.ShapeError{Op: "Upload", Shapes: []gpu.Shape{s}, Why: err.Error()})
		return d.placeholder(s)
	}
	// GL's platforms here are little-endian: the float32s are the bytes.
	raw := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(data))), 4*len(data))
	return d.upload(s, gpu.F32, raw)
}

// UploadRaw copies little-endian raw bytes of type dt to a new tensor of
// that storage type.
func (d *Device) UploadRaw(dt gpu.DType, raw []byte, shape ...int) *gpu.Tensor {
	s := gpu.Shape(shape)
	if !d.usable() {
		return d.placeholder(s)
	}
	if !dt.Valid() {
		d.Fail(fmt.Errorf("gl: UploadRaw: unknown type %v", dt))
		return d.placeholder(s)
	}
	if err := checkShape(s); err != nil || dt.Bytes(s.Numel()) != len(raw) {
		if err == nil {
			err = fmt.Errorf("%d bytes for %d %v elements (want %d; %v blocks hold %d)", len(raw), s.Numel(), dt, dt.Bytes(s.Numel()), dt, dt.Block())
		}
		d.Fail(&gpu.ShapeError{Op: "UploadRaw", Shapes: []gpu.Shape{s}, Why: err.Error()})
		return d.placeholder(s)
	}
	// Weights, mostly: sized exactly and never pooled, as UploadFill's.
	bytes := int64(len(raw))
	buf := &buffer{size: exactSize(bytes), exact: true}
	st, resident := d.track(buf, bytes)
	switch {
	case d.dry:
	case len(raw) >= syncUpload: // big: wait rather than copy
		d.call(func() { d.glAlloc(buf, raw, bytes, resident) })
	default:
		own := append([]byte(nil), raw...)
		d.enqueue(func() { d.glAlloc(buf, own, bytes, resident) })
	}
	return gpu.NewTensor(&d.Tracker, s, dt, st)
}

// upload fills a new tensor with the caller's bytes: big ones synchronously
// (no copy), small ones from a copy through the queue.
func (d *Device) upload(s gpu.Shape, dt gpu.DType, raw []byte) *gpu.Tensor {
	if len(raw) >= syncUpload {
		return d.alloc(s, dt, raw, true)
	}
	return d.alloc(s, dt, append([]byte(nil), raw...))
}

// UploadFill implements gpu.Device: on the GL thread it makes the tensor's
// buffer, maps it for writing (glMapBufferRange, invalidating its contents)
// and lets fill write the bytes straight into it; on llvmpipe the mapping is
// the buffer's own storage, so nothing is copied again (and where the
// driver takes memory of the device's own, see pinned.go, not even zeroed
// first). Tensors under pinnedMin bytes are filled on the caller's side
// and queued instead. The buffer is sized
// exactly (see exactSize) and deleted, not pooled, when released: this is
// how weights are uploaded.
func (d *Device) UploadFill(dt gpu.DType, fill func(dst []byte), shape ...int) *gpu.Tensor {
	s := gpu.Shape(shape)
	if !d.usable() {
		return d.placeholder(s)
	}
	if !dt.Valid() {
		d.Fail(fmt.Errorf("gl: UploadFill: unknown type %v", dt))
		return d.placeholder(s)
	}
	if err := checkShape(s); err != nil || dt.Bytes(s.Numel()) < 0 {
		if err == nil {
			err = fmt.Errorf("%d %v elements are not whole blocks of %d", s.Numel(), dt, dt.Block())
		}
		d.Fail(&gpu.ShapeError{Op: "UploadFill", Shapes: []gpu.Shape{s}, Why: err.Error()})
		return d.placeholder(s)
	}
	bytes := int64(dt.Bytes(s.Numel()))
	buf := &buffer{size: exactSize(bytes), exact: true}
	st, resident := d.track(buf, bytes)
	switch {
	case d.dry:
		// No buffer in a dry run, but fill still runs once, as documented.
		fill(make([]byte, bytes))
	case bytes < pinnedMin:
		// Small: filled here and queued, as UploadRaw queues a copy, so
		// that a model's many biases and norms do not each wait for the
		// GL thread (a wait costs a scheduler round trip on a busy CPU).
		own := make([]byte, bytes)
		fill(own)
		d.enqueue(func() { d.glAlloc(buf, own, bytes, resident) })
	default:
		d.call(func() {
			if d.pinned && d.glPinnedFill(buf, bytes, fill) {
				return
			}
			d.glAlloc(buf, nil, bytes, resident)
			if buf.id != 0 {
				d.glFill(buf, bytes, fill)
			}
		})
	}
	return gpu.NewTensor(&d.Tracker, s, dt, st)
}

// glFill maps the first n bytes of b for writing and runs fill on them.
func (d *Device) glFill(b *buffer, n int64, fill func(dst []byte)) {
	gogl.BindBuffer(gogl.COPY_WRITE_BUFFER, b.id)
	defer gogl.BindBuffer(gogl.COPY_WRITE_BUFFER, 0)
	p := gogl.MapBufferRange(gogl.COPY_WRITE_BUFFER, 0, int(n), gogl.MAP_WRITE_BIT|gogl.MAP_INVALIDATE_BUFFER_BIT)
	if p == nil {
		d.glCheck("UploadFill: mapping")
		d.Fail(fmt.Errorf("gl: UploadFill: could not map a buffer of %d bytes", n))
		return
	}
	fill(unsafe.Slice((*byte)(p), n))
	if !gogl.UnmapBuffer(gogl.COPY_WRITE_BUFFER) {
		d.Fail(fmt.Errorf("gl: UploadFill: the driver lost a mapped buffer's contents (glUnmapBuffer)"))
	}
	d.glCheck("UploadFill")
}

func checkShape(s gpu.Shape) error {
	n := int64(1)
	for _, v := range s {
		if v <= 0 {
			return fmt.Errorf("bad dimension %d", v)
		}
		n *= int64(v)
		if n > math.MaxInt32 {
			return fmt.Errorf("more than 2^31 elements")
		}
	}
	return nil
}

// Download waits for the queued work and returns t's elements as F32.
func (d *Device) Download(t *gpu.Tensor) ([]float32, error) {
	if err := d.Err(); err != nil {
		return nil, err
	}
	if !d.check("Download", t) {
		return nil, d.Err()
	}
	if d.dry {
		return dryDownload(t), nil
	}
	buf := t.Store.Handle.(*buffer)
	raw := make([]byte, max(t.DType.Bytes(t.Numel()), 0))
	d.call(func() {
		if len(raw) == 0 {
			return
		}
		gogl.BindBuffer(gogl.COPY_READ_BUFFER, buf.id)
		gogl.GetBufferSubData(gogl.COPY_READ_BUFFER, 0, len(raw), unsafe.Pointer(&raw[0]))
		gogl.BindBuffer(gogl.COPY_READ_BUFFER, 0)
		d.glCheck("Download")
	})
	if err := d.Err(); err != nil {
		return nil, err
	}
	if d.Interrupted() {
		return nil, gpu.ErrInterrupted
	}
	if t.DType.Quantized() {
		return ref.Dequantize(t.DType, raw, t.Numel())
	}
	return decode(t.DType, raw), nil
}

// decode widens little-endian raw storage to F32.
func decode(dt gpu.DType, raw []byte) []float32 {
	n := len(raw) / dt.Size()
	out := make([]float32, n)
	for i := range out {
		switch dt {
		case gpu.F32:
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		case gpu.F16:
			out[i] = halfToFloat(binary.LittleEndian.Uint16(raw[2*i:]))
		case gpu.BF16:
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
		}
	}
	return out
}

// halfToFloat widens an IEEE binary16 value exactly.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := int(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		v := float32(man) / (1 << 24)
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | uint32(exp+112)<<23 | man<<13)
}

// Release frees t's storage (and that of every view of it).
func (d *Device) Release(t *gpu.Tensor) {
	if t != nil {
		d.releaseStorage(t.Store)
	}
}

func (d *Device) releaseStorage(st *gpu.Storage) {
	if st == nil || st.Dev != gpu.Device(d) || !gpu.MarkFreed(st) {
		return
	}
	buf, ok := st.Handle.(*buffer)
	if !ok || buf == nil {
		return
	}
	d.Freed(st.Bytes)
	delete(d.storages, st)
	if !d.closed {
		d.enqueue(func() { d.glRelease(buf) })
	}
}

// PopScope releases the tensors of the innermost scope except keep.
func (d *Device) PopScope(keep ...*gpu.Tensor) {
	for _, st := range d.Tracker.PopScope(keep...) {
		d.releaseStorage(st)
	}
}

// Finish waits for all queued work and returns the device's error.
func (d *Device) Finish() error {
	d.call(func() { gogl.Finish() })
	return d.Err()
}

// Close releases every buffer and program and destroys the context. Later
// ops fail with gpu.ErrClosed. Closing twice is harmless.
func (d *Device) Close() error {
	if d.closed {
		return nil
	}
	if d.profile != nil {
		d.call(d.printProfile)
	}
	d.closed = true
	d.compilers.Wait() // a worker may still finish the program it was building
	for st := range d.storages {
		if gpu.MarkFreed(st) {
			d.Freed(st.Bytes)
		}
	}
	d.storages = nil
	close(d.work)
	<-d.done
	return nil
}

// printProfile writes the time spent in each kernel to stderr.
func (d *Device) printProfile() {
	gogl.Finish()
	names := make([]string, 0, len(d.profile))
	for n := range d.profile {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return d.profile[names[i]].time > d.profile[names[j]].time })
	fmt.Fprintf(os.Stderr, "gl profile (%s):\n", d.name)
	for _, n := range names {
		p := d.profile[n]
		fmt.Fprintf(os.Stderr, "  %-20s %6d calls %10.3f s %8.1f us/call, first %.3f s\n",
			n, p.calls, p.time.Seconds(), 1e6*p.time.Seconds()/float64(p.calls), p.first.Seconds())
	}
}

// glShutdown frees everything the GL thread holds.
func (d *Device) glShutdown() {
	for b := range d.live {
		d.glDelete(b)
	}
	for _, list := range d.pool {
		for _, b := range list {
			d.glDelete(b)
		}
	}
	d.pool, d.live = nil, nil
	d.warm.free(true)
	d.glDropBuilt()
	d.glFreeSlab()
	for _, p := range d.progs {
		if p.id != 0 {
			gogl.DeleteProgram(p.id)
		}
	}
	d.progs = nil
}

// glAlloc gives b a GL buffer (from the pool when one of its size class is
// free) and fills it with raw. A failed allocation records an OOMError for
// the requested bytes.
func (d *Device) glAlloc(b *buffer, raw []byte, requested, resident int64) {
	if list := d.pool[b.size]; len(list) > 0 {
		p := list[len(list)-1]
		d.pool[b.size] = list[:len(list)-1]
		d.pooled -= p.size
		b.id, b.tex = p.id, p.tex
	} else {
		d.created++
		d.glDrainErrors()
		gogl.GenBuffers(1, &b.id)
		gogl.BindBuffer(gogl.COPY_WRITE_BUFFER, b.id)
		gogl.BufferData(gogl.COPY_WRITE_BUFFER, int(b.size), nil, gogl.DYNAMIC_COPY)
		gogl.BindBuffer(gogl.COPY_WRITE_BUFFER, 0)
		if e := gogl.GetError(); e != gogl.NO_ERROR {
			gogl.DeleteBuffers(1, &b.id)
			b.id = 0
			if e == gogl.OUT_OF_MEMORY {
				d.Fail(&gpu.OOMError{Bytes: requested, Resident: resident, Device: d.name})
			} else {
				d.Fail(fmt.Errorf("gl: allocating %d bytes: GL error 0x%x", b.size, e))
			}
			return
		}
	}
	d.glLive(b)
	if len(raw) > 0 {
		gogl.BindBuffer(gogl.COPY_WRITE_BUFFER, b.id)
		gogl.BufferSubData(gogl.COPY_WRITE_BUFFER, 0, len(raw), unsafe.Pointer(&raw[0]))
		gogl.BindBuffer(gogl.COPY_WRITE_BUFFER, 0)
		d.glCheck("Upload")
	}
}

// glLive records b, which has a GL buffer now, as live.
func (d *Device) glLive(b *buffer) {
	d.live[b] = struct{}{}
	d.liveBytes += b.size
	if b.exact {
		d.exactLive += b.size
	}
	d.highWater = max(d.highWater, d.liveBytes)
	d.actHigh = max(d.actHigh, d.liveBytes-d.exactLive)
}

// glRelease returns b to the pool, or deletes it when the pool is full: the
// pool keeps up to poolLimit bytes, or up to the most bytes of activations
// ever live at once, so that a sampler step as big as the first one (an SD
// 1.5 U-Net step at 512x512 frees over a GiB of activations, in many sizes)
// finds every buffer it needs in the pool. (Capping live + pooled at that
// mark instead deleted buffers mid-step whenever the pool held other
// sizes.) The weights do not count: with them the mark let the pool keep
// as many bytes as the model has, whatever the activations needed. Exact
// (weight) buffers are deleted.
func (d *Device) glRelease(b *buffer) {
	if b.id == 0 {
		return
	}
	delete(d.live, b)
	d.liveBytes -= b.size
	if b.exact {
		d.exactLive -= b.size
	}
	if b.exact || d.pooled+b.size > max(d.poolCap, d.actHigh) {
		d.glDelete(b)
		return
	}
	d.pool[b.size] = append(d.pool[b.size], &buffer{id: b.id, size: b.size, tex: b.tex})
	d.pooled += b.size
	b.id = 0
}

// glDelete deletes b, its texture views and its host memory.
func (d *Device) glDelete(b *buffer) {
	glDeleteObjects(b)
	if b.host != nil {
		d.glHostFree(b) // llvmpipe finishes a dispatch before returning: nothing reads it now
	}
}

// glDeleteObjects deletes b's GL buffer and its texture views (on the
// thread of a context sharing them).
func glDeleteObjects(b *buffer) {
	for i, t := range b.tex {
		if t != 0 {
			gogl.DeleteTextures(1, &b.tex[i])
		}
	}
	if b.id != 0 {
		gogl.DeleteBuffers(1, &b.id)
	}
	b.id = 0
}

// glTexture returns b's texture buffer view of the given format.
func glTexture(b *buffer, format int) uint32 {
	if b.tex[format] == 0 {
		gogl.GenTextures(1, &b.tex[format])
		gogl.BindTexture(gogl.TEXTURE_BUFFER, b.tex[format])
		gogl.TexBuffer(gogl.TEXTURE_BUFFER, texFormats[format], b.id)
	}
	return b.tex[format]
}

func (d *Device) glDrainErrors() {
	for i := 0; i < 16 && gogl.GetError() != gogl.NO_ERROR; i++ {
	}
}

// glCheck records a pending GL error as the device's error.
func (d *Device) glCheck(what string) {
	if e := gogl.GetError(); e != gogl.NO_ERROR {
		if e == gogl.OUT_OF_MEMORY {
			d.Fail(&gpu.OOMError{Device: d.name})
			return
		}
		d.Fail(fmt.Errorf("gl: %s: GL error 0x%x", what, e))
	}
}

// usable reports whether ops may run (not closed, no error yet).
func (d *Device) usable() bool {
	if d.closed {
		d.Fail(gpu.ErrClosed)
		return false
	}
	return d.Err() == nil
}

// check validates op inputs: the device is usable and each tensor is a live
// tensor of this device. On failure it records why and returns false.
func (d *Device) check(op string, ts ...*gpu.Tensor) bool {
	if !d.usable() {
		return false
	}
	if op != "MatMul" && op != "Download" && d.quantRefused(op, ts) {
		return false
	}
	for i, t := range ts {
		switch {
		case t == nil || t.Store == nil:
			d.Fail(&gpu.ShapeError{Op: op, Why: fmt.Sprintf("operand %d is nil", i)})
		case t.Store.Dev != gpu.Device(d):
			d.Fail(fmt.Errorf("gl: %s: operand %d belongs to another device", op, i))
		case t.Store.Freed():
			d.Fail(fmt.Errorf("gl: %s: operand %d %v was released", op, i, t.Shape))
		default:
			if _, ok := t.Store.Handle.(*buffer); !ok {
				d.Fail(fmt.Errorf("gl: %s: operand %d has no storage", op, i))
			} else if int64(t.Numel()) > d.maxTexels {
				d.Fail(fmt.Errorf("gl: %s: operand %d %v has more elements than a texture buffer holds (%d)", op, i, t.Shape, d.maxTexels))
			} else {
				continue
			}
		}
		return false
	}
	return true
}
