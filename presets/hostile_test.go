//go:build unix

package presets

import (
	"io/fs"
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
		require.FailNow(t, "listing a preset folder with a FIFO hung")
	}
	assert.Len(t, list, len(Builtins())+1)
	require.Len(t, errs, 2)
	msgs := errs[0].Error() + "\n" + errs[1].Error()
	assert.Contains(t, msgs, "pipe.toml is a named pipe (FIFO), not a regular file")
	assert.Contains(t, msgs, "zero.toml is a character device, not a regular file")
}

// TestCreateReplace: saving under an existing name never replaces it
// without a yes; a replace refuses when the file changed since the stamp
// was read (two studios sharing the folder).
func TestCreateReplace(t *testing.T) {
	st := NewStore(t.TempDir())
	a, b, c := Default(), Default(), Default()
	a.Steps, b.Steps, c.Steps = 11, 22, 33
	require.NoError(t, st.Create("p", a))
	err := st.Create("p", b)
	require.ErrorIs(t, err, fs.ErrExist)
	p, err := st.Load("p")
	require.NoError(t, err)
	assert.Equal(t, 11, p.Settings.Steps, "Create replaced an existing preset")

	seen, err := st.Stamp("p")
	require.NoError(t, err)
	// The other studio saves meanwhile.
	require.NoError(t, NewStore(st.Dir).Replace("p", c, seen))
	err = st.Replace("p", b, seen)
	require.ErrorIs(t, err, ErrChanged)
	assert.Contains(t, err.Error(), "changed since it was read")
	p, err = st.Load("p")
	require.NoError(t, err)
	assert.Equal(t, 33, p.Settings.Steps, "a stale replace overwrote the other studio's save")

	now, err := st.Stamp("p")
	require.NoError(t, err)
	require.NoError(t, st.Replace("p", b, now))
	p, err = st.Load("p")
	require.NoError(t, err)
	assert.Equal(t, 22, p.Settings.Steps)
	entries, err := os.ReadDir(st.Dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "temporary files left behind")
}
