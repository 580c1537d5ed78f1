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
