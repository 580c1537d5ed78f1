package tui

import (
	"errors"
	"fmt"
	"image"
	"math"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/sampler"
)

// ---- Noise schedule -------------------------------------------------------

// scheduleNames are the beta schedules the chart can draw.
var scheduleNames = []string{"linear", "scaled_linear", "squaredcos_cap_v2"}

// scheduleView charts alpha_bar_t (or log SNR) against t for the three beta
// schedules, with the timesteps of the run on screen (or of the edited
// settings) marked on the model's own curve. For a flow-matching model
// (SD3, Flux) it charts the shifted sigma(t) of the run's plan instead
// (the model's static shift, or Flux's dynamic e^mu for the image's
// size), beside the unshifted sigma = t/T.
type scheduleView struct {
	on     [3]bool
	snr    bool
	curves [3][]float32
	model  int // index of the model's schedule in scheduleNames, -1 if trained betas
	marks  sampler.Schedule
	what   string
	err    error
	// flow is set for a flow-matching model; shift is the plan's shift
	// (zero until a plan arrives: the curves then wait for it).
	flow  bool
	shift sampler.FlowShift
}

// schedulePreviewMsg carries the schedule the edited settings would use.
type schedulePreviewMsg struct {
	sched sampler.Schedule
	shift sampler.FlowShift
	what  string
	err   error
}

// flowTrain is the number of training timesteps a flow chart spans.
const flowTrain = 1000

// setFlow draws the flow curves for shift f: the shifted sigma at
// t = 0..T-1 (u = (t+1)/T, as the forward process) and the unshifted u.
func (v *scheduleView) setFlow(f sampler.FlowShift, T int) {
	v.shift, v.model = f, 0
	v.curves = [3][]float32{make([]float32, T), make([]float32, T), nil}
	for t := 0; t < T; t++ {
		u := float64(t+1) / float64(T)
		v.curves[0][t], v.curves[1][t] = float32(f.Sigma(u)), float32(u)
	}
}

// flowLabels name the flow chart's two curves.
func (v *scheduleView) flowLabels() []string {
	f := v.shift
	model := fmt.Sprintf("σ(t) shifted, shift %s", formatFloat(math.Round(f.Shift*1000)/1000))
	if f.Dynamic {
		model = fmt.Sprintf("σ(t) shifted, dynamic μ=%.3f (e^μ=%.3f at %d tokens)", f.Mu, f.Shift, f.SeqLen)
	}
	return []string{model, "σ = t/T unshifted"}
}

// markT is the training timestep at which mark i sits on the model's
// curve: its timestep, or for a flow model where the shifted curve
// reaches its sigma.
func (v *scheduleView) markT(i int) float64 {
	if !v.flow {
		return v.marks.Timesteps[i]
	}
	if i >= len(v.marks.Sigmas) {
		return 0
	}
	return v.shift.Unshift(v.marks.Sigmas[i])*float64(len(v.curves[0])) - 1
}

func newScheduleView() scheduleView { return scheduleView{on: [3]bool{true, true, true}, model: -1} }

// enter computes the curves and takes the marks from the run on screen, or
// asks for the edited settings' schedule (a cheap CPU computation).
func (v *scheduleView) enter(m *Model) tea.Cmd {
	if m.model == nil {
		v.err = errors.New("no model loaded")
		return nil
	}
	base := gen.ScheduleConfig(m.model.Scheduler)
	v.model, v.err, v.flow = -1, nil, base.PredictionType == "flow"
	if v.flow {
		return v.enterFlow(m, base.NumTrainTimesteps)
	}
	for i, name := range scheduleNames {
		c := base
		c.BetaSchedule, c.TrainedBetas = name, nil
		ab, err := c.AlphasCumprod()
		if err != nil {
			v.err = err
		}
		v.curves[i] = ab
		if name == base.BetaSchedule && len(base.TrainedBetas) == 0 {
			v.model = i
		}
	}
	if len(m.runs) > 0 && len(m.runs[m.cur].Schedule.Timesteps) > 0 {
		r := m.runs[m.cur]
		v.marks, v.what = r.Schedule, fmt.Sprintf("run %d: %s, %d steps", r.ID, r.Settings.Sampler, len(r.Schedule.Timesteps))
		return nil
	}
	s, err := m.ed.settings()
	if err != nil {
		v.marks, v.what = sampler.Schedule{}, err.Error()
		return nil
	}
	if s.Seed < 0 {
		s.Seed = 0
	}
	if m.model.IF != nil { // DeepFloyd IF always steps with DDPM
		s.Sampler, s.Schedule = "DDPM", ""
	}
	if err := m.model.Validate(s); err != nil {
		v.marks, v.what = sampler.Schedule{}, err.Error()
		return nil
	}
	ss := m.model.SamplerSettings(s)
	ss.Batch, ss.H, ss.W = 1, 1, 1 // only the schedule is wanted
	return func() tea.Msg {
		plan, err := sampler.PlanRun(ss)
		if err != nil {
			return schedulePreviewMsg{err: err}
		}
		return schedulePreviewMsg{sched: plan.Schedule, what: fmt.Sprintf("edited settings: %s, %d steps", s.Sampler, s.Steps)}
	}
}

// enterFlow plans the run on screen (or the edited settings) at its own
// size, so the chart shows the shift that run applies.
func (v *scheduleView) enterFlow(m *Model, T int) tea.Cmd {
	if T < 2 {
		T = flowTrain
	}
	v.curves, v.shift = [3][]float32{}, sampler.FlowShift{}
	var s presets.Settings
	var what string
	var marks *sampler.Schedule
	if len(m.runs) > 0 && len(m.runs[m.cur].Schedule.Timesteps) > 0 {
		r := m.runs[m.cur]
		s, marks = r.Settings, &r.Schedule
		what = fmt.Sprintf("run %d: %s, %d steps", r.ID, r.Settings.Sampler, len(r.Schedule.Timesteps))
	} else {
		var err error
		if s, err = m.ed.settings(); err != nil {
			v.marks, v.what = sampler.Schedule{}, err.Error()
			return nil
		}
		if s.Seed < 0 {
			s.Seed = 0
		}
		if err := m.model.Validate(s); err != nil {
			v.marks, v.what = sampler.Schedule{}, err.Error()
			return nil
		}
		what = fmt.Sprintf("edited settings: %s, %d steps", s.Sampler, s.Steps)
	}
	ss := m.model.SamplerSettings(s)
	ss.Batch = 1 // the size stays: Flux's shift follows it
	return func() tea.Msg {
		plan, err := sampler.PlanRun(ss)
		if err != nil {
			return schedulePreviewMsg{err: err}
		}
		msg := schedulePreviewMsg{sched: plan.Schedule, shift: plan.Flow, what: what}
		if marks != nil {
			msg.sched = *marks // the run's own steps (a branch's included)
		}
		return msg
	}
}

func (v *scheduleView) onMsg(msg schedulePreviewMsg) {
	if msg.err != nil {
		v.what = msg.err.Error()
		if v.flow { // no plan, no curve to draw: say why
			v.err = msg.err
		}
		return
	}
	v.marks, v.what = msg.sched, msg.what
	if v.flow && msg.shift.Shift > 0 {
		v.setFlow(msg.shift, flowTrain)
	}
}

func (v *scheduleView) key(k tea.KeyMsg) {
	switch k.String() {
	case "1", "2", "3":
		i := int(k.String()[0] - '1')
		v.on[i] = !v.on[i]
	case "s":
		v.snr = !v.snr
	}
}

// value is what the chart plots for alpha_bar a (a flow model: sigma a;
// its log SNR is 2 ln((1-σ)/σ)).
func (v *scheduleView) value(a float64) float64 {
	switch {
	case !v.snr:
		return a
	case v.flow:
		return 2 * math.Log((1-a)/a)
	}
	return math.Log(a / (1 - a))
}

func (v *scheduleView) view(m *Model, w, h int) string {
	var b strings.Builder
	yName, keys := "ᾱ_t (signal kept)", "1/2/3 toggle · s ᾱ↔SNR"
	if v.snr {
		yName = "log SNR = ln(ᾱ/(1-ᾱ))"
	}
	names := scheduleNames
	if v.flow {
		yName, keys, names = "flow σ_t (x_t = (1-σ)·x0 + σ·ε)", "1/2 toggle · s σ↔SNR", v.flowLabels()
		if v.snr {
			yName = "log SNR = 2·ln((1-σ)/σ)"
		}
	}
	b.WriteString(styleTitle.Render("Noise schedule") + styleDim.Render("  "+yName+" against the training timestep t · "+keys) + "\n")
	if v.err != nil {
		b.WriteString(styleErr.Render(v.err.Error()))
		return b.String()
	}
	if v.flow && v.shift.Shift == 0 {
		b.WriteString(styleDim.Render("planning the run's flow sigmas…") + "\n" + truncate(v.what, w))
		return b.String()
	}
	var legend []string
	for i, name := range names {
		mark := "○"
		if v.on[i] {
			mark = "●"
		}
		s := fmt.Sprintf("%d %s %s", i+1, mark, name)
		if i == v.model {
			s += " (model)"
		}
		legend = append(legend, styleCurves[i].Render(s))
	}
	b.WriteString(strings.Join(legend, "   ") + "\n")
	cw, ch := max(w-9, 10), max(h-7, 4)
	lo, hi := 0.0, 1.0
	if v.snr {
		lo, hi = -12.0, 10.0
	}
	grid := make([][]string, ch)
	for y := range grid {
		grid[y] = make([]string, cw)
		for x := range grid[y] {
			grid[y][x] = " "
		}
	}
	row := func(val float64) int {
		val = min(max(val, lo), hi) // flow's log SNR is infinite at σ 0 and 1
		f := (val - lo) / (hi - lo)
		return min(max(int(math.Round((1-f)*float64(ch-1))), 0), ch-1)
	}
	col := func(t float64, n int) int {
		return min(max(int(math.Round(t/float64(n-1)*float64(cw-1))), 0), cw-1)
	}
	for i, c := range v.curves {
		if !v.on[i] || len(c) == 0 {
			continue
		}
		for x := 0; x < cw; x++ {
			t := x * (len(c) - 1) / max(cw-1, 1)
			grid[row(v.value(float64(c[t])))][x] = styleCurves[i].Render("•")
		}
	}
	axis := []rune(strings.Repeat("─", cw))
	axisStyled := make([]string, cw)
	for x := range axisStyled {
		axisStyled[x] = styleDim.Render(string(axis[x]))
	}
	cur := -1
	if len(m.runs) > 0 && m.frame >= 0 && m.frame < len(m.runs[m.cur].Frames) {
		cur = m.frame
	}
	if v.model >= 0 && len(v.curves[v.model]) > 0 {
		c := v.curves[v.model]
		for i := range v.marks.Timesteps {
			x := col(v.markT(i), len(c))
			st := styleTick
			if i == cur {
				st = styleTickOn
			}
			// The mark sits just above the curve's point (below it at
			// the top), so the model's own curve stays visible however
			// many steps the run has.
			// The row of the curve's point drawn in this column.
			y := row(v.value(float64(c[x*(len(c)-1)/max(cw-1, 1)])))
			if y > 0 {
				y--
			} else if ch > 1 {
				y++
			}
			grid[y][x] = st.Render("◆")
			axisStyled[x] = st.Render("┴")
		}
	}
	for y := 0; y < ch; y++ {
		label := "       "
		switch y {
		case 0:
			label = fmt.Sprintf("%6.2f ", hi)
		case ch - 1:
			label = fmt.Sprintf("%6.2f ", lo)
		case (ch - 1) / 2:
			label = fmt.Sprintf("%6.2f ", (hi+lo)/2)
		}
		b.WriteString(styleDim.Render(label) + "│" + strings.Join(grid[y], "") + "\n")
	}
	b.WriteString("       └" + strings.Join(axisStyled, "") + "\n")
	n := 1000
	if len(v.curves[0]) > 0 {
		n = len(v.curves[0])
	}
	b.WriteString(fmt.Sprintf("        t=0%st=%d\n", strings.Repeat(" ", max(cw-8-len(fmt.Sprint(n-1)), 1)), n-1))
	sig := make([]string, 0, len(v.marks.Sigmas))
	for i, s := range v.marks.Sigmas {
		t := fmt.Sprintf("%.3g", s)
		if i == cur {
			t = styleTickOn.Render(t)
		}
		sig = append(sig, t)
	}
	b.WriteString(truncate(styleTick.Render("◆ ")+v.what+" · σ: "+strings.Join(sig, " "), w))
	return b.String()
}

// ---- Forward and reverse process -----------------------------------------

type forwardTickMsg struct{ id int }

// forwardView plays the image being noised with q(x_t|x0) to pure noise,
// then the run's recorded reverse frames back to the image.
type forwardView struct {
	runID, frame int
	fwd          []*image.RGBA
	t            []int
	ab           []float64
	sigma        []float64 // a flow model's sigmas (nil: VP)
	pos          int
	playing      bool
	waiting      bool
	err          error
	tickID       int
}

const forwardFrames = 16

func (v *forwardView) enter(m *Model) tea.Cmd {
	v.err = nil
	if len(m.runs) == 0 || len(m.runs[m.cur].Frames) == 0 {
		v.err = errors.New("generate an image first (ctrl+g): this view noises it and plays the run back")
		return nil
	}
	r := m.runs[m.cur]
	frame := m.frame
	if frame < 0 {
		frame = len(r.Frames) - 1
	}
	if v.runID == r.ID && v.frame == frame && len(v.fwd) > 0 {
		return v.play(true)
	}
	v.runID, v.frame, v.fwd, v.waiting, v.pos = r.ID, frame, nil, true, 0
	m.w.submit(forwardReq{ID: r.ID, Frame: frame, N: forwardFrames})
	return nil
}

func (v *forwardView) onMsg(m *Model, msg forwardMsg) tea.Cmd {
	if msg.ID != v.runID {
		return nil
	}
	v.waiting = false
	if msg.Err != nil {
		v.err = msg.Err
		return nil
	}
	v.fwd, v.t, v.ab, v.sigma, v.pos = msg.Images, msg.T, msg.AlphaBar, msg.Sigma, 0
	return v.play(true)
}

func (v *forwardView) play(on bool) tea.Cmd {
	v.playing = on
	if !on {
		return nil
	}
	v.tickID++
	id := v.tickID
	return tea.Tick(150*time.Millisecond, func(time.Time) tea.Msg { return forwardTickMsg{id} })
}

// sequence is the number of pictures: forward frames, then the reverse.
func (v *forwardView) sequence(m *Model) (*runRec, int) {
	r := m.run(v.runID)
	if r == nil {
		return nil, len(v.fwd)
	}
	return r, len(v.fwd) + min(v.frame+1, len(r.Frames))
}

func (v *forwardView) tick(m *Model, msg forwardTickMsg) tea.Cmd {
	if msg.id != v.tickID || !v.playing || m.state != stateForward {
		return nil
	}
	_, n := v.sequence(m)
	if n > 0 {
		v.pos = (v.pos + 1) % n
	}
	return v.play(true)
}

func (v *forwardView) key(m *Model, k tea.KeyMsg) tea.Cmd {
	_, n := v.sequence(m)
	switch k.String() {
	case " ":
		return v.play(!v.playing)
	case "right", ".":
		v.playing = false
		if n > 0 {
			v.pos = (v.pos + 1) % n
		}
	case "left", ",":
		v.playing = false
		if n > 0 {
			v.pos = (v.pos - 1 + n) % n
		}
	case "home":
		v.pos = 0
	}
	return nil
}

// current returns the picture at the play position and its caption.
func (v *forwardView) current(m *Model) (*image.RGBA, string) {
	r, _ := v.sequence(m)
	if v.pos < len(v.fwd) && v.pos < len(v.sigma) {
		sg := v.sigma[v.pos]
		return v.fwd[v.pos], fmt.Sprintf("forward  straight line x_t = (1-σ)·x0 + σ·ε   t=%d  σ=%.4f  1-σ=%.4f", v.t[v.pos], sg, 1-sg)
	}
	if v.pos < len(v.fwd) {
		a := v.ab[v.pos]
		return v.fwd[v.pos], fmt.Sprintf("forward  q(x_t|x0) = N(√ᾱ·x0, (1-ᾱ)·I)   t=%d  ᾱ=%.4f  √ᾱ=%.3f  √(1-ᾱ)=%.3f", v.t[v.pos], a, math.Sqrt(a), math.Sqrt(1-a))
	}
	if r == nil {
		return nil, ""
	}
	i := v.pos - len(v.fwd)
	f := r.Frames[i]
	if i == len(r.Frames)-1 && r.Status == runDone && len(r.Images) > 0 {
		return r.Images[0], fmt.Sprintf("reverse  step %d/%d: the final image (VAE)", i+1, len(r.Frames))
	}
	return f.XT, fmt.Sprintf("reverse  step %d/%d  σ %.3f → %.3f  t=%.0f  (recorded x_t)", i+1, len(r.Frames), f.Sigma, f.Next, f.Timestep)
}

func (v *forwardView) view(m *Model, w, h int) string {
	head := styleTitle.Render("Forward and reverse process") + styleDim.Render("  space play/pause · ←/→ step · home restart") + "\n"
	if v.err != nil {
		return head + styleErr.Render(v.err.Error())
	}
	if v.waiting || len(v.fwd) == 0 {
		return head + styleDim.Render("noising the image on the worker…")
	}
	img, caption := v.current(m)
	_, n := v.sequence(m)
	state := "playing"
	if !v.playing {
		state = "paused"
	}
	pos := fmt.Sprintf("%d/%d %s", v.pos+1, n, state)
	bw := max(w-len(pos)-3, 4)
	bar := make([]string, bw)
	for x := range bar {
		i := x * n / bw
		switch {
		case i == v.pos:
			bar[x] = styleTickOn.Render("█")
		case i < len(v.fwd):
			bar[x] = styleCurves[0].Render("▆")
		default:
			bar[x] = styleCurves[1].Render("▆")
		}
	}
	pic := m.cache.halfBlock(img, w, max(h-5, 1), m.opts.Color)
	return head + truncate(caption, w) + "\n" +
		lipgloss.PlaceHorizontal(w, lipgloss.Center, pic) + "\n" +
		strings.Join(bar, "") + " " + pos
}

// ---- Guidance sweep -------------------------------------------------------

// sweepScales are the guidance scales of the sweep.
var sweepScales = []float64{1, 3, 7.5, 12}

// sweepView shows the same seed at several guidance scales side by side,
// computed on the worker on demand; the scale nearest the edited one is
// highlighted.
type sweepView struct {
	sig    string
	seed   int64
	imgs   []*image.RGBA
	took   []time.Duration
	busy   bool
	err    error
	filled int
	since  time.Time // when the image being computed was started
}

func (v *sweepView) enter(m *Model, force bool) tea.Cmd {
	if m.model == nil {
		v.err = errors.New("no model loaded")
		return nil
	}
	s, err := m.ed.settings()
	if err == nil && s.Seed < 0 {
		s.Seed = -1
		if len(m.runs) > 0 {
			s.Seed = m.runs[m.cur].Settings.Seed
		}
		if s.Seed < 0 {
			s.Seed = gen.RandomSeed()
		}
	}
	if err == nil {
		err = m.model.Validate(s)
	}
	if err != nil {
		v.err = err
		return nil
	}
	up, err := m.stageII()
	if err != nil {
		v.err = err
		return nil
	}
	k := s
	k.CFGScale = 0
	key := k.Infotext()
	if up != nil {
		key += fmt.Sprintf("\n%+v", *up)
	}
	if key == v.sig && !force && (v.busy || v.filled == len(sweepScales)) {
		return nil
	}
	v.sig, v.seed, v.err, v.busy, v.filled, v.since = key, s.Seed, nil, true, 0, time.Now()
	v.imgs = make([]*image.RGBA, len(sweepScales))
	v.took = make([]time.Duration, len(sweepScales))
	m.w.submit(sweepReq{Gen: m.w.newSweep(), Key: key, Settings: s, Scales: sweepScales, IFUp: up})
	return nil
}

func (v *sweepView) onMsg(m *Model, msg sweepMsg) {
	if msg.Key != v.sig {
		return
	}
	if msg.Err != nil {
		v.err, v.busy = msg.Err, false
		return
	}
	if msg.Index >= 0 && msg.Index < len(v.imgs) {
		v.imgs[msg.Index], v.took[msg.Index] = msg.Image, msg.Took
		v.filled++
		v.since = time.Now()
	}
	if v.filled == len(sweepScales) {
		v.busy = false
		m.setStatus("guidance sweep done")
	}
}

func (v *sweepView) key(m *Model, k tea.KeyMsg) tea.Cmd {
	switch k.String() {
	case "up", "right", "k":
		m.ed.nudge(focusCFG, 1)
	case "down", "left", "j":
		m.ed.nudge(focusCFG, -1)
	case "r":
		return v.enter(m, true)
	}
	return nil
}

// nearest is the index of the sweep scale nearest the edited guidance.
func nearestScale(cfg float64) int {
	best := 0
	for i, s := range sweepScales {
		if math.Abs(s-cfg) < math.Abs(sweepScales[best]-cfg) {
			best = i
		}
	}
	return best
}

func (v *sweepView) view(m *Model, w, h int) string {
	cur, _ := m.ed.settings()
	head := styleTitle.Render("Guidance sweep") + styleDim.Render(fmt.Sprintf("  seed %d at cfg %v · ↑/↓ move the slider · r recompute", v.seed, sweepScales)) + "\n" +
		"cfg " + slider(m.ed.cfg.Value(), max(w-20, 10)) + " " + m.ed.cfg.Value() + "\n"
	if v.err != nil {
		return head + styleErr.Render(v.err.Error())
	}
	hi := nearestScale(cur.CFGScale)
	cols, bw, bh := sweepGrid(len(sweepScales), w, h-2)
	var boxes []string
	for i, s := range sweepScales {
		var pic string
		switch {
		case i < len(v.imgs) && v.imgs[i] != nil:
			pic = m.cache.halfBlock(v.imgs[i], bw-2, bh-3, m.opts.Color)
		case v.busy && i == v.filled:
			pic = styleWarn.Render(fmt.Sprintf("computing… %.1fs", time.Since(v.since).Seconds()))
		case v.busy:
			pic = styleDim.Render("queued")
		default:
			pic = styleDim.Render("—")
		}
		label := fmt.Sprintf("cfg %s", formatFloat(s))
		if i < len(v.took) && v.took[i] > 0 {
			label += styleDim.Render(" " + v.took[i].Round(10*time.Millisecond).String())
		}
		st := styleNormalBox
		if i == hi {
			st = styleHighlight
			label = styleSelected.Render("▶ ") + label
		}
		boxes = append(boxes, st.Width(bw-2).Height(bh-2).Render(label+"\n"+lipgloss.PlaceHorizontal(bw-2, lipgloss.Center, pic)))
	}
	var rows []string
	for i := 0; i < len(boxes); i += cols {
		rows = append(rows, lipgloss.JoinHorizontal(lipgloss.Top, boxes[i:min(i+cols, len(boxes))]...))
	}
	return head + strings.Join(rows, "\n")
}

// sweepGrid picks the columns of n square pictures in w x h cells that
// makes them largest (a half-block cell is two pixels high), and each
// box's outer width and height.
func sweepGrid(n, w, h int) (cols, bw, bh int) {
	best := -1
	for c := 1; c <= n; c++ {
		r := (n + c - 1) / c
		cw, ch := w/c, h/r
		side := min(cw-2, 2*(ch-3)) // the picture inside border and label
		if ch < 4 || cw < 8 {
			continue
		}
		if side > best {
			best, cols, bw, bh = side, c, cw, ch
		}
	}
	if best < 0 {
		return n, max(w/n, 8), max(h, 4)
	}
	return cols, bw, bh
}

// ---- Pipeline trace -------------------------------------------------------

// traceView follows the run on screen through the pipeline, with each
// stage's tensor shape and the time it took.
func traceView(m *Model, w, h int) string {
	var b strings.Builder
	b.WriteString(styleTitle.Render("Pipeline trace") + "\n")
	if m.model == nil {
		b.WriteString(styleErr.Render("no model loaded"))
		return b.String()
	}
	if len(m.runs) == 0 || m.runs[m.cur].Status == runStarting {
		b.WriteString(styleDim.Render("generate an image first (ctrl+g): the trace shows the last run's shapes and times"))
		return b.String()
	}
	r := m.runs[m.cur]
	if m.model.IF != nil || r.Boundary > 0 {
		return traceIF(m, r, w)
	}
	s := r.Settings
	p := m.model
	tm := func(k string) string {
		if d, ok := r.Timings[k]; ok {
			return d.Round(10 * time.Microsecond).String()
		}
		return "—"
	}
	toks := p.Tokenizer.Tokens(s.Prompt)
	shown := make([]string, 0, 12)
	for _, t := range toks[:min(len(toks), 12)] {
		shown = append(shown, strings.TrimSuffix(t, "</w>"))
	}
	chunks := max(r.Chunks, 1)
	hid := p.TextHidden
	b0, c0, lh, lw := r.Shape[0], r.Shape[1], r.Shape[2], r.Shape[3]
	rows := 2
	if s.CFGScale == 1 {
		rows = 1
	}
	nfe := 0
	if n := len(r.Frames); n > r.Inherited {
		nfe = r.Frames[n-1].NFE
		if r.Inherited > 0 {
			nfe -= r.Frames[r.Inherited-1].NFE
		}
	}
	steps := len(r.Frames) - r.Inherited
	// A stage is a tensor: name, shape, what it holds. An arrow is the
	// operation between two stages, with its time.
	stage := func(name, shape, detail string) {
		line := "  " + styleSelected.Render(fmt.Sprintf("%-12s", name)) + " " + shape
		if detail != "" {
			line += styleDim.Render(" · " + detail)
		}
		b.WriteString(truncate(line, w) + "\n")
	}
	opW := min(max(w-30, 20), 56)
	arrow := func(op, t string) {
		line := "     " + styleDim.Render("│ ") + fmt.Sprintf("%-*s", opW, op) + " " + styleOK.Render(t)
		b.WriteString(truncate(line, w) + "\n")
	}
	b.WriteString(styleDim.Render(truncate(fmt.Sprintf("run %d on %s · shapes [batch, …] · times of the last call of each stage", r.ID, p.Name), w)) + "\n\n")
	stage("prompt", fmt.Sprintf("%d chars", len(s.Prompt)), oneLine(s.Prompt))
	denoiser := "U-Net"
	if p.MaxSequenceLength > 0 {
		denoiser = "transformer"
		traceTokenStreams(p, r, stage, arrow, tm, strings.Join(shown, " "))
	} else {
		traceCLIPTokens(p, r, stage, arrow, tm, shown, chunks, hid)
	}
	traceImagePrompt(s, stage, arrow, tm)
	b.WriteString("\n")

	if r.Parent >= 0 {
		stage(fmt.Sprintf("x at step %d", r.Inherited), fmt.Sprintf("[%d, %d, %d, %d]", b0, c0, lh, lw), fmt.Sprintf("branched from run %d: seed %d, σ %.3g", r.Parent, s.Seed, first(r.Schedule.Sigmas)))
	} else {
		stage("noise x_T", fmt.Sprintf("[%d, %d, %d, %d]", b0, c0, lh, lw), fmt.Sprintf("seed %d, %s, σ_max %.3g", s.Seed, s.RNG, first(r.Schedule.Sigmas)))
	}
	if p.MaxSequenceLength > 0 {
		img := (lh / 2) * (lw / 2) // 2x2 patches (SD3) or packed latents (Flux)
		txt := p.MaxSequenceLength
		if len(p.Encoders) > 2 { // SD3: CLIP's 77 tokens before T5's
			txt += 77
		}
		stage("joined", fmt.Sprintf("%d tokens", txt+img), fmt.Sprintf("%d text + %d image (2x2 patches of the %dx%d latent), one attention sequence", txt, img, lh, lw))
	}
	arrow(fmt.Sprintf("%s ×%d steps, %d calls on [%d, %d, %d, %d]", denoiser, steps, nfe, b0*rows, c0, lh, lw),
		fmt.Sprintf("%s/call, %s in all", tm("unet"), r.Sampling.Round(time.Millisecond)))
	stage("latent x_0", fmt.Sprintf("[%d, %d, %d, %d]", b0, c0, lh, lw), fmt.Sprintf("%s, cfg %s", s.Sampler, formatFloat(s.CFGScale)))
	decode := "—"
	if r.Status == runDone {
		decode = tm("vae_decode")
	}
	arrow("VAE decoder", decode)
	stage("image", fmt.Sprintf("[%d, 3, %d, %d]", b0, lh*p.Downscale, lw*p.Downscale), fmt.Sprintf("%s in %s", runStatusNames[r.Status], r.Elapsed.Round(time.Millisecond)))
	if r.Parent < 0 && (r.FirstPreview > 0 || r.FirstStep > 0) {
		b.WriteString("\n" + styleDim.Render(truncate(fmt.Sprintf("  after the key press: first preview (the noise) %s, first step %s",
			r.FirstPreview.Round(time.Millisecond), r.FirstStep.Round(time.Millisecond)), w)) + "\n")
	}
	return b.String()
}

// traceCLIPTokens draws a U-Net model's CLIP stages: 77-token chunks
// through each encoder, concatenated along the width.
func traceCLIPTokens(p *gen.Facts, r *runRec, stage func(name, shape, detail string), arrow func(op, t string), tm func(string) string, shown []string, chunks, hid int) {
	chunkNote := ""
	if chunks > 1 {
		chunkNote = fmt.Sprintf(", over 75: split into %d chunks", chunks)
	}
	stage("tokens", fmt.Sprintf("[1, %d] ids", 77*chunks), fmt.Sprintf("%d tokens%s: %s", r.PromptTokens, chunkNote, strings.Join(shown, " ")))
	arrow(fmt.Sprintf("text encoder ×2 (%s, clip skip %d)", strings.Join(p.Encoders, " + "), max(r.Settings.ClipSkip, 1)), tm("text_encoder"))
	stage("embeddings", fmt.Sprintf("[1, %d, %d] ×2", 77*chunks, hid), "prompt + negative prompt")
}

// traceTokenStreams draws the token streams of a T5 family: SD3's CLIP-L
// and CLIP-G (penultimate states side by side, zero-padded to T5's width)
// followed along the sequence by T5's tokens; Flux's T5 tokens as the
// context with CLIP-L giving only the pooled vector.
func traceTokenStreams(p *gen.Facts, r *runRec, stage func(name, shape, detail string), arrow func(op, t string), tm func(string) string, shown string) {
	msl, hid := p.MaxSequenceLength, p.TextHidden
	t5 := fmt.Sprintf("%d tokens with </s>", r.PromptT5Tokens)
	if r.PromptT5Tokens > msl {
		t5 += fmt.Sprintf(", truncated to %d", msl)
	} else {
		t5 += fmt.Sprintf(", padded to %d", msl)
	}
	if len(p.Encoders) > 2 {
		arrow("tokenize (CLIP BPE ×2, T5 SentencePiece)", tm("tokenize"))
		stage("CLIP-L/G", "[1, 77] ids ×2", fmt.Sprintf("%d tokens: %s", r.PromptTokens, shown))
		stage("T5", fmt.Sprintf("[1, %d] ids", msl), t5)
		arrow(fmt.Sprintf("text encoders (%s)", strings.Join(p.Encoders, " + ")), tm("text_encoder"))
		stage("embeddings", fmt.Sprintf("[1, 77+%d=%d, %d] ×2", msl, 77+msl, hid), "CLIP-L‖CLIP-G penultimate, zero-padded to T5's width, then T5's tokens; pooled L‖G")
		return
	}
	arrow("tokenize (CLIP BPE, T5 SentencePiece)", tm("tokenize"))
	stage("CLIP-L", "[1, 77] ids", fmt.Sprintf("%d tokens, pooled vector only: %s", r.PromptTokens, shown))
	stage("T5", fmt.Sprintf("[1, %d] ids", msl), t5)
	arrow(fmt.Sprintf("text encoders (%s)", strings.Join(p.Encoders, " + ")), tm("text_encoder"))
	stage("embeddings", fmt.Sprintf("[1, %d, %d]", msl, hid), "T5's tokens are the context; CLIP-L's pooled vector conditions the time embedding")
}

func first(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return xs[0]
}
