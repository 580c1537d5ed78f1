package tui

import (
	"fmt"
	"math"

	"github.com/charmbracelet/lipgloss"
	"image"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/sampler"
)

// runStatus is where a run of the history stands.
type runStatus int

const (
	runStarting runStatus = iota
	runRunning
	runDone
	runCancelled
	runStopped
	runFailed
)

var runStatusNames = [...]string{"starting", "running", "done", "cancelled", "stopped", "failed"}

// frameRec is one recorded step: its numbers and two cheap previews (the
// noisy latent x_t, rescaled to the VP range, and the predicted x0).
type frameRec struct {
	Index, Total          int
	Sigma, Next, Timestep float64
	NFE                   int
	Took                  time.Duration
	XT, X0                *image.RGBA
	// XTVAE and X0VAE: the picture was decoded by the VAE (see
	// worker.vaeFrame), not projected from the latent.
	XTVAE, X0VAE bool
	// Tiny: X0 is the TAESD's decode (taesd.go); XT stays the latent
	// projection (one TAESD decode a step, as generate --preview).
	Tiny bool
	// Stage is a DeepFloyd IF frame's stage (1 or 2; 0 for other models).
	Stage int
}

type decodeKey struct {
	frame int
	x0    bool
}

// runRec is one run of the history. A branch starts with its parent's
// frames up to the branch point (Inherited of them).
type runRec struct {
	ID, Parent, At int
	Settings       presets.Settings
	Status         runStatus
	Err            error
	Frames         []frameRec
	Inherited      int
	Noise          *image.RGBA
	Images         []*image.RGBA
	final          *image.RGBA // Images side by side, for the preview
	decoded        map[decodeKey]decodedImage
	// shortAt is the pane width at which the progress line went short.
	shortAt        int
	Schedule       sampler.Schedule
	Shape          [4]int
	Chunks         int
	PromptTokens   int
	NegativeTokens int
	PromptT5Tokens int // T5 tokens with </s>, before padding (SD3, Flux)
	// Boundary is a DeepFloyd IF run's number of stage I frames (0 for
	// other models): the timeline marks where stage II begins.
	Boundary int
	// IFUp are a DeepFloyd IF run's stage II settings (nil: no stage II).
	IFUp         *gen.IFUpscale
	Requested    time.Time // when the key was pressed (a live run: the last edit)
	Live         bool      // a live-mode run (live.go)
	Started      time.Time // when the worker started it
	FirstPreview time.Duration
	FirstStep    time.Duration
	Elapsed      time.Duration
	Encode       time.Duration
	Sampling     time.Duration
	Decode       time.Duration
	Timings      map[string]time.Duration
}

func newRunRec(id int, s presets.Settings, parent, at int) *runRec {
	return &runRec{ID: id, Settings: s, Parent: parent, At: at, Status: runStarting, Requested: time.Now(), decoded: map[decodeKey]decodedImage{}}
}

// total is the number of frames the run will have when done.
func (r *runRec) total() int {
	n := len(r.Frames)
	switch {
	case r.Status == runDone:
		return n
	case r.Status > runRunning && n > r.Inherited:
		// Cancelled, stopped or failed: the steps it was to take.
		f := r.Frames[n-1]
		return n + max(f.Total-f.Index-1, 0)
	case r.Status > runRunning:
		return max(n, r.Settings.Steps)
	case n > r.Inherited:
		f := r.Frames[n-1]
		return n + max(f.Total-f.Index-1, 0)
	case r.Inherited == 0:
		return max(n, r.Settings.Steps)
	}
	return n + 1 // a branch before its first new step
}

// timelineKey handles a key while the timeline has focus.
func (m *Model) timelineKey(k tea.KeyMsg) tea.Cmd {
	km := m.keys
	if len(m.runs) == 0 {
		return nil
	}
	r := m.runs[m.cur]
	last := len(r.Frames) - 1
	switch {
	case key.Matches(k, km.Pause):
		if a := m.active(); a != nil {
			m.paused = !m.paused
			m.w.setPaused(m.paused)
			if m.paused {
				m.setStatus(fmt.Sprintf("run %d paused: . steps once, , and . scrub", a.ID))
			} else {
				m.follow = true
				m.setStatus(fmt.Sprintf("run %d resumed", a.ID))
			}
		} else {
			m.setStatus("no run in progress")
		}
	case key.Matches(k, km.StepFwd):
		if m.frame < last {
			m.frame++
			m.follow = m.frame == last && r.Status == runRunning && !m.paused
			return nil
		}
		if a := m.active(); a == r && m.paused {
			m.follow = true
			m.w.submit(stepReq{ID: r.ID})
		}
	case key.Matches(k, km.StepBack):
		if m.frame > -1 {
			m.frame--
		}
		m.follow = false
	case key.Matches(k, km.First):
		m.frame, m.follow = -1, false
	case key.Matches(k, km.Last):
		m.frame, m.follow = last, true
	case key.Matches(k, km.ToggleX0):
		m.showX0 = !m.showX0
	case key.Matches(k, km.Branch):
		return m.branch()
	case key.Matches(k, km.Decode):
		if m.frame >= 0 {
			m.w.submit(decodeReq{ID: r.ID, Frame: m.frame, X0: m.showX0})
			m.setStatus("decoding with the VAE…")
		}
	case key.Matches(k, km.PrevRun):
		m.selectRun(m.cur - 1)
	case key.Matches(k, km.NextRun):
		m.selectRun(m.cur + 1)
	}
	return nil
}

// selectRun shows run i of the history. While scrubbing, the frame on
// screen keeps its step, so two runs compare step by step.
func (m *Model) selectRun(i int) {
	if i < 0 || i >= len(m.runs) {
		return
	}
	m.cur = i
	last := len(m.runs[i].Frames) - 1
	if m.follow || m.frame > last {
		m.frame = last
	}
	m.follow = m.runs[i].Status == runRunning && m.frame == last
}

// handleMouse: click a field to focus it, click or scroll the timeline to
// scrub, scroll a numeric field or a list to change it.
func (m *Model) handleMouse(msg tea.MouseMsg) tea.Cmd {
	if m.state != stateMain || m.modal != nil {
		return nil
	}
	if m.mp.on && m.paintMouse(msg) {
		return nil
	}
	header := m.headerView()
	l := m.layoutMain(m.bodyHeight(header, m.footerView()))
	y := msg.Y - lipgloss.Height(header)
	inForm := msg.X < l.formW
	switch msg.Button {
	case tea.MouseButtonWheelUp, tea.MouseButtonWheelDown:
		d := 1
		if msg.Button == tea.MouseButtonWheelUp {
			d = -1
		}
		if inForm {
			if f, ok := l.fieldAt(y); ok {
				if f.isList() {
					k := tea.KeyMsg{Type: tea.KeyRight}
					if d < 0 {
						k.Type = tea.KeyLeft
					}
					m.ed.update(f, k)
				} else {
					m.ed.nudge(f, float64(-d))
				}
			}
			return nil
		}
		if len(m.runs) > 0 {
			r := m.runs[m.cur]
			m.frame = min(max(m.frame+d, -1), len(r.Frames)-1)
			m.follow = false
		}
	case tea.MouseButtonLeft:
		if msg.Action != tea.MouseActionPress {
			return nil
		}
		if inForm {
			if y == l.form.toggleRow {
				return m.handleKey(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{'i'}, Alt: true})
			}
			if f, ok := l.fieldAt(y); ok {
				m.focus = f
				if x0, w := cfgSlider(l.formW); f.isSlider() && msg.X >= x0 && msg.X < x0+w {
					step, hi, _ := sliderRange(f)
					v := math.Round(float64(msg.X-x0)/float64(max(w-1, 1))*hi/step) * step
					m.ed.field(f).SetValue(formatStep(v))
				}
			}
			return nil
		}
		m.focus = focusTimeline
		if y == l.barRow && len(m.runs) > 0 {
			r := m.runs[m.cur]
			if x := msg.X - l.barX; x >= 0 && x < l.barW {
				m.frame = min(x*max(r.total(), 1)/l.barW, len(r.Frames)-1)
				m.follow = false
			}
		}
	}
	return nil
}

// mainLayout is the geometry of the main view, shared by View and the
// mouse handler.
type mainLayout struct {
	formW, paneW       int
	form               formLayout
	barRow, barX, barW int
}

// layoutMain lays the main view out in the terminal's width and bodyH
// lines: the form on the left, the preview pane (border, title, picture,
// progress line, timeline bar, history) on the right.
func (m *Model) layoutMain(bodyH int) mainLayout {
	var l mainLayout
	w := m.width
	l.formW = min(46, max(30, w*2/5))
	if w < 70 {
		l.formW = max(w/2, 20)
	}
	l.paneW = max(w-l.formW-1, 4)
	l.form = layoutForm(bodyH, m.ed)
	imgRows := max(bodyH-2-4, 1)
	l.barRow = 1 + 1 + imgRows + 1 // border, title, picture, progress
	l.barX = l.formW + 1 + 1
	l.barW = max(l.paneW-2, 1)
	return l
}

func (l mainLayout) fieldAt(y int) (focus, bool) {
	for f := focusPrompt; f < focusTimeline; f++ {
		if y >= l.form.rows[f] && y < l.form.rows[f]+l.form.heights[f] {
			return f, true
		}
	}
	return 0, false
}

// timelineBar draws the run's steps in w cells: taken, still to come, and
// the frame on screen (the initial noise at frame -1), which always has
// its cell however many steps share one.
func (m *Model) timelineBar(r *runRec, w int) string {
	n := max(r.total(), len(r.Frames), 1)
	mark := 0
	if m.frame >= 0 {
		mark = min(m.frame*w/n, w-1)
	}
	var b strings.Builder
	for x := 0; x < w; x++ {
		i := x * n / w
		done, todo := "▆", "▁"
		if r.Boundary > 0 && i >= r.Boundary { // DeepFloyd IF's stage II
			done, todo = "▄", "▂"
		}
		switch {
		case x == mark:
			b.WriteString(styleTickOn.Render("█"))
		case r.Boundary > 0 && r.Boundary < n && x > 0 && (x-1)*n/w < r.Boundary && i >= r.Boundary:
			b.WriteString(styleLabelOn.Render(ifBoundaryGlyph))
		case i < r.Inherited:
			b.WriteString(styleDim.Render(done))
		case i < len(r.Frames):
			b.WriteString(styleBarDone.Render(done))
		default:
			b.WriteString(styleBarTodo.Render(todo))
		}
	}
	return b.String()
}

// historyLine lists the runs, the one on screen highlighted; when they
// do not fit, the list is cut around the one on screen ("…" where runs
// are left out).
func (m *Model) historyLine(w int) string {
	var parts []string
	for i, r := range m.runs {
		s := fmt.Sprintf("#%d", r.ID)
		if r.Parent >= 0 {
			s += fmt.Sprintf("←%d@%d", r.Parent, r.At+1)
		}
		switch r.Status {
		case runDone:
			s += "✓"
		case runRunning, runStarting:
			s += "▶"
		case runCancelled, runStopped:
			s += "■"
		case runFailed:
			s += "✗"
		}
		if i == m.cur {
			s = styleSelected.Render("[" + s + "]")
		} else {
			s = styleDim.Render(s)
		}
		parts = append(parts, s)
	}
	fits := func(from, to int) bool {
		line := "history " + strings.Join(parts[from:to], " ")
		if from > 0 {
			line += " …"
		}
		if to < len(parts) {
			line += " …"
		}
		return lipgloss.Width(line) <= w
	}
	from, to := 0, len(parts)
	for (from < m.cur || to > m.cur+1) && !fits(from, to) {
		// Drop the run farthest from the one on screen.
		if m.cur-from >= to-1-m.cur && from < m.cur {
			from++
		} else if to > m.cur+1 {
			to--
		} else {
			from++
		}
	}
	line := "history "
	if from > 0 {
		line += "… "
	}
	line += strings.Join(parts[from:to], " ")
	if to < len(parts) {
		line += " …"
	}
	return truncate(line, w)
}
