package tui

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestBusyLineShowsCompileProgress: while the worker compiles ahead, the
// busy line says so with its progress; once done it is clear again.
func TestBusyLineShowsCompileProgress(t *testing.T) {
	m := &Model{w: &worker{}}
	assert.Equal(t, "", m.stage())
	note := "compiling GL programs for llvmpipe, first run only: 12/41"
	m.w.compiling.set(note)
	assert.Equal(t, note, m.stage())
	m.loading = true
	assert.Equal(t, "loading "+m.opts.ModelLabel, m.stage(), "loading is named first")
	m.loading = false
	m.w.compiling.set("")
	assert.Equal(t, "", m.stage())
}
