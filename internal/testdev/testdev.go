// Package testdev gives tests the devices to run on: the reference device
// always, and the GL device where a context can be made. With
// STEPWISE_REQUIRE_GL=1 (set by scripts/test) a missing GL context fails the
// test instead of skipping the GL half.
package testdev

import (
	"os"
	"sync"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/gl"
	"github.com/stepwise/stepwise/gpu/ref"
)

var (
	glOnce sync.Once
	glDev  *gl.Device
	glErr  error
)

// GL returns the process-wide GL device (one context per test binary, as
// the program has one), or skips (fails with STEPWISE_REQUIRE_GL=1).
func GL(t testing.TB) gpu.Device {
	t.Helper()
	glOnce.Do(func() { glDev, glErr = gl.New() })
	if glErr != nil {
		if os.Getenv("STEPWISE_REQUIRE_GL") == "1" {
			t.Fatalf("no GL device: %v", glErr)
		}
		t.Skipf("no GL device: %v", glErr)
	}
	return glDev
}

// All returns the devices to test on, by name ("ref", "gl").
func All(t testing.TB) map[string]func(testing.TB) gpu.Device {
	return map[string]func(testing.TB) gpu.Device{
		"ref": func(t testing.TB) gpu.Device {
			d := ref.New()
			t.Cleanup(func() { d.Close() })
			return d
		},
		"gl": GL,
	}
}
