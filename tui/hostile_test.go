package tui

import (
	"image"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/faulty"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
)

// TestViewDuringDeviceRecovery: a run fails on the device, and while the
// worker reopens it (the failed pipeline already closed, the new one not
// loaded) the studio redraws. The UI must not touch the closed pipeline: it
// used to panic in Pipeline.Downscale <- gen.Validate <- Model.problem.
func TestViewDuringDeviceRecovery(t *testing.T) {
	g := golden.Dir(t)
	plan := faulty.NewPlan(faulty.LostContext, faulty.Trigger{})
	plan.Disarm()
	reopening, release := make(chan struct{}), make(chan struct{})
	opens := 0
	load := func(func(string)) (gpu.Device, *models.Pipeline, error) {
		opens++
		if opens == 2 {
			close(reopening)
			<-release
		}
		dev := faulty.Wrap(ref.New(), plan)
		p, err := models.Load(dev, filepath.Join(g, "sd15-mini.fp16.safetensors"), filepath.Join(g, "sd15_mini_config.json"))
		return dev, p, err
	}
	s := testSettings()
	s.CFGScale = 1
	h := newHarness(t, s, load)
	m := h.m
	require.NotNil(t, m.model, "model did not load: %s", m.status)

	plan.ArmKind(faulty.LostContext, faulty.Trigger{Downloads: 1})
	h.keys("ctrl+g")
	r := h.last()
	select {
	case <-reopening:
	case <-time.After(90 * time.Second):
		close(release)
		require.Failf(t, "the worker never reopened the device", "status: %s", m.status)
	}
	// The worker holds a closed pipeline; the UI draws every view that
	// reads the model.
	for _, k := range []string{"alt+2", "alt+3", "alt+5", "alt+1"} {
		h.keys(k)
		h.view()
		require.Nil(t, m.crash, "the studio crashed drawing %s while the device was reopened", k)
	}
	assert.Contains(t, h.view(), "stepwise · sd15-mini.fp16")
	close(release)
	h.waitRun(r)
	assert.Equal(t, runFailed, r.Status, m.status)
	assert.Contains(t, m.status, "device reopened, model reloaded")
	assert.Nil(t, m.crash)
	next := h.finishRun()
	assert.Equal(t, runDone, next.Status, m.status)
}

// evil holds escape sequences that retitle the terminal, leave the
// alternate screen and clear it when printed raw.
const evil = "\x1b]0;pwned\x07\x1b[?1049l\x1b[2J\u009b2J"

// assertNoRawEscapes checks a rendered screen for the injected sequences
// (lipgloss's own styling is off in tests).
func assertNoRawEscapes(t *testing.T, screen, where string) {
	t.Helper()
	for _, bad := range []string{"\x1b]0;", "\x07", "\x1b[?1049l", "\x1b[2J", "\u009b"} {
		assert.NotContains(t, screen, bad, "%s: raw %q reached the terminal", where, bad)
	}
}

// TestFileTextEscaped: a PNG's parameters, a styles.csv name and a preset
// file's name and contents reach the screen with control characters
// escaped.
func TestFileTextEscaped(t *testing.T) {
	h := newMini(t)
	m := h.m
	dir := t.TempDir()
	png := filepath.Join(dir, "evil.png")
	params := "a cat " + evil + "\nNegative prompt: ugly" + evil + "\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Model: m" + evil
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	require.NoError(t, render.WritePNG(png, img, map[string]string{"parameters": params}, false))
	h.keys("ctrl+o")
	h.typeText(png)
	h.keys("enter")
	h.waitFor("the PNG's settings", func() bool { return strings.Contains(m.status, "settings from") || m.statusErr })
	require.False(t, m.statusErr, m.status)
	s, err := m.ed.settings()
	require.NoError(t, err)
	assert.Equal(t, "a cat "+evil, s.Prompt, "the prompt itself is kept as the file has it")
	assertNoRawEscapes(t, m.View(), "main view after ctrl+o")
	h.keys("alt+5")
	assertNoRawEscapes(t, m.View(), "trace view")
	h.keys("alt+1")

	csv := filepath.Join(dir, "styles.csv")
	require.NoError(t, os.WriteFile(csv, []byte("name,prompt,negative_prompt\n\"sty"+evil+"\",\"p"+evil+"\",n\n"), 0o644))
	require.NoError(t, os.MkdirAll(h.dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(h.dir, "bad"+evil+".toml"), []byte("format = 1\n"), 0o644))
	ps := presets.Default()
	ps.Prompt = "x" + evil
	data, err := presets.EncodePreset(ps)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(h.dir, "ok.toml"), data, 0o644))
	h.keys("ctrl+p")
	h.waitFor("the preset list", func() bool { return len(m.pv.list) > len(presets.Builtins()) || len(m.pv.errs) > 0 })
	h.keys("i")
	h.typeText(csv)
	h.keys("enter")
	h.waitFor("the styles", func() bool { return len(m.pv.styles) > 0 || strings.Contains(m.status, "import styles") })
	require.Len(t, m.pv.styles, 1, m.status)
	scr := m.View()
	assertNoRawEscapes(t, scr, "preset screen")
	assert.Contains(t, scr, `style: sty\x1b]0;pwned\a`)
	assertNoRawEscapes(t, m.status, "status")
}

// TestSavePresetAsks: ctrl+s under an existing name asks before replacing;
// n keeps the file; y replaces it unless another studio wrote it after
// the question.
func TestSavePresetAsks(t *testing.T) {
	h := newMini(t)
	m := h.m
	save := func(name string) {
		h.keys("ctrl+s")
		h.typeText(name)
		h.keys("enter")
	}
	h.setField(focusSteps, "7")
	save("mine")
	h.waitFor("the first save", func() bool { return strings.Contains(m.status, "saved preset mine") || m.statusErr })
	require.False(t, m.statusErr, m.status)

	h.setField(focusSteps, "9")
	save("mine")
	h.waitFor("the question", func() bool { return m.modal != nil && m.modal.kind == modalReplace || m.statusErr })
	require.NotNil(t, m.modal, m.status)
	assert.Contains(t, h.view(), "Preset mine exists. Replace it? (y/n)")
	h.keys("n")
	assert.Contains(t, m.status, "kept")
	p, err := m.store.Load("mine")
	require.NoError(t, err)
	assert.Equal(t, 7, p.Settings.Steps)

	save("mine")
	h.waitFor("the question", func() bool { return m.modal != nil })
	h.keys("y")
	h.waitFor("the replace", func() bool { return strings.Contains(m.status, "replaced preset mine") || m.statusErr })
	p, err = m.store.Load("mine")
	require.NoError(t, err)
	assert.Equal(t, 9, p.Settings.Steps)

	// Another studio saves after the question: the replace is refused.
	h.setField(focusSteps, "12")
	save("mine")
	h.waitFor("the question", func() bool { return m.modal != nil })
	other := presets.Default()
	other.Steps = 40
	require.NoError(t, presets.NewStore(m.store.Dir).Save("mine", other))
	h.keys("y")
	h.waitFor("the refusal", func() bool { return m.statusErr })
	assert.Contains(t, m.status, "changed since it was read")
	p, err = m.store.Load("mine")
	require.NoError(t, err)
	assert.Equal(t, 40, p.Settings.Steps)
}

// TestModelLoadCancellable: Esc during a model switch frees the studio at
// once (it used to show "loading model…" until the load ended, forever on
// a FIFO, refusing ctrl+g); the model loaded meanwhile is dropped and the
// previous one stays. A FIFO is refused at once, naming what it is.
func TestModelLoadCancellable(t *testing.T) {
	g := golden.Dir(t)
	h := newMini(t)
	m := h.m
	old := m.model
	h.keys("ctrl+n")
	h.typeText(filepath.Join(g, "sd15-mini"))
	h.keys("enter")
	require.True(t, m.switching, m.status)
	h.keys("esc")
	assert.False(t, m.switching)
	assert.Contains(t, m.status, "model load cancelled; sd15-mini.fp16 stays loaded")
	h.setField(focusSteps, "2")
	r := h.finishRun()
	assert.Equal(t, runDone, r.Status, m.status)
	assert.Equal(t, "sd15-mini.fp16", r.Settings.Model, "the run used the model loaded before the cancelled switch")
	assert.Same(t, old, m.model)

	fifo := filepath.Join(t.TempDir(), "pipe.safetensors")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	h.keys("ctrl+n")
	h.typeText(fifo)
	h.keys("enter")
	h.waitFor("the refusal", func() bool { return !m.switching })
	assert.Contains(t, m.status, "is a named pipe (FIFO)")
	assert.Contains(t, m.status, "sd15-mini.fp16 stays loaded")
}

// TestStalePresetListDropped: a listing made before a rename that answers
// after the listing made after it must not bring the old name back (a
// second d would then delete a preset that is no longer there, or
// another one).
func TestStalePresetListDropped(t *testing.T) {
	h := newMini(t)
	m := h.m
	require.NoError(t, m.store.Save("dusk", presets.Default()))
	stale := m.pv.load(m)() // listed before the rename
	require.NoError(t, m.store.Rename("dusk", "dawn"))
	fresh := m.pv.load(m)()
	h.update(fresh)
	h.update(stale)
	var names []string
	for _, p := range m.pv.list {
		names = append(names, p.Name)
	}
	assert.Contains(t, names, "dawn")
	assert.NotContains(t, names, "dusk")
}
