package tui

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
)

// newIFHarness starts a studio on if-mini with if-mini-sr as its
// upscaler (stage II: 10 steps, cfg 4, noise level 250), on the
// reference device, as `stepwise --model if-mini --upscaler if-mini-sr`.
func newIFHarness(t *testing.T, dir string, s presets.Settings) *harness {
	t.Helper()
	xdg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg)
	h := &harness{t: t, msgs: make(chan tea.Msg, 4096), out: t.TempDir(), dir: filepath.Join(xdg, "stepwise", "presets")}
	open := func(func(string)) (gpu.Device, error) { return ref.New(), nil }
	h.m = New(Options{Load: func(func(string)) (gpu.Device, *models.Pipeline, error) {
		return nil, nil, nil // not called: Model is loaded with Open
	}, Open: open, ModelLabel: "if-mini on ref", OutDir: h.out, Settings: &s, Color: render.NoColor,
		Model:     gen.ModelSpec{Path: filepath.Join(dir, "if-mini"), Upscaler: filepath.Join(dir, "if-mini-sr")},
		IFUpscale: gen.IFUpscale{Steps: 10, CFG: 4, NoiseLevel: 250}})
	h.m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	h.m.Start(func(msg tea.Msg) { h.msgs <- msg })
	t.Cleanup(h.m.Close)
	h.waitFor("model loaded", func() bool { return !h.m.loading })
	require.NotNil(t, h.m.model, "model did not load: %s", h.m.status)
	return h
}

// waitLong is waitFor with room for a cascade on the reference device of
// a loaded machine.
func (h *harness) waitLong(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.After(8 * time.Minute)
	for !cond() {
		select {
		case msg := <-h.msgs:
			h.update(msg)
		case <-deadline:
			h.t.Fatalf("timed out waiting for %s; status: %s", what, h.m.status)
		}
	}
}

// TestStudioIF: the studio runs if-mini and its upscaler as one run of 20
// frames (the boundary after frame 10) whose stage I image and final
// image equal models.IF's Stage1 and Stage2 chained, exactly; scrubbing
// to frame 5 shows stage I's 5th step's pixels; the step counter and the
// timeline show the stage; a branch from frame 12 with the same settings
// reproduces the run; the trace shows the cascade.
func TestStudioIF(t *testing.T) {
	dir := golden.Wave(t, "golden-wave4")
	s := presets.Default()
	s.Prompt, s.NegativePrompt = "a photograph of an astronaut riding a horse", ""
	s.Seed, s.Steps, s.CFGScale, s.Width, s.Height = 42, 10, 7, 16, 16
	h := newIFHarness(t, dir, s)
	m := h.m
	assert.Equal(t, gen.IFFamily, m.model.Family)
	assert.Equal(t, 16, m.model.NativeSize)

	h.keys("ctrl+g")
	require.Len(t, m.runs, 1)
	r := m.runs[0]
	h.waitLong("the IF run", func() bool { return r.Status > runRunning })
	require.Equal(t, runDone, r.Status, "run: %v", r.Err)
	require.Len(t, r.Frames, 20)
	assert.Equal(t, 10, r.Boundary)
	for i, f := range r.Frames {
		want := 1
		if i >= 10 {
			want = 2
		}
		assert.Equal(t, want, f.Stage, "frame %d", i+1)
	}

	// The same cascade called directly on another reference device.
	dev := ref.New()
	defer dev.Close()
	p, err := models.LoadIF(dev, filepath.Join(dir, "if-mini"))
	require.NoError(t, err)
	defer p.Release()
	require.NoError(t, p.LoadUpscaler(filepath.Join(dir, "if-mini-sr")))
	o := models.IFOptions{Prompt: s.Prompt, Steps: 10, CFG: 7, Seed: 42, UpscalerSteps: 10, UpscalerCFG: 4, NoiseLevel: 250}
	var steps1 []models.IFStep
	low, err := p.Stage1(o, func(x models.IFStep) { steps1 = append(steps1, x) })
	require.NoError(t, err)
	assert.Equal(t, models.IFImage(low, 16, 16).Pix, r.Frames[9].XT.Pix, "stage I's final image")
	// Scrub to frame 5: stage I's 5th image, and the counter says so.
	h.keys("home")
	for i := 0; i < 5; i++ {
		h.keys(".")
	}
	require.Equal(t, 4, m.frame)
	if m.showX0 { // the pane starts on the predicted x0
		pic, _ := m.shown(r)
		assert.Equal(t, models.IFImage(steps1[4].X0, 16, 16).Pix, pic.Pix, "frame 5's predicted x0")
		h.keys("x")
	}
	require.False(t, m.showX0)
	pic, what := m.shown(r)
	assert.Equal(t, models.IFImage(steps1[4].X, 16, 16).Pix, pic.Pix, "frame 5's x_t")
	assert.Contains(t, ifShownLabel(r, what), "pixels")
	h.mustView("stage I 5/10")
	for i := 0; i < 7; i++ {
		h.keys(".")
	}
	require.Equal(t, 11, m.frame)
	h.mustView("stage II 2/10", ifBoundaryGlyph)
	bar := m.timelineBar(r, 60)
	assert.Contains(t, bar, ifBoundaryGlyph, "the timeline marks the stage boundary")

	// Branch from frame 12 with the same settings: the run again.
	h.keys("b")
	br := h.last()
	require.Equal(t, r.ID, br.Parent)
	require.Equal(t, 11, br.At)
	h.waitLong("the branch", func() bool { return br.Status > runRunning })
	require.Equal(t, runDone, br.Status, "branch: %v", br.Err)
	require.Len(t, br.Frames, 20)
	assert.Equal(t, 10, br.Boundary)
	assert.Equal(t, r.Images[0].Pix, br.Images[0].Pix, "a branch with the same settings reproduces the run")

	// The trace shows the cascade, in order.
	m.cur = 0
	view := traceView(m, 200, 60)
	last := -1
	for _, name := range []string{"T5 tokens", "stage I U-Net", "stage I pixels", "noise level 250", "noised upscale", "stage II U-Net", "pixels"} {
		i := strings.Index(view[last+1:], name)
		if assert.GreaterOrEqual(t, i, 0, "the trace names %q after the previous stage:\n%s", name, view) {
			last += 1 + i
		}
	}
	assert.Contains(t, view, "[1, 3, 64, 64]")
}

// stepLabel counts the stage's steps for an IF run, the run's otherwise.
func TestStepLabelIF(t *testing.T) {
	r := &runRec{Boundary: 10}
	assert.Equal(t, "stage I 3/10", stepLabel(r, 3, 20))
	assert.Equal(t, "stage I 10/10", stepLabel(r, 10, 20))
	assert.Equal(t, "stage II 4/10", stepLabel(r, 14, 20))
	assert.Equal(t, "step 4/20", stepLabel(&runRec{}, 4, 20))
	rest, up, err := cutUpscaler(`if-mini --upscaler "if mini sr"`)
	require.NoError(t, err)
	assert.Equal(t, "if-mini ", rest)
	assert.Equal(t, "if mini sr", up)
	_, _, err = cutUpscaler("if-mini --upscaler")
	assert.ErrorContains(t, err, "needs a folder")
}

// The noise schedule view shows IF's cosine schedule as the model's, with
// the run's DDPM timesteps of both stages.
func TestScheduleViewIF(t *testing.T) {
	dir := golden.Wave(t, "golden-wave4")
	dev := ref.New()
	defer dev.Close()
	p, err := models.LoadIF(dev, filepath.Join(dir, "if-mini"))
	require.NoError(t, err)
	defer p.Release()
	require.NoError(t, p.LoadUpscaler(filepath.Join(dir, "if-mini-sr")))
	f := gen.FactsOfIF(p, "if-mini", gen.DefaultIFUpscale)
	s := presets.Default()
	r := newRunRec(1, s, -1, 0)
	r.Status, r.Boundary = runDone, 10
	for _, t := range []float64{900, 800, 700, 600, 500, 400, 300, 200, 100, 0, 900, 800} {
		r.Schedule.Timesteps = append(r.Schedule.Timesteps, t)
		r.Schedule.Sigmas = append(r.Schedule.Sigmas, 1)
		r.Schedule.Next = append(r.Schedule.Next, 1)
	}
	m := &Model{model: f, runs: []*runRec{r}}
	v := newScheduleView()
	assert.Nil(t, v.enter(m))
	require.NoError(t, v.err)
	assert.Equal(t, 2, v.model, "squaredcos_cap_v2 is the model's schedule")
	view := v.view(m, 100, 30)
	assert.Contains(t, view, "squaredcos_cap_v2 (model)")
	assert.Contains(t, view, "12 steps")
}

// Ctrl+N with "IF_FOLDER --upscaler SR_FOLDER" switches to the cascade;
// a stage II folder as the model is refused and the cascade stays.
func TestSwitchToIF(t *testing.T) {
	dir := golden.Wave(t, "golden-wave4")
	h := newMini(t)
	m := h.m
	require.NotEqual(t, gen.IFFamily, m.model.Family)
	h.run(m.loadModel(filepath.Join(dir, "if-mini") + " --upscaler " + filepath.Join(dir, "if-mini-sr")))
	h.waitFor("the switch", func() bool { return !m.switching })
	require.NotNil(t, m.model)
	require.Equal(t, gen.IFFamily, m.model.Family, "status: %s", m.status)
	require.NotNil(t, m.model.IF)
	assert.Equal(t, "if-mini-sr", m.model.IF.Upscaler)
	assert.Equal(t, "16", m.ed.width.Value(), "the size is the cascade's native one")
	assert.True(t, m.ed.ifUp.on, "the stage II fields are shown")
	h.mustView("Up steps", "Noise lvl")

	h.run(m.loadModel(filepath.Join(dir, "if-mini-sr")))
	h.waitFor("the refused switch", func() bool { return !m.switching })
	assert.True(t, m.statusErr)
	assert.Contains(t, m.status, "cannot be the base model")
	assert.Equal(t, gen.IFFamily, m.model.Family, "the cascade stays loaded")
}

// The stage II fields: shown with the cascade's settings, checked as they
// are typed, and taken by the next run (its images equal a gen.Session's
// run with those settings), written to its PNG text and read back when
// the PNG is opened; a branch at a stage II frame with another noise
// level equals gen.Session's BranchIF with it.
func TestStudioIFStageIIFields(t *testing.T) {
	dir := golden.Wave(t, "golden-wave4")
	s := presets.Default()
	s.Prompt, s.NegativePrompt = "a photograph of an astronaut riding a horse", ""
	s.Seed, s.Steps, s.CFGScale, s.Width, s.Height = 42, 2, 7, 16, 16
	h := newIFHarness(t, dir, s)
	m := h.m
	require.True(t, m.ed.ifUp.on, "a cascade with an upscaler shows the stage II fields")
	h.mustView("Up steps", "Up CFG", "Noise lvl", "of 0..999")
	assert.Equal(t, "10", m.ed.ifUp.steps.Value(), "the command line's stage II settings")
	assert.Equal(t, "4", m.ed.ifUp.cfg.Value())
	assert.Equal(t, "250", m.ed.ifUp.noise.Value())

	// Bad values are named as they are typed, and no run starts.
	for _, c := range []struct {
		f       focus
		v, want string
	}{
		{focusUpSteps, "0", "upscaler steps 0: want 1..1000"},
		{focusUpSteps, "1001", "upscaler steps 1001: want 1..1000"},
		{focusUpSteps, "x", `upscaler steps: "x" is not a whole number`},
		{focusUpCFG, "nan", `upscaler cfg scale: "nan" is not a finite number`},
		{focusUpCFG, "-1", "upscaler cfg scale -1: want a number >= 0"},
		{focusNoiseLevel, "1000", "noise level 1000: want 0..999"},
		{focusNoiseLevel, "2.5", `noise level: "2.5" is not a whole number`},
	} {
		old := m.ed.field(c.f).Value()
		h.setField(c.f, c.v)
		assert.Equal(t, c.want, m.problem(), "%s %q", focusLabels[c.f], c.v)
		h.keys("ctrl+g")
		assert.Empty(t, m.runs, "%s %q: no run", focusLabels[c.f], c.v)
		assert.Contains(t, m.status, "not generating: "+c.want)
		h.setField(c.f, old)
	}
	require.Empty(t, m.problem())
	h.setField(focusUpCFG, "3")
	h.keys("left", "left") // the slider: 2
	assert.Equal(t, "2", m.ed.ifUp.cfg.Value())
	h.setField(focusNoiseLevel, "99")
	h.keys("up") // 100
	h.setField(focusUpSteps, "2")

	h.keys("ctrl+g")
	require.Len(t, m.runs, 1)
	r := m.runs[0]
	h.waitLong("the IF run", func() bool { return r.Status > runRunning })
	require.Equal(t, runDone, r.Status, "run: %v", r.Err)
	require.Len(t, r.Frames, 4, "2 steps of stage I, 2 of stage II")
	up := gen.IFUpscale{Steps: 2, CFG: 2, NoiseLevel: 100}
	require.NotNil(t, r.IFUp)
	assert.Equal(t, up, *r.IFUp)

	// The same run in a gen.Session of its own.
	sess := gen.NewSession(nil, func(func(string)) (gpu.Device, error) { return ref.New(), nil })
	defer sess.Close()
	sess.IFUpscale = up
	_, _, err := sess.SwitchModel(gen.ModelSpec{Path: filepath.Join(dir, "if-mini"), Upscaler: filepath.Join(dir, "if-mini-sr")}, nil)
	require.NoError(t, err)
	direct, err := sess.Start(1, r.Settings)
	require.NoError(t, err)
	dimgs, err := sess.Finish(context.Background(), direct, nil)
	require.NoError(t, err)
	assert.Equal(t, dimgs[0].Pix, r.Images[0].Pix, "the run takes the edited stage II settings")
	assert.Contains(t, traceView(m, 200, 60), "noise level 100")

	// Its PNG text names them.
	h.keys("ctrl+x")
	h.waitFor("export", func() bool { return len(m.exported) == 1 })
	text, err := render.ReadPNGTextFile(m.exported[0])
	require.NoError(t, err)
	assert.Contains(t, text["parameters"], "Upscaler steps: 2, Upscaler CFG scale: 2, Noise level: 100")

	// A branch at frame 3 (stage II's first step) with noise level 50.
	h.setField(focusNoiseLevel, "50")
	for m.focus != focusTimeline {
		h.keys("tab")
	}
	h.keys("home", ".", ".", ".")
	require.Equal(t, 2, m.frame)
	h.keys("b")
	br := h.last()
	require.Equal(t, r.ID, br.Parent)
	h.waitLong("the branch", func() bool { return br.Status > runRunning })
	require.Equal(t, runDone, br.Status, "branch: %v", br.Err)
	require.Len(t, br.Frames, 4)
	up50 := up
	up50.NoiseLevel = 50
	assert.Equal(t, up50, *br.IFUp)
	dbr, err := sess.BranchIF(2, 1, 2, r.Settings, up50)
	require.NoError(t, err)
	bimgs, err := sess.Finish(context.Background(), dbr, nil)
	require.NoError(t, err)
	assert.Equal(t, bimgs[0].Pix, br.Images[0].Pix, "the branch is gen.Session's BranchIF at noise level 50")
	assert.NotEqual(t, r.Images[0].Pix, br.Images[0].Pix, "another noise level, another image")

	// Opening the first run's PNG fills the fields again.
	h.setField(focusUpSteps, "7")
	h.setField(focusUpCFG, "9")
	h.keys("ctrl+o")
	h.typeText(m.exported[0])
	h.keys("enter")
	h.waitFor("open", func() bool { return strings.Contains(m.status, "settings from") || m.statusErr })
	require.False(t, m.statusErr, m.status)
	assert.Equal(t, "2", m.ed.ifUp.steps.Value())
	assert.Equal(t, "2", m.ed.ifUp.cfg.Value())
	assert.Equal(t, "100", m.ed.ifUp.noise.Value())
	// A PNG with a malformed value keeps that field and says so.
	assert.Error(t, m.ed.ifUp.setParams(map[string]string{"Noise level": "lots", "Upscaler steps": "5"}))
	assert.Equal(t, "5", m.ed.ifUp.steps.Value())
	assert.Equal(t, "100", m.ed.ifUp.noise.Value())
}

// Without a DeepFloyd IF cascade and its upscaler the stage II fields are
// not in the form: not drawn, not reached by tab, not checked.
func TestIFFieldsHiddenForOtherModels(t *testing.T) {
	h := newMini(t)
	m := h.m
	require.False(t, m.ed.ifUp.on)
	v := h.view()
	for _, s := range []string{"Up steps", "Up CFG", "Noise lvl"} {
		assert.NotContains(t, v, s)
	}
	l := layoutForm(40, m.ed)
	for _, f := range []focus{focusUpSteps, focusUpCFG, focusNoiseLevel} {
		assert.Equal(t, -1, l.rows[f], "%s has no row", focusLabels[f])
	}
	assert.Equal(t, l.rows[focusRNG]+1, l.rows[focusOutDir], "the folder follows the RNG")
	m.focus = focusRNG
	h.keys("tab")
	assert.Equal(t, focusOutDir, m.focus, "tab skips the hidden fields")
	h.keys("shift+tab")
	assert.Equal(t, focusRNG, m.focus)
	m.ed.ifUp.noise.SetValue("5000")
	assert.Empty(t, m.problem(), "hidden fields are not checked")
	up, err := m.stageII()
	assert.NoError(t, err)
	assert.Nil(t, up)

	// Stage I alone (no upscaler) hides them too.
	f := &gen.Facts{IF: &gen.IFFacts{Factor: 4}}
	m.ed.setModel(f)
	assert.False(t, m.ed.ifUp.on)
	f.IF.Upscaler, f.IF.NoisingTimesteps, f.IF.Upscale = "sr", 1000, gen.IFUpscale{Steps: 3, CFG: 5, NoiseLevel: 7}
	m.ed.setModel(f)
	assert.True(t, m.ed.ifUp.on)
	assert.Equal(t, "7", m.ed.ifUp.noise.Value())
	m.focus = focusNoiseLevel
	m.model = &gen.Facts{}
	m.modelFields()
	assert.False(t, m.ed.ifUp.on)
	assert.Equal(t, focusPrompt, m.focus, "a hidden field gives the focus to the prompt")
}
