//go:build noglfw

package gl

import (
	"errors"
	"unsafe"
)

const glfwAvailable = false

type glfwContext struct{}

func newGLFW() (*glfwContext, error) {
	return nil, errors.New("not in this build (built with -tags noglfw)")
}

func (g *glfwContext) procAddr(string) unsafe.Pointer { return nil }

func (g *glfwContext) close() {}
