package tui

// The busy line: while a long stage runs (loading a model, encoding the
// prompt, a U-Net step, the VAE decode, a guidance sweep) the status line
// starts with a spinner, the stage's name and the time it has taken, so a
// first run that compiles its shaders never looks hung.

import (
	"fmt"
	"time"

	"github.com/charmbracelet/bubbles/spinner"
	tea "github.com/charmbracelet/bubbletea"
)

// busy is the spinner and the stage it times.
type busy struct {
	spin     spinner.Model
	spinning bool // a tick is on its way
	stage    string
	since    time.Time
}

func newBusy() busy {
	return busy{spin: spinner.New(spinner.WithSpinner(spinner.MiniDot), spinner.WithStyle(styleWarn))}
}

// stage names what the studio is waiting for ("" when nothing).
func (m *Model) stage() string {
	if note := m.compileStage(); note != "" && !m.loading {
		return note
	}
	switch {
	case m.loading:
		return "loading " + m.opts.ModelLabel
	case m.switching:
		return "loading the model"
	}
	if r := m.active(); r != nil && !m.paused {
		switch {
		case r.Status == runStarting:
			return fmt.Sprintf("run %d: encoding the prompt", r.ID)
		case len(r.Frames) > 0 && r.Frames[len(r.Frames)-1].Index+1 >= r.Frames[len(r.Frames)-1].Total:
			return fmt.Sprintf("run %d: VAE decoding", r.ID)
		default:
			next, total := 1, r.Settings.Steps
			if n := len(r.Frames); n > 0 {
				next, total = r.Frames[n-1].Index+2, r.Frames[n-1].Total
			}
			what := "U-Net"
			if len(r.Frames) == r.Inherited {
				what = "U-Net; the first step compiles the shaders"
			}
			return fmt.Sprintf("run %d: step %d/%d (%s)", r.ID, next, total, what)
		}
	}
	if m.gv.busy {
		return fmt.Sprintf("guidance sweep: image %d/%d", m.gv.filled+1, len(sweepScales))
	}
	return ""
}

// trackBusy follows the stage after a message and keeps the spinner
// ticking while there is one.
func (m *Model) trackBusy(msg tea.Msg) tea.Cmd {
	st := m.stage()
	if st != m.busy.stage {
		m.busy.stage, m.busy.since = st, time.Now()
	}
	if t, ok := msg.(spinner.TickMsg); ok {
		if st == "" {
			m.busy.spinning = false
			return nil
		}
		var cmd tea.Cmd
		m.busy.spin, cmd = m.busy.spin.Update(t)
		return cmd
	}
	if st != "" && !m.busy.spinning {
		m.busy.spinning = true
		return m.busy.spin.Tick
	}
	return nil
}

// busyLine is the spinner, the stage and its time ("" when idle).
func (m *Model) busyLine() string {
	if m.busy.stage == "" {
		return ""
	}
	return m.busy.spin.View() + " " + m.busy.stage + fmt.Sprintf(" %.1fs", time.Since(m.busy.since).Seconds())
}
