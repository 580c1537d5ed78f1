package tui

// Live mode (ctrl+t / f8): while it is on, every edit of the prompt or the
// negative prompt cancels the live run in flight and, once no other edit
// has come for the debounce, starts a run with the live profile (few
// steps of ddim; the form's seed, guidance and size). Each
// image is shown as it arrives, and the status line says how long it took
// from the last key. Live runs replace one another: the timeline keeps
// only the live run on screen (and, for a moment, the one in flight).

import (
	"errors"
	"fmt"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/presets"
)

const (
	// liveSteps is the live profile's number of steps of ddim, with the
	// model's own timestep spacing: on the bundled model ("leading") 4
	// steps score 10.5% on tools/train/quality.py's bar, the trailing
	// spacing 7.5%, 20 steps 16.5% (quality.py --steps 4 --schedule
	// leading|trailing).
	liveSteps = 4
	// liveDebounce is how long live mode waits after an edit before it
	// starts a run: shorter than the gap between two keys of most typing
	// (150-300 ms at 40-80 words a minute), so a run starts at most pauses,
	// while a burst of keys (key repeat, 30-40 ms apart) starts one run,
	// not one a key. It counts toward key -> image; since an edit cancels
	// the run in flight at once, a run that the next key makes stale costs
	// little, and a longer debounce would only add latency.
	liveDebounce = 60 * time.Millisecond
)

// liveState is live mode's state in the Model.
type liveState struct {
	on       bool
	debounce time.Duration
	seq      int       // numbers edits: the tick of an older one is dropped
	keyAt    time.Time // when the last edit was made
	shown    int       // the live run on screen (0: none yet)
	// last is key -> image of the last live image; the run's stages are
	// on its runRec.
	last time.Duration
	// done and cancelled count the live runs that gave an image and those
	// an edit cancelled.
	done, cancelled int
}

// liveTickMsg ends the debounce of edit seq.
type liveTickMsg struct{ seq int }

// liveProfile is the settings of a live run from the form's: liveSteps
// steps of ddim with the model's timestep spacing (an LCM model keeps its
// lcm sampler, a flow model its flow sampler and schedule), one image.
func liveProfile(f *gen.Facts, s presets.Settings) presets.Settings {
	s.Steps, s.Batch, s.Eta = liveSteps, 1, nil
	switch {
	case f != nil && strings.Contains(f.Scheduler.ClassName, "FlowMatch"):
	case f != nil && (f.GuidanceDistilled || f.Scheduler.ClassName == "LCMScheduler"):
		s.Sampler, s.Schedule = "lcm", ""
	default:
		s.Sampler, s.Schedule = "ddim", ""
	}
	return s
}

// toggleLive turns live mode on (a run for the prompt as it is starts at
// once) or off (a live run in flight is cancelled; the last live image
// stays in the history as a run of its own).
func (m *Model) toggleLive() tea.Cmd {
	if m.live.on {
		m.live.on = false
		m.live.seq++ // a pending tick is dropped
		if r := m.active(); r != nil && r.Live {
			m.w.cancelRun()
		}
		m.live.shown = 0
		m.setStatus("live off: ctrl+g runs the form's own steps and schedule")
		return nil
	}
	if m.model != nil && m.model.IF != nil {
		m.setError(errors.New("live mode needs a latent diffusion model; a DeepFloyd IF cascade is not one"))
		return nil
	}
	if m.live.debounce == 0 {
		m.live.debounce = liveDebounce
	}
	m.live.on = true
	m.setStatus(fmt.Sprintf("live: each edit of the prompt runs %d steps (%s) after %d ms; ctrl+t turns it off",
		liveSteps, liveProfileName(m.model), m.live.debounce.Milliseconds()))
	return m.liveEdit(0)
}

// liveProfileName says what the live profile samples with on model f.
func liveProfileName(f *gen.Facts) string {
	s := liveProfile(f, presets.Default())
	if s.Schedule == "" {
		return s.Sampler
	}
	return s.Sampler + " " + s.Schedule
}

// liveEdit notes an edit: the live run in flight is cancelled now (its
// prompt is stale; the device is free again by the time the debounce
// ends) and a tick ends the debounce after delay.
func (m *Model) liveEdit(delay time.Duration) tea.Cmd {
	m.live.seq++
	m.live.keyAt = time.Now()
	if r := m.active(); r != nil && r.Live {
		m.w.cancelRun()
	}
	seq := m.live.seq
	return tea.Tick(delay, func(time.Time) tea.Msg { return liveTickMsg{seq: seq} })
}

// livePromptEdited starts a debounce when live mode is on and a prompt
// differs from before (typed, pasted, undone, set by a preset or a PNG).
func (m *Model) livePromptEdited(prompt, negative string) tea.Cmd {
	if !m.live.on || (m.ed.prompt.Value() == prompt && m.ed.negative.Value() == negative) {
		return nil
	}
	return m.liveEdit(m.live.debounce)
}

// onLiveTick starts the live run of the last edit once its debounce ended.
func (m *Model) onLiveTick(msg liveTickMsg) tea.Cmd {
	if !m.live.on || msg.seq != m.live.seq {
		return nil // another edit came since, or live mode is off
	}
	if strings.TrimSpace(m.ed.prompt.Value()) == "" {
		m.setStatus("live: type a prompt")
		return nil
	}
	s, err := m.validSettings(-1)
	if err != nil {
		m.setError(fmt.Errorf("live: %w", err))
		return nil
	}
	s = liveProfile(m.model, s)
	if err := m.model.Validate(s); err != nil {
		m.setError(fmt.Errorf("live: %w", err))
		return nil
	}
	keyAt := m.live.keyAt
	if !hasImageInputs(s) {
		return m.startLive(s, nil, keyAt)
	}
	m.inSeq++
	seq := m.inSeq
	return func() tea.Msg {
		in, err := gen.LoadInputs(s)
		return inputsReadyMsg{seq: seq, settings: s, inputs: in, err: err, live: true, keyAt: keyAt}
	}
}

// startLive starts a live run. The screen stays on the live image shown
// (no flicker of noise between images) until the new one arrives; the
// first live run is shown as it steps. The focus stays in the form.
func (m *Model) startLive(s presets.Settings, in *gen.Inputs, keyAt time.Time) tea.Cmd {
	m.inSeq++ // a generate waiting for its inputs is superseded
	m.stopWork()
	m.nextID++
	r := newRunRec(m.nextID, s, -1, -1)
	r.Live, r.Requested = true, keyAt
	m.runs = append(m.runs, r)
	if m.live.shown == 0 || m.run(m.live.shown) == nil {
		m.cur, m.frame, m.follow = len(m.runs)-1, -1, true
	}
	m.paused = false
	m.w.setPaused(false)
	m.flushTAESD()
	m.w.submit(genReq{ID: r.ID, Settings: s, Parent: -1, At: -1, Inputs: in, LoRADir: m.loraDir(), Live: true})
	return nil
}

// onLiveDone handles the end of live run r: its image replaces the live
// image on screen, whose run is dropped (from the timeline and the
// session); a cancelled or failed live run is dropped at once.
func (m *Model) onLiveDone(r *runRec, msg runDoneMsg) {
	if msg.Err != nil || len(msg.Images) == 0 {
		if msg.Cancelled || msg.Stopped {
			m.live.cancelled++
		}
		m.dropRun(r.ID)
		return
	}
	if old := m.live.shown; old != 0 && old != r.ID && m.run(old) != nil {
		m.dropRun(old)
	}
	if !m.live.on {
		m.live.shown = 0 // finished after live mode was turned off: a run of its own
	} else {
		m.live.shown = r.ID
	}
	m.live.done++
	m.live.last = time.Since(r.Requested)
	for i, x := range m.runs {
		if x == r {
			m.cur, m.frame, m.follow = i, len(r.Frames)-1, true
		}
	}
	m.setStatus(fmt.Sprintf("live · %d ms key → image (debounce %d, prompt %d, %d steps %d, VAE %d) · ctrl+t off",
		m.live.last.Milliseconds(), m.live.debounce.Milliseconds(), msg.Encode.Milliseconds(), len(r.Frames),
		msg.Sampling.Milliseconds(), msg.Decode.Milliseconds()))
}

// dropRun removes run id from the timeline and the session.
func (m *Model) dropRun(id int) {
	for i, r := range m.runs {
		if r.ID != id {
			continue
		}
		m.runs = append(m.runs[:i], m.runs[i+1:]...)
		switch {
		case len(m.runs) == 0:
			m.cur, m.frame = 0, -1
		case i < m.cur:
			m.cur--
		case i == m.cur:
			m.cur = len(m.runs) - 1
			m.frame, m.follow = len(m.runs[m.cur].Frames)-1, true
		}
		m.w.submit(forgetReq{ID: id})
		return
	}
}
