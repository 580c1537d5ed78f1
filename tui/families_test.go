package tui

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
)

// TestSwitchFamilies: ctrl+n moves the studio from an SD 1.x model to an
// SDXL one and to SD 2.x on the same device; each switch sets the size to
// the new model's native size and the size fields step by what it accepts,
// and each model generates.
func TestSwitchFamilies(t *testing.T) {
	w2 := golden.Wave(t, "golden-wave2")
	h := newMini(t)
	m := h.m
	for _, c := range []struct {
		path, name, family string
		multiple           int
	}{
		{filepath.Join(w2, "sdxl-mini"), "sdxl-mini", "SDXL", 32},
		{filepath.Join(w2, "sd2-mini"), "sd2-mini", "SD 2.x", 64},
	} {
		h.keys("ctrl+n")
		h.typeText(c.path)
		h.keys("enter")
		h.waitFor("the model", func() bool { return !m.switching })
		require.NotNil(t, m.model, m.status)
		require.Equal(t, c.name, m.model.Name, m.status)
		assert.Equal(t, c.family, m.model.Family)
		assert.Equal(t, c.multiple, m.ed.downscale, "size step")
		assert.Equal(t, "64", m.ed.width.Value(), "native size")
		m.ed.steps.SetValue("2")
		r := h.finishRun()
		assert.Equalf(t, runDone, r.Status, "%s: run %s (%s)", c.name, runStatusNames[r.Status], m.status)
	}
}

// TestSizeConditioningCarried: SDXL's size conditioning from a preset or
// an opened PNG survives the editor into the run's settings.
func TestSizeConditioningCarried(t *testing.T) {
	s := testSettings()
	s.OriginalWidth, s.OriginalHeight, s.CropLeft, s.CropTop = 128, 96, 8, 16
	e := newEditor(s, "")
	got, err := e.settings()
	require.NoError(t, err)
	assert.Equal(t, [4]int{128, 96, 8, 16}, [4]int{got.OriginalWidth, got.OriginalHeight, got.CropLeft, got.CropTop})
}
