package gl

import (
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	gogl "github.com/go-gl/gl/v4.3-core/gl"

	"github.com/stepwise/stepwise/gpu"
)

// glContext is a current OpenGL context, however it was made.
type glContext interface {
	procAddr(name string) unsafe.Pointer
	close()
}

// openContext makes an OpenGL 4.3 core context current on the calling (locked)
// thread: an EGL device (a real GPU first, then Mesa's software device), then
// Mesa's surfaceless platform, then a hidden GLFW window. The error lists
// every attempt and why it failed.
func openContext() (glContext, string, error) {
	type attempt struct {
		name string
		open func() (glContext, error)
	}
	attempts := []attempt{
		{"EGL device platform", func() (glContext, error) { return wrapEGL(newEGL(false)) }},
		{"EGL surfaceless platform (Mesa)", func() (glContext, error) { return wrapEGL(newEGL(true)) }},
	}
	if glfwAvailable {
		attempts = append(attempts, attempt{"GLFW hidden window", func() (glContext, error) {
			g, err := newGLFW()
			if err != nil {
				return nil, err
			}
			return g, nil
		}})
	}
	var fails []string
	for _, a := range attempts {
		ctx, err := a.open()
		if err == nil {
			err = initGL(ctx)
			if err == nil {
				return ctx, a.name, nil
			}
			ctx.close()
		}
		fails = append(fails, fmt.Sprintf("%s: %v", a.name, err))
	}
	if !glfwAvailable {
		fails = append(fails, "GLFW hidden window: not in this build (-tags noglfw)")
	}
	return nil, "", fmt.Errorf("gl: no OpenGL 4.3 context could be made (%s); install libegl1 libegl-mesa0 libgl1-mesa-dri "+
		"(Mesa's llvmpipe runs OpenGL on the CPU) or a GPU driver with EGL, or use --device ref for the plain-Go device",
		strings.Join(fails, "; "))
}

func wrapEGL(e *eglContext, err error) (glContext, error) {
	if err != nil {
		return nil, err
	}
	return e, nil
}

// initGL loads the GL entry points for ctx and checks the version.
func initGL(ctx glContext) error {
	if err := gogl.InitWithProcAddrFunc(ctx.procAddr); err != nil {
		return fmt.Errorf("loading OpenGL functions: missing %v", err)
	}
	var major, minor int32
	gogl.GetIntegerv(gogl.MAJOR_VERSION, &major)
	gogl.GetIntegerv(gogl.MINOR_VERSION, &minor)
	if major < 4 || (major == 4 && minor < 3) {
		return fmt.Errorf("context is OpenGL %d.%d, compute shaders need 4.3", major, minor)
	}
	return nil
}

// glString reads a GL string such as GL_RENDERER.
func glString(name uint32) string {
	p := gogl.GetString(name)
	if p == nil {
		return "?"
	}
	return gogl.GoStr(p)
}

// loop is the GL thread: it owns the context and runs every queued closure
// in order until the queue is closed.
func (d *Device) loop(ready chan<- error) {
	runtime.LockOSThread()
	defer close(d.done)
	ctx, how, err := openContext()
	if err != nil {
		ready <- err
		return
	}
	d.ctx = ctx
	d.how = how
	d.name = fmt.Sprintf("gl: %s, %s", glString(gogl.RENDERER), glString(gogl.VERSION))
	var v int32
	gogl.GetIntegerv(gogl.MAX_TEXTURE_BUFFER_SIZE, &v)
	d.maxTexels = int64(v)
	var b int64
	gogl.GetInteger64v(gogl.MAX_SHADER_STORAGE_BLOCK_SIZE, &b)
	d.maxBlock = b
	for i := 0; i < 3; i++ {
		gogl.GetIntegeri_v(gogl.MAX_COMPUTE_WORK_GROUP_COUNT, uint32(i), &v)
		d.maxGroups[i] = int(v)
		gogl.GetIntegeri_v(gogl.MAX_COMPUTE_WORK_GROUP_SIZE, uint32(i), &v)
		d.maxLocal[i] = int(v)
	}
	gogl.GetIntegerv(gogl.MAX_COMPUTE_WORK_GROUP_INVOCATIONS, &v)
	d.maxInvoc = int(v)
	d.pinned = d.glDetectPinned()
	d.standIn = d.glStandIn()
	d.cache = newProgCache()
	d.tune = newTuner(cacheDir(), glString(gogl.RENDERER)+"\n"+glString(gogl.VERSION)+"\n"+glString(gogl.VENDOR))
	for i := 0; i < 16 && gogl.GetError() != gogl.NO_ERROR; i++ {
	}
	ready <- nil
	for f := range d.work {
		f()
	}
	d.glShutdown()
	ctx.close()
}

// glStandIn makes the device's stand-in tensor (Device.standIn): a buffer
// of four F32 zeros, sized as weights are (exactSize), outside the memory
// accounting and the live set (it lives as long as the context).
func (d *Device) glStandIn() *gpu.Tensor {
	b := &buffer{size: exactSize(16), exact: true}
	zeros := make([]byte, b.size)
	gogl.GenBuffers(1, &b.id)
	gogl.BindBuffer(gogl.COPY_WRITE_BUFFER, b.id)
	gogl.BufferData(gogl.COPY_WRITE_BUFFER, int(b.size), unsafe.Pointer(&zeros[0]), gogl.STATIC_DRAW)
	gogl.BindBuffer(gogl.COPY_WRITE_BUFFER, 0)
	return &gpu.Tensor{Shape: gpu.Shape{4}, DType: gpu.F32, Store: &gpu.Storage{Handle: b, Bytes: 16, Dev: d}}
}
