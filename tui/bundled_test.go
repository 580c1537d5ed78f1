package tui

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/models/bundled"
)

// Ctrl+N "bundled" goes back to the model built into the binary, from
// another model, and a run on it works.
func TestBackToTheBundledModel(t *testing.T) {
	h := newMini(t)
	m := h.m
	require.NotEqual(t, bundled.Name, m.model.Name)
	h.keys("ctrl+n")
	h.typeText("bundled")
	h.keys("enter")
	h.waitFor("the switch", func() bool { return !m.switching })
	require.NotNil(t, m.model, m.status)
	assert.Equal(t, bundled.Name, m.model.Name, m.status)
	assert.Equal(t, strconv.Itoa(m.model.NativeSize), m.ed.width.Value(), "the size is set to the bundled model's native one")
	assert.Equal(t, 64, m.model.NativeSize, "the second-generation bundled model draws 64x64")
	h.setField(focusSteps, "2")
	h.keys("ctrl+g")
	r := h.last()
	h.waitRun(r)
	assert.Equal(t, runDone, r.Status, m.status)
}
