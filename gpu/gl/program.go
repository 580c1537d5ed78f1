package gl

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	gogl "github.com/go-gl/gl/v4.3-core/gl"

	"github.com/stepwise/stepwise/gpu"
)

// program is a linked compute program and its uniform locations.
type program struct {
	id   uint32
	err  error // a failed compile is cached too, so it is reported once per op
	locs map[string]int32
}

// kernel names a program variant: a shader file, its defines and local size.
type kernel struct {
	file    string
	defines []string
}

// compiled, when set (by tests), sees the source of every program variant a
// device builds and the driver accepts (from GLSL or the binary cache). It is
// called on each device's GL thread.
var compiled func(k kernel, src string)

func (k kernel) key() string {
	d := append([]string(nil), k.defines...)
	sort.Strings(d)
	return k.file + "|" + strings.Join(d, ",")
}

// glProgram compiles and links k once and caches the result.
func (d *Device) glProgram(k kernel) (*program, error) {
	key := k.key()
	if p, ok := d.progs[key]; ok {
		return p, p.err
	}
	p := &program{locs: map[string]int32{}}
	if b, ok := d.takeBuilt(key); ok { // a compile worker built it
		p.id, p.err = b.id, b.err
		d.adopted++
		d.cache.hits += b.hits
		d.cache.writes += b.wrote
	} else if p.err = d.fitsLocal(k); p.err == nil {
		p.id, p.err = d.compile(k)
	}
	d.progs[key] = p
	return p, p.err
}

// fitsLocal checks k's work group (the LX and LY defines every shader sizes
// itself with) against this device's limits, which the GL specification lets
// be as small as 1024 invocations.
func (d *Device) fitsLocal(k kernel) error {
	size := [3]int{1, 1, 1}
	for _, def := range k.defines {
		name, val, _ := strings.Cut(def, "=")
		i := strings.Index("LXLYLZ", name)
		if len(name) != 2 || i < 0 || i%2 != 0 {
			continue
		}
		n, err := strconv.Atoi(val)
		if err != nil {
			return fmt.Errorf("gl: shader %s: bad local size %s", k.file, def)
		}
		size[i/2] = n
	}
	for i, n := range size {
		if d.maxLocal[i] > 0 && n > d.maxLocal[i] {
			return fmt.Errorf("gl: shader %s: work group size %d along %c exceeds this device's limit %d", k.file, n, "xyz"[i], d.maxLocal[i])
		}
	}
	if n := size[0] * size[1] * size[2]; d.maxInvoc > 0 && n > d.maxInvoc {
		return fmt.Errorf("gl: shader %s: work groups of %d invocations exceed this device's limit %d", k.file, n, d.maxInvoc)
	}
	return nil
}

// compile links k's program: from the program binary cache when it holds
// k's source for this driver, else from GLSL (and then stores it there).
func (d *Device) compile(k kernel) (uint32, error) { return compileWith(&d.cache, k) }

// compileGLSL compiles and links src, k's source.
func compileGLSL(k kernel, src string) (uint32, error) {
	where := fmt.Sprintf("shader %s [%s]", k.file, strings.Join(k.defines, " "))
	sh := gogl.CreateShader(gogl.COMPUTE_SHADER)
	csrc, free := gogl.Strs(src + "\x00")
	gogl.ShaderSource(sh, 1, csrc, nil)
	free()
	gogl.CompileShader(sh)
	var ok int32
	gogl.GetShaderiv(sh, gogl.COMPILE_STATUS, &ok)
	if ok == 0 {
		log := infoLog(sh, gogl.GetShaderiv, gogl.GetShaderInfoLog)
		gogl.DeleteShader(sh)
		return 0, fmt.Errorf("gl: %s does not compile: %s", where, log)
	}
	prog := gogl.CreateProgram()
	gogl.ProgramParameteri(prog, gogl.PROGRAM_BINARY_RETRIEVABLE_HINT, gogl.TRUE)
	gogl.AttachShader(prog, sh)
	gogl.LinkProgram(prog)
	gogl.DeleteShader(sh)
	gogl.GetProgramiv(prog, gogl.LINK_STATUS, &ok)
	if ok == 0 {
		log := infoLog(prog, gogl.GetProgramiv, gogl.GetProgramInfoLog)
		gogl.DeleteProgram(prog)
		return 0, fmt.Errorf("gl: %s does not link: %s", where, log)
	}
	return prog, nil
}

func infoLog(obj uint32, get func(uint32, uint32, *int32), read func(uint32, int32, *int32, *uint8)) string {
	var n int32
	get(obj, gogl.INFO_LOG_LENGTH, &n)
	if n <= 1 {
		return "(no log)"
	}
	buf := make([]uint8, n)
	read(obj, n, nil, &buf[0])
	return strings.TrimSpace(string(buf[:n-1]))
}

func (p *program) loc(name string) int32 {
	l, ok := p.locs[name]
	if !ok {
		l = gogl.GetUniformLocation(p.id, gogl.Str(name+"\x00"))
		p.locs[name] = l
	}
	return l
}

// input is a tensor bound to a texture unit; format picks the view.
type input struct {
	t      *gpu.Tensor
	format int
}

// launch is one dispatch, built on the caller's goroutine and run on the GL
// thread.
type launch struct {
	kernel
	spec   *kernelSpec   // its row of the ops table (nil: a test's own kernel)
	ins    []input       // texture units 0, 1, ...
	ssbos  []*gpu.Tensor // storage buffer bindings 1, 2, ... (read-only inputs)
	out    *gpu.Tensor   // storage buffer binding 0
	ints   map[string]int
	floats map[string]float32
	arrays map[string][]int32
	groups [3]int
}

// loader is the define that picks the load function for t's storage type.
func loader(prefix string, t *gpu.Tensor) string {
	switch t.DType {
	case gpu.F16:
		return prefix + "_LOADER=LOADER_F16"
	case gpu.BF16:
		return prefix + "_LOADER=LOADER_BF16"
	}
	return prefix + "_LOADER=LOADER_F32"
}

// loader4 is loader for the vector (four elements a fetch) loaders.
func loader4(prefix string, t *gpu.Tensor) string {
	if t.DType.Quantized() {
		return prefix + "_LOADER4=LOADER4_" + strings.ReplaceAll(t.DType.String(), "_E", "E")
	}
	return strings.Replace(loader(prefix, t), "_LOADER=LOADER", "_LOADER4=LOADER4", 1)
}

// in4 binds t through a four-elements-a-texel view (for LOADER4_*).
func in4(t *gpu.Tensor) input {
	if t.DType == gpu.F32 {
		return input{t, texF32x4}
	}
	if t.DType.Quantized() {
		return input{t, texU32} // packed bytes, one word a texel (quant.glsl)
	}
	return input{t, texU32x2}
}

func in(t *gpu.Tensor) input {
	if t.DType == gpu.F32 {
		return input{t, texF32}
	}
	return input{t, texU32}
}

// outWindows is the most storage-block windows an output is bound as (see
// DECLARE_OUTPUT in common.glsl).
const outWindows = 5

// MaxTensorBytes is the largest tensor an op may write on this device
// (outWindows storage-block windows); callers split bigger work (the VAE
// decodes large images in tiles).
func (d *Device) MaxTensorBytes() int64 { return outWindows * d.window() }

// window is the bytes of one output window: the largest storage block, cut
// to a multiple of 256 (every driver's largest binding-offset alignment).
func (d *Device) window() int64 { return d.maxBlock / 256 * 256 }

// run queues l. The output must fit outWindows storage-block windows and the
// grid the dispatch limits; otherwise it records an error.
func (d *Device) run(op string, l *launch) {
	if err := l.checkUniforms(); err != nil {
		d.Fail(fmt.Errorf("%s: %w", op, err))
		return
	}
	ob := int64(l.out.Numel()) * 4
	if w := d.window(); ob > w {
		if ob > outWindows*w {
			d.Fail(fmt.Errorf("gl: %s: output %v is %d bytes, more than %d storage blocks of %d bytes hold (try a smaller size)",
				op, l.out.Shape, ob, outWindows, w))
			return
		}
		l.defines = append(l.defines, "OUT_WINDOWS")
		if l.ints == nil {
			l.ints = map[string]int{}
		}
		l.ints["outWindow"] = int(w / 4)
	}
	for i, g := range l.groups {
		if g > d.maxGroups[i] {
			d.Fail(fmt.Errorf("gl: %s: %d work groups along %c exceed the limit %d", op, g, "xyz"[i], d.maxGroups[i]))
			return
		}
	}
	if l.groups[0] == 0 || l.groups[1] == 0 || l.groups[2] == 0 {
		return
	}
	if d.dry {
		d.record(l)
		return
	}
	d.enqueue(func() { d.glRun(op, l) })
}

func (d *Device) glRun(op string, l *launch) {
	if d.Err() != nil || d.Interrupted() {
		return // interrupted: the rest of the queue is skipped
	}
	if d.profile != nil {
		start := time.Now()
		defer func() {
			key := l.file
			if l.spec != nil {
				key = l.spec.name
			}
			if d.profileDetail {
				key = fmt.Sprintf("%s %v %v", key, l.groups, l.ints)
			}
			p := d.profile[key]
			t := time.Since(start)
			if p.calls == 0 {
				p.first = t
			}
			p.calls++
			p.time += t
			d.profile[key] = p
		}()
	}
	p, err := d.glProgram(l.kernel)
	if err != nil {
		d.Fail(fmt.Errorf("%s: %w", op, err))
		return
	}
	for name, v := range l.ints {
		gogl.ProgramUniform1i(p.id, p.loc(name), int32(v))
	}
	for name, v := range l.floats {
		gogl.ProgramUniform1f(p.id, p.loc(name), v)
	}
	for name, v := range l.arrays {
		if len(v) > 0 {
			gogl.ProgramUniform1iv(p.id, p.loc(name), int32(len(v)), &v[0])
		}
	}
	for unit, x := range l.ins {
		if x.t == nil {
			continue // an optional input the kernel was compiled without
		}
		b := x.t.Store.Handle.(*buffer)
		if b.id == 0 {
			d.Fail(fmt.Errorf("gl: %s: operand %d has no GL buffer", op, unit))
			return
		}
		gogl.ActiveTexture(gogl.TEXTURE0 + uint32(unit))
		gogl.BindTexture(gogl.TEXTURE_BUFFER, glTexture(b, x.format))
	}
	for i, t := range l.ssbos {
		b := t.Store.Handle.(*buffer)
		if b.id == 0 {
			d.Fail(fmt.Errorf("gl: %s: operand %d has no GL buffer", op, i))
			return
		}
		gogl.BindBufferRange(gogl.SHADER_STORAGE_BUFFER, uint32(i+1), b.id, 0, int(min(b.size, d.maxBlock)))
	}
	ob := l.out.Store.Handle.(*buffer)
	if ob.id == 0 {
		return // its allocation failed and was recorded
	}
	if w := d.window(); ob.size > w {
		// Windows 0..4 on bindings 0, 4, 5, 6, 7; the ones past the end
		// repeat the last (never written).
		for i, binding := range [outWindows]uint32{0, 4, 5, 6, 7} {
			off := min(int64(i)*w, (ob.size-1)/w*w)
			gogl.BindBufferRange(gogl.SHADER_STORAGE_BUFFER, binding, ob.id, int(off), int(min(w, ob.size-off)))
		}
	} else {
		gogl.BindBufferRange(gogl.SHADER_STORAGE_BUFFER, 0, ob.id, 0, int(ob.size))
	}
	gogl.UseProgram(p.id)
	gogl.DispatchCompute(uint32(l.groups[0]), uint32(l.groups[1]), uint32(l.groups[2]))
	gogl.MemoryBarrier(gogl.SHADER_STORAGE_BARRIER_BIT | gogl.TEXTURE_FETCH_BARRIER_BIT | gogl.BUFFER_UPDATE_BARRIER_BIT)
	// Weights read in place from a mapped file leave the process again
	// (UploadMapped). llvmpipe has finished the dispatch; were it still
	// reading, the pages would come back from the file, unchanged.
	for _, x := range l.ins {
		if x.t != nil {
			if b := x.t.Store.Handle.(*buffer); b.drop != nil {
				dropHost(b.drop)
			}
		}
	}
	d.glCheck(op)
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// grid1D spreads n invocations of local size lx over x and y (see linearId
// in common.glsl).
func (d *Device) grid1D(n, lx int) [3]int {
	g := ceilDiv(n, lx)
	gx := g
	if gx > d.maxGroups[0] {
		gx = d.maxGroups[0]
	}
	if gx == 0 {
		return [3]int{0, 0, 0}
	}
	return [3]int{gx, ceilDiv(g, gx), 1}
}

// gridRows spreads rows work groups over x and y (see groupId).
func (d *Device) gridRows(rows int) [3]int { return d.grid1D(rows, 1) }
