package tui

import (
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

	h.run(m.loadModel(filepath.Join(dir, "if-mini-sr")))
	h.waitFor("the refused switch", func() bool { return !m.switching })
	assert.True(t, m.statusErr)
	assert.Contains(t, m.status, "cannot be the base model")
	assert.Equal(t, gen.IFFamily, m.model.Family, "the cascade stays loaded")
}
