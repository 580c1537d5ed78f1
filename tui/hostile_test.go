package tui

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/faulty"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
)

// TestViewDuringDeviceRecovery: a run fails on the device, and while the
// worker reopens it (the failed pipeline already closed, the new one not
// loaded) the studio redraws. The UI must not touch the closed pipeline: it
// used to panic in Pipeline.Downscale <- gen.Validate <- Model.problem.
func TestViewDuringDeviceRecovery(t *testing.T) {
	g := golden.Dir(t)
	plan := faulty.NewPlan(faulty.LostContext, faulty.Trigger{})
	plan.Disarm()
	reopening, release := make(chan struct{}), make(chan struct{})
	opens := 0
	load := func(func(string)) (gpu.Device, *models.Pipeline, error) {
		opens++
		if opens == 2 {
			close(reopening)
			<-release
		}
		dev := faulty.Wrap(ref.New(), plan)
		p, err := models.Load(dev, filepath.Join(g, "sd15-mini.fp16.safetensors"), filepath.Join(g, "sd15_mini_config.json"))
		return dev, p, err
	}
	s := testSettings()
	s.CFGScale = 1
	h := newHarness(t, s, load)
	m := h.m
	require.NotNil(t, m.model, "model did not load: %s", m.status)

	plan.ArmKind(faulty.LostContext, faulty.Trigger{Downloads: 1})
	h.keys("ctrl+g")
	r := h.last()
	select {
	case <-reopening:
	case <-time.After(90 * time.Second):
		close(release)
		t.Fatalf("the worker never reopened the device; status: %s", m.status)
	}
	// The worker holds a closed pipeline; the UI draws every view that
	// reads the model.
	for _, k := range []string{"alt+2", "alt+3", "alt+5", "alt+1"} {
		h.keys(k)
		h.view()
		require.Nil(t, m.crash, "the studio crashed drawing %s while the device was reopened", k)
	}
	assert.Contains(t, h.view(), "stepwise · sd15-mini.fp16")
	close(release)
	h.waitRun(r)
	assert.Equal(t, runFailed, r.Status, m.status)
	assert.Contains(t, m.status, "device reopened, model reloaded")
	assert.Nil(t, m.crash)
	next := h.finishRun()
	assert.Equal(t, runDone, next.Status, m.status)
}
