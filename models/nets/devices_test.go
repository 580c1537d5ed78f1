package nets

import (
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
)

// testDevices returns the devices every network test runs on, keyed by a
// short name for subtest names. Add a device here to test the networks on it.
func testDevices(t *testing.T) map[string]gpu.Device {
	t.Helper()
	d := ref.New()
	t.Cleanup(func() { d.Close() })
	return map[string]gpu.Device{"ref": d}
}
