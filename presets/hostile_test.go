//go:build unix

package presets

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestListSurvivesFIFO: a FIFO named *.toml in the preset folder used to
// block the listing forever (the studio showed no presets at all, built-ins
// included); a symlink to /dev/zero must not fill the memory.
func TestListSurvivesFIFO(t *testing.T) {
	dir := t.TempDir()
	st := NewStore(dir)
	require.NoError(t, st.Save("good", Default()))
	require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "pipe.toml"), 0o644))
	require.NoError(t, os.Symlink("/dev/zero", filepath.Join(dir, "zero.toml")))
	var list []Preset
	var errs []error
	done := make(chan struct{})
	go func() { defer close(done); list, errs = st.List() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("listing a preset folder with a FIFO hung")
	}
	assert.Len(t, list, len(Builtins())+1)
	require.Len(t, errs, 2)
	msgs := errs[0].Error() + "\n" + errs[1].Error()
	assert.Contains(t, msgs, "pipe.toml is a named pipe (FIFO), not a regular file")
	assert.Contains(t, msgs, "zero.toml is a character device, not a regular file")
}
