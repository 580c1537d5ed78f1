//go:build !noglfw

package gl

import (
	"fmt"
	"os"
	"unsafe"

	"github.com/go-gl/glfw/v3.3/glfw"
)

// glfwAvailable reports whether this build carries the GLFW fallback (build
// with -tags noglfw to drop it and its X11 link dependencies).
const glfwAvailable = true

// glfwContext is a hidden 1x1 GLFW window whose 4.3 core context is current.
type glfwContext struct {
	win *glfw.Window
}

// newGLFW opens a hidden window on the X display named by $DISPLAY.
func newGLFW() (*glfwContext, error) {
	if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		return nil, fmt.Errorf("no DISPLAY set")
	}
	if err := glfw.Init(); err != nil {
		return nil, fmt.Errorf("glfw.Init: %w", err)
	}
	glfw.WindowHint(glfw.Visible, glfw.False)
	glfw.WindowHint(glfw.ContextVersionMajor, 4)
	glfw.WindowHint(glfw.ContextVersionMinor, 3)
	glfw.WindowHint(glfw.OpenGLProfile, glfw.OpenGLCoreProfile)
	glfw.WindowHint(glfw.OpenGLForwardCompatible, glfw.True)
	win, err := glfw.CreateWindow(1, 1, "stepwise", nil, nil)
	if err != nil {
		glfw.Terminate()
		return nil, fmt.Errorf("hidden window with OpenGL 4.3 core: %w", err)
	}
	win.MakeContextCurrent()
	return &glfwContext{win: win}, nil
}

func (g *glfwContext) procAddr(name string) unsafe.Pointer { return glfw.GetProcAddress(name) }

func (g *glfwContext) close() {
	glfw.DetachCurrentContext()
	g.win.Destroy()
	glfw.Terminate()
}
