package tui

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
)

// directImage runs settings s through a gen.Session of its own on a fresh
// sd15-mini (gen reads the input files itself) and returns the final image.
func directImage(t *testing.T, s presets.Settings) []uint8 {
	t.Helper()
	p, err := models.Load(ref.New(), filepath.Join(golden.Dir(t), "sd15-mini.fp16.safetensors"), filepath.Join(golden.Dir(t), "sd15_mini_config.json"))
	require.NoError(t, err)
	sess, err := gen.SessionOn(p)
	require.NoError(t, err)
	defer sess.Close()
	run, err := sess.Start(1, s)
	require.NoError(t, err)
	imgs, err := sess.Finish(context.Background(), run, nil)
	require.NoError(t, err)
	require.Len(t, imgs, 1)
	return imgs[0].Pix
}

// studioRun presses ctrl+g and waits for the run to finish.
func (h *harness) studioRun() *runRec {
	h.t.Helper()
	n := len(h.m.runs)
	h.keys("ctrl+g")
	h.waitFor("the run", func() bool { return len(h.m.runs) > n || h.m.statusErr })
	require.False(h.t, h.m.statusErr, h.m.status)
	r := h.last()
	h.waitRun(r)
	require.Equal(h.t, runDone, r.Status, h.m.status)
	require.Len(h.t, r.Images, 1)
	return r
}

// TestControlNetRunFromTheFields: sd15-mini's ControlNet and its control
// image (golden-wave3's control_64.png) typed in the image page, with a
// control strength from the slider, give gen.Session's image for the same
// settings pixel for pixel, and the ControlNet changes the image.
func TestControlNetRunFromTheFields(t *testing.T) {
	w3 := golden.Wave(t, "golden-wave3")
	cn := filepath.Join(w3, "sd15-mini-controlnet")
	control := filepath.Join(w3, "inputs", "control_64.png")
	h := newMini(t)
	m := h.m
	h.setField(focusSteps, "4")
	h.setField(focusControlNet, cn)
	h.setField(focusControlImage, control)
	h.setField(focusControlStrength, "1")
	h.keys("left", "left") // the slider: 1 - 2 x 0.05
	assert.Equal(t, "0.9", m.ed.img.controlScale.Value())
	h.waitFor("the control image", func() bool { return m.fieldImage(focusControlImage) != nil })
	h.mustView("control image · control_64.png", "64x64")

	r := h.studioRun()
	assert.Equal(t, cn, r.Settings.ControlNet)
	assert.Equal(t, control, r.Settings.ControlImage)
	assert.InDelta(t, 0.9, r.Settings.ControlStrength, 1e-12, "the slider's value")
	assert.Len(t, r.Frames, 4)

	want := directImage(t, r.Settings)
	assert.Equal(t, want, r.Images[0].Pix, "the final image is gen.Session's")
	plain := r.Settings
	plain.ControlNet, plain.ControlImage = "", ""
	assert.NotEqual(t, directImage(t, plain), r.Images[0].Pix, "the ControlNet changes the image")
}

// TestIPAdapterRunFromTheFields: golden-wave4's mini IP-Adapter (its image
// encoder found beside it, as diffusers' h94 layout has it) with a
// reference image and a scale typed in the image page gives gen.Session's
// image for the same settings pixel for pixel, and the adapter changes the
// image.
func TestIPAdapterRunFromTheFields(t *testing.T) {
	adapter := filepath.Join(golden.Wave(t, "golden-wave4"), "ip-adapter-mini", "models", "ip-adapter_sd15-mini.safetensors")
	refImage := filepath.Join(golden.Wave(t, "golden-wave3"), "inputs", "init_64.png")
	h := newMini(t)
	m := h.m
	h.setField(focusSteps, "4")
	h.setField(focusIPAdapter, adapter)
	h.setField(focusIPImage, refImage)
	h.setField(focusIPScale, "0.6")
	h.waitFor("the reference image", func() bool { return m.fieldImage(focusIPImage) != nil })
	h.mustView("IP-Adapter image · init_64.png")

	r := h.studioRun()
	assert.Equal(t, adapter, r.Settings.IPAdapter)
	assert.Equal(t, refImage, r.Settings.IPAdapterImage)
	assert.InDelta(t, 0.6, r.Settings.IPAdapterScale, 0, "the scale as typed")
	assert.Empty(t, r.Settings.InitImage, "the reference image is no init image")
	assert.Len(t, r.Frames, 4)

	want := directImage(t, r.Settings)
	assert.Equal(t, want, r.Images[0].Pix, "the final image is gen.Session's")
	plain := r.Settings
	plain.IPAdapter, plain.IPAdapterImage = "", ""
	assert.NotEqual(t, directImage(t, plain), r.Images[0].Pix, "the IP-Adapter changes the image")
}
