package tui

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"math"
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
	if got := m.ed.prompt.Value(); got != "a red fox" {
		t.Fatalf("prompt = %q, want %q", got, "a red fox")
	}
	h.mustView("a red fox", "ctrl+g generate")

	// Generate and pause at once: the worker may take at most the step it
	// had begun.
	h.keys("ctrl+g", "space")
	if len(m.runs) != 1 || m.focus != focusTimeline || !m.paused {
		t.Fatalf("after ctrl+g space: %d runs, focus %v, paused %v", len(m.runs), m.focus, m.paused)
	}
	r := m.runs[0]
	h.waitFor("run start", func() bool { return r.Status == runRunning })
	if r.Noise == nil || r.FirstPreview <= 0 {
		t.Fatal("no preview of the initial noise before the first step")
	}
	t.Logf("first preview %s after ctrl+g (mini model, ref device)", r.FirstPreview)
	// The UI's CPU preview of the noise is the worker's initial latent.
	quick, ok := noisePreview(m.model, r.ID, r.Settings)().(noiseMsg)
	if !ok || len(h.started) != 1 || !samePixels(quick.Noise.Pix, h.started[0].Noise.Pix) {
		t.Fatalf("the quick noise preview differs from the run's initial noise")
	}
	h.drain(400 * time.Millisecond)
	n0 := len(r.Frames)
	if n0 > 1 {
		t.Fatalf("paused run took %d steps", n0)
	}
	h.mustView("run 1", "paused", fmt.Sprintf("step %d/3", n0))

	// Step exactly one.
	h.keys(".")
	h.waitFor("one step", func() bool { return len(r.Frames) == n0+1 })
	h.drain(400 * time.Millisecond)
	if len(r.Frames) != n0+1 || m.frame != n0 {
		t.Fatalf("after one step: %d frames (want %d), frame on screen %d", len(r.Frames), n0+1, m.frame)
	}
	f := r.Frames[n0]
	if f.Index != n0 || f.Total != 3 || f.XT == nil || f.X0 == nil || f.Sigma <= 0 {
		t.Fatalf("frame %+v", f)
	}
	h.mustView(fmt.Sprintf("step %d/3", n0+1), fmt.Sprintf("σ %.3f", f.Sigma), "it/s", "predicted x0 (latent preview)")

	// Scrub back to the noise and toggle to the noisy x_t.
	h.keys(",")
	if m.frame != n0-1 {
		t.Fatalf("scrub back: frame %d, want %d", m.frame, n0-1)
	}
	h.keys("home")
	h.mustView("initial noise x_T")
	h.keys(".", "x")
	h.mustView("x_t (latent preview)")
	h.keys("x")

	// Decode the frame on screen with the VAE.
	h.keys("v")
	h.waitFor("VAE decode", func() bool { return r.decoded[decodeKey{m.frame, true}].img != nil || m.statusErr })
	if b := r.decoded[decodeKey{m.frame, true}].img.Bounds(); b.Dx() != 64 {
		t.Fatalf("decoded frame is %v", b)
	}
	h.mustView("predicted x0 (VAE)")

	// Keys typed faster than they are read come as one message.
	h.update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(",.")})
	if m.frame != 0 {
		t.Fatalf("\",.\" in one message: frame %d, want 0", m.frame)
	}

	// Resume to the end.
	h.keys("space")
	h.waitRun(r)
	if r.Status != runDone || len(r.Frames) != 3 || len(r.Images) != 1 {
		t.Fatalf("run 1: %s, %d frames, %d images (%s)", runStatusNames[r.Status], len(r.Frames), len(r.Images), m.status)
	}
	if b := r.Images[0].Bounds(); b.Dx() != 64 || b.Dy() != 64 {
		t.Fatalf("final image %v, want 64x64", b)
	}
	if r.Settings.Seed != 42 || r.Settings.Prompt != "a red fox" {
		t.Fatalf("run settings %+v", r.Settings)
	}
	h.keys("end")
	h.mustView("final image (VAE)", "done in", "history [#1✓]")

	// Branch at step 1 with the same settings: a deterministic sampler
	// must give the parent's frames and image exactly.
	h.keys("home", ".")
	if m.frame != 0 {
		t.Fatalf("frame %d, want 0", m.frame)
	}
	h.keys("b")
	same := h.last()
	if same.Parent != r.ID || same.At != 0 || same.Inherited != 1 {
		t.Fatalf("branch: parent %d at %d inherited %d", same.Parent, same.At, same.Inherited)
	}
	h.waitRun(same)
	if same.Status != runDone || len(same.Frames) != 3 {
		t.Fatalf("branch: %s with %d frames: %s", runStatusNames[same.Status], len(same.Frames), m.status)
	}
	if !samePixels(same.Images[0].Pix, r.Images[0].Pix) {
		t.Errorf("a branch with unchanged settings changed the image")
	}
	h.mustView("branch of 1 at step 1", "#2←1@1✓")

	// Branch at step 1 with guidance 1: the steps after it differ.
	h.keys("home", ".", "[")
	if m.runs[m.cur] != r || m.frame != 0 {
		t.Fatalf("[ while scrubbing: run %d frame %d, want run 1 at the same step", m.runs[m.cur].ID, m.frame)
	}
	h.setField(focusCFG, "1")
	h.keys("shift+tab", "shift+tab", "shift+tab")
	if m.focus != focusTimeline {
		t.Fatalf("focus %v, want the timeline", m.focus)
	}
	h.keys("home", ".", "b")
	low := h.last()
	h.waitRun(low)
	if low.Status != runDone || low.Settings.CFGScale != 1 || low.Parent != r.ID {
		t.Fatalf("cfg-1 branch: %s cfg %v parent %d", runStatusNames[low.Status], low.Settings.CFGScale, low.Parent)
	}
	if low.Frames[0].X0 != r.Frames[0].X0 {
		t.Errorf("the branch does not start from its parent's frame")
	}
	if samePixels(low.Images[0].Pix, r.Images[0].Pix) {
		t.Errorf("guidance 1 from step 2 on gave the same image as guidance 7.5")
	}
	if r.Status != runDone || len(r.Frames) != 3 {
		t.Errorf("the parent changed: %s, %d frames", runStatusNames[r.Status], len(r.Frames))
	}
	if len(m.runs) != 3 {
		t.Errorf("%d runs in history, want 3", len(m.runs))
	}
	// The branch keeps its parent's seed whatever the editor shows, and
	// the trace counts only its own steps (guidance 1: one row a call).
	if low.Settings.Seed != r.Settings.Seed {
		t.Errorf("branch seed %d, parent %d", low.Settings.Seed, r.Settings.Seed)
	}
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
	if m.modal == nil {
		t.Fatal("ctrl+s opened no dialog")
	}
	h.mustView("Save preset as")
	h.typeText("dusk")
	h.keys("enter")
	h.waitFor("save", func() bool { return strings.Contains(m.status, "saved preset dusk") })
	data, err := os.ReadFile(filepath.Join(h.dir, "dusk.toml"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := presets.DecodePreset(data)
	if err != nil || s.Prompt != "a lighthouse at dusk" || s.Steps != 7 {
		t.Fatalf("saved preset: %+v, %v", s, err)
	}
	if err := os.WriteFile(filepath.Join(h.dir, "broken.toml"), []byte("steps = [oops"), 0o644); err != nil {
		t.Fatal(err)
	}

	h.setField(focusPrompt, "something else")
	h.setField(focusSteps, "2")
	h.keys("ctrl+p")
	h.waitFor("preset list with the broken file", func() bool { return len(m.pv.errs) > 0 })
	if m.state != statePresets || len(m.pv.errs) != 1 || !strings.Contains(m.pv.errs[0].Error(), "broken.toml") {
		t.Fatalf("state %v, errors %v", m.state, m.pv.errs)
	}
	h.mustView("Presets", "dusk", "(built-in)", "broken.toml")
	sel := -1
	for i, p := range m.pv.list {
		if p.Name == "dusk" {
			sel = i
		}
	}
	if sel < 0 {
		t.Fatal("dusk not listed")
	}
	for m.pv.sel < sel {
		h.keys("down")
	}
	h.keys("enter")
	require.NotNil(t, m.modal, "the saved preset's prompts differ from the typed ones: it asks")
	h.keys("r") // replace them
	if m.state != stateMain || m.ed.prompt.Value() != "a lighthouse at dusk" || m.ed.steps.Value() != "7" {
		t.Fatalf("after loading: state %v prompt %q steps %q", m.state, m.ed.prompt.Value(), m.ed.steps.Value())
	}

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
	if _, err := os.Stat(filepath.Join(h.dir, "dawn.toml")); err != nil {
		t.Fatal(err)
	}
	h.keys("d")
	if _, err := os.Stat(filepath.Join(h.dir, "dawn.toml")); err != nil {
		t.Fatal("one d deleted the preset")
	}
	h.keys("d")
	h.waitFor("delete", func() bool { return strings.Contains(m.status, "deleted preset dawn") })
	if _, err := os.Stat(filepath.Join(h.dir, "dawn.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dawn.toml still there: %v", err)
	}

	// Import an A1111 styles.csv and merge a style into the prompt.
	csv := filepath.Join(t.TempDir(), "styles.csv")
	if err := os.WriteFile(csv, []byte("name,prompt,negative_prompt\nnoir,\"{prompt}, film noir\",colour\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.keys("i")
	h.typeText("'" + csv + "'")
	h.keys("enter")
	h.waitFor("styles", func() bool { return len(m.pv.styles) == 1 })
	h.mustView("style: noir")
	for m.pv.sel < len(m.pv.list) {
		h.keys("down")
	}
	h.keys("enter")
	if got := m.ed.prompt.Value(); got != "a lighthouse at dusk, film noir" {
		t.Errorf("prompt after style = %q", got)
	}
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
	if m.ed.prompt.Value() != "an astronaut riding a horse" || m.ed.seed.Value() != "42" || !m.ed.seedLocked {
		t.Fatalf("after open: prompt %q seed %q locked %v (%s)", m.ed.prompt.Value(), m.ed.seed.Value(), m.ed.seedLocked, m.status)
	}

	// Dropping the PNG onto the terminal (a bracketed paste of its path)
	// opens it too, from any field.
	h.setField(focusPrompt, "y")
	h.update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("'" + p1 + "'"), Paste: true})
	h.waitFor("open by drop", func() bool { return m.ed.prompt.Value() == "an astronaut riding a horse" || m.statusErr })
	if m.statusErr {
		t.Fatalf("drop: %s", m.status)
	}

	// A PNG without parameters is refused with a message.
	plain := filepath.Join(t.TempDir(), "plain.png")
	if err := render.WritePNG(plain, r.Images[0], nil, false); err != nil {
		t.Fatal(err)
	}
	h.keys("ctrl+o")
	h.typeText(plain)
	h.keys("enter")
	h.waitFor("open error", func() bool { return m.statusErr })
	if !strings.Contains(m.status, "no \"parameters\"") {
		t.Errorf("status %q", m.status)
	}
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
	if got := strings.Count(h.view(), "◆"); got != 3+1 { // 3 marks + the legend's
		t.Errorf("%d ◆ in the chart, want 3 marks and the legend", got)
	}
	h.keys("1")
	if m.sv.on[0] {
		t.Error("1 did not hide the linear curve")
	}
	h.mustView("○ linear")
	h.keys("s")
	h.mustView("log SNR")
	ab := m.sv.curves[1]
	if len(ab) != 1000 || ab[0] < 0.99 || ab[999] > 0.01 {
		t.Errorf("scaled_linear alphas_cumprod: %d values, first %v last %v", len(ab), ab[0], ab[len(ab)-1])
	}

	// Forward and reverse: 16 noised pictures from t=0 to 999, then the
	// three recorded frames.
	h.keys("alt+3")
	h.waitFor("forward frames", func() bool { return len(m.fv.fwd) > 0 || m.fv.err != nil })
	if len(m.fv.fwd) != forwardFrames || m.fv.t[0] != 0 || m.fv.t[forwardFrames-1] != 999 {
		t.Fatalf("forward: %d frames, t %v (%v)", len(m.fv.fwd), m.fv.t, m.fv.err)
	}
	for i := 1; i < len(m.fv.ab); i++ {
		if m.fv.ab[i] >= m.fv.ab[i-1] {
			t.Fatalf("alpha_bar not decreasing at %d: %v", i, m.fv.ab)
		}
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
	if m.gv.err != nil {
		t.Fatal(m.gv.err)
	}
	if !samePixels(m.gv.imgs[2].Pix, r.Images[0].Pix) {
		t.Error("the sweep at cfg 7.5 differs from the run at cfg 7.5 with the same seed")
	}
	if samePixels(m.gv.imgs[0].Pix, m.gv.imgs[3].Pix) {
		t.Error("cfg 1 and cfg 12 gave the same image")
	}
	h.mustView("Guidance sweep", "seed 42", "▶ cfg 7.5")
	h.keys("up", "up", "up", "up", "up", "up", "up", "up", "up")
	if m.ed.cfg.Value() != "12" {
		t.Fatalf("cfg after 9 nudges = %s", m.ed.cfg.Value())
	}
	h.mustView("▶ cfg 12")

	// Pipeline trace with the mini model's shapes.
	h.keys("alt+5")
	hid := m.model.TextHidden
	h.mustView("Pipeline trace", "a bowl of fruit", fmt.Sprintf("[1, 77, %d] ×2", hid), "[1, 4, 8, 8]",
		"U-Net ×3 steps, 3 calls on [2, 4, 8, 8]", "[1, 3, 64, 64]", "VAE decoder")
	if strings.Contains(h.view(), "</w>") {
		t.Error("the trace shows raw BPE end-of-word marks")
	}
	h.keys("esc")
	if m.state != stateMain {
		t.Errorf("esc left state %v", m.state)
	}
}

// TestRefusedAndCancelled: invalid settings are refused with a message, a
// run is cancelled by esc and restarted by ctrl+g.
func TestRefusedAndCancelled(t *testing.T) {
	h := newMini(t)
	m := h.m
	// Before any run, the schedule chart marks the edited settings' steps.
	h.keys("alt+2")
	h.waitFor("schedule of the edited settings", func() bool { return len(m.sv.marks.Timesteps) > 0 })
	if got := len(m.sv.marks.Timesteps); got != 3 {
		t.Fatalf("%d marks for 3 steps", got)
	}
	h.mustView("edited settings: euler, 3 steps")
	h.keys("alt+1")
	h.setField(focusWidth, "100")
	h.mustView("✗ width: 100 is not a multiple of 8")
	h.keys("ctrl+g")
	if len(m.runs) != 0 || !m.statusErr || !strings.Contains(m.status, "multiple of 8") {
		t.Fatalf("width 100: %d runs, status %q", len(m.runs), m.status)
	}
	h.setField(focusWidth, "64")
	h.setField(focusSteps, "many")
	h.keys("ctrl+g")
	if len(m.runs) != 0 || !strings.Contains(m.status, "steps") {
		t.Fatalf("steps 'many': %d runs, status %q", len(m.runs), m.status)
	}
	h.setField(focusSteps, "40")
	h.keys("ctrl+g")
	r := h.last()
	h.waitFor("a frame", func() bool { return len(r.Frames) > 0 })
	h.keys("esc")
	h.waitRun(r)
	if r.Status != runCancelled || len(r.Frames) >= 40 {
		t.Fatalf("after esc: %s with %d frames", runStatusNames[r.Status], len(r.Frames))
	}
	h.mustView("cancelled")

	// Ctrl+G while a run goes restarts it; the first stays in history.
	h.keys("ctrl+g")
	a := h.last()
	h.waitFor("a frame", func() bool { return len(a.Frames) > 0 })
	h.keys("ctrl+g")
	b := h.last()
	h.waitRun(a)
	if a == b || a.Status != runCancelled {
		t.Fatalf("restart: first run %s", runStatusNames[a.Status])
	}
	h.keys("esc")
	h.waitRun(b)
	if len(m.runs) != 3 {
		t.Errorf("%d runs, want 3", len(m.runs))
	}
}

// TestNoModel: a failed load shows its message and generation is refused.
func TestNoModel(t *testing.T) {
	h := newHarness(t, testSettings(), func(func(string)) (gpu.Device, *models.Pipeline, error) {
		return nil, nil, errors.New("no bundled model in this build yet; pass --model PATH")
	})
	h.mustView("no bundled model in this build yet")
	h.keys("ctrl+g")
	if len(h.m.runs) != 0 || !strings.Contains(h.m.status, "no model loaded") {
		t.Fatalf("status %q", h.m.status)
	}
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
	if r.Chunks < 2 {
		t.Fatalf("chunks = %d for a long prompt", r.Chunks)
	}
	for _, sz := range [][2]int{{120, 40}, {80, 24}, {60, 16}, {30, 8}, {1, 1}} {
		h.update(teaSize(sz[0], sz[1]))
		v := h.m.View()
		lines := strings.Split(v, "\n")
		if len(lines) != sz[1] {
			t.Errorf("%dx%d: %d lines", sz[0], sz[1], len(lines))
		}
		for i, l := range lines {
			if w := lipgloss.Width(l); w > sz[0] {
				t.Errorf("%dx%d: line %d is %d wide: %q", sz[0], sz[1], i, w, ansi.Strip(l))
			}
		}
	}
	h.update(teaSize(120, 40))
	h.mustView(fmt.Sprintf("split into %d chunks", r.Chunks))
	h.keys("?")
	h.mustView("ctrl+s", "save preset", "open PNG settings", "branch here with edits", "apply at the next ctrl+g (mid-run: restarts)")
	h.keys("esc")
	if h.m.help.ShowAll {
		t.Error("esc did not close the full help")
	}
}

// TestMouse: a click focuses a field, the wheel nudges it, a click on the
// timeline bar picks a frame and the wheel over the pane scrubs.
func TestMouse(t *testing.T) {
	h := newMini(t)
	m := h.m
	l := m.layoutMain(m.bodyHeight(m.headerView(), m.footerView()))
	y := 1 + l.form.rows[focusSteps] // below the header line
	h.update(tea.MouseMsg{X: 3, Y: y, Button: tea.MouseButtonLeft, Action: tea.MouseActionPress})
	if m.focus != focusSteps {
		t.Fatalf("click on the steps row focused %v", m.focus)
	}
	h.update(tea.MouseMsg{X: 3, Y: y, Button: tea.MouseButtonWheelUp, Action: tea.MouseActionPress})
	if m.ed.steps.Value() != "4" {
		t.Fatalf("wheel up on steps 3 gave %s", m.ed.steps.Value())
	}
	cfgY := 1 + l.form.rows[focusCFG]
	x0, sw := cfgSlider(l.formW)
	h.update(tea.MouseMsg{X: x0 + sw - 1, Y: cfgY, Button: tea.MouseButtonLeft, Action: tea.MouseActionPress})
	if m.focus != focusCFG || m.ed.cfg.Value() != fmt.Sprint(cfgMax) {
		t.Fatalf("click on the slider's right end: focus %v cfg %s", m.focus, m.ed.cfg.Value())
	}
	h.update(tea.MouseMsg{X: x0 + (sw-1)/2, Y: cfgY, Button: tea.MouseButtonLeft, Action: tea.MouseActionPress})
	if v, _ := strconv.ParseFloat(m.ed.cfg.Value(), 64); math.Abs(v-cfgMax/2) > 0.5 {
		t.Fatalf("click on the slider's middle: cfg %s", m.ed.cfg.Value())
	}
	m.ed.cfg.SetValue("7.5")
	h.keys("ctrl+g")
	r := h.last()
	h.waitRun(r)
	h.update(tea.MouseMsg{X: l.barX, Y: 1 + l.barRow, Button: tea.MouseButtonLeft, Action: tea.MouseActionPress})
	if m.focus != focusTimeline || m.frame != 0 {
		t.Fatalf("click on the bar's first cell: focus %v frame %d", m.focus, m.frame)
	}
	h.update(tea.MouseMsg{X: l.barX + 5, Y: 5, Button: tea.MouseButtonWheelDown, Action: tea.MouseActionPress})
	h.update(tea.MouseMsg{X: l.barX + 5, Y: 5, Button: tea.MouseButtonWheelDown, Action: tea.MouseActionPress})
	if m.frame != 2 {
		t.Fatalf("two wheel steps from frame 0 gave frame %d", m.frame)
	}
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
	if !m.gv.busy {
		t.Fatal("the sweep did not start")
	}
	h.drain(300 * time.Millisecond)
	h.keys("esc")
	if m.gv.busy || m.state != stateSweep {
		t.Fatalf("esc in a busy sweep: busy %v state %v", m.gv.busy, m.state)
	}
	h.drain(time.Second)
	if r.Status != runRunning {
		t.Fatalf("cancelling the sweep ended the paused run: %s", runStatusNames[r.Status])
	}
	if m.gv.filled == len(sweepScales) {
		t.Error("the cancelled sweep still finished")
	}
	h.keys("esc", "space")
	h.waitRun(r)
	if r.Status != runDone || len(r.Frames) != 12 {
		t.Fatalf("after resuming: %s with %d frames", runStatusNames[r.Status], len(r.Frames))
	}
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
		if got := strings.Count(v, "\n") + 1; got != m.height {
			t.Fatalf("after key %d (%q): %d lines on a %d-line screen", i, k, got, m.height)
		}
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
	if h.m.model == nil {
		t.Fatalf("not loaded: %s", h.m.status)
	}
	h.mustView("no GL 4.3 context falling back to the plain-Go reference device")
}
