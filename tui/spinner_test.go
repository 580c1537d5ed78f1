package tui

import (
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/bubbles/spinner"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// While a long stage runs the status line shows a spinner, the stage's
// name and its elapsed time, and the spinner keeps ticking; idle, it
// stops.
func TestBusyLineNamesTheStageAndTime(t *testing.T) {
	s := testSettings()
	m := New(Options{ModelLabel: "sd15-mini on gl", Settings: &s})
	_, cmd := m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	require.NotNil(t, cmd, "loading starts the spinner")
	m.busy.since = time.Now().Add(-3200 * time.Millisecond)
	lines := strings.Split(ansi.Strip(m.View()), "\n")
	status := lines[len(lines)-2]
	assert.Contains(t, status, "loading sd15-mini on gl 3.2s")
	_, cmd = m.Update(spinner.TickMsg{ID: m.busy.spin.ID()})
	assert.NotNil(t, cmd, "the spinner ticks on while loading")

	// A run waiting for its first step.
	m.loading = false
	m.runs = []*runRec{newRunRec(1, s, -1, -1)}
	m.runs[0].Status = runRunning
	m.Update(spinner.TickMsg{ID: m.busy.spin.ID()})
	assert.Contains(t, ansi.Strip(m.View()), "run 1: step 1/")
	assert.Contains(t, ansi.Strip(m.View()), "compiles the shaders")

	// Idle: no busy line, and the tick stops.
	m.runs[0].Status = runDone
	_, cmd = m.Update(spinner.TickMsg{ID: m.busy.spin.ID()})
	assert.Nil(t, cmd)
	assert.Equal(t, "", m.busyLine())
}
