package tui

import (
	"os"
	"path/filepath"
	"testing"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/stepwise/stepwise/presets"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// selectPreset opens the preset list and applies entry name.
func (h *harness) applyPreset(name string) {
	h.t.Helper()
	h.keys("ctrl+p")
	h.waitFor("preset list", func() bool { return len(h.m.pv.list) > 0 })
	for i := 0; i < h.m.pv.items(); i++ {
		if (i < len(h.m.pv.list) && h.m.pv.list[i].Name == name) || (i >= len(h.m.pv.list) && h.m.pv.styles[i-len(h.m.pv.list)].Name == name) {
			h.m.pv.sel = i
			h.keys("enter")
			return
		}
	}
	h.t.Fatalf("no preset or style %q", name)
}

// A built-in preset applies its settings and keeps the typed prompts;
// ctrl+z takes it back, and each field edit before it.
func TestPresetKeepsPromptAndUndo(t *testing.T) {
	h := newBare(t)
	h.setField(focusPrompt, "red heart")
	h.setField(focusNegative, "blurry")
	h.setField(focusSteps, "12")
	h.applyPreset("Quality")
	assert.Equal(t, "red heart", h.m.ed.prompt.Value())
	assert.Equal(t, "blurry", h.m.ed.negative.Value())
	assert.Equal(t, "30", h.m.ed.steps.Value())
	h.keys("ctrl+z")
	assert.Equal(t, "12", h.m.ed.steps.Value(), "ctrl+z undoes the preset")
	assert.Equal(t, "red heart", h.m.ed.prompt.Value())
	h.keys("ctrl+z") // the typed "12"
	h.keys("ctrl+z") // ctrl+u before it
	assert.NotEqual(t, "12", h.m.ed.steps.Value())
}

// Styles imported from a styles.csv are kept in the preset folder: a new
// studio over the same folder lists them, and merging one keeps the
// typed prompt.
func TestImportedStylesPersist(t *testing.T) {
	h := newBare(t)
	csv := filepath.Join(t.TempDir(), "styles.csv")
	require.NoError(t, os.WriteFile(csv, []byte("name,prompt,negative_prompt\nGlossy,\"{prompt}, glossy\",matte\n"), 0o644))
	h.keys("ctrl+p", "i")
	h.typeText(csv)
	h.keys("enter")
	h.waitFor("styles imported", func() bool { return len(h.m.pv.styles) == 1 })
	kept := filepath.Join(h.dir, "styles.csv")
	require.FileExists(t, kept)

	// A new studio over the same folder (a restart).
	s := testSettings()
	m2 := New(Options{PresetDir: h.dir, Settings: &s})
	m2.Update(m2.pv.load(m2)())
	require.Len(t, m2.pv.styles, 1)
	assert.Equal(t, "Glossy", m2.pv.styles[0].Name)
	m2.ed.prompt.SetValue("red heart")
	m2.state, m2.pv.sel = statePresets, len(m2.pv.list)
	m2.Update(tea.KeyMsg{Type: tea.KeyEnter})
	assert.Equal(t, "red heart, glossy", m2.ed.prompt.Value())
	assert.Equal(t, "matte", m2.ed.negative.Value())
}

// A listing made while a rename is half done (neither name on disk) does
// not move the selection off the renamed preset.
func TestSelectionFollowsARenamedPreset(t *testing.T) {
	h := newBare(t)
	v := &h.m.pv
	mk := func(names ...string) []presets.Preset {
		out := presets.Builtins()
		for _, n := range names {
			out = append(out, presets.Preset{Name: n})
		}
		return out
	}
	v.loads = 1
	v.update(h.m, presetsMsg{seq: 1, list: mk("dusk")})
	v.sel = len(v.list) - 1
	v.follow = "dawn" // the rename was submitted
	v.update(h.m, presetsMsg{seq: 1, list: mk()})
	v.update(h.m, presetsMsg{seq: 1, list: mk("dawn")})
	assert.Equal(t, "dawn", v.list[v.sel].Name)
}

// A saved preset carries its image's prompts: over different typed
// prompts the studio asks, and r replaces, m merges (A1111's style merge:
// yours, then the preset's), k keeps yours with the preset's settings,
// esc applies nothing; each answer is one ctrl+z away. With nothing
// typed it loads directly, and a "{prompt}" in its prompt merges as a
// style does without asking.
func TestSavedPresetAsksAboutPrompts(t *testing.T) {
	h := newBare(t)
	saved := testSettings()
	saved.Prompt, saved.NegativePrompt, saved.Steps = "snowman", "ugly", 9
	require.NoError(t, h.m.store.Create("Winter", saved))
	styled := testSettings()
	styled.Prompt, styled.Steps = "{prompt}, in the snow", 11
	require.NoError(t, h.m.store.Create("Snowy", styled))

	type answer struct{ key, prompt, negative, steps string }
	for _, a := range []answer{
		{"r", "snowman", "ugly", "9"},
		{"m", "red heart, snowman", "blurry, ugly", "9"},
		{"k", "red heart", "blurry", "9"},
		{"esc", "red heart", "blurry", "12"},
	} {
		t.Run(a.key, func(t *testing.T) {
			h.setField(focusPrompt, "red heart")
			h.setField(focusNegative, "blurry")
			h.setField(focusSteps, "12")
			h.applyPreset("Winter")
			require.NotNil(t, h.m.modal, "a saved preset over typed prompts asks")
			h.mustView("carries its own prompts", "r replaces yours")
			h.keys(a.key)
			assert.Nil(t, h.m.modal)
			assert.Equal(t, a.prompt, h.m.ed.prompt.Value())
			assert.Equal(t, a.negative, h.m.ed.negative.Value())
			assert.Equal(t, a.steps, h.m.ed.steps.Value())
			if a.key != "esc" {
				h.keys("ctrl+z")
				assert.Equal(t, "red heart", h.m.ed.prompt.Value(), "ctrl+z undoes the preset")
				assert.Equal(t, "12", h.m.ed.steps.Value())
			}
		})
	}

	h.setField(focusPrompt, "red heart")
	h.setField(focusNegative, "")
	h.applyPreset("Snowy")
	assert.Nil(t, h.m.modal, "a {prompt} preset merges without asking")
	assert.Equal(t, "red heart, in the snow", h.m.ed.prompt.Value())
	assert.Equal(t, "11", h.m.ed.steps.Value())

	h.setField(focusPrompt, "")
	h.applyPreset("Winter")
	assert.Nil(t, h.m.modal, "nothing typed: nothing to ask")
	assert.Equal(t, "snowman", h.m.ed.prompt.Value())
}
