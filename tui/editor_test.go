package tui

import (
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/stepwise/stepwise/presets"
)

func key1(s string) tea.KeyMsg {
	if t, ok := namedKeys[s]; ok {
		return tea.KeyMsg{Type: t}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)}
}

// TestEditorFields: nudges, lists, the seed's roll and lock, and parsing.
func TestEditorFields(t *testing.T) {
	s := presets.Default()
	s.Width, s.Height, s.Seed = 512, 512, -1
	e := newEditor(s, "")
	for _, c := range []struct {
		f    focus
		k    string
		n    int
		want string
		get  func() string
	}{
		{focusCFG, "up", 3, "8.5", e.cfg.Value},
		{focusCFG, "down", 20, "0", e.cfg.Value},
		{focusSteps, "down", 30, "1", e.steps.Value},
		{focusWidth, "up", 1, "576", e.width.Value},
		{focusHeight, "down", 20, "64", e.height.Value}, // SD's multiple before a model loads
		{focusBatch, "up", 2, "3", e.batch.Value},
		{focusClipSkip, "up", 1, "2", e.clip.Value},
	} {
		for i := 0; i < c.n; i++ {
			require.Truef(t, e.update(c.f, key1(c.k)), "%s did not take %s", focusLabels[c.f], c.k)
		}
		assert.Equalf(t, c.want, c.get(), "%s after %d×%s", focusLabels[c.f], c.n, c.k)
	}

	// Lists wrap around; the names are the ones `generate` accepts.
	first := e.samplers[e.sampler]
	for range e.samplers {
		e.update(focusSampler, key1("right"))
	}
	if e.samplers[e.sampler] != first {
		t.Errorf("cycling all samplers ended on %s, want %s", e.samplers[e.sampler], first)
	}
	e.update(focusSchedule, key1("left"))
	if e.schedules[e.schedule] != presets.Schedules[len(presets.Schedules)-1] {
		t.Errorf("left from automatic gave %q", e.schedules[e.schedule])
	}
	e.update(focusRNG, key1("right"))
	for _, f := range []focus{focusSampler, focusSchedule, focusRNG} {
		if e.hint(f) == "" {
			t.Errorf("no hint for %s", focusLabels[f])
		}
	}

	// The seed: random until rolled, typed or locked.
	got, err := e.settings()
	if err != nil || got.Seed != -1 {
		t.Fatalf("unlocked seed: %d, %v", got.Seed, err)
	}
	e.update(focusSeed, key1("ctrl+r"))
	got, _ = e.settings()
	if !e.seedLocked || got.Seed < 0 || got.Seed >= 1<<32 {
		t.Fatalf("rolled seed %d locked %v", got.Seed, e.seedLocked)
	}
	e.update(focusSeed, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{'l'}, Alt: true})
	if got, _ = e.settings(); got.Seed != -1 {
		t.Errorf("unlocked seed still %d", got.Seed)
	}
	e.update(focusSeed, key1("ctrl+u"))
	e.update(focusSeed, key1("1234"))
	if got, _ = e.settings(); got.Seed != 1234 || !e.seedLocked {
		t.Errorf("typed seed: %d locked %v", got.Seed, e.seedLocked)
	}
	if got.Sampler != first || got.Schedule != "trailing" || got.RNG != presets.RNGPhilox || got.Batch != 3 || got.ClipSkip != 2 {
		t.Errorf("settings %+v", got)
	}

	// Bad numbers name their field.
	e.cfg.SetValue("NaN")
	if _, err := e.settings(); err == nil || !strings.Contains(err.Error(), "cfg scale") {
		t.Errorf("cfg NaN: %v", err)
	}
	e.cfg.SetValue("7")
	e.height.SetValue("tall")
	if _, err := e.settings(); err == nil || !strings.Contains(err.Error(), "height") {
		t.Errorf("height 'tall': %v", err)
	}

	// A1111 names from a PNG map onto the lists.
	s.Sampler, s.Schedule = "DPM++ 2M Karras", ""
	e.set(s)
	if e.samplers[e.sampler] != "dpmpp_2m" || e.schedules[e.schedule] != "karras" {
		t.Errorf("DPM++ 2M Karras -> %s / %s", e.samplers[e.sampler], e.schedules[e.schedule])
	}
}
