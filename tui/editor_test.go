package tui

import (
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
	assert.Equal(t, first, e.samplers[e.sampler], "cycling all samplers")
	e.update(focusSchedule, key1("left"))
	assert.Equal(t, presets.Schedules[len(presets.Schedules)-1], e.schedules[e.schedule], "left from automatic")
	e.update(focusRNG, key1("right"))
	for _, f := range []focus{focusSampler, focusSchedule, focusRNG} {
		assert.NotEmpty(t, e.hint(f), "no hint for %s", focusLabels[f])
	}

	// The seed: random until rolled, typed or locked.
	got, err := e.settings()
	require.NoError(t, err, "unlocked seed")
	require.Equal(t, int64(-1), got.Seed, "unlocked seed")
	e.update(focusSeed, key1("ctrl+r"))
	got, _ = e.settings()
	require.True(t, e.seedLocked, "rolled seed %d not locked", got.Seed)
	require.GreaterOrEqual(t, got.Seed, int64(0), "rolled seed")
	require.Less(t, got.Seed, int64(1<<32), "rolled seed")
	e.update(focusSeed, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{'l'}, Alt: true})
	got, _ = e.settings()
	assert.Equal(t, int64(-1), got.Seed, "unlocked seed")
	e.update(focusSeed, key1("ctrl+u"))
	e.update(focusSeed, key1("1234"))
	got, _ = e.settings()
	assert.Equal(t, int64(1234), got.Seed, "typed seed")
	assert.True(t, e.seedLocked, "typed seed not locked")
	assert.Equal(t, first, got.Sampler, "settings %+v", got)
	assert.Equal(t, "trailing", got.Schedule, "settings %+v", got)
	assert.Equal(t, presets.RNGPhilox, got.RNG, "settings %+v", got)
	assert.Equal(t, 3, got.Batch, "settings %+v", got)
	assert.Equal(t, 2, got.ClipSkip, "settings %+v", got)

	// Bad numbers name their field.
	e.cfg.SetValue("NaN")
	_, err = e.settings()
	assert.ErrorContains(t, err, "cfg scale", "cfg NaN")
	e.cfg.SetValue("7")
	e.height.SetValue("tall")
	_, err = e.settings()
	assert.ErrorContains(t, err, "height", "height 'tall'")

	// A1111 names from a PNG map onto the lists.
	s.Sampler, s.Schedule = "DPM++ 2M Karras", ""
	e.set(s)
	assert.Equal(t, "dpmpp_2m", e.samplers[e.sampler], "DPM++ 2M Karras sampler")
	assert.Equal(t, "karras", e.schedules[e.schedule], "DPM++ 2M Karras schedule")
}
