package gpu_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/stepwise/stepwise/gpu"
)

// pooled is a device (its other methods unused) with a pool and a limit.
type pooled struct {
	gpu.Device
	trims int
}

func (p *pooled) TrimPool()             { p.trims++ }
func (p *pooled) MaxTensorBytes() int64 { return 1234 }

// A Counter passes TrimPool and MaxTensorBytes through to the device it
// wraps (stepwise bench runs pipelines through one).
func TestCounterForwards(t *testing.T) {
	d := &pooled{}
	c := &gpu.Counter{Device: d}
	gpu.TrimPool(c)
	assert.Equal(t, 1, d.trims, "TrimPool calls")
	assert.Equal(t, int64(1234), gpu.MaxTensorBytes(c))
	gpu.TrimPool(&gpu.Counter{Device: &struct{ gpu.Device }{}}) // no pool: nothing to do
}
