package tui

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
)

func samePixels(a, b []byte) bool { return bytes.Equal(a, b) }

// TestGeneratePauseStepScrubBranch drives one session: edit the prompt,
// generate, pause, step once, scrub, toggle x0, resume, then branch twice
// from the same frame: with unchanged settings (which must reproduce the
// parent exactly) and with another guidance scale (which must not).
func TestGeneratePauseStepScrubBranch(t *testing.T) {
	h := newMini(t)
	m := h.m

	// Edit the prompt: typing, a pasted word, backspace.
	h.keys("a", " ", "r", "e", "d")
	h.typeText(" foxx")
	h.keys("backspace")
	require.Equal(t, "a red fox", m.ed.prompt.Value(), "prompt")
	h.mustView("a red fox", "ctrl+g generate")

	// Generate and pause at once: the worker may take at most the step it
	// had begun.
	h.keys("ctrl+g", "space")
	require.Equal(t, 1, len(m.runs), "after ctrl+g space: runs")
	require.Equal(t, focusTimeline, m.focus, "after ctrl+g space: focus")
	require.True(t, m.paused, "after ctrl+g space: not paused")
	r := m.runs[0]
	h.waitFor("run start", func() bool { return r.Status == runRunning })
	require.NotNil(t, r.Noise, "no preview of the initial noise before the first step")
	require.Greater(t, r.FirstPreview, time.Duration(0), "no preview of the initial noise before the first step")
	t.Logf("first preview %s after ctrl+g (mini model, ref device)", r.FirstPreview)
	// The UI's CPU preview of the noise is the worker's initial latent.
	quick, ok := noisePreview(m.model, r.ID, r.Settings)().(noiseMsg)
	require.True(t, ok, "the quick noise preview is not a noiseMsg")
	require.Equal(t, 1, len(h.started), "runs started")
	require.True(t, samePixels(quick.Noise.Pix, h.started[0].Noise.Pix), "the quick noise preview differs from the run's initial noise")
	h.drain(400 * time.Millisecond)
	n0 := len(r.Frames)
	require.LessOrEqual(t, n0, 1, "paused run took %d steps", n0)
	h.mustView("run 1", "paused", fmt.Sprintf("step %d/3", n0))

	// Step exactly one.
	h.keys(".")
	h.waitFor("one step", func() bool { return len(r.Frames) == n0+1 })
	h.drain(400 * time.Millisecond)
	require.Equal(t, n0+1, len(r.Frames), "after one step: frames")
	require.Equal(t, n0, m.frame, "after one step: frame on screen")
	f := r.Frames[n0]
	require.Equal(t, n0, f.Index, "frame index")
	require.Equal(t, 3, f.Total, "frame total")
	require.NotNil(t, f.XT, "frame x_t")
	require.NotNil(t, f.X0, "frame x0")
	require.Greater(t, f.Sigma, 0.0, "frame sigma")
	h.mustView(fmt.Sprintf("step %d/3", n0+1), fmt.Sprintf("σ %.3f", f.Sigma), "it/s", "predicted x0 (latent preview)")

	// Scrub back to the noise and toggle to the noisy x_t.
	h.keys(",")
	require.Equal(t, n0-1, m.frame, "scrub back: frame")
	h.keys("home")
	h.mustView("initial noise x_T")
	h.keys(".", "x")
	h.mustView("x_t (latent preview)")
	h.keys("x")

	// Decode the frame on screen with the VAE.
	h.keys("v")
	h.waitFor("VAE decode", func() bool { return r.decoded[decodeKey{m.frame, true}].img != nil || m.statusErr })
	b := r.decoded[decodeKey{m.frame, true}].img.Bounds()
	require.Equal(t, 64, b.Dx(), "decoded frame is %v", b)
	h.mustView("predicted x0 (VAE)")

	// Keys typed faster than they are read come as one message.
	h.update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(",.")})
	require.Equal(t, 0, m.frame, "\",.\" in one message: frame")

	// Resume to the end.
	h.keys("space")
	h.waitRun(r)
	require.Equal(t, runDone, r.Status, "run 1: %s (%s)", runStatusNames[r.Status], m.status)
	require.Equal(t, 3, len(r.Frames), "run 1: frames")
	require.Equal(t, 1, len(r.Images), "run 1: images")
	b = r.Images[0].Bounds()
	require.Equal(t, 64, b.Dx(), "final image %v, want 64x64", b)
	require.Equal(t, 64, b.Dy(), "final image %v, want 64x64", b)
	require.Equal(t, int64(42), r.Settings.Seed, "run settings")
	require.Equal(t, "a red fox", r.Settings.Prompt, "run settings")
	h.keys("end")
	h.mustView("final image (VAE)", "done in", "history [#1✓]")

	// Branch at step 1 with the same settings: a deterministic sampler
	// must give the parent's frames and image exactly.
	h.keys("home", ".")
	require.Equal(t, 0, m.frame, "frame")
	h.keys("b")
	same := h.last()
	require.Equal(t, r.ID, same.Parent, "branch: parent")
	require.Equal(t, 0, same.At, "branch: at")
	require.Equal(t, 1, same.Inherited, "branch: inherited")
	h.waitRun(same)
	require.Equal(t, runDone, same.Status, "branch: %s: %s", runStatusNames[same.Status], m.status)
	require.Equal(t, 3, len(same.Frames), "branch: frames: %s", m.status)
	assert.True(t, samePixels(same.Images[0].Pix, r.Images[0].Pix), "a branch with unchanged settings changed the image")
	h.mustView("branch of 1 at step 1", "#2←1@1✓")

	// Branch at step 1 with guidance 1: the steps after it differ.
	h.keys("home", ".", "[")
	require.True(t, m.runs[m.cur] == r, "[ while scrubbing: run %d, want run 1", m.runs[m.cur].ID)
	require.Equal(t, 0, m.frame, "[ while scrubbing: frame, want the same step")
	h.setField(focusCFG, "1")
	h.keys("shift+tab", "shift+tab", "shift+tab")
	require.Equal(t, focusTimeline, m.focus, "focus, want the timeline")
	h.keys("home", ".", "b")
	low := h.last()
	h.waitRun(low)
	require.Equal(t, runDone, low.Status, "cfg-1 branch: %s", runStatusNames[low.Status])
	require.Equal(t, 1.0, low.Settings.CFGScale, "cfg-1 branch: cfg")
	require.Equal(t, r.ID, low.Parent, "cfg-1 branch: parent")
	assert.Same(t, r.Frames[0].X0, low.Frames[0].X0, "the branch does not start from its parent's frame")
	assert.False(t, samePixels(low.Images[0].Pix, r.Images[0].Pix), "guidance 1 from step 2 on gave the same image as guidance 7.5")
	assert.Equal(t, runDone, r.Status, "the parent changed: %s", runStatusNames[r.Status])
	assert.Equal(t, 3, len(r.Frames), "the parent changed: frames")
	assert.Equal(t, 3, len(m.runs), "runs in history")
	// The branch keeps its parent's seed whatever the editor shows, and
	// the trace counts only its own steps (guidance 1: one row a call).
	assert.Equal(t, r.Settings.Seed, low.Settings.Seed, "branch seed, parent's")
	h.keys("alt+5")
	h.mustView("x at step 1", "branched from run 1", "U-Net ×2 steps, 2 calls on [1, 4, 8, 8]")
}

// TestPresetsSaveLoadRenameDelete saves the edited settings, changes them,
// loads the preset back, renames and deletes it; a corrupted file is
// reported while the others still load.
func TestPresetsSaveLoadRenameDelete(t *testing.T) {
	h := newMini(t)
	m := h.m
	h.typeText("a lighthouse at dusk")
	h.setField(focusSteps, "7")
	h.keys("ctrl+s")
	require.NotNil(t, m.modal, "ctrl+s opened no dialog")
	h.mustView("Save preset as")
	h.typeText("dusk")
	h.keys("enter")
	h.waitFor("save", func() bool { return strings.Contains(m.status, "saved preset dusk") })
	data, err := os.ReadFile(filepath.Join(h.dir, "dusk.toml"))
	require.NoError(t, err)
	s, err := presets.DecodePreset(data)
	require.NoError(t, err, "saved preset")
	require.Equal(t, "a lighthouse at dusk", s.Prompt, "saved preset")
	require.Equal(t, 7, s.Steps, "saved preset")
	require.NoError(t, os.WriteFile(filepath.Join(h.dir, "broken.toml"), []byte("steps = [oops"), 0o644))

	h.setField(focusPrompt, "something else")
	h.setField(focusSteps, "2")
	h.keys("ctrl+p")
	h.waitFor("preset list with the broken file", func() bool { return len(m.pv.errs) > 0 })
	require.Equal(t, statePresets, m.state, "state")
	require.Len(t, m.pv.errs, 1, "preset list errors")
	require.ErrorContains(t, m.pv.errs[0], "broken.toml")
	h.mustView("Presets", "dusk", "(built-in)", "broken.toml")
	sel := -1
	for i, p := range m.pv.list {
		if p.Name == "dusk" {
			sel = i
		}
	}
	require.GreaterOrEqual(t, sel, 0, "dusk not listed")
	for m.pv.sel < sel {
		h.keys("down")
	}
	h.keys("enter")
	require.NotNil(t, m.modal, "the saved preset's prompts differ from the typed ones: it asks")
	h.keys("r") // replace them
	require.Equal(t, stateMain, m.state, "after loading: state")
	require.Equal(t, "a lighthouse at dusk", m.ed.prompt.Value(), "after loading: prompt")
	require.Equal(t, "7", m.ed.steps.Value(), "after loading: steps")

	// Rename, then delete (d twice).
	h.keys("ctrl+p")
	h.waitFor("preset list", func() bool { return m.state == statePresets && len(m.pv.list) > 0 })
	h.keys("r")
	h.mustView("Rename preset dusk to")
	h.keys("ctrl+u")
	h.typeText("dawn")
	h.keys("enter")
	h.waitFor("rename", func() bool { return strings.Contains(m.status, "renamed dusk to dawn") })
	h.waitFor("list", func() bool {
		for _, p := range m.pv.list {
			if p.Name == "dawn" {
				return true
			}
		}
		return false
	})
	_, err = os.Stat(filepath.Join(h.dir, "dawn.toml"))
	require.NoError(t, err)
	h.keys("d")
	_, err = os.Stat(filepath.Join(h.dir, "dawn.toml"))
	require.NoError(t, err, "one d deleted the preset")
	h.keys("d")
	h.waitFor("delete", func() bool { return strings.Contains(m.status, "deleted preset dawn") })
	_, err = os.Stat(filepath.Join(h.dir, "dawn.toml"))
	require.ErrorIs(t, err, os.ErrNotExist, "dawn.toml still there")

	// Import an A1111 styles.csv and merge a style into the prompt.
	csv := filepath.Join(t.TempDir(), "styles.csv")
	require.NoError(t, os.WriteFile(csv, []byte("name,prompt,negative_prompt\nnoir,\"{prompt}, film noir\",colour\n"), 0o644))
	h.keys("i")
	h.typeText("'" + csv + "'")
	h.keys("enter")
	h.waitFor("styles", func() bool { return len(m.pv.styles) == 1 })
	h.mustView("style: noir")
	for m.pv.sel < len(m.pv.list) {
		h.keys("down")
	}
	h.keys("enter")
	assert.Equal(t, "a lighthouse at dusk, film noir", m.ed.prompt.Value(), "prompt after style")
}

// TestExportAndOpen exports the finished image and a mid-run frame, reads
// their parameters back, and opens the settings from the PNG.
func TestExportAndOpen(t *testing.T) {
	h := newMini(t)
	m := h.m
	h.typeText("an astronaut riding a horse")
	h.keys("ctrl+g")
	r := h.last()
	h.waitRun(r)
	h.keys("ctrl+x")
	h.waitFor("export", func() bool { return len(m.exported) == 1 })
	p1 := m.exported[0]
	assert.Equal(t, h.out, filepath.Dir(p1), "exported into the out folder")
	h.mustView("exported", filepath.Base(p1))
	text, err := render.ReadPNGTextFile(p1)
	require.NoError(t, err)
	s, _, err := presets.ParseInfotext(text["parameters"])
	require.NoError(t, err)
	assert.Equal(t, "an astronaut riding a horse", s.Prompt)
	assert.Equal(t, int64(42), s.Seed)
	assert.Equal(t, 3, s.Steps)
	assert.InDelta(t, 7.5, s.CFGScale, 0, "CFG read back exactly")
	assert.Equal(t, 64, s.Width)

	// The frame on screen (step 1, predicted x0 as shown by default),
	// decoded by the VAE; a second export never overwrites the first.
	m.exported = nil
	h.keys("home", ".", "ctrl+x")
	h.waitFor("export", func() bool { return len(m.exported) == 1 })
	p2 := m.exported[0]
	require.NotEqual(t, p1, p2, "a second export never overwrites the first")
	text2, err := render.ReadPNGTextFile(p2)
	require.NoError(t, err)
	assert.Contains(t, text2["parameters"], "Stepwise frame: 1/3 predicted x0")

	// Open the first PNG's settings after editing them away.
	h.setField(focusPrompt, "x")
	h.setField(focusSeed, "7")
	h.keys("ctrl+o")
	h.typeText(p1)
	h.keys("enter")
	h.waitFor("open", func() bool { return strings.Contains(m.status, "settings from") || m.statusErr })
	require.Equal(t, "an astronaut riding a horse", m.ed.prompt.Value(), "after open: prompt (%s)", m.status)
	require.Equal(t, "42", m.ed.seed.Value(), "after open: seed (%s)", m.status)
	require.True(t, m.ed.seedLocked, "after open: seed not locked (%s)", m.status)

	// Dropping the PNG onto the terminal (a bracketed paste of its path)
	// opens it too, from any field.
	h.setField(focusPrompt, "y")
	h.update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("'" + p1 + "'"), Paste: true})
	h.waitFor("open by drop", func() bool { return m.ed.prompt.Value() == "an astronaut riding a horse" || m.statusErr })
	require.False(t, m.statusErr, "drop: %s", m.status)

	// A PNG without parameters is refused with a message.
	plain := filepath.Join(t.TempDir(), "plain.png")
	require.NoError(t, render.WritePNG(plain, r.Images[0], nil, false))
	h.keys("ctrl+o")
	h.typeText(plain)
	h.keys("enter")
	h.waitFor("open error", func() bool { return m.statusErr })
	assert.Contains(t, m.status, "no \"parameters\"", "status")
}

// TestExplanationViews opens each of the four views on a finished run.
func TestExplanationViews(t *testing.T) {
	h := newMini(t)
	m := h.m
	h.typeText("a bowl of fruit")
	h.keys("ctrl+g")
	r := h.last()
	h.waitRun(r)

	// Noise schedule: the model's curve with the run's three timesteps.
	h.keys("alt+2")
	h.mustView("Noise schedule", "scaled_linear (model)", "run 1: euler, 3 steps")
	assert.Equal(t, 3+1, strings.Count(h.view(), "◆"), "◆ in the chart, want 3 marks and the legend") // 3 marks + the legend's
	h.keys("1")
	assert.False(t, m.sv.on[0], "1 did not hide the linear curve")
	h.mustView("○ linear")
	h.keys("s")
	h.mustView("log SNR")
	ab := m.sv.curves[1]
	if assert.Equal(t, 1000, len(ab), "scaled_linear alphas_cumprod: values") {
		assert.GreaterOrEqual(t, ab[0], float32(0.99), "scaled_linear alphas_cumprod: first")
		assert.LessOrEqual(t, ab[999], float32(0.01), "scaled_linear alphas_cumprod: last")
	}

	// Forward and reverse: 16 noised pictures from t=0 to 999, then the
	// three recorded frames.
	h.keys("alt+3")
	h.waitFor("forward frames", func() bool { return len(m.fv.fwd) > 0 || m.fv.err != nil })
	require.Equal(t, forwardFrames, len(m.fv.fwd), "forward: frames (%v)", m.fv.err)
	require.Equal(t, 0, m.fv.t[0], "forward: t %v", m.fv.t)
	require.Equal(t, 999, m.fv.t[forwardFrames-1], "forward: t %v", m.fv.t)
	for i := 1; i < len(m.fv.ab); i++ {
		require.Less(t, m.fv.ab[i], m.fv.ab[i-1], "alpha_bar not decreasing at %d: %v", i, m.fv.ab)
	}
	h.keys("space", "home")
	h.mustView("forward", "t=0", "ᾱ=")
	for i := 0; i < forwardFrames; i++ {
		h.keys("right")
	}
	h.mustView("reverse  step 1/3")
	h.keys("right", "right")
	h.mustView("reverse  step 3/3: the final image (VAE)")

	// Guidance sweep at 1, 3, 7.5, 12 with the run's seed; the slider
	// moves the highlight, and the 7.5 picture is the run's own image.
	h.keys("alt+4")
	h.waitFor("sweep", func() bool { return m.gv.filled == len(sweepScales) || m.gv.err != nil })
	require.NoError(t, m.gv.err)
	assert.True(t, samePixels(m.gv.imgs[2].Pix, r.Images[0].Pix), "the sweep at cfg 7.5 differs from the run at cfg 7.5 with the same seed")
	assert.False(t, samePixels(m.gv.imgs[0].Pix, m.gv.imgs[3].Pix), "cfg 1 and cfg 12 gave the same image")
	h.mustView("Guidance sweep", "seed 42", "▶ cfg 7.5")
	h.keys("up", "up", "up", "up", "up", "up", "up", "up", "up")
	require.Equal(t, "12", m.ed.cfg.Value(), "cfg after 9 nudges")
	h.mustView("▶ cfg 12")

	// Pipeline trace with the mini model's shapes.
	h.keys("alt+5")
	hid := m.model.TextHidden
	h.mustView("Pipeline trace", "a bowl of fruit", fmt.Sprintf("[1, 77, %d] ×2", hid), "[1, 4, 8, 8]",
		"U-Net ×3 steps, 3 calls on [2, 4, 8, 8]", "[1, 3, 64, 64]", "VAE decoder")
	assert.NotContains(t, h.view(), "</w>", "the trace shows raw BPE end-of-word marks")
	h.keys("esc")
	assert.Equal(t, stateMain, m.state, "esc left state")
}

// TestRefusedAndCancelled: invalid settings are refused with a message, a
// run is cancelled by esc and restarted by ctrl+g.
func TestRefusedAndCancelled(t *testing.T) {
	h := newMini(t)
	m := h.m
	// Before any run, the schedule chart marks the edited settings' steps.
	h.keys("alt+2")
	h.waitFor("schedule of the edited settings", func() bool { return len(m.sv.marks.Timesteps) > 0 })
	require.Len(t, m.sv.marks.Timesteps, 3, "marks for 3 steps")
	h.mustView("edited settings: euler, 3 steps")
	h.keys("alt+1")
	h.setField(focusWidth, "100")
	h.mustView("✗ width: 100 is not a multiple of 8")
	h.keys("ctrl+g")
	require.Equal(t, 0, len(m.runs), "width 100: runs")
	require.True(t, m.statusErr, "width 100: status %q is not an error", m.status)
	require.Contains(t, m.status, "multiple of 8", "width 100: status")
	h.setField(focusWidth, "64")
	h.setField(focusSteps, "many")
	h.keys("ctrl+g")
	require.Equal(t, 0, len(m.runs), "steps 'many': runs")
	require.Contains(t, m.status, "steps", "steps 'many': status")
	h.setField(focusSteps, "40")
	h.keys("ctrl+g")
	r := h.last()
	h.waitFor("a frame", func() bool { return len(r.Frames) > 0 })
	h.keys("esc")
	h.waitRun(r)
	require.Equal(t, runCancelled, r.Status, "after esc: %s", runStatusNames[r.Status])
	require.Less(t, len(r.Frames), 40, "after esc: frames")
	h.mustView("cancelled")

	// Ctrl+G while a run goes restarts it; the first stays in history.
	h.keys("ctrl+g")
	a := h.last()
	h.waitFor("a frame", func() bool { return len(a.Frames) > 0 })
	h.keys("ctrl+g")
	b := h.last()
	h.waitRun(a)
	require.NotSame(t, a, b, "restart: no new run")
	require.Equal(t, runCancelled, a.Status, "restart: first run %s", runStatusNames[a.Status])
	h.keys("esc")
	h.waitRun(b)
	assert.Equal(t, 3, len(m.runs), "runs")
}

// TestNoModel: a failed load shows its message and generation is refused.
func TestNoModel(t *testing.T) {
	h := newHarness(t, testSettings(), func(func(string)) (gpu.Device, *models.Pipeline, error) {
		return nil, nil, errors.New("no bundled model in this build yet; pass --model PATH")
	})
	h.mustView("no bundled model in this build yet")
	h.keys("ctrl+g")
	require.Equal(t, 0, len(h.m.runs), "runs; status %q", h.m.status)
	require.Contains(t, h.m.status, "no model loaded", "status")
	h.keys("alt+2")
	h.mustView("no model loaded")
}

// TestResizeAndChunks: the screen fills the terminal exactly at any size,
// and a long prompt is reported as chunked.
func TestResizeAndChunks(t *testing.T) {
	h := newMini(t)
	h.setField(focusSteps, "1")
	h.setField(focusPrompt, strings.Repeat("a very long prompt about many things ", 12))
	h.keys("ctrl+g")
	r := h.last()
	h.waitRun(r)
	require.GreaterOrEqual(t, r.Chunks, 2, "chunks for a long prompt")
	for _, sz := range [][2]int{{120, 40}, {80, 24}, {60, 16}, {30, 8}, {1, 1}} {
		h.update(teaSize(sz[0], sz[1]))
		v := h.m.View()
		lines := strings.Split(v, "\n")
		assert.Equal(t, sz[1], len(lines), "%dx%d: lines", sz[0], sz[1])
		for i, l := range lines {
			assert.LessOrEqual(t, lipgloss.Width(l), sz[0], "%dx%d: line %d is too wide: %q", sz[0], sz[1], i, ansi.Strip(l))
		}
	}
	h.update(teaSize(120, 40))
	h.mustView(fmt.Sprintf("split into %d chunks", r.Chunks))
	h.keys("?")
	h.mustView("ctrl+s", "save preset", "open PNG settings", "branch here with edits", "apply at the next ctrl+g (mid-run: restarts)")
	h.keys("esc")
	assert.False(t, h.m.help.ShowAll, "esc did not close the full help")
}

// TestMouse: a click focuses a field, the wheel nudges it, a click on the
// timeline bar picks a frame and the wheel over the pane scrubs.
func TestMouse(t *testing.T) {
	h := newMini(t)
	m := h.m
	l := m.layoutMain(m.bodyHeight(m.headerView(), m.footerView()))
	y := 1 + l.form.rows[focusSteps] // below the header line
	h.update(tea.MouseMsg{X: 3, Y: y, Button: tea.MouseButtonLeft, Action: tea.MouseActionPress})
	require.Equal(t, focusSteps, m.focus, "click on the steps row")
	h.update(tea.MouseMsg{X: 3, Y: y, Button: tea.MouseButtonWheelUp, Action: tea.MouseActionPress})
	require.Equal(t, "4", m.ed.steps.Value(), "wheel up on steps 3")
	cfgY := 1 + l.form.rows[focusCFG]
	x0, sw := cfgSlider(l.formW)
	h.update(tea.MouseMsg{X: x0 + sw - 1, Y: cfgY, Button: tea.MouseButtonLeft, Action: tea.MouseActionPress})
	require.Equal(t, focusCFG, m.focus, "click on the slider's right end: focus")
	require.Equal(t, fmt.Sprint(cfgMax), m.ed.cfg.Value(), "click on the slider's right end: cfg")
	h.update(tea.MouseMsg{X: x0 + (sw-1)/2, Y: cfgY, Button: tea.MouseButtonLeft, Action: tea.MouseActionPress})
	v, _ := strconv.ParseFloat(m.ed.cfg.Value(), 64)
	require.InDelta(t, cfgMax/2, v, 0.5, "click on the slider's middle: cfg %s", m.ed.cfg.Value())
	m.ed.cfg.SetValue("7.5")
	h.keys("ctrl+g")
	r := h.last()
	h.waitRun(r)
	h.update(tea.MouseMsg{X: l.barX, Y: 1 + l.barRow, Button: tea.MouseButtonLeft, Action: tea.MouseActionPress})
	require.Equal(t, focusTimeline, m.focus, "click on the bar's first cell: focus")
	require.Equal(t, 0, m.frame, "click on the bar's first cell: frame")
	h.update(tea.MouseMsg{X: l.barX + 5, Y: 5, Button: tea.MouseButtonWheelDown, Action: tea.MouseActionPress})
	h.update(tea.MouseMsg{X: l.barX + 5, Y: 5, Button: tea.MouseButtonWheelDown, Action: tea.MouseActionPress})
	require.Equal(t, 2, m.frame, "two wheel steps from frame 0")
	h.mustView("step 3/4")
}

// TestBatch: a batch is previewed side by side and exported as one PNG per
// image, each with its position in the parameters.
func TestBatch(t *testing.T) {
	h := newMini(t)
	m := h.m
	h.setField(focusSteps, "1")
	h.setField(focusBatch, "2")
	h.keys("ctrl+g")
	r := h.last()
	h.waitRun(r)
	require.Equal(t, runStatusNames[runDone], runStatusNames[r.Status], m.status)
	require.Len(t, r.Images, 2)
	assert.False(t, samePixels(r.Images[0].Pix, r.Images[1].Pix), "the two images of a batch differ")
	b := r.Frames[0].XT.Bounds()
	assert.Equal(t, [2]int{8 + 1 + 8, 8}, [2]int{b.Dx(), b.Dy()}, "two 8x8 latents side by side")
	h.mustView("batch of 2")
	h.keys("ctrl+x")
	h.waitFor("export", func() bool { return len(m.exported) == 2 })
	for i, p := range m.exported {
		text, err := render.ReadPNGTextFile(p)
		require.NoError(t, err)
		assert.Contains(t, text["parameters"], fmt.Sprintf("Batch size: 2, Batch pos: %d", i), p)
	}
}

// TestSweepCancelKeepsRun: esc cancels a sweep without touching a paused
// run, which then resumes to the end.
func TestSweepCancelKeepsRun(t *testing.T) {
	h := newMini(t)
	m := h.m
	h.setField(focusSteps, "12")
	h.keys("ctrl+g", "space")
	r := h.last()
	h.waitFor("run start", func() bool { return r.Status == runRunning })
	h.keys("alt+4")
	require.True(t, m.gv.busy, "the sweep did not start")
	h.drain(300 * time.Millisecond)
	h.keys("esc")
	require.False(t, m.gv.busy, "esc in a busy sweep: busy")
	require.Equal(t, stateSweep, m.state, "esc in a busy sweep: state")
	h.drain(time.Second)
	require.Equal(t, runRunning, r.Status, "cancelling the sweep ended the paused run: %s", runStatusNames[r.Status])
	assert.NotEqual(t, len(sweepScales), m.gv.filled, "the cancelled sweep still finished")
	h.keys("esc", "space")
	h.waitRun(r)
	require.Equal(t, runDone, r.Status, "after resuming: %s", runStatusNames[r.Status])
	require.Equal(t, 12, len(r.Frames), "after resuming: frames")
}

// TestMonkeyKeys presses random keys (with the worker's messages arriving
// in between) and checks that the studio never panics, always draws a
// full screen, and ends with the worker idle. Before each ctrl+g the
// monkey keeps the size and step count small, so the test stays fast.
func TestMonkeyKeys(t *testing.T) {
	for seed := uint64(1); seed <= 2; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { monkey(t, seed) })
	}
}

func monkey(t *testing.T, seed uint64) {
	h := newMini(t)
	m := h.m
	keys := []string{"ctrl+g", "esc", "tab", "shift+tab", "up", "down", "left", "right", "enter", "space",
		".", ",", "x", "b", "v", "[", "]", "home", "end", "backspace", "a", "?", "1", "s", "r", "d", "i",
		"alt+1", "alt+2", "alt+3", "alt+4", "alt+5", "ctrl+s", "ctrl+e", "ctrl+x", "ctrl+o", "ctrl+p", "ctrl+r", "ctrl+l", "ctrl+n", "f1"}
	rng := rand.New(rand.NewPCG(seed, 2))
	for i := 0; i < 400; i++ {
		k := keys[rng.IntN(len(keys))]
		if k == "ctrl+g" || k == "b" || k == "alt+4" || k == "r" {
			m.ed.width.SetValue("64")
			m.ed.height.SetValue("64")
			m.ed.batch.SetValue("1")
			m.ed.steps.SetValue(fmt.Sprint(1 + rng.IntN(3)))
		}
		h.keys(k)
		select {
		case msg := <-h.msgs:
			h.update(msg)
		default:
		}
		if i%50 == 0 {
			h.update(teaSize(60+rng.IntN(80), 12+rng.IntN(30)))
		}
		v := m.View()
		require.Equal(t, m.height, strings.Count(v, "\n")+1, "after key %d (%q): lines on the screen", i, k)
	}
	m.modal, m.state, m.help.ShowAll = nil, stateMain, false
	h.keys("esc")
	h.waitFor("the worker to go idle", func() bool { return m.active() == nil })
	t.Logf("%d runs, status %q", len(m.runs), m.status)
}

// TestLoadWarning: a note from loading (such as a fallback to the reference
// device) is shown once the model is up.
func TestLoadWarning(t *testing.T) {
	load := miniLoad(t)
	h := newHarness(t, testSettings(), func(warn func(string)) (gpu.Device, *models.Pipeline, error) {
		warn("no GL 4.3 context\nfalling back to the plain-Go reference device")
		return load(warn)
	})
	require.NotNil(t, h.m.model, "not loaded: %s", h.m.status)
	h.mustView("no GL 4.3 context falling back to the plain-Go reference device")
}
