package nets

import (
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/testdev"
)

// testDevices returns the devices every network test runs on, keyed by a
// short name for subtest names: the reference device and the GL device
// (skipped where no GL context can be made, unless STEPWISE_REQUIRE_GL=1).
func testDevices(t *testing.T) map[string]gpu.Device {
	t.Helper()
	out := map[string]gpu.Device{"ref": ref.New()}
	t.Cleanup(func() { out["ref"].Close() })
	if d := testdev.MaybeGL(t); d != nil {
		out["gl"] = d
	}
	return out
}
