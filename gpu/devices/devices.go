// Package devices opens a compute device by name: "gl" (OpenGL compute,
// headless through EGL), "ref" (the plain-Go reference) or "auto" (GL, and
// the reference device with a warning when no GL 4.3 context can be made).
package devices

import (
	"fmt"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/gl"
	"github.com/stepwise/stepwise/gpu/ref"
)

// Names lists the accepted device names.
var Names = []string{"auto", "gl", "ref"}

// Open returns the named device. For "auto" a GL failure is not an error:
// warn (if non-nil) receives the reason and the reference device is used.
func Open(name string, warn func(string)) (gpu.Device, error) {
	switch name {
	case "ref":
		return ref.New(), nil
	case "gl":
		d, err := gl.New()
		if err != nil {
			return nil, err
		}
		return d, nil
	case "", "auto":
		d, err := gl.New()
		if err == nil {
			return d, nil
		}
		if warn != nil {
			warn(fmt.Sprintf("%v\nfalling back to the plain-Go reference device (slow); pass --device ref to skip trying GL", err))
		}
		return ref.New(), nil
	}
	return nil, fmt.Errorf("unknown device %q (want auto, gl or ref)", name)
}
