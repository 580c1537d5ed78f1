//go:build unix

package safefile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edsrzf/mmap-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hostile makes the paths a user (or an attacker) may hand over.
func hostile(t *testing.T) (dir, fifo, zero, folder, big, small string) {
	dir = t.TempDir()
	fifo = filepath.Join(dir, "model.safetensors")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	zero = filepath.Join(dir, "config.json")
	require.NoError(t, os.Symlink("/dev/zero", zero))
	folder = filepath.Join(dir, "folder.png")
	require.NoError(t, os.Mkdir(folder, 0o755))
	big = filepath.Join(dir, "big.json")
	require.NoError(t, os.WriteFile(big, bytes.Repeat([]byte("x"), 5000), 0o644))
	small = filepath.Join(dir, "small.json")
	require.NoError(t, os.WriteFile(small, []byte(`{"a": 1}`), 0o644))
	return
}

func TestOpenRefusesWhatIsNotAFile(t *testing.T) {
	_, fifo, zero, folder, _, small := hostile(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, tc := range []struct{ path, kind string }{
			{fifo, "is a named pipe (FIFO), not a regular file"},
			{zero, "is a character device, not a regular file"},
			{folder, "is a folder, not a regular file"},
		} {
			_, _, err := Open(tc.path)
			var nr *NotRegularError
			if assert.ErrorAs(t, err, &nr, tc.path) {
				assert.Equal(t, tc.path+" "+tc.kind, err.Error())
			}
			assert.Error(t, Check(tc.path))
			_, err = ReadFile(tc.path, 1<<20)
			assert.ErrorAs(t, err, &nr, tc.path)
		}
		f, st, err := Open(small)
		if assert.NoError(t, err) {
			assert.EqualValues(t, 8, st.Size())
			f.Close()
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("opening a FIFO (or /dev/zero) hung")
	}
	assert.NoError(t, Dir(folder))
	err := Dir(small)
	assert.EqualError(t, err, small+" is a regular file, not a folder")
}

func TestReadCaps(t *testing.T) {
	_, _, _, _, big, small := hostile(t)
	data, err := ReadFile(small, 100)
	require.NoError(t, err)
	assert.Equal(t, `{"a": 1}`, string(data))
	_, err = ReadFile(big, 4096)
	var tl *TooLargeError
	require.ErrorAs(t, err, &tl)
	assert.Equal(t, big+" is larger than the 4 KiB limit for it", err.Error())
	_, err = ReadAll(strings.NewReader(strings.Repeat("y", 101)), "stdin", 100)
	require.ErrorAs(t, err, &tl)
	assert.Contains(t, err.Error(), "stdin is larger than the 100 bytes limit")
	data, err = ReadAll(strings.NewReader(strings.Repeat("y", 100)), "stdin", 100)
	require.NoError(t, err)
	assert.Len(t, data, 100)
}

// TestGuardTruncatedMapping reads a mapped file after it was truncated:
// without Guard the process dies of SIGBUS.
func TestGuardTruncatedMapping(t *testing.T) {
	p := filepath.Join(t.TempDir(), "w.safetensors")
	require.NoError(t, os.WriteFile(p, bytes.Repeat([]byte{1}, 1<<16), 0o644))
	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	mm, err := mmap.Map(f, mmap.RDONLY, 0)
	require.NoError(t, err)
	defer mm.Unmap()
	var sum int
	require.NoError(t, Guard(p, func() { sum = int(mm[100]) }))
	assert.Equal(t, 1, sum)
	require.NoError(t, os.Truncate(p, 0))
	err = Guard(p, func() {
		for _, b := range mm[4096:] {
			sum += int(b)
		}
	})
	var ce *ChangedError
	require.ErrorAs(t, err, &ce)
	assert.True(t, errors.Is(err, ErrChanged))
	assert.Contains(t, err.Error(), p+": file changed while reading")
	// Other panics pass through.
	assert.PanicsWithValue(t, "boom", func() { Guard(p, func() { panic("boom") }) })
}
