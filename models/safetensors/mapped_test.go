package safetensors

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHoldsAndPrefault: Holds tells a mapped file's tensor bytes from
// other memory (and says no after Close or for FromBytes files); Prefault
// and DropData leave the bytes readable and are harmless on a file
// truncated behind the mapping (Prefault reports nothing and does not
// fault).
func TestHoldsAndPrefault(t *testing.T) {
	big := make([]byte, 3*65536+7)
	for i := range big {
		big[i] = byte(i % 253)
	}
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, []Entry{
		{Name: "w", DType: U8, Shape: []int{len(big)}, Data: big},
		{Name: "b", DType: U8, Shape: []int{3}, Data: []byte{1, 2, 3}},
	}, nil))
	path := filepath.Join(t.TempDir(), "m.safetensors")
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
	f, err := Open(path)
	require.NoError(t, err)
	defer f.Close()
	w, err := f.Data("w")
	require.NoError(t, err)
	assert.True(t, f.Holds(w))
	assert.True(t, f.Holds(w[100:200]))
	assert.False(t, f.Holds(big), "host memory")
	assert.False(t, f.Holds(nil))
	f.Prefault(w)
	f.Prefault(big) // ignored
	assert.Equal(t, big, w, "after Prefault")
	f.DropData(w)
	assert.Equal(t, big, w, "after DropData: read from the file again")

	mem, err := FromBytes("mem", buf.Bytes())
	require.NoError(t, err)
	mw, err := mem.Data("w")
	require.NoError(t, err)
	assert.False(t, mem.Holds(mw), "FromBytes memory is not a mapping")

	require.NoError(t, os.Truncate(path, 4096))
	f.Prefault(w) // must neither fault nor fail
	require.NoError(t, f.Close())
	assert.False(t, f.Holds(w), "after Close")
}
