package tui

import (
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/sampler"
)

// waitTAESD waits for the worker's answer to the TAESD field's path as it
// stands now.
func (h *harness) waitTAESD() *taesdState {
	h.t.Helper()
	tz := &h.m.ed.img.tz
	want := unquotePath(h.m.ed.img.taesd.Value())
	h.waitFor("the TAESD field's answer for "+want, func() bool {
		return tz.typed == want && tz.sent == tz.seq && tz.got == tz.seq && tz.want == want
	})
	return tz
}

// TestTAESDField: a TAESD typed in the image page's field goes on the
// running pipeline without loading the model again (one call of the load
// function, the same pipeline), every step's preview is then its decode
// (the same pixels as the pipeline's TAESD decoding the frame's latent),
// and clearing the field takes it off: previews go back to the VAE budget
// or the latent projection. A path that is no TAESD is named in the error.
func TestTAESDField(t *testing.T) {
	taesd := filepath.Join(golden.Wave(t, "golden-wave3"), "taesd-mini")
	var loads atomic.Int32
	load := miniLoad(t)
	h := newHarness(t, testSettings(), func(warn func(string)) (gpu.Device, *models.Pipeline, error) {
		loads.Add(1)
		return load(warn)
	})
	m := h.m
	require.NotNil(t, m.model, m.status)
	h.setField(focusSteps, "3")

	// Not a TAESD: the error names the file; nothing is loaded.
	missing := filepath.Join(t.TempDir(), "nope.safetensors")
	h.setField(focusTAESD, missing)
	tz := h.waitTAESD()
	assert.Contains(t, tz.err, missing)
	assert.Empty(t, tz.loaded)
	assert.Contains(t, h.taesdLine(), "nope.safetensors  ✗")
	h.mustView("taesd: stat", "no such file")

	h.setField(focusTAESD, taesd)
	tz = h.waitTAESD()
	require.Empty(t, tz.err)
	assert.Equal(t, taesd, tz.loaded)
	assert.Contains(t, h.taesdLine(), "taesd-mini  ✓")
	h.mustView("TAESD loaded (4 latent channels, diffusers")

	h.keys("ctrl+g")
	r := h.last()
	h.waitRun(r)
	require.Equal(t, runDone, r.Status, m.status)
	require.Len(t, r.Frames, 3)
	p := m.w.sess.Pipeline() // the worker is idle
	require.NotNil(t, p.TAESD())
	assert.Equal(t, taesd, p.TAESD().Path)
	tiny := func(l sampler.Latent) []uint8 {
		img, err := p.PreviewTiny(l.Data, [4]int(l.Shape), models.PreviewSide)
		require.NoError(t, err)
		return img.Pix
	}
	for i, f := range r.Frames {
		assert.True(t, f.Tiny, "frame %d", i)
		_, x0, err := m.w.sess.FrameLatent(r.ID, i, true)
		require.NoError(t, err)
		_, xt, err := m.w.sess.FrameLatent(r.ID, i, false)
		require.NoError(t, err)
		assert.Equal(t, tiny(x0), f.X0.Pix, "frame %d's x0 preview is the TAESD's decode", i)
		assert.Equal(t, previewAll(m.model, xt).Pix, f.XT.Pix, "frame %d's x_t: the latent projection (one TAESD decode a step)", i)
		assert.NotEqual(t, previewAll(m.model, x0).Pix, f.X0.Pix, "not the latent projection")
	}
	h.keys("home", ".")
	h.mustView("predicted x0 (TAESD)")
	h.keys("end")
	h.mustView("final image (TAESD)")
	// v decodes a frame on request: with a TAESD loaded the pipeline
	// decodes with it, and the title says so.
	h.keys("home", ".", "x", "v")
	h.waitFor("the decode", func() bool { return r.decoded[decodeKey{m.frame, false}].img != nil })
	h.mustView("x_t (TAESD)", "TAESD-decoded frame")
	h.keys("x")
	assert.Equal(t, int32(1), loads.Load(), "the model was loaded once")

	// Cleared: the pipeline has no TAESD, previews are as before.
	h.setField(focusTAESD, "")
	tz = h.waitTAESD()
	assert.Empty(t, tz.err)
	assert.Empty(t, tz.loaded)
	h.keys("ctrl+g")
	r2 := h.last()
	require.NotSame(t, r, r2)
	h.waitRun(r2)
	require.Equal(t, runDone, r2.Status, m.status)
	assert.Same(t, p, m.w.sess.Pipeline(), "the same pipeline")
	assert.Nil(t, p.TAESD())
	assert.Equal(t, int32(1), loads.Load(), "the model was loaded once")
	for i, f := range r2.Frames {
		assert.False(t, f.Tiny, "frame %d", i)
		if !f.X0VAE {
			_, x0, err := m.w.sess.FrameLatent(r2.ID, i, true)
			require.NoError(t, err)
			assert.Equal(t, previewAll(m.model, x0).Pix, f.X0.Pix, "frame %d: the latent projection", i)
		}
	}
	h.keys("end")
	h.mustView("final image (VAE)")
}

// TestTAESDFieldRefused: a TAESD whose latent channels are not the
// model's (sd15-mini's 4-channel TAESD on sd3-mini's 16 channels) is
// refused with the reason and the file named, and the pipeline keeps no
// TAESD; a TAESD given at start (the studio's --taesd) fills the field.
func TestTAESDFieldRefused(t *testing.T) {
	w3 := golden.Wave(t, "golden-wave3")
	taesd := filepath.Join(w3, "taesd-mini")
	s := testSettings()
	xdg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg)
	h := &harness{t: t, msgs: make(chan tea.Msg, 4096), out: t.TempDir()}
	h.m = New(Options{Load: func(func(string)) (gpu.Device, *models.Pipeline, error) {
		dev := ref.New()
		p, err := models.Load(dev, filepath.Join(w3, "sd3-mini"), "")
		return dev, p, err
	}, ModelLabel: "sd3-mini on ref", OutDir: h.out, Settings: &s, TAESD: taesd})
	h.update(teaSize(120, 40))
	h.m.Start(func(msg tea.Msg) { h.msgs <- msg })
	t.Cleanup(h.m.Close)
	h.waitFor("model loaded", func() bool { return !h.m.loading })
	require.NotNil(t, h.m.model, h.m.status)
	assert.Equal(t, taesd, h.m.ed.img.taesd.Value(), "the field shows --taesd's path")
	tz := h.waitTAESD()
	assert.Equal(t, "taesd "+taesd+": 4 latent channels, the model's are 16", tz.err)
	assert.Empty(t, tz.loaded)
	assert.Nil(t, h.m.w.sess.Pipeline().TAESD())
	h.m.focus = focusTAESD
	h.m.ed.page = 1
	assert.Contains(t, h.taesdLine(), "taesd-mini  ✗")
	h.mustView("taesd-mini: 4", "latent channels, the model's are 16")
}

// taesdLine is the TAESD field's line of the form on screen.
func (h *harness) taesdLine() string {
	h.t.Helper()
	for _, l := range strings.Split(h.view(), "\n") {
		if strings.HasPrefix(l, "TAESD     ") {
			return l
		}
	}
	h.t.Fatalf("no TAESD field on screen:\n%s", h.view())
	return ""
}

// TestTAESDFollowsModelSwitch: the TAESD field applies to every model the
// studio loads: after ctrl+n to sd3-mini (16 latent channels) it is
// refused with the reason and the pipeline has none; back on sd15-mini it
// is on the new pipeline again, with no key pressed in the field.
func TestTAESDFollowsModelSwitch(t *testing.T) {
	w3 := golden.Wave(t, "golden-wave3")
	taesd := filepath.Join(w3, "taesd-mini")
	h := newMini(t)
	m := h.m
	h.setField(focusTAESD, taesd)
	tz := h.waitTAESD()
	require.Equal(t, taesd, tz.loaded, tz.err)

	switchTo := func(path string) {
		h.keys("ctrl+n")
		h.typeText(path)
		h.keys("enter")
		h.waitFor("the model "+path, func() bool { return !m.switching })
		require.NotNil(t, m.model, m.status)
	}
	switchTo(filepath.Join(w3, "sd3-mini"))
	h.waitFor("the TAESD refused on sd3-mini", func() bool { return tz.err != "" })
	assert.Equal(t, "taesd "+taesd+": 4 latent channels, the model's are 16", tz.err)
	assert.Empty(t, tz.loaded)
	assert.Nil(t, m.w.sess.Pipeline().TAESD())

	switchTo(filepath.Join(golden.Dir(t), "sd15-mini"))
	h.waitFor("the TAESD back on sd15-mini", func() bool { return tz.loaded == taesd })
	assert.Empty(t, tz.err)
	require.NotNil(t, m.w.sess.Pipeline().TAESD())
	assert.Equal(t, taesd, m.w.sess.Pipeline().TAESD().Path)
	assert.Equal(t, taesd, m.ed.img.taesd.Value(), "the field as typed")
}
