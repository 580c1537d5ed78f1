package gen

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
)

func loadMini(t *testing.T) *models.Pipeline {
	t.Helper()
	g := golden.Dir(t)
	p, err := models.Load(ref.New(), filepath.Join(g, "sd15-mini.fp16.safetensors"), filepath.Join(g, "sd15_mini_config.json"))
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// TestCancelInsideAStep: one step of a 1024x1024 image on the reference
// device takes minutes here (self-attention over 16384 positions); a
// cancelled context used to be noticed only after it. Now the kernels stop
// within a second, the step says why, and the device works after.
func TestCancelInsideAStep(t *testing.T) {
	p := loadMini(t)
	s := presets.Default()
	s.Width, s.Height, s.Steps, s.Seed = 1024, 1024, 2, 1
	j, err := Start(p, s)
	require.NoError(t, err)
	defer j.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := j.Step(ctx); done <- err }()
	time.Sleep(500 * time.Millisecond)
	t0 := time.Now()
	cancel()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		require.FailNow(t, "the step ran on for a minute after its context was cancelled")
	}
	assert.Less(t, time.Since(t0), 1500*time.Millisecond)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, j.Frames)
	require.NoError(t, p.Device().Err(), "a cancel is not a device error")

	// The same pipeline makes a small image afterwards.
	s.Width, s.Height = 64, 64
	j2, err := Start(p, s)
	require.NoError(t, err)
	defer j2.Close()
	imgs, err := j2.Finish(context.Background())
	require.NoError(t, err)
	assert.Len(t, imgs, 1)
}

// TestEstimate: the cost grows with the size; a request past the device's
// memory is refused with both numbers.
func TestEstimate(t *testing.T) {
	f := FactsOf(loadMini(t))
	s := presets.Default()
	s.Width, s.Height = 64, 64
	small := f.Estimate(s)
	s.Width, s.Height = 4096, 4096
	big := f.Estimate(s)
	assert.Greater(t, big.PeakBytes, 64*small.PeakBytes/2)
	assert.Greater(t, big.StepFLOPs, 4096*small.StepFLOPs/4, "self-attention grows with the square of the positions")
	assert.Greater(t, f.DeviceMemory, int64(0), "the host's memory is known on Linux")
	f.DeviceMemory = big.PeakBytes / 2
	err := f.Validate(s)
	var tl *TooLargeError
	require.ErrorAs(t, err, &tl)
	assert.Contains(t, err.Error(), "4096x4096 needs about")
	assert.Contains(t, err.Error(), "more than the")
	s.Width, s.Height = 64, 64
	assert.NoError(t, f.Validate(s))
}
