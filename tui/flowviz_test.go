package tui

import (
	"image"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/charmbracelet/x/ansi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/sampler"
)

// folderLoad loads a golden-wave3 diffusers folder on the reference device.
func folderLoad(t testing.TB, name string) LoadFunc {
	dir := filepath.Join(golden.Wave(t, "golden-wave3"), name)
	return func(func(string)) (gpu.Device, *models.Pipeline, error) {
		dev := ref.New()
		p, err := models.Load(dev, dir, "")
		return dev, p, err
	}
}

// flowChart opens the schedule chart on a golden flow model with the
// golden end-to-end call's settings (64x64, 20 steps, euler) and waits for
// the edited settings' plan; it returns the golden sigmas.
func flowChart(t *testing.T, folder, e2e string, cfg float64) (*harness, []float64) {
	w3 := golden.Wave(t, "golden-wave3")
	s := testSettings()
	s.Steps, s.CFGScale, s.Sampler, s.Schedule = 20, cfg, "euler", ""
	h := newHarness(t, s, folderLoad(t, folder))
	require.NotNil(t, h.m.model, h.m.status)
	h.keys("alt+2")
	require.Equal(t, stateSchedule, h.m.state)
	h.waitFor("the flow plan", func() bool { return h.m.sv.shift.Shift > 0 || strings.Contains(h.m.sv.what, "sampler") })
	g := golden.Open(t, filepath.Join(w3, e2e+".safetensors"))
	want, _ := g.F64("sigmas")
	return h, want
}

// SD3's chart is the flow sigma with its static shift 3, not a beta
// curve: the plan's marks are the golden scheduler's sigmas (diffusers
// 0.29.2, lower end shifted twice), placed where the shifted curve
// reaches them.
func TestFlowScheduleChartSD3(t *testing.T) {
	h, want := flowChart(t, "sd3-mini", "sd3_e2e_flowmatch_seed42", 7)
	v := &h.m.sv
	require.True(t, v.flow)
	assert.Equal(t, sampler.FlowShift{Shift: 3}, v.shift)
	require.Len(t, v.marks.Sigmas, 20)
	for i, s := range v.marks.Sigmas {
		// Scheduler quantities, the golden README: rel 1e-6.
		assert.InDelta(t, want[i], s, 1e-6*want[i], "sigma %d", i)
	}
	require.Len(t, v.curves[0], 1000)
	for _, tt := range []int{0, 99, 499, 999} {
		u := float64(tt+1) / 1000
		// float32 curve: 1e-7.
		assert.InDelta(t, 3*u/(1+2*u), float64(v.curves[0][tt]), 1e-7, "t=%d", tt)
		assert.InDelta(t, u, float64(v.curves[1][tt]), 1e-7, "t=%d", tt)
	}
	assert.Nil(t, v.curves[2])
	// sigma 1 sits at t=999; the last, 0.0089286, where 3u/(1+2u) equals
	// it: u = s/(3-2s).
	assert.InDelta(t, 999, v.markT(0), 1e-9)
	last := v.marks.Sigmas[19]
	// float64 inversion: 1e-9.
	assert.InDelta(t, last/(3-2*last)*1000-1, v.markT(19), 1e-9)
	out := ansi.Strip(h.view())
	for _, s := range []string{"flow σ_t (x_t = (1-σ)·x0 + σ·ε)", "σ(t) shifted, shift 3 (model)", "σ = t/T unshifted", "edited settings: euler, 20 steps", "σ: 1 "} {
		assert.Contains(t, out, s)
	}
	assert.NotContains(t, out, "scaled_linear")
	h.keys("s")
	assert.Contains(t, ansi.Strip(h.view()), "log SNR = 2·ln((1-σ)/σ)")
	// float64: 1e-12.
	assert.InDelta(t, 2*math.Log(0.5/0.5), v.value(0.5), 1e-12)
	assert.InDelta(t, 2*math.Log(0.75/0.25), v.value(0.25), 1e-12)
}

// Flux's chart follows the dynamic shift for the image's size: mu =
// 0.459375 at 16 tokens (64x64, golden README), the golden sigmas marked.
func TestFlowScheduleChartFluxDynamic(t *testing.T) {
	h, want := flowChart(t, "flux-mini", "flux_dev_e2e_g3.5_seed42", 1)
	v := &h.m.sv
	require.True(t, v.flow)
	assert.True(t, v.shift.Dynamic)
	assert.Equal(t, 16, v.shift.SeqLen)
	// float64 calculate_shift: 1e-12.
	assert.InDelta(t, 0.459375, v.shift.Mu, 1e-12)
	assert.InDelta(t, math.Exp(0.459375), v.shift.Shift, 1e-12)
	require.Len(t, v.marks.Sigmas, 20)
	for i, s := range v.marks.Sigmas {
		// rel 1e-6 (README).
		assert.InDelta(t, want[i], s, 1e-6*want[i], "sigma %d", i)
	}
	assert.Contains(t, ansi.Strip(h.view()), "σ(t) shifted, dynamic μ=0.459 (e^μ=1.583 at 16 tokens) (model)")
}

// The forward player captions a flow model's frames with the straight
// line and its sigma, a VP model's with q(x_t|x0) and alpha_bar.
func TestForwardCaptionFlow(t *testing.T) {
	s := testSettings()
	m := New(Options{Settings: &s})
	img := image.NewRGBA(image.Rect(0, 0, 2, 2))
	v := &forwardView{fwd: []*image.RGBA{img, img}, t: []int{0, 999}, ab: []float64{1, 0}, sigma: []float64{0.003, 1}, pos: 1}
	_, c := v.current(m)
	assert.Equal(t, "forward  straight line x_t = (1-σ)·x0 + σ·ε   t=999  σ=1.0000  1-σ=0.0000", c)
	v.sigma, v.ab = nil, []float64{0.9, 0.25}
	_, c = v.current(m)
	assert.Equal(t, "forward  q(x_t|x0) = N(√ᾱ·x0, (1-ᾱ)·I)   t=999  ᾱ=0.2500  √ᾱ=0.500  √(1-ᾱ)=0.866", c)
}

// traceRun generates the golden prompt on a golden flow model (64x64, 2
// steps) and opens the pipeline trace.
func traceRun(t *testing.T, folder string, cfg float64) (*harness, string) {
	s := testSettings()
	s.Steps, s.CFGScale, s.Sampler, s.Schedule = 2, cfg, "euler", ""
	h := newHarness(t, s, folderLoad(t, folder))
	require.NotNil(t, h.m.model, h.m.status)
	h.typeText("a photograph of an astronaut riding a horse")
	r := h.finishRun()
	require.Equal(t, runDone, r.Status, h.m.status)
	h.m.state, h.m.focus = stateMain, focusTimeline
	h.keys("5")
	require.Equal(t, stateTrace, h.m.state)
	return h, ansi.Strip(h.view())
}

// SD3's trace shows its three token streams: CLIP-L/G's 77, T5's 15 (the
// golden pieces of the prompt + </s>) padded to 256, joined along the
// sequence (333) and with the 16 image patches of the 8x8 latent.
func TestTraceTokenStreamsSD3(t *testing.T) {
	h, out := traceRun(t, "sd3-mini", 7)
	assert.Equal(t, 15, h.last().PromptT5Tokens)
	for _, s := range []string{
		"CLIP-L/G     [1, 77] ids ×2 · 8 tokens: a photograph of an astronaut riding a horse",
		"T5           [1, 256] ids · 15 tokens with </s>, padded to 256",
		"embeddings   [1, 77+256=333, 96] ×2",
		"joined       349 tokens · 333 text + 16 image",
		"transformer ×2 steps",
	} {
		assert.Contains(t, out, s)
	}
	assert.NotContains(t, out, "U-Net")
}

// Flux's trace: CLIP-L gives only the pooled vector, T5's 512 tokens are
// the context, joined with the 16 packed image tokens.
func TestTraceTokenStreamsFlux(t *testing.T) {
	h, out := traceRun(t, "flux-mini", 1)
	assert.Equal(t, 15, h.last().PromptT5Tokens)
	for _, s := range []string{
		"CLIP-L       [1, 77] ids · 8 tokens, pooled vector only",
		"T5           [1, 512] ids · 15 tokens with </s>, padded to 512",
		"embeddings   [1, 512, 96]",
		"joined       528 tokens · 512 text + 16 image",
	} {
		assert.Contains(t, out, s)
	}
}

// Flux's distilled guidance from a preset or an opened PNG survives the
// editor into the run's settings (and so its infotext).
func TestDistilledGuidanceCarried(t *testing.T) {
	s := testSettings()
	g := 2.5
	s.DistilledGuidance = &g
	got, err := newEditor(s, "").settings()
	require.NoError(t, err)
	require.NotNil(t, got.DistilledGuidance)
	assert.Equal(t, 2.5, *got.DistilledGuidance)
}

// A flow model's chart needs the run's plan: a sampler that cannot
// sample flow says so instead of a curve.
func TestFlowScheduleChartRefusedSampler(t *testing.T) {
	s := testSettings()
	s.Steps, s.CFGScale, s.Sampler, s.Schedule = 4, 7, "DDIM", ""
	h := newHarness(t, s, folderLoad(t, "sd3-mini"))
	require.NotNil(t, h.m.model, h.m.status)
	h.keys("alt+2")
	h.waitFor("the refusal", func() bool { return h.m.sv.err != nil })
	assert.Contains(t, ansi.Strip(h.view()), "cannot sample a flow-matching model")
	assert.Zero(t, h.m.sv.shift)
}
