package tui

import (
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
)

// harness drives a Model the way a tea.Program does: keys go to Update,
// the worker's messages and the commands' results come back through msgs.
type harness struct {
	t    testing.TB
	m    *Model
	msgs chan tea.Msg
	out  string // export folder
	dir  string // preset folder
	// started and ended record the worker's run-start and run-end
	// messages.
	started []runStartedMsg
	ended   []runDoneMsg
}

// testSettings are small: the golden mini model makes 64x64 images.
func testSettings() presets.Settings {
	s := presets.Default()
	s.Width, s.Height, s.Steps, s.Seed, s.CFGScale = 64, 64, 3, 42, 7.5
	return s
}

// miniLoad loads the golden sd15-mini model on the reference device.
func miniLoad(t testing.TB) LoadFunc {
	g := golden.Dir(t)
	return func(func(string)) (gpu.Device, *models.Pipeline, error) {
		dev := ref.New()
		p, err := models.Load(dev, filepath.Join(g, "sd15-mini.fp16.safetensors"), filepath.Join(g, "sd15_mini_config.json"))
		return dev, p, err
	}
}

// newHarness starts a studio whose presets live under a temporary
// XDG_CONFIG_HOME and whose exports go to a temporary folder.
func newHarness(t testing.TB, s presets.Settings, load LoadFunc) *harness {
	t.Helper()
	xdg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg)
	h := &harness{t: t, msgs: make(chan tea.Msg, 4096), out: t.TempDir(), dir: filepath.Join(xdg, "stepwise", "presets")}
	h.m = New(Options{Load: load, ModelLabel: "mini on ref", OutDir: h.out, Settings: &s, Color: render.NoColor})
	require.Equal(t, h.dir, h.m.store.Dir, "the preset folder is under XDG_CONFIG_HOME")
	h.m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	h.m.Start(func(msg tea.Msg) { h.msgs <- msg })
	t.Cleanup(h.m.Close)
	h.waitFor("model loaded", func() bool { return !h.m.loading })
	return h
}

func newMini(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t, testSettings(), miniLoad(t))
	require.NotNil(t, h.m.model, "model did not load: %s", h.m.status)
	return h
}

// run runs a command as the program would: in a goroutine, its message
// coming back through msgs.
func (h *harness) run(cmd tea.Cmd) {
	if cmd == nil {
		return
	}
	go func() {
		msg := cmd()
		switch msg := msg.(type) {
		case nil, tea.QuitMsg:
		case tea.BatchMsg:
			for _, c := range msg {
				h.run(c)
			}
		default:
			h.msgs <- msg
		}
	}()
}

func (h *harness) update(msg tea.Msg) {
	switch s := msg.(type) {
	case runStartedMsg:
		h.started = append(h.started, s)
	case runDoneMsg:
		h.ended = append(h.ended, s)
	}
	_, cmd := h.m.Update(msg)
	h.run(cmd)
}

var namedKeys = map[string]tea.KeyType{
	"ctrl+g": tea.KeyCtrlG, "ctrl+s": tea.KeyCtrlS, "ctrl+e": tea.KeyCtrlE, "ctrl+x": tea.KeyCtrlX, "ctrl+z": tea.KeyCtrlZ, "ctrl+a": tea.KeyCtrlA, "f9": tea.KeyF9, "ctrl+o": tea.KeyCtrlO,
	"ctrl+p": tea.KeyCtrlP, "ctrl+c": tea.KeyCtrlC, "ctrl+u": tea.KeyCtrlU, "ctrl+l": tea.KeyCtrlL, "ctrl+t": tea.KeyCtrlT,
	"ctrl+r": tea.KeyCtrlR, "ctrl+n": tea.KeyCtrlN, "esc": tea.KeyEsc, "tab": tea.KeyTab, "shift+tab": tea.KeyShiftTab,
	"enter": tea.KeyEnter, "up": tea.KeyUp, "down": tea.KeyDown, "left": tea.KeyLeft,
	"right": tea.KeyRight, "home": tea.KeyHome, "end": tea.KeyEnd, "backspace": tea.KeyBackspace,
	"f1": tea.KeyF1, "space": tea.KeySpace,
}

// keys presses each key: a name from namedKeys, "alt+X", or one rune.
func (h *harness) keys(ks ...string) {
	h.t.Helper()
	for _, k := range ks {
		var msg tea.KeyMsg
		if t, ok := namedKeys[k]; ok {
			msg = tea.KeyMsg{Type: t}
			if t == tea.KeySpace {
				msg.Runes = []rune{' '}
			}
		} else if strings.HasPrefix(k, "alt+") && len(k) == 5 {
			msg = tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{rune(k[4])}, Alt: true}
		} else if len([]rune(k)) == 1 {
			msg = tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
		} else {
			h.t.Fatalf("test bug: unknown key %q", k)
		}
		h.update(msg)
	}
}

// typeText types text into the focused field as one paste.
func (h *harness) typeText(s string) {
	h.update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s), Paste: true})
}

// waitFor feeds messages to the model until cond holds.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.After(90 * time.Second)
	for !cond() {
		select {
		case msg := <-h.msgs:
			h.update(msg)
		case <-deadline:
			h.t.Fatalf("timed out waiting for %s; status: %s", what, h.m.status)
		}
	}
}

// drain handles the messages that arrive within d.
func (h *harness) drain(d time.Duration) {
	end := time.After(d)
	for {
		select {
		case msg := <-h.msgs:
			h.update(msg)
		case <-end:
			return
		}
	}
}

// view is the rendered screen without escape codes.
func (h *harness) view() string { return ansi.Strip(h.m.View()) }

func (h *harness) mustView(subs ...string) {
	h.t.Helper()
	v := h.view()
	for _, s := range subs {
		assert.Contains(h.t, v, s, "the view")
	}
}

func (h *harness) last() *runRec { return h.m.runs[len(h.m.runs)-1] }

func (h *harness) waitRun(r *runRec) {
	h.t.Helper()
	h.waitFor("run to end", func() bool { return r.Status > runRunning })
}

// setField focuses field f and replaces its text.
func (h *harness) setField(f focus, v string) {
	h.t.Helper()
	h.m.state = stateMain
	for h.m.focus != f {
		h.keys("tab")
	}
	h.keys("ctrl+u")
	h.typeText(v)
}

func teaSize(w, h int) tea.WindowSizeMsg { return tea.WindowSizeMsg{Width: w, Height: h} }
