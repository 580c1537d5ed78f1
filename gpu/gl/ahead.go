package gl

import (
	"strings"
	"time"
	"unsafe"

	gogl "github.com/go-gl/gl/v4.3-core/gl"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/shaders"
)

// Compiling ahead. A program costs twice on a cold start: the GLSL compile
// and link (cached by the program binary cache, progcache.go) and, on
// llvmpipe, the JIT of the variant for the bound textures' formats, which
// llvmpipe does at the first dispatch (cached by Mesa's shader cache,
// MESA_SHADER_CACHE_DIR or ~/.cache/mesa_shader_cache). CompileAhead finds
// the programs a piece of work needs by running it dry (ops record their
// launch instead of allocating or dispatching), then builds each one and,
// where the driver compiles at dispatch, dispatches it once on a single
// work group over buffers of the same sizes bound with the same texture
// formats (never written: they cost address space, not memory). All
// uniforms of a new program are zero, so every kernel's bounds checks make
// that dispatch do (almost) nothing; llvmpipe also bounds-checks storage
// writes and texel fetches and guards integer division by zero. Elsewhere
// the driver compiles at link time and the dispatch is skipped.

// need is one program a dry run met and how its launches bind their inputs.
type need struct {
	kernel
	formats []int   // texture unit -> view format, -1 where nothing is bound
	sizes   []int64 // texture unit -> bytes of the bound buffer
	ssbos   int     // storage buffers bound after the output
	windows bool    // the output is bound as outWindows windows
}

// dummyBytes is the size of the storage buffers a warm-up dispatch binds
// (their sizes are not part of llvmpipe's variant key; textures' are).
const dummyBytes = 48

// CompileAhead runs work dry and builds the programs it needs (see
// gpu.AheadCompiler). Interrupt stops it between two programs.
func (d *Device) CompileAhead(work func(), progress func(done, total int)) error {
	if !d.usable() {
		return d.Err()
	}
	d.dry, d.dryNeeds, d.dryOrder = true, map[string]need{}, nil
	func() {
		defer func() { d.dry = false }()
		work()
	}()
	order, needs := d.dryOrder, d.dryNeeds
	d.dryOrder, d.dryNeeds = nil, nil
	if err := d.Err(); err != nil {
		return err
	}
	var todo []string
	cold := 0 // programs without a program-cache entry: GLSL to compile
	d.call(func() {
		for _, k := range order {
			if _, ok := d.progs[k]; !ok {
				todo = append(todo, k)
				if src, err := shaders.Source(needs[k].file, needs[k].defines); err != nil || !d.cache.has(src) {
					cold++
				}
			}
		}
	})
	if progress != nil {
		progress(0, len(todo))
	}
	// The GL thread and the compile workers take programs from one queue;
	// the GL thread adopts what the workers built (compilers.go).
	queue := make(chan need, len(todo))
	for _, k := range slowFirst(todo, needs) {
		queue <- needs[k]
	}
	close(queue)
	finished := make(chan string, len(todo))
	// Workers pay for themselves only when there is GLSL to compile: loading
	// cached binaries on two threads took longer than on the GL thread alone
	// (the bundled 64x64 model's 33 programs, warm caches: 0.29-0.31 s against
	// 0.22-0.23 s), since the GL thread repeats each warm-up dispatch.
	stop := d.startCompilers(compileWorkers(cold), queue, finished)
	defer stop()
	tick := time.NewTicker(50 * time.Millisecond) // to see an interrupt while waiting
	defer tick.Stop()
	take := queue
	for done := 0; done < len(todo) && !d.Interrupted(); {
		select {
		case n, ok := <-take:
			if !ok {
				take = nil // all taken: wait for the workers
				continue
			}
			d.call(func() { d.glAhead(n) })
		case key := <-finished:
			// glProgram adopts what the worker built; the warm-up in this
			// context finds its machine code in Mesa's shader cache.
			n := needs[key]
			d.call(func() { d.glAhead(n) })
		case <-tick.C:
			continue
		}
		done++
		if progress != nil {
			progress(done, len(todo))
		}
	}
	d.call(func() { d.warm.free(false) })
	return d.Err()
}

// slowFirst orders keys so that the programs slowest to compile come first
// (the unrolled convolution and attention kernels take 2-4 times the others
// on llvmpipe): with several threads compiling, none is left alone with a
// slow one at the end. The order is otherwise kept.
func slowFirst(keys []string, needs map[string]need) []string {
	slow := func(k string) bool { f := needs[k].file; return f == "conv2d.comp" || f == "attention.comp" }
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if slow(k) {
			out = append(out, k)
		}
	}
	for _, k := range keys {
		if !slow(k) {
			out = append(out, k)
		}
	}
	return out
}

// Built is the number of programs this device has built (compiled, or
// loaded from the program cache), failed ones included.
func (d *Device) Built() int {
	var n int
	d.call(func() { n = len(d.progs) })
	return n
}

// record notes l's program during a dry run (caller side).
func (d *Device) record(l *launch) {
	key := l.kernel.key()
	if _, ok := d.dryNeeds[key]; ok {
		return
	}
	n := need{kernel: kernel{file: l.file, defines: append([]string(nil), l.defines...)}, ssbos: len(l.ssbos)}
	for _, x := range l.ins {
		f, size := -1, int64(0)
		if x.t != nil {
			f, size = x.format, x.t.Store.Handle.(*buffer).size
		}
		n.formats = append(n.formats, f)
		n.sizes = append(n.sizes, size)
	}
	for _, def := range l.defines {
		n.windows = n.windows || def == "OUT_WINDOWS"
	}
	d.dryNeeds[key] = n
	d.dryOrder = append(d.dryOrder, key)
}

// compilesAtDispatch reports whether the driver JITs programs at their
// first dispatch (Mesa's software rasterisers) rather than at link time.
func (d *Device) compilesAtDispatch() bool {
	return strings.Contains(d.name, "llvmpipe") || strings.Contains(d.name, "softpipe")
}

// glAhead builds n's program and, where the driver compiles at dispatch,
// dispatches it once over dummy buffers. A program that does not build is
// left for its first real launch to report.
func (d *Device) glAhead(n need) {
	p, err := d.glProgram(n.kernel)
	if err != nil || !d.compilesAtDispatch() {
		return
	}
	d.warm.dispatch(p.id, n)
	d.glCheck("compiling ahead")
}

// warmer holds the buffers that warm-up dispatches bind, for one context.
type warmer struct {
	in, out *buffer
	sized   map[int64]*buffer // by size, see buffer
}

// dispatch runs prog once on a single work group with n's inputs bound to
// dummy buffers of their sizes and texture formats, so that a driver that
// compiles at dispatch builds the variant n's real launches will use.
func (w *warmer) dispatch(prog uint32, n need) {
	if w.in == nil {
		w.in = &buffer{size: dummyBytes}
		w.out = &buffer{size: dummyBytes}
		zeros := make([]byte, dummyBytes)
		for _, b := range []*buffer{w.in, w.out} {
			gogl.GenBuffers(1, &b.id)
			gogl.BindBuffer(gogl.COPY_WRITE_BUFFER, b.id)
			gogl.BufferData(gogl.COPY_WRITE_BUFFER, dummyBytes, unsafe.Pointer(&zeros[0]), gogl.DYNAMIC_COPY)
		}
		gogl.BindBuffer(gogl.COPY_WRITE_BUFFER, 0)
	}
	for unit, f := range n.formats {
		if f < 0 {
			continue
		}
		gogl.ActiveTexture(gogl.TEXTURE0 + uint32(unit))
		gogl.BindTexture(gogl.TEXTURE_BUFFER, glTexture(w.buffer(n.sizes[unit]), f))
	}
	for i := 0; i < n.ssbos; i++ {
		gogl.BindBufferRange(gogl.SHADER_STORAGE_BUFFER, uint32(i+1), w.in.id, 0, dummyBytes)
	}
	gogl.BindBufferRange(gogl.SHADER_STORAGE_BUFFER, 0, w.out.id, 0, dummyBytes)
	if n.windows {
		for _, binding := range []uint32{4, 5, 6, 7} {
			gogl.BindBufferRange(gogl.SHADER_STORAGE_BUFFER, binding, w.out.id, 0, dummyBytes)
		}
	}
	gogl.UseProgram(prog)
	gogl.DispatchCompute(1, 1, 1)
	gogl.MemoryBarrier(gogl.SHADER_STORAGE_BARRIER_BIT | gogl.TEXTURE_FETCH_BARRIER_BIT | gogl.BUFFER_UPDATE_BARRIER_BIT)
}

// buffer is a buffer for warm-up dispatches that looks like a buffer of
// size bytes to llvmpipe's variant key. That key holds, of a texture
// buffer's size, only whether its bytes are a power of two and whether bits
// 8-15 of them are zero (the view's size shares those bits with a texture
// view's last mip level; see sizeClass), so a warm-up over buffers of other
// kinds compiles variants the real launch does not use. The dummy is the
// smallest buffer of the same kind, not one of the same size: llvmpipe
// zero-fills every new buffer, and touching the pages of one as big as
// each real input took longer than the warm-ups themselves (page faults
// are slow on virtual machines). free deletes them.
func (w *warmer) buffer(size int64) *buffer {
	size = dummyLike(size)
	if w.sized == nil {
		w.sized = map[int64]*buffer{}
	}
	b := w.sized[size]
	if b == nil {
		b = &buffer{size: size}
		gogl.GenBuffers(1, &b.id)
		gogl.BindBuffer(gogl.COPY_WRITE_BUFFER, b.id)
		gogl.BufferData(gogl.COPY_WRITE_BUFFER, int(size), nil, gogl.DYNAMIC_COPY)
		gogl.BindBuffer(gogl.COPY_WRITE_BUFFER, 0)
		w.sized[size] = b
	}
	return b
}

// free deletes the sized buffers, and the two small ones too when all is set.
func (w *warmer) free(all bool) {
	for _, b := range w.sized {
		glDeleteObjects(b)
	}
	w.sized = nil
	if all {
		for _, b := range []*buffer{w.in, w.out} {
			if b != nil {
				glDeleteObjects(b)
			}
		}
		w.in, w.out = nil, nil
	}
}

// dummyLike is the smallest size (a multiple of 16 bytes, so that every
// texel format views it whole) that agrees with size on what llvmpipe's
// variant key reads: whether it is a power of two, and whether bits 8-15
// are all zero.
func dummyLike(size int64) int64 {
	pot := size > 0 && size&(size-1) == 0
	low := (size>>8)&0xff == 0
	switch {
	case pot && low: // 16..128 or 64 KiB and up
		return 16
	case pot: // 256..32768
		return 256
	case low:
		return 48
	}
	return 272 // sizeClass's smallest, and the kind of all of its sizes
}

// dryDownload is Download during a dry run: zeros of t's size.
func dryDownload(t *gpu.Tensor) []float32 { return make([]float32, t.Numel()) }

// TrimPool deletes the pooled (released) buffers (see gpu.TrimPool): on
// llvmpipe their storage is process memory that stays resident.
func (d *Device) TrimPool() {
	if d.closed {
		return
	}
	d.call(func() {
		for size, list := range d.pool {
			for _, b := range list {
				d.glDelete(b)
			}
			delete(d.pool, size)
		}
		d.pooled = 0
	})
}
