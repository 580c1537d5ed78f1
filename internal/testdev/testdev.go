// Package testdev gives tests the devices to run on: the reference device
// always, and the GL device where a context can be made. With
// STEPWISE_REQUIRE_GL=1 (set by scripts/test) a missing GL context fails the
// test instead of skipping the GL half.
package testdev

import (
	"os"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/gl"
	"github.com/stepwise/stepwise/gpu/ref"
)

// GL returns a new GL device, closed when the test ends, or skips (fails
// with STEPWISE_REQUIRE_GL=1) where no context can be made. Each test gets
// its own device so that one test's recorded error cannot leak into the
// next.
func GL(t testing.TB) gpu.Device {
	t.Helper()
	d := MaybeGL(t)
	if d == nil {
		t.SkipNow()
	}
	return d
}

// MaybeGL is GL for tests that go on without it: where no context can be
// made it logs why and returns nil (or fails with STEPWISE_REQUIRE_GL=1).
func MaybeGL(t testing.TB) gpu.Device {
	t.Helper()
	d, err := gl.New()
	if err != nil {
		if os.Getenv("STEPWISE_REQUIRE_GL") == "1" {
			t.Fatalf("no GL device: %v", err)
		}
		t.Logf("skipping the GL device: %v", err)
		return nil
	}
	t.Cleanup(func() { d.Close() })
	return d
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
