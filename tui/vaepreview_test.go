package tui

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/bundled"
)

func bundledLoad(func(string)) (gpu.Device, *models.Pipeline, error) {
	dev := ref.New()
	p, err := bundled.Load(dev)
	return dev, p, err
}

// On the bundled model frames are shown decoded by the VAE (full size,
// true colours), not as the latent projection's mosaic, within the budget:
// the decodes take at most a fifth of the sampling time (plus the one
// decode that crossed it).
func TestBundledFramesAreVAEDecoded(t *testing.T) {
	s := testSettings()
	s.Width, s.Height, s.Steps, s.Prompt = 32, 32, 12, "red heart"
	h := newHarness(t, s, bundledLoad)
	require.NotNil(t, h.m.model, h.m.status)
	h.keys("ctrl+g")
	r := h.last()
	h.waitRun(r)
	require.Equal(t, runDone, r.Status, h.m.status)
	vae, shown := 0, -1
	for i, f := range r.Frames {
		if f.X0VAE {
			vae++
			shown = i
			assert.Equal(t, 32, f.X0.Bounds().Dx(), "frame %d", i)
		} else {
			assert.Less(t, f.X0.Bounds().Dx(), 32, "frame %d: the latent projection", i)
		}
	}
	sampled, spent, last := h.m.w.vae.budget.Totals() // the worker is idle now
	t.Logf("%d of %d frames VAE-decoded; decodes %v of sampling %v", vae, len(r.Frames), spent, sampled)
	assert.GreaterOrEqual(t, vae, 1, "some frames fit the budget")
	for i := 0; i < 3; i++ {
		assert.False(t, r.Frames[i].X0VAE, "frame %d: the first step compiles the shaders, the next two measure a step", i)
	}
	assert.LessOrEqual(t, spent, time.Duration(float64(sampled)*gen.DefaultPreviewShare)+last, "within the budget")
	require.GreaterOrEqual(t, shown, 0)
	if shown == len(r.Frames)-1 { // the last frame of a done run shows the final image
		shown = -1
		for i, f := range r.Frames[:len(r.Frames)-1] {
			if f.X0VAE {
				shown = i
			}
		}
		require.GreaterOrEqual(t, shown, 0, "a VAE frame before the last")
	}
	h.m.frame = shown
	_, what := h.m.shown(r)
	assert.Equal(t, "predicted x0 (VAE)", what)
}

// Width and height step by the model's multiple (16 on the bundled model)
// down to its smallest size, through 32.
func TestSizeNudgeReachesTheSmallest(t *testing.T) {
	s := testSettings()
	s.Width, s.Height = 96, 96
	h := newHarness(t, s, bundledLoad)
	require.NotNil(t, h.m.model, h.m.status)
	h.setField(focusWidth, "96")
	require.Equal(t, 16, h.m.model.SizeMultiple)
	var seen []string
	for i := 0; i < 6; i++ {
		h.keys("down")
		seen = append(seen, h.m.ed.width.Value())
	}
	assert.Equal(t, []string{"80", "64", "48", "32", "16", "16"}, seen)
	h.keys("up")
	assert.Equal(t, "32", h.m.ed.width.Value())
}

// The forward/reverse player shows VAE decodes on a model whose decodes
// were measured cheap (the bundled model), the latent projection before.
func TestForwardPlayerUsesTheVAEWhenCheap(t *testing.T) {
	s := testSettings()
	s.Width, s.Height, s.Steps, s.Prompt = 32, 32, 12, "red heart"
	h := newHarness(t, s, bundledLoad)
	require.NotNil(t, h.m.model, h.m.status)
	h.keys("ctrl+g")
	r := h.last()
	h.waitRun(r)
	require.Equal(t, runDone, r.Status, h.m.status)
	_, _, last := h.m.w.vae.budget.Totals()
	require.Greater(t, last, time.Duration(0), "a preview decode was measured")
	h.keys("alt+3")
	h.waitFor("the forward process", func() bool { return len(h.m.fv.fwd) > 0 || h.m.fv.err != nil })
	require.NoError(t, h.m.fv.err)
	if last*forwardFrames < 2*time.Second {
		assert.Equal(t, 32, h.m.fv.fwd[0].Bounds().Dx(), "VAE-decoded")
	} else {
		t.Logf("decodes of %v are too slow on this machine now for VAE frames", last)
		assert.Less(t, h.m.fv.fwd[0].Bounds().Dx(), 32)
	}
}
