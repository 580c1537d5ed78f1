package gl

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
)

// TestInterruptSkipsQueuedWork: a queue of big matrix products (tens of
// seconds on llvmpipe) stops soon after Interrupt: the dispatches not yet run are
// skipped, Download says ErrInterrupted, and after Resume the device
// computes as before (an interrupt is not a device error).
func TestInterruptSkipsQueuedWork(t *testing.T) {
	d := fresh(t)
	const m, k = 1024, 4096
	a := d.Upload(make([]float32, m*k), m, k)
	b := d.Upload(make([]float32, k*m), k, m)
	// Compile the kernel and time one product first.
	t1 := time.Now()
	_, err := d.Download(d.MatMul(a, b, gpu.MatMulOpts{}))
	require.NoError(t, err)
	one := time.Since(t1)
	const queued = 12
	var x *gpu.Tensor
	for range queued {
		x = d.MatMul(a, b, gpu.MatMulOpts{})
	}
	time.Sleep(100 * time.Millisecond)
	t0 := time.Now()
	d.Interrupt()
	_, err = d.Download(x)
	assert.ErrorIs(t, err, gpu.ErrInterrupted)
	took := time.Since(t0)
	t.Logf("one product %s; %d queued stopped in %s", one, queued, took)
	assert.Less(t, took, queued*one/3, "the queued work was not skipped")
	require.NoError(t, d.Err())
	d.Resume()
	c := d.Upload([]float32{1, 2, 3, 4}, 1, 4)
	got, err := d.Download(d.Scale(c, 2, 0))
	require.NoError(t, err)
	assert.Equal(t, []float32{2, 4, 6, 8}, got)
}
