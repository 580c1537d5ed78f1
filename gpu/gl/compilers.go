package gl

import (
	"os"
	"runtime"
	"strconv"
	"sync/atomic"

	gogl "github.com/go-gl/gl/v4.3-core/gl"

	"github.com/stepwise/stepwise/shaders"
)

// Compile workers. On a cold start nearly all of a first run's time is
// compiling programs (on llvmpipe ~0.7 s of one core each, 1.5-2.6 s for the
// unrolled convolution and attention variants), and a GL context compiles on
// the one thread it is current on. So CompileAhead also builds programs in
// contexts that share the device's objects, each current on a thread of its
// own: a worker links the program (or loads it from the program binary
// cache) and, where the driver compiles at dispatch, runs the warm-up
// dispatch there, which leaves llvmpipe's machine code in Mesa's shader
// cache. The GL thread then adopts the program (programs are shared
// objects) and repeats the warm-up in its own context, which finds that
// code in the cache instead of compiling it again.
//
// STEPWISE_GL_COMPILE_THREADS is how many threads compile, the GL thread
// included (default: the CPUs, at most maxCompileThreads; 1 turns the
// workers off).

// maxCompileThreads caps the default number of compiling threads.
const maxCompileThreads = 8

// builtProgram is a program a worker built, waiting for the GL thread.
type builtProgram struct {
	id          uint32
	err         error
	hits, wrote int // program binary cache loads and writes
}

// sharer is a context that can make another sharing its objects.
type sharer interface {
	share() (glContext, error)
}

// compileWorkers is how many workers to start for todo programs.
func compileWorkers(todo int) int {
	n := min(runtime.NumCPU(), maxCompileThreads)
	if v, err := strconv.Atoi(os.Getenv("STEPWISE_GL_COMPILE_THREADS")); err == nil && v >= 1 {
		n = v
	}
	return max(min(n-1, todo-1), 0)
}

// startCompilers starts n workers that take programs from queue and send
// each one's key to finished once it waits in d.built. The returned stop
// makes them take no more; a worker finishes the program it is building
// (Close waits for it), which the GL thread adopts when first needed.
func (d *Device) startCompilers(n int, queue <-chan need, finished chan<- string) (stop func()) {
	s, ok := d.ctx.(sharer)
	if !ok || n <= 0 {
		return func() {}
	}
	var stopped atomic.Bool
	for i := 0; i < n; i++ {
		d.compilers.Add(1)
		go d.compileWorker(s, queue, finished, &stopped)
	}
	return func() { stopped.Store(true) }
}

// compileWorker is one worker's thread. Without a shared context it
// returns at once and leaves the queue to the GL thread.
func (d *Device) compileWorker(s sharer, queue <-chan need, finished chan<- string, stopped *atomic.Bool) {
	defer d.compilers.Done()
	// The thread stays locked: it ends with the goroutine, and with it
	// whatever per-thread state the driver kept for the context.
	runtime.LockOSThread()
	ctx, err := s.share()
	if err != nil {
		return
	}
	defer ctx.close()
	cache := progCache{dir: d.cache.dir, driver: d.cache.driver}
	var warm warmer
	defer warm.free(true)
	for n := range queue {
		if stopped.Load() {
			return
		}
		b := builtProgram{}
		if b.err = d.fitsLocal(n.kernel); b.err == nil {
			b.id, b.err = compileWith(&cache, n.kernel)
		}
		if b.err == nil && d.compilesAtDispatch() {
			warm.dispatch(b.id, n)
		}
		gogl.Finish()
		for gogl.GetError() != gogl.NO_ERROR {
		}
		b.hits, b.wrote = cache.hits, cache.writes
		cache.hits, cache.writes = 0, 0
		d.builtMu.Lock()
		if d.built == nil {
			d.built = map[string]builtProgram{}
		}
		d.built[n.key()] = b
		d.builtMu.Unlock()
		finished <- n.key() // buffered for every program: never blocks
	}
}

// compileWith links k's program from the program binary cache c when it
// holds k's source for this driver, else from GLSL (and then stores it in c).
func compileWith(c *progCache, k kernel) (uint32, error) {
	src, err := shaders.Source(k.file, k.defines)
	if err != nil {
		return 0, err
	}
	id := c.load(src)
	if id == 0 {
		if id, err = compileGLSL(k, src); err != nil {
			return 0, err
		}
		c.store(src, id)
	}
	if compiled != nil {
		compiled(k, src)
	}
	return id, nil
}

// takeBuilt removes and returns the program a worker built for key.
func (d *Device) takeBuilt(key string) (builtProgram, bool) {
	d.builtMu.Lock()
	defer d.builtMu.Unlock()
	b, ok := d.built[key]
	if ok {
		delete(d.built, key)
	}
	return b, ok
}

// glDropBuilt deletes the programs workers built that were never adopted
// (GL thread, at shutdown, after the workers have ended).
func (d *Device) glDropBuilt() {
	d.builtMu.Lock()
	defer d.builtMu.Unlock()
	for _, b := range d.built {
		if b.id != 0 {
			gogl.DeleteProgram(b.id)
		}
	}
	d.built = nil
}
