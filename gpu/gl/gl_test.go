package gl

import (
	"os"
	"sync"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/gputest"
)

var (
	sharedOnce sync.Once
	sharedDev  *Device
	sharedErr  error
)

// shared returns one device for the value tests (shader programs compile
// once per device), or skips when no OpenGL 4.3 context can be made here.
func shared(t testing.TB) *Device {
	t.Helper()
	sharedOnce.Do(func() { sharedDev, sharedErr = New() })
	if sharedErr != nil {
		skipNoGL(t, sharedErr)
	}
	if err := sharedDev.Err(); err != nil {
		t.Fatalf("shared device already failed: %v", err)
	}
	return sharedDev
}

// fresh returns a new device the test owns and closes.
func fresh(t testing.TB) *Device {
	t.Helper()
	d, err := New()
	if err != nil {
		skipNoGL(t, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// skipNoGL skips a test where no context can be made, or fails it when
// STEPWISE_REQUIRE_GL=1 (as scripts/test sets).
func skipNoGL(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("STEPWISE_REQUIRE_GL") == "1" {
		t.Fatalf("no OpenGL 4.3 context (STEPWISE_REQUIRE_GL=1): %v", err)
	}
	t.Skipf("no OpenGL 4.3 context on this machine, skipping GL tests: %v", err)
}

func TestName(t *testing.T) {
	d := shared(t)
	t.Logf("device %q via %s", d.Name(), d.Context())
	if len(d.Name()) < 5 || d.Name()[:4] != "gl: " {
		t.Errorf("Name() = %q, want \"gl: <renderer>, <version>\"", d.Name())
	}
}

func TestOpSuite(t *testing.T) {
	gputest.RunOpSuite(t, shared(t), 1e-4)
}

func TestErrorSuite(t *testing.T) {
	shared(t)
	gputest.RunErrorSuite(t, func() gpu.Device { return fresh(t) })
}

func TestMemorySuite(t *testing.T) {
	d, err := New()
	if err != nil {
		skipNoGL(t, err)
	}
	gputest.RunMemorySuite(t, d)
}

// TestPoolHoldsAStep: a "step" that allocates and frees far more than the
// pool's fixed cap finds every buffer in the pool the second time (the pool
// may grow up to the high-water mark), and a step that stays below the mark
// does not raise it.
func TestPoolHoldsAStep(t *testing.T) {
	d := fresh(t)
	d.poolCap = 4 << 10
	x := d.Upload(make([]float32, 1<<14), 1<<14) // 64 KiB
	step := func() {
		d.PushScope()
		h := x
		for i := 0; i < 12; i++ { // 12 live activations of 64 KiB, then all freed
			h = d.Scale(h, 1.01, 0)
		}
		if _, err := d.Download(h); err != nil {
			t.Fatal(err)
		}
		d.PopScope()
	}
	step()
	created := d.BuffersCreated()
	for i := 0; i < 3; i++ {
		step()
	}
	if n := d.BuffersCreated() - created; n != 0 {
		t.Errorf("steps after the first created %d buffers", n)
	}
	var high int64
	d.call(func() { high = d.highWater })
	if high > 14*(64<<10) {
		t.Errorf("high-water mark %d bytes for 13 live 64 KiB buffers", high)
	}
}
