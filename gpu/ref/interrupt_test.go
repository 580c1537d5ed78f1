package ref

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
)

// TestInterruptStopsLongOps: an attention over 16384 tokens and a wide
// convolution take many seconds here; Interrupt from another goroutine
// stops each within a second (they used to run to the end, ignoring
// SIGINT and SIGTERM for minutes), Download says so, and after Resume the
// device computes as before.
func TestInterruptStopsLongOps(t *testing.T) {
	d := New()
	const L, C = 16384, 64
	q := d.Upload(make([]float32, L*C), 1, L, C)
	x := d.Upload(make([]float32, 64*256*256), 1, 64, 256, 256)
	w := d.Upload(make([]float32, 64*64*9), 64, 64, 3, 3)
	for _, op := range []struct {
		name string
		run  func() *gpu.Tensor
	}{
		{"Attention", func() *gpu.Tensor { return d.Attention(q, q, q, gpu.AttentionOpts{Heads: 1}) }},
		{"Conv2D", func() *gpu.Tensor {
			var out *gpu.Tensor
			for range 20 {
				out = d.Conv2D(x, w, nil, gpu.Conv2DOpts{PadH: 1, PadW: 1})
			}
			return out
		}},
	} {
		t.Run(op.name, func(t *testing.T) {
			done := make(chan *gpu.Tensor)
			go func() { done <- op.run() }()
			time.Sleep(200 * time.Millisecond)
			t0 := time.Now()
			d.Interrupt()
			var out *gpu.Tensor
			select {
			case out = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the op did not stop after Interrupt")
			}
			assert.Less(t, time.Since(t0), time.Second, "stopping took too long")
			_, err := d.Download(out)
			assert.ErrorIs(t, err, gpu.ErrInterrupted)
			require.NoError(t, d.Err(), "an interrupt is not a device error")
			d.Resume()
			a := d.Upload([]float32{1, 2, 3, 4}, 1, 4)
			got, err := d.Download(d.Scale(a, 2, 0))
			require.NoError(t, err)
			assert.Equal(t, []float32{2, 4, 6, 8}, got)
		})
	}
}
