package tui

import (
	"image"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/x/ansi"
	"github.com/stretchr/testify/assert"
)

// The guidance sweep fills the screen (a 2x2 grid at 120x40 instead of a
// 16-row strip) and says which picture is being computed, for how long,
// and which are queued.
func TestSweepUsesTheScreen(t *testing.T) {
	cols, bw, bh := sweepGrid(4, 120, 36)
	assert.Equal(t, 2, cols)
	assert.Equal(t, 60, bw)
	assert.Equal(t, 18, bh)
	cols, _, _ = sweepGrid(4, 200, 20)
	assert.Equal(t, 4, cols, "a wide, short screen keeps one row")

	s := testSettings()
	m := New(Options{Settings: &s})
	v := &m.gv
	v.busy, v.filled, v.since = true, 1, time.Now().Add(-2500*time.Millisecond)
	v.imgs = make([]*image.RGBA, len(sweepScales))
	v.took = make([]time.Duration, len(sweepScales))
	v.imgs[0] = image.NewRGBA(image.Rect(0, 0, 32, 32))
	out := ansi.Strip(v.view(m, 120, 38))
	assert.Contains(t, out, "computing… 2.5s")
	assert.Equal(t, 2, strings.Count(out, "queued"))
	assert.GreaterOrEqual(t, len(strings.Split(out, "\n")), 36, "the sweep uses the screen's height")
}

// The run's step markers do not hide the model's own schedule curve: each
// sits just above its point, with a tick on the axis.
func TestScheduleMarkersKeepTheCurve(t *testing.T) {
	s := testSettings()
	m := New(Options{Settings: &s})
	v := &m.sv
	ab := make([]float32, 1000)
	for i := range ab {
		ab[i] = 1 - float32(i)/1000
	}
	v.curves[1], v.model, v.on = ab, 1, [3]bool{false, true, false}
	for i := 0; i < 50; i++ {
		v.marks.Timesteps = append(v.marks.Timesteps, float64(980-i*20))
	}
	out := ansi.Strip(v.view(m, 80, 30))
	w := 80 - 9
	assert.GreaterOrEqual(t, strings.Count(out, "•"), w-1, "the curve keeps its points")
	assert.GreaterOrEqual(t, strings.Count(out, "◆"), 40, "the steps are marked")
	assert.GreaterOrEqual(t, strings.Count(out, "┴"), 40, "and ticked on the axis")
}
