package tui

import (
	"fmt"
	"strings"
	"testing"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gen"
)

// newBare is a studio whose model fails to load: enough for keys.
func newBare(t *testing.T) *harness {
	t.Helper()
	return newHarness(t, testSettings(), nil)
}

// In a text field ctrl+e goes to the end of the line (readline); export
// is on ctrl+x (and f9), which no text field uses.
func TestCtrlEInATextFieldIsEndOfLine(t *testing.T) {
	h := newBare(t)
	h.setField(focusPrompt, "red heart")
	h.keys("ctrl+a", "ctrl+e")
	h.typeText("!")
	assert.Equal(t, "red heart!", h.m.ed.prompt.Value())
	assert.NotContains(t, h.m.status, "export")
	assert.True(t, key.Matches(tea.KeyMsg{Type: tea.KeyCtrlX}, h.m.keys.Export))
	assert.False(t, key.Matches(tea.KeyMsg{Type: tea.KeyCtrlE}, h.m.keys.Export))
	h.keys("ctrl+x")
	assert.Contains(t, h.m.status, "export: nothing generated yet")
	// Readline's word keys reach the field.
	h.keys("alt+b")
	h.update(tea.KeyMsg{Type: tea.KeyBackspace, Alt: true})
	assert.Equal(t, "heart!", h.m.ed.prompt.Value())
}

// ctrl+l redraws the screen (as in every terminal program) and leaves the
// seed alone; alt+l locks the seed.
func TestCtrlLRedraws(t *testing.T) {
	h := newBare(t)
	h.setField(focusSeed, "")
	locked := h.m.ed.seedLocked
	_, cmd := h.m.Update(tea.KeyMsg{Type: tea.KeyCtrlL})
	require.NotNil(t, cmd)
	assert.Equal(t, "tea.clearScreenMsg", fmt.Sprintf("%T", cmd()))
	assert.Equal(t, locked, h.m.ed.seedLocked)
	h.keys("alt+l")
	assert.Equal(t, !locked, h.m.ed.seedLocked)
}

// The CFG slider moves with ←/→ as with ↑/↓, by 0.5.
func TestCFGSliderArrows(t *testing.T) {
	h := newBare(t)
	h.setField(focusCFG, "7")
	h.keys("right")
	assert.Equal(t, "7.5", h.m.ed.cfg.Value())
	h.keys("left", "left")
	assert.Equal(t, "6.5", h.m.ed.cfg.Value())
}

// The help is modal and scrolls: keys typed under it edit nothing, and at
// 80x24 every line can be reached.
func TestHelpIsModalAndScrolls(t *testing.T) {
	h := newBare(t)
	h.update(teaSize(80, 24))
	h.setField(focusCFG, "6.5")
	h.keys("f1")
	require.True(t, h.m.help.ShowAll)
	h.keys("j", "j", "x", "1")
	assert.Equal(t, "6.5", h.m.ed.cfg.Value(), "keys under the help edit no field")
	full := strings.Split(ansi.Strip(fullHelpView(h.m.keys, 80)), "\n")
	last := strings.TrimSpace(full[len(full)-1])
	h.keys("home")
	assert.NotContains(t, h.view(), last, "the help does not fit 80x24 at once")
	for i := 0; i < len(full); i++ {
		h.keys("down")
	}
	assert.Contains(t, h.view(), last, "scrolling reaches the help's last line")
	h.keys("esc")
	assert.False(t, h.m.help.ShowAll)
}

// At 80 columns the help bar keeps "?" and "ctrl+c quit".
func TestHelpBarKeepsHelpAndQuit(t *testing.T) {
	h := newBare(t)
	for _, w := range []int{60, 80, 120} {
		h.update(teaSize(w, 24))
		lines := strings.Split(h.view(), "\n")
		bar := lines[len(lines)-1]
		assert.Contains(t, bar, "?/f1", "width %d: %q", w, bar)
		assert.Contains(t, bar, "ctrl+c quit", "width %d: %q", w, bar)
		assert.LessOrEqual(t, ansi.StringWidth(bar), w)
	}
}

// "?" in the empty prompt at start opens the help instead of typing; in
// a field with text it types.
func TestQuestionMarkAtStart(t *testing.T) {
	h := newBare(t)
	h.setField(focusPrompt, "")
	h.keys("?")
	assert.True(t, h.m.help.ShowAll)
	assert.Equal(t, "", h.m.ed.prompt.Value())
	h.keys("esc")
	h.typeText("why")
	h.keys("?")
	assert.Equal(t, "why?", h.m.ed.prompt.Value())
	assert.False(t, h.m.help.ShowAll)
}

// Digits pick views outside text fields (the header shows "1 studio 2
// schedule ..."); in a text field they type; the schedule view keeps its
// 1/2/3 curve toggles.
func TestDigitsPickViews(t *testing.T) {
	h := newBare(t)
	h.m.state, h.m.focus = stateMain, focusTimeline
	h.keys("4")
	assert.Equal(t, stateSweep, h.m.state)
	h.keys("5")
	assert.Equal(t, stateTrace, h.m.state)
	h.keys("1")
	assert.Equal(t, stateMain, h.m.state)
	h.setField(focusSteps, "")
	h.keys("2")
	assert.Equal(t, "2", h.m.ed.steps.Value(), "a digit types in a text field")
	assert.Equal(t, stateMain, h.m.state)
	h.keys("alt+2")
	require.Equal(t, stateSchedule, h.m.state)
	on := h.m.sv.on[0]
	h.keys("1")
	assert.Equal(t, stateSchedule, h.m.state)
	assert.Equal(t, !on, h.m.sv.on[0], "1 toggles the first curve in the schedule view")
}

// Deleting a built-in preset says why it is not deleted.
func TestDeleteBuiltinSaysWhy(t *testing.T) {
	h := newBare(t)
	h.keys("ctrl+p")
	h.waitFor("preset list", func() bool { return len(h.m.pv.list) > 0 })
	require.True(t, h.m.pv.list[0].Builtin)
	h.m.pv.sel = 0
	h.keys("d")
	assert.True(t, h.m.statusErr)
	assert.Contains(t, h.m.status, "is a built-in preset: it cannot be deleted")
}

// The lcm sampler on an ordinary model says so.
func TestLCMNote(t *testing.T) {
	f := &gen.Facts{Name: "sd15"}
	s := testSettings()
	s.Sampler = "LCM"
	assert.Contains(t, lcmNote(f, s), "expects an LCM model or an LCM-LoRA; sd15 is neither")
	s.Prompt += " <lora:lcm:1>"
	assert.Equal(t, "", lcmNote(f, s))
	f.GuidanceDistilled = true
	s.Prompt = "x"
	assert.Equal(t, "", lcmNote(f, s))
	s.Sampler, f.GuidanceDistilled = "Euler", false
	assert.Equal(t, "", lcmNote(f, s))
}

// A CFG scale no model takes is flagged as it is typed, not first at
// ctrl+g.
func TestCFGOutOfRangeFlaggedAsTyped(t *testing.T) {
	h := newBare(t)
	h.setField(focusCFG, "150")
	h.mustView("✗ cfg scale: 150 is outside [0, 100]")
}
