package tui

import (
	"fmt"
	"strings"
	"testing"

	"github.com/charmbracelet/x/ansi"
	"github.com/stretchr/testify/assert"
)

func fakeRun(id, frames, total int, st runStatus) *runRec {
	r := newRunRec(id, testSettings(), -1, -1)
	r.Status = st
	for i := 0; i < frames; i++ {
		r.Frames = append(r.Frames, frameRec{Index: i, Total: total})
	}
	return r
}

// A cancelled run says how far it got of the steps it was to take.
func TestCancelledRunShowsItsPlannedSteps(t *testing.T) {
	m := New(Options{})
	r := fakeRun(1, 67, 100, runCancelled)
	m.runs, m.frame = []*runRec{r}, 66
	got := m.progressText(r, false)
	assert.Contains(t, got, "step 67/100")
	assert.Contains(t, got, "cancelled")
}

// The frame on screen has its cell in the bar however many steps share a
// cell, at frame 0, at the initial noise and on a branch.
func TestTimelineMarkerAlwaysShown(t *testing.T) {
	m := New(Options{})
	r := fakeRun(1, 67, 67, runDone)
	for _, f := range []int{-1, 0, 1, 5, 33, 66} {
		m.frame = f
		bar := ansi.Strip(m.timelineBar(r, 40))
		assert.Equal(t, 1, strings.Count(bar, "█"), "frame %d: %q", f, bar)
	}
	b := fakeRun(2, 30, 67, runRunning)
	b.Inherited, b.Parent, b.At = 20, 1, 19
	m.frame = 19
	assert.Equal(t, 1, strings.Count(ansi.Strip(m.timelineBar(b, 40)), "█"))
}

// At 80x24 (a narrow pane) the history keeps the run on screen in view.
func TestHistoryKeepsTheCurrentRun(t *testing.T) {
	m := New(Options{})
	for i := 1; i <= 15; i++ {
		m.runs = append(m.runs, fakeRun(i, 3, 3, runDone))
	}
	for _, cur := range []int{0, 7, 14} {
		m.cur = cur
		line := ansi.Strip(m.historyLine(40))
		assert.Contains(t, line, fmt.Sprintf("[#%d✓]", cur+1), line)
		assert.LessOrEqual(t, ansi.StringWidth(line), 40)
	}
}

// The progress line keeps one form at one width.
func TestProgressLineDoesNotFlip(t *testing.T) {
	m := New(Options{})
	r := fakeRun(1, 3, 20, runRunning)
	m.runs, m.frame = []*runRec{r}, 2
	long := m.progressText(r, false)
	w := ansi.StringWidth(long) - 1 // the long form just does not fit
	first := m.progressLine(r, w)
	r.Frames = r.Frames[:1]
	m.frame = 0
	assert.Equal(t, m.progressText(r, true), m.progressLine(r, w), "stays short: %q then", first)
}

// A run that failed (or was cancelled) before its first step no longer
// says it is encoding the prompt.
func TestFailedRunTitle(t *testing.T) {
	m := New(Options{})
	r := fakeRun(1, 0, 3, runFailed)
	m.runs, m.frame = []*runRec{r}, -1
	_, what := m.shown(r)
	assert.Equal(t, "failed before its first step", what)
	r.Status = runCancelled
	_, what = m.shown(r)
	assert.Equal(t, "cancelled before its first step", what)
	r.Status = runStarting
	_, what = m.shown(r)
	assert.Equal(t, "encoding the prompt…", what)
}
