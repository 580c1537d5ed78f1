// Package tui is the Stepwise studio: a bubbletea program to edit a
// generation's settings, watch every sampler step as a half-block preview,
// pause, step, scrub and branch a run, keep presets, export PNGs that carry
// their parameters, start from images (init image, a mask painted with the
// mouse, ControlNet and IP-Adapter images, LoRAs), and look at four live
// explanations of diffusion (noise schedule, forward/reverse process,
// guidance sweep, pipeline trace).
//
// All model work runs on one worker goroutine (worker.go) that owns the
// device; the UI only sends it requests and draws the messages it returns,
// so keys are handled while kernels run.
package tui

import (
	"errors"
	"fmt"
	"image"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/termsafe"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
	"github.com/stepwise/stepwise/sampler"
)

// Options configure the studio.
type Options struct {
	// Load opens the device and loads the model; it runs on the worker.
	Load LoadFunc
	// Open opens a fresh device without a model (optional): after a
	// device error the worker reopens the device with it and loads the
	// model the user switched to, instead of Load's model first.
	Open OpenFunc
	// ModelLabel names the model and device in the header while loading.
	ModelLabel string
	// OutDir is the export folder ("" = the current folder).
	OutDir string
	// PresetDir is the preset folder ("" = presets.DefaultDir()).
	PresetDir string
	// Settings are the initial settings (zero = presets.Default() at the
	// model's native size).
	Settings *presets.Settings
	// Color is the half-block colour mode. Run sets it from the terminal
	// (render.DetectColorMode: NO_COLOR, COLORTERM, TERM).
	Color render.ColorMode
	// CrashTest is for tests of the crash handler only: "update" panics in
	// Update at ctrl+g, "view" in View once a run exists, "worker" on the
	// worker's next step.
	CrashTest string
	// TAESD is the TAESD field's first path (the studio's --taesd).
	TAESD string
	// Model, when its Path is set, is loaded instead of Load's model (a
	// DeepFloyd IF folder and its upscaler; Load and Open still open the
	// device), and IFUpscale are the stage II settings of IF runs (zero:
	// gen.DefaultIFUpscale).
	Model     gen.ModelSpec
	IFUpscale gen.IFUpscale
}

// CrashError is a panic caught in the studio (in Update, View or the
// worker): where it happened, the panic value and the stack. Run returns it
// once the terminal is restored, for the caller to print.
type CrashError struct {
	Where, Value, Stack string
}

func (e *CrashError) Error() string { return fmt.Sprintf("a panic in %s: %s", e.Where, e.Value) }

// SignalError is returned by Run when a signal (SIGHUP, SIGTERM, SIGINT)
// ended the studio, after the terminal was restored: the process should
// exit with status 128+signal, as shells expect.
type SignalError struct{ Signal os.Signal }

func (e *SignalError) Error() string { return "stopped by " + signalName(e.Signal) }

// ExitCode is 128 + the signal's number.
func (e *SignalError) ExitCode() int {
	if s, ok := e.Signal.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}

func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	}
	return s.String()
}

// state is the screen shown.
type state int

const (
	stateMain state = iota
	statePresets
	stateSchedule
	stateForward
	stateSweep
	stateTrace
)

// Messages from the worker and from commands.
type (
	loadedMsg struct {
		model    *gen.Facts
		err      error
		took     time.Duration
		warnings []string
	}
	runStartedMsg struct {
		ID, Parent, At               int
		Settings                     presets.Settings
		Schedule                     sampler.Schedule
		Chunks                       int
		PromptTokens, NegativeTokens int
		PromptT5Tokens               int // T5 tokens with </s> (SD3, Flux)
		Encode                       time.Duration
		VE                           bool
		Shape                        [4]int
		Noise                        *image.RGBA
		// Boundary is a DeepFloyd IF run's number of stage I frames.
		Boundary int
		// IFUp are an IF run's stage II settings (nil: none).
		IFUp *gen.IFUpscale
	}
	noiseMsg struct {
		ID    int
		Noise *image.RGBA
	}
	frameMsg struct {
		ID    int
		Frame frameRec
	}
	runDoneMsg struct {
		ID                       int
		Err                      error
		Cancelled, Stopped       bool
		Images                   []*image.RGBA
		Encode, Sampling, Decode time.Duration
		Timings                  map[string]time.Duration
	}
	decodedMsg struct {
		ID, Frame int
		X0        bool
		Images    []*image.RGBA
		Tiny      bool // decoded by the pipeline's TAESD, not its VAE
		Err       error
	}
	exportedMsg struct {
		Paths []string
		Err   error
	}
	sweepMsg struct {
		Key   string
		Index int
		Scale float64
		Image *image.RGBA
		Took  time.Duration
		Err   error
	}
	forwardMsg struct {
		ID       int
		T        []int
		AlphaBar []float64
		Sigma    []float64 // flow models: x_t = (1-σ) x0 + σ ε
		Images   []*image.RGBA
		Err      error
	}
	openedMsg struct {
		Path     string
		Settings presets.Settings
		// IFParams are the PNG's DeepFloyd IF stage II keys (ifParams).
		IFParams map[string]string
		Err      error
	}
	errMsg struct{ err error }
	// modelMsg answers a model switch: the new pipeline, or why it failed
	// (the previous model is then still loaded).
	modelMsg struct {
		path      string
		seq       int64
		cancelled bool // the user cancelled it; the previous model stays
		model     *gen.Facts
		err       error
		took      time.Duration
		warnings  []string
	}
	// reopenedMsg: after a device error the worker reopened the device
	// and loaded the model again (pipe), or could not (err).
	reopenedMsg struct {
		model *gen.Facts
		err   error
	}
	crashMsg struct{ err *CrashError }
)

// Model is the studio's top model.
type Model struct {
	opts  Options
	w     *worker
	keys  keyMap
	help  help.Model
	store *presets.Store

	width, height int
	state         state
	focus         focus
	ed            *editor

	// model describes the loaded model (nil: none). It is a copy made at
	// load time: the UI never touches the pipeline, which the worker owns
	// and may close at any moment (a device recovery, a model switch).
	model     *gen.Facts
	loading   bool
	loadErr   error
	switching bool          // a model switch is in progress
	switchSeq int64         // the last switch asked for
	send      func(tea.Msg) // the program's Send (the worker's too)
	crash     *CrashError   // a caught panic; the studio is quitting

	runs   []*runRec
	cur    int  // index into runs
	frame  int  // frame on screen in runs[cur]; -1 = the initial noise
	follow bool // the frame on screen follows new frames
	showX0 bool
	paused bool
	nextID int

	status    string
	statusErr bool
	exported  []string

	modal      *modal
	helpScroll int           // first line of the full help shown
	undo       []editorState // the fields before each change (ctrl+z)
	busy       busy          // the spinner of a long stage
	tokens     tokenCounter  // the prompts' token counts
	pv         presetsView
	sv         scheduleView
	fv         forwardView
	gv         sweepView

	cache renderCache

	in    inputState // the image fields' files, read (imagefields.go)
	mp    maskPaint  // mask painting (maskpaint.go)
	inSeq int        // the last generate waiting for its input images
	live  liveState  // live mode (live.go)
}

// New returns the studio model. Call Start to begin loading the model.
func New(opts Options) *Model {
	s := presets.Default()
	if opts.Settings != nil {
		s = *opts.Settings
	}
	dir := opts.PresetDir
	if dir == "" {
		if d, err := presets.DefaultDir(); err == nil {
			dir = d
		}
	}
	m := &Model{
		opts: opts, keys: newKeyMap(), help: help.New(), store: presets.NewStore(dir),
		ed: newEditor(s, opts.OutDir), frame: -1, width: 100, height: 30, loading: true,
		showX0: true, // the prediction reads better than the noisy latent
		sv:     newScheduleView(),
		busy:   newBusy(),
	}
	m.status = "loading " + opts.ModelLabel + "…"
	m.ed.img.taesd.SetValue(opts.TAESD)
	return m
}

// Start starts the worker, which sends its messages through send (a
// tea.Program's Send), and asks it to load the model.
func (m *Model) Start(send func(tea.Msg)) {
	m.send = send
	m.w = newWorker(send)
	if m.opts.Load == nil {
		m.opts.Load = func(func(string)) (gpu.Device, *models.Pipeline, error) {
			return nil, nil, errors.New("no model to load")
		}
	}
	m.w.submit(loadReq{load: m.opts.Load, open: m.opts.Open, crash: m.opts.CrashTest, spec: m.opts.Model, ifUp: m.opts.IFUpscale})
	m.syncTAESD() // the TAESD field's first path goes on the model once it is loaded
	m.flushTAESD()
}

// Close stops the worker (cancelling its work) and releases the model.
func (m *Model) Close() {
	if m.w != nil {
		m.w.close(5 * time.Second)
	}
}

// Run starts the studio on the terminal and returns when it quits.
func Run(opts Options) error {
	opts.Color = render.DetectColorMode()
	m := New(opts)
	// Signals are ours, not bubbletea's: SIGHUP (the SSH connection or
	// the terminal went away) used to kill the process with the tty raw,
	// and SIGTERM ended it with status 0. Each now quits the program,
	// which restores the terminal, and Run returns a *SignalError.
	p := tea.NewProgram(m, tea.WithAltScreen(), tea.WithMouseCellMotion(), tea.WithoutSignalHandler())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	var got atomic.Value
	go func() {
		for sig := range sigs {
			if got.Load() == nil {
				got.Store(sig)
				if m.w != nil {
					m.w.cancelSweep()
					m.w.cancelRun()
				}
				p.Quit()
				// Update never blocks on the worker, so Quit is enough;
				// should the program still be up, kill it (the terminal
				// is restored all the same).
				time.AfterFunc(2*time.Second, p.Kill)
			}
		}
	}()
	m.Start(p.Send)
	_, err := p.Run()
	sig, _ := got.Load().(os.Signal)
	if sig != nil {
		m.w.close(time.Second) // a kernel in flight is abandoned
		return &SignalError{Signal: sig}
	}
	m.Close()
	if m.crash != nil {
		return m.crash
	}
	if errors.Is(err, tea.ErrProgramPanic) {
		// A command's goroutine panicked: bubbletea restored the
		// terminal and printed the trace.
		return &CrashError{Where: "a studio command", Value: "see the trace printed above"}
	}
	return err
}

// Init implements tea.Model.
func (m *Model) Init() tea.Cmd { return nil }

// setStatus and setError show a message; text from files in it (names,
// prompts, errors quoting a file) has its control characters escaped.
func (m *Model) setStatus(s string) { m.status, m.statusErr = termsafe.Text(s), false }
func (m *Model) setError(err error) { m.status, m.statusErr = termsafe.Text(err.Error()), true }

// Update implements tea.Model. A panic in it is caught: the studio quits
// (restoring the terminal) and Run returns the *CrashError.
func (m *Model) Update(msg tea.Msg) (_ tea.Model, cmd tea.Cmd) {
	defer func() {
		if p := recover(); p != nil {
			m.crash = &CrashError{Where: "the studio's update", Value: fmt.Sprint(p), Stack: string(debug.Stack())}
			cmd = tea.Quit
		}
	}()
	if m.crash != nil {
		return m, tea.Quit
	}
	prompt, negative := m.ed.prompt.Value(), m.ed.negative.Value()
	if k, ok := msg.(tea.KeyMsg); ok && key.Matches(k, m.keys.Undo) && m.modal == nil {
		m.undoChange()
		return m, m.livePromptEdited(prompt, negative)
	}
	before := m.ed.state()
	cmd = m.update(msg)
	m.noteChange(before)
	if c := m.livePromptEdited(prompt, negative); c != nil {
		cmd = tea.Batch(cmd, c)
	}
	if m.focus != focusTimeline {
		m.ed.page = m.focus.page()
	}
	if c := m.syncInputs(); c != nil {
		cmd = tea.Batch(cmd, c)
	}
	if b := m.trackBusy(msg); b != nil {
		cmd = tea.Batch(cmd, b)
	}
	return m, cmd
}

func (m *Model) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.help.Width = msg.Width
		return nil
	case tea.KeyMsg:
		if m.opts.CrashTest == "update" && msg.String() == "ctrl+g" {
			panic("STEPWISE_TEST_PANIC=update: a panic in Update, as the test asked")
		}
		return m.handleKey(msg)
	case tea.MouseMsg:
		return m.handleMouse(msg)
	case loadedMsg:
		m.loading = false
		if msg.err != nil {
			m.loadErr = msg.err
			m.setError(fmt.Errorf("model: %w", msg.err))
			return nil
		}
		m.model = msg.model
		m.ed.downscale = m.model.SizeMultiple
		m.modelFields()
		if m.opts.Settings == nil {
			n := m.model.NativeSize
			m.ed.width.SetValue(fmt.Sprint(n))
			m.ed.height.SetValue(fmt.Sprint(n))
		}
		m.setStatus(fmt.Sprintf("loaded %s in %s — edit the prompt, then ctrl+g", m.model.Name, msg.took.Round(time.Millisecond)))
		if len(msg.warnings) > 0 {
			m.setError(errors.New(oneLine(strings.Join(msg.warnings, "; "))))
		}
		return nil
	case runStartedMsg:
		m.onRunStarted(msg)
	case noiseMsg:
		if r := m.run(msg.ID); r != nil && r.FirstPreview == 0 {
			r.Noise = msg.Noise
			r.FirstPreview = time.Since(r.Requested)
		}
	case frameMsg:
		m.onFrame(msg)
	case runDoneMsg:
		m.onRunDone(msg)
	case decodedMsg:
		if r := m.run(msg.ID); r != nil {
			if msg.Err != nil {
				m.setError(fmt.Errorf("decode: %w", msg.Err))
			} else if len(msg.Images) > 0 {
				r.decoded[decodeKey{msg.Frame, msg.X0}] = decodedImage{tile(msg.Images), msg.Tiny}
				m.setStatus(fmt.Sprintf("%s-decoded frame %d", decoderName(msg.Tiny), msg.Frame+1))
			}
		}
	case exportedMsg:
		if msg.Err != nil {
			m.setError(msg.Err)
		} else {
			m.exported = msg.Paths
			m.setStatus("exported " + strings.Join(msg.Paths, ", "))
		}
	case openedMsg:
		if msg.Err != nil {
			m.setError(msg.Err)
		} else {
			m.ed.set(msg.Settings)
			m.setStatus("settings from " + msg.Path + " (seed locked; ctrl+g to reproduce)")
			if err := m.ed.ifUp.setParams(msg.IFParams); err != nil {
				m.setError(fmt.Errorf("settings from %s; stage II: %w", msg.Path, err))
			}
		}
	case presetsMsg, presetDoneMsg, presetExistsMsg, stylesMsg:
		return m.pv.update(m, msg)
	case sweepMsg:
		m.gv.onMsg(m, msg)
	case forwardMsg:
		return m.fv.onMsg(m, msg)
	case forwardTickMsg:
		return m.fv.tick(m, msg)
	case schedulePreviewMsg:
		m.sv.onMsg(msg)
	case errMsg:
		m.setError(msg.err)
	case modelMsg:
		m.onModel(msg)
	case reopenedMsg:
		if msg.err != nil {
			m.model, m.loadErr = nil, msg.err
		} else {
			m.model = msg.model
			m.modelFields()
		}
	case crashMsg:
		m.crash = msg.err
		return tea.Quit
	case taesdTickMsg, taesdMsg:
		return m.onTAESDMsg(msg)
	case inputLoadedMsg, loraResolvedMsg:
		m.onInputMsg(msg)
	case dropInitMsg:
		m.setPathField(focusInit, msg.path)
		m.setStatus("init image: " + msg.path + " (an image without generation parameters; to fill another field, focus it on the image page, alt+i, and drop there)")
	case inputsReadyMsg:
		return m.onInputsReady(msg)
	case liveTickMsg:
		return m.onLiveTick(msg)
	}
	return nil
}

// handleKey is the one place that routes keys: global keys first, then the
// modal, then the screen, then the focused component.
func (m *Model) handleKey(k tea.KeyMsg) tea.Cmd {
	if k.Type == tea.KeyRunes && len(k.Runes) > 1 && !k.Paste {
		// Keys typed faster than the terminal is read arrive as one
		// message ("..."): handle them one by one, so each is a key.
		var cmds []tea.Cmd
		for _, r := range k.Runes {
			cmds = append(cmds, m.handleKey(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}, Alt: k.Alt}))
		}
		return tea.Batch(cmds...)
	}
	km := m.keys
	if d := k.String(); len(d) == 1 && d >= "1" && d <= "5" && m.modal == nil && !m.help.ShowAll && m.digitsSwitchViews() {
		// The header's "1 studio 2 schedule ...": a digit outside a text
		// field is its alt+digit.
		return m.handleKey(tea.KeyMsg{Type: tea.KeyRunes, Runes: k.Runes, Alt: true})
	}
	switch {
	case key.Matches(k, km.Quit):
		if m.w != nil {
			m.w.cancelSweep()
			m.w.cancelRun()
		}
		return tea.Quit
	case key.Matches(k, km.Redraw):
		return tea.ClearScreen
	case m.modal != nil:
		return m.modal.update(m, k)
	case m.help.ShowAll:
		return m.helpKey(k)
	}
	if m.mp.on && m.state == stateMain {
		if cmd, ok := m.paintKey(k); ok {
			return cmd
		}
	}
	if k.Paste {
		if cmd, ok := m.dropPath(string(k.Runes)); ok {
			return cmd
		}
	}
	switch {
	case key.Matches(k, km.ImagePage):
		m.state = stateMain
		if m.focus.page() == 1 || (m.focus == focusTimeline && m.ed.page == 1) {
			m.focus = focusPrompt
		} else {
			m.focus = focusInit
		}
		return nil
	case key.Matches(k, km.PaintMask):
		m.state = stateMain
		return m.togglePaint()
	case k.Paste && droppedPNG(string(k.Runes)) != "":
		path := droppedPNG(string(k.Runes))
		return func() tea.Msg { return openPNG(path) }
	case k.Paste && droppedModel(string(k.Runes)) != "":
		return m.loadModel(droppedModel(string(k.Runes)))
	case key.Matches(k, km.LoadModel):
		m.openModal(modalModel, "Load a model: a .safetensors file or a diffusers folder (PATH [--config FILE]), or \"bundled\"", "")
		return nil
	case key.Matches(k, km.Generate):
		return m.generate()
	case key.Matches(k, km.Live):
		return m.toggleLive()
	case key.Matches(k, km.Save):
		m.openModal(modalSave, "Save preset as", "")
		return nil
	case key.Matches(k, km.Export):
		return m.export()
	case key.Matches(k, km.Open):
		m.openModal(modalOpen, "Open settings from a PNG, or a model (type or drop its path)", "")
		return nil
	case key.Matches(k, km.Presets):
		m.state = statePresets
		return m.pv.load(m)
	case key.Matches(k, km.ViewMain):
		m.state = stateMain
		return nil
	case key.Matches(k, km.ViewSchedule):
		m.state = stateSchedule
		return m.sv.enter(m)
	case key.Matches(k, km.ViewForward):
		m.state = stateForward
		return m.fv.enter(m)
	case key.Matches(k, km.ViewSweep):
		m.state = stateSweep
		return m.gv.enter(m, false)
	case key.Matches(k, km.ViewTrace):
		m.state = stateTrace
		return nil
	case key.Matches(k, km.Cancel):
		return m.cancel()
	case k.String() == "f1" || (k.String() == "?" && !(m.state == stateMain && m.focus.isText() && m.focusedText() != "")):
		// "?" types into a text field that holds text; in an empty one
		// (the prompt at start) it opens the help.
		m.help.ShowAll, m.helpScroll = true, 0
		return nil
	}
	switch m.state {
	case statePresets:
		return m.pv.key(m, k)
	case stateSchedule:
		m.sv.key(k)
		return nil
	case stateForward:
		return m.fv.key(m, k)
	case stateSweep:
		return m.gv.key(m, k)
	case stateTrace:
		return nil
	}
	switch {
	case key.Matches(k, km.NextField):
		m.moveFocus(1)
		return nil
	case key.Matches(k, km.PrevField):
		m.moveFocus(-1)
		return nil
	}
	if m.focus == focusTimeline {
		return m.timelineKey(k)
	}
	if !m.ed.update(m.focus, k) {
		switch k.String() {
		case "up":
			if m.focus > 0 {
				m.moveFocus(-1)
			}
		case "down", "enter":
			m.moveFocus(1)
		}
	}
	return nil
}

// digitsSwitchViews reports whether a digit key picks a view: outside a
// text field, except in the schedule view, whose 1/2/3 toggle its curves.
func (m *Model) digitsSwitchViews() bool {
	switch m.state {
	case stateMain:
		return !m.focus.isText()
	case stateSchedule:
		return false
	}
	return true
}

// focusedText is the text of the focused field ("" for lists).
func (m *Model) focusedText() string {
	if t := m.ed.field(m.focus); t != nil {
		return t.Value()
	}
	return ""
}

// helpKey handles keys while the full help is shown: it is modal, so
// keys never reach the fields under it; the arrows, j/k and the page keys
// scroll it, and esc, ?, f1 or q close it.
func (m *Model) helpKey(k tea.KeyMsg) tea.Cmd {
	switch k.String() {
	case "esc", "?", "f1", "q":
		m.help.ShowAll = false
	case "up", "k":
		m.helpScroll--
	case "down", "j":
		m.helpScroll++
	case "pgup":
		m.helpScroll -= 10
	case "pgdown", " ":
		m.helpScroll += 10
	case "home":
		m.helpScroll = 0
	}
	m.helpScroll = max(m.helpScroll, 0)
	return nil
}

// cancel handles Esc: close help, leave a view, or cancel the work in
// progress.
func (m *Model) cancel() tea.Cmd {
	switch {
	case m.help.ShowAll:
		m.help.ShowAll = false
	case m.state != stateMain:
		if m.state == stateSweep && m.gv.busy {
			m.w.cancelSweep()
			m.gv.busy, m.gv.sig = false, ""
			m.setStatus("guidance sweep cancelled")
			return nil
		}
		m.state = stateMain
	case m.switching:
		// The load goes on in the worker (a read cannot be interrupted)
		// but its model is dropped; the studio is free at once.
		m.w.cancelledSwitch.Store(m.switchSeq)
		m.switching = false
		keep := ""
		if m.model != nil {
			keep = "; " + m.model.Name + " stays loaded"
		}
		m.setStatus("model load cancelled" + keep)
	default:
		if r := m.active(); r != nil {
			m.w.cancelRun()
			m.setStatus("cancelling…")
		}
	}
	return nil
}

// View implements tea.Model. A panic in it is caught like one in Update.
func (m *Model) View() (out string) {
	if m.crash != nil {
		return ""
	}
	defer func() {
		if p := recover(); p != nil {
			m.crash = &CrashError{Where: "the studio's view", Value: fmt.Sprint(p), Stack: string(debug.Stack())}
			out = ""
			if m.send != nil {
				go m.send(tea.QuitMsg{})
			}
		}
	}()
	if m.opts.CrashTest == "view" && len(m.runs) > 0 {
		panic("STEPWISE_TEST_PANIC=view: a panic in View, as the test asked")
	}
	return m.view()
}

func (m *Model) view() string {
	m.keys.state, m.keys.focus = m.state, m.focus
	m.keys.inText = m.focus.isText()
	m.keys.painting = m.mp.on && m.state == stateMain
	if m.width < 24 || m.height < 8 {
		return fitBlock("stepwise: enlarge the terminal", m.width, m.height)
	}
	header := m.headerView()
	foot := m.footerView()
	bodyH := m.bodyHeight(header, foot)
	var body string
	switch {
	case m.modal != nil:
		body = lipgloss.Place(m.width, bodyH, lipgloss.Center, lipgloss.Center, m.modal.view(m.width))
	case m.help.ShowAll:
		body = m.helpView(bodyH)
	case m.state == statePresets:
		body = m.pv.view(m, m.width, bodyH)
	case m.state == stateSchedule:
		body = m.sv.view(m, m.width, bodyH)
	case m.state == stateForward:
		body = m.fv.view(m, m.width, bodyH)
	case m.state == stateSweep:
		body = m.gv.view(m, m.width, bodyH)
	case m.state == stateTrace:
		body = traceView(m, m.width, bodyH)
	default:
		body = m.mainView(m.width, bodyH)
	}
	body = fitBlock(body, m.width, bodyH)
	return header + "\n" + body + "\n" + foot
}

// bodyHeight is the height left between the header and the footer.
func (m *Model) bodyHeight(header, foot string) int {
	return max(m.height-lipgloss.Height(header)-lipgloss.Height(foot), 3)
}

func (m *Model) headerView() string {
	name := m.opts.ModelLabel
	if m.model != nil {
		name = m.model.Name
	}
	views := []string{"studio", "schedule", "fwd/rev", "sweep", "trace"}
	var tabs []string
	for i, v := range views {
		st := styleDim
		if (i == 0 && (m.state == stateMain || m.state == statePresets)) || state(i+1) == m.state {
			st = styleSelected
		}
		tabs = append(tabs, st.Render(fmt.Sprintf("%d %s", i+1, v)))
	}
	left := styleTitle.Render("stepwise") + styleHeader.Render(" · "+termsafe.Escape(name)+" · ") + strings.Join(tabs, " ")
	return truncate(left, m.width)
}

func (m *Model) footerView() string {
	status := truncate(styleOK.Render(m.status), m.width)
	if p := m.paintStatus(); p != "" {
		status = truncate(styleWarn.Render(p)+styleDim.Render(" · ")+styleOK.Render(m.status), m.width)
	}
	if b := m.busyLine(); b != "" {
		status = truncate(b+styleDim.Render(" · ")+styleOK.Render(m.status), m.width)
	}
	if m.statusErr {
		// An error wraps onto up to three lines (on a terminal of at least
		// 20 rows): its end often says what was kept or done about it.
		lines := 1
		if m.height >= 20 {
			lines = 3
		}
		status = lipgloss.NewStyle().Width(m.width).MaxHeight(lines).Render(styleErr.Render(m.status))
	}
	m.help.Width = 0
	// bubbles' help adds every item once its ellipsis no longer fits: cut
	// the line to the terminal here, but keep the last two, help and
	// quit, whatever the width. The full help is drawn in the body
	// (helpView), so the footer keeps one line.
	items := m.keys.ShortHelp()
	tail := m.help.ShortHelpView(items[len(items)-2:])
	head := m.help.ShortHelpView(items[:len(items)-2])
	sep := m.help.Styles.ShortSeparator.Render(m.help.ShortSeparator)
	room := m.width - lipgloss.Width(tail) - lipgloss.Width(sep)
	line := tail
	if room > 0 {
		line = truncate(head, room) + sep + tail
	}
	return status + "\n" + truncate(line, m.width)
}

// helpView is the full help, scrolled to m.helpScroll, h lines high; a
// last line says how to scroll when it does not fit.
func (m *Model) helpView(h int) string {
	lines := strings.Split(fullHelpView(m.keys, m.width), "\n")
	if len(lines) <= h {
		m.helpScroll = 0
		return strings.Join(lines, "\n")
	}
	view := max(h-1, 1)
	m.helpScroll = min(m.helpScroll, len(lines)-view)
	out := append([]string(nil), lines[m.helpScroll:m.helpScroll+view]...)
	out = append(out, styleDim.Render(fmt.Sprintf("lines %d-%d of %d — ↑/↓ pgup/pgdn scroll, esc closes", m.helpScroll+1, m.helpScroll+view, len(lines))))
	return strings.Join(out, "\n")
}

// mainView is the editor on the left and the preview with its progress
// line and timeline on the right.
func (m *Model) mainView(w, h int) string {
	m.countTokens()
	l := m.layoutMain(h)
	form := m.ed.view(l.formW, h, m.focus, m.chunks())
	if p := m.problem(); p != "" {
		form += "\n" + lipgloss.NewStyle().Width(l.formW).Render(styleErr.Render("✗ "+p))
	} else if hint := m.hint(); hint != "" {
		form += "\n" + lipgloss.NewStyle().Width(l.formW).Render(styleDim.Render(hint))
	}
	form = fitBlock(form, l.formW, h)
	right := m.previewPane(l.paneW, h)
	return lipgloss.JoinHorizontal(lipgloss.Top, form, " ", right)
}

// problem says what is wrong with the edited settings for the loaded model
// (without one, what no model accepts), as the user types ("" when they
// are fine).
func (m *Model) problem() string {
	s, err := m.ed.settings()
	if err == nil {
		if s.Seed < 0 {
			s.Seed = 0
		}
		if m.model != nil {
			err = m.model.Validate(s)
			if err == nil {
				_, err = m.stageII()
			}
		} else {
			err = s.Validate() // what no model accepts, as it is typed
		}
	}
	if err != nil {
		return oneLine(err.Error())
	}
	return ""
}

// chunks is the prompt chunk count of the run on screen.
func (m *Model) chunks() int {
	if len(m.runs) == 0 {
		return 0
	}
	return m.runs[m.cur].Chunks
}

// fitBlock pads or cuts s to exactly w x h cells.
func fitBlock(s string, w, h int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > h {
		lines = lines[:h]
	}
	for len(lines) < h {
		lines = append(lines, "")
	}
	for i, l := range lines {
		lw := lipgloss.Width(l)
		if lw > w {
			l = truncate(l, w)
			lw = lipgloss.Width(l)
		}
		lines[i] = l + strings.Repeat(" ", max(0, w-lw))
	}
	return strings.Join(lines, "\n")
}

func truncate(s string, w int) string {
	return lipgloss.NewStyle().MaxWidth(w).Render(s)
}
