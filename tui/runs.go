package tui

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/sampler"
)

// The life of a run as the UI sees it: started by ctrl+g or a branch, fed
// by the worker's messages, exported.

// active returns the run the worker is stepping (or holding paused).
func (m *Model) active() *runRec {
	for _, r := range m.runs {
		if r.Status == runRunning || r.Status == runStarting {
			return r
		}
	}
	return nil
}

func (m *Model) run(id int) *runRec {
	for _, r := range m.runs {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// validSettings reads and checks the editor's settings against the model.
// A seed >= 0 is used as given (a branch keeps its parent's); otherwise an
// unlocked seed is rolled and shown.
func (m *Model) validSettings(seed int64) (presets.Settings, error) {
	if m.switching {
		return presets.Settings{}, errors.New("a model is loading")
	}
	if m.model == nil {
		if m.loading {
			return presets.Settings{}, errors.New("the model is still loading")
		}
		return presets.Settings{}, fmt.Errorf("no model loaded: %v", m.loadErr)
	}
	s, err := m.ed.settings()
	if err != nil {
		return s, err
	}
	switch {
	case seed >= 0:
		s.Seed = seed
	case s.Seed < 0:
		s.Seed = gen.RandomSeed()
		m.ed.seed.SetValue(fmt.Sprint(s.Seed))
	}
	if err := m.model.Validate(s); err != nil {
		return s, err
	}
	return s, nil
}

// generate starts a new run with the edited settings; a run in progress is
// cancelled first (it stays in the history). With image inputs (an init
// image, a mask, a control or reference image) the files are read and
// checked first, in a command: a bad one is reported naming it, and no run
// starts.
func (m *Model) generate() tea.Cmd {
	if m.mp.on && m.mp.dirty {
		if err := m.saveMask(); err != nil {
			m.setError(fmt.Errorf("not generating: %w", err))
			return nil
		}
	}
	s, err := m.validSettings(-1)
	if err == nil {
		_, err = m.stageII()
	}
	if err != nil {
		m.setError(fmt.Errorf("not generating: %w", err))
		return nil
	}
	if !hasImageInputs(s) {
		return m.startRun(s, nil)
	}
	m.inSeq++
	seq := m.inSeq
	m.setStatus("reading the input images…")
	return func() tea.Msg {
		in, err := gen.LoadInputs(s)
		return inputsReadyMsg{seq: seq, settings: s, inputs: in, err: err}
	}
}

// inputsReadyMsg: the input images of a generate were read (or not).
type inputsReadyMsg struct {
	seq      int
	settings presets.Settings
	inputs   *gen.Inputs
	err      error
	// live: the inputs of a live run (live.go), for the edit made at keyAt.
	live  bool
	keyAt time.Time
}

func hasImageInputs(s presets.Settings) bool {
	return s.InitImage != "" || s.Mask != "" || s.ControlImage != "" || s.IPAdapter != "" || s.IPAdapterImage != ""
}

func (m *Model) onInputsReady(msg inputsReadyMsg) tea.Cmd {
	if msg.seq != m.inSeq {
		return nil // another ctrl+g came since
	}
	if msg.err != nil {
		m.setError(fmt.Errorf("not generating: %w", msg.err))
		return nil
	}
	if msg.live {
		if !m.live.on {
			return nil
		}
		return m.startLive(msg.settings, msg.inputs, msg.keyAt)
	}
	cmd := m.startRun(msg.settings, msg.inputs)
	if note := msg.inputs.ResizeNote(msg.settings.Width, msg.settings.Height); note != "" && !m.statusErr {
		m.setStatus(m.status + "; " + note)
	}
	return cmd
}

// startRun starts run settings s (its inputs read, or nil to read them in
// the worker).
func (m *Model) startRun(s presets.Settings, in *gen.Inputs) tea.Cmd {
	m.inSeq++ // a generate waiting for its inputs is superseded
	m.stopWork()
	m.nextID++
	r := newRunRec(m.nextID, s, -1, -1)
	m.runs = append(m.runs, r)
	m.cur, m.frame, m.follow, m.paused = len(m.runs)-1, -1, true, false
	m.w.setPaused(false)
	m.flushTAESD() // the run previews with what the TAESD field says
	// DeepFloyd IF's stage II fields, checked by generate.
	up, _ := m.stageII()
	m.w.submit(genReq{ID: r.ID, Settings: s, Parent: -1, At: -1, Inputs: in, LoRADir: m.loraDir(), IFUp: up})
	m.state, m.focus = stateMain, focusTimeline
	m.setStatus(fmt.Sprintf("run %d: generating, seed %d", r.ID, s.Seed))
	if note := lcmNote(m.model, s); note != "" {
		m.setError(fmt.Errorf("run %d: %s", r.ID, note))
	}
	if s.InitImage != "" {
		return nil // the first latent is the noised init image, from the worker
	}
	return noisePreview(m.model, r.ID, s)
}

// loraDir is the LoRA folder field's path.
func (m *Model) loraDir() string { return unquotePath(m.ed.img.loraDir.Value()) }

// noisePreview draws a new run's initial noise on the CPU, beside the
// worker: the noise depends only on the seed, the RNG and the shape, so the
// first picture appears at once even while the worker finishes a step or
// encodes the prompt. It reads only the model's facts.
func noisePreview(f *gen.Facts, id int, s presets.Settings) tea.Cmd {
	ss := f.SamplerSettings(s)
	return func() tea.Msg {
		plan, err := sampler.PlanRun(ss)
		if err != nil {
			return nil
		}
		x, err := sampler.InitialLatent(ss)
		if err != nil {
			return nil
		}
		return noiseMsg{ID: id, Noise: previewAll(f, plan.Space.VP(x, plan.Schedule.Sigmas[0]))}
	}
}

// branch continues the run on screen from the frame on screen with the
// edited prompt, guidance, sampler, schedule and steps.
func (m *Model) branch() tea.Cmd {
	if len(m.runs) == 0 || m.frame < 0 {
		m.setError(errors.New("branch: scrub to a frame of a run first"))
		return nil
	}
	parent := m.runs[m.cur]
	s, err := m.validSettings(parent.Settings.Seed)
	var up *gen.IFUpscale
	if err == nil && parent.Boundary > 0 {
		up, err = m.stageII() // a DeepFloyd IF run: stage II's fields too
	}
	if err != nil {
		m.setError(fmt.Errorf("branch: %w", err))
		return nil
	}
	m.stopWork()
	m.nextID++
	r := newRunRec(m.nextID, s, parent.ID, m.frame)
	r.Frames = append([]frameRec(nil), parent.Frames[:m.frame+1]...)
	r.Inherited = m.frame + 1
	r.Noise = parent.Noise
	m.runs = append(m.runs, r)
	m.cur, m.follow, m.paused = len(m.runs)-1, true, false
	m.w.setPaused(false)
	m.flushTAESD() // the run previews with what the TAESD field says
	m.w.submit(genReq{ID: r.ID, Settings: s, Parent: parent.ID, At: m.frame, LoRADir: m.loraDir(), IFUp: up})
	m.setStatus(fmt.Sprintf("run %d: branch of run %d at step %d", r.ID, parent.ID, m.frame+1))
	return nil
}

// stopWork cancels the active run and a sweep in progress before new work.
func (m *Model) stopWork() {
	if m.gv.busy {
		m.w.cancelSweep()
		m.gv.busy, m.gv.sig = false, ""
	}
	if m.active() != nil {
		m.w.cancelRun()
	}
}

func (m *Model) onRunStarted(msg runStartedMsg) {
	r := m.run(msg.ID)
	if r == nil {
		return
	}
	r.Status = runRunning
	r.Settings, r.Schedule, r.Chunks = msg.Settings, msg.Schedule, msg.Chunks
	r.PromptTokens, r.NegativeTokens, r.Encode, r.Shape = msg.PromptTokens, msg.NegativeTokens, msg.Encode, msg.Shape
	r.PromptT5Tokens, r.Boundary, r.IFUp = msg.PromptT5Tokens, msg.Boundary, msg.IFUp
	if msg.Parent < 0 && r.Noise == nil {
		r.Noise = msg.Noise
		r.FirstPreview = time.Since(r.Requested)
	}
	r.Started = time.Now()
}

func (m *Model) onFrame(msg frameMsg) {
	r := m.run(msg.ID)
	if r == nil {
		return
	}
	if len(r.Frames) == r.Inherited {
		r.FirstStep = time.Since(r.Requested)
	}
	r.Frames = append(r.Frames, msg.Frame)
	if m.runs[m.cur] == r && m.follow {
		m.frame = len(r.Frames) - 1
	}
}

func (m *Model) onRunDone(msg runDoneMsg) {
	r := m.run(msg.ID)
	if r == nil {
		return
	}
	r.Images, r.Timings = msg.Images, msg.Timings
	r.Sampling, r.Decode = msg.Sampling, msg.Decode
	if msg.Encode > 0 {
		r.Encode = msg.Encode
	}
	if !r.Started.IsZero() {
		r.Elapsed = time.Since(r.Started)
	}
	onScreen := m.runs[m.cur] == r
	switch {
	case msg.Stopped:
		r.Status = runStopped
	case msg.Cancelled:
		r.Status = runCancelled
		if onScreen {
			m.setStatus(fmt.Sprintf("run %d cancelled after %d steps", r.ID, len(r.Frames)))
		}
	case msg.Err != nil:
		r.Status, r.Err = runFailed, msg.Err
		m.setError(fmt.Errorf("run %d: %w", r.ID, msg.Err))
	default:
		r.Status = runDone
		m.setStatus(fmt.Sprintf("run %d done: %d steps in %s (VAE %s) — ctrl+x exports", r.ID, len(r.Frames)-r.Inherited, r.Sampling.Round(time.Millisecond), r.Decode.Round(time.Millisecond)))
	}
	if m.active() == nil {
		m.paused = false // the pause belonged to the run that ended
	}
	if r.Live {
		m.onLiveDone(r, msg)
	}
}

// export writes the image on screen: the decoded final image at the last
// frame of a finished run, otherwise the frame's latent decoded by the VAE.
func (m *Model) export() tea.Cmd {
	if len(m.runs) == 0 {
		m.setError(errors.New("export: nothing generated yet"))
		return nil
	}
	r := m.runs[m.cur]
	dir := strings.TrimSpace(m.ed.outDir.Value())
	if dir == "" {
		dir = "."
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		m.setError(fmt.Errorf("export: folder %q does not exist", dir))
		return nil
	}
	if r.Status == runDone && (m.frame == len(r.Frames)-1 || m.frame < 0) && len(r.Images) > 0 {
		m.w.submit(exportReq{ID: r.ID, Final: true, Images: r.Images, Dir: dir})
	} else if m.frame >= 0 {
		m.w.submit(exportReq{ID: r.ID, Frame: m.frame, X0: m.showX0, Dir: dir})
	} else {
		m.setError(errors.New("export: no frame on screen yet"))
		return nil
	}
	m.setStatus("exporting…")
	return nil
}

// lcmNote says when the lcm sampler runs on a model that is neither
// LCM-distilled nor scheduled for LCM (it then needs an LCM-LoRA in the
// prompt to give an image).
func lcmNote(f *gen.Facts, s presets.Settings) string {
	name, _, err := sampler.LookupSampler(s.Sampler)
	if err != nil || name != "lcm" || f.GuidanceDistilled || f.Scheduler.ClassName == "LCMScheduler" || strings.Contains(s.Prompt, "<lora:") {
		return ""
	}
	return fmt.Sprintf("the lcm sampler expects an LCM model or an LCM-LoRA; %s is neither, so expect a poor image", f.Name)
}
