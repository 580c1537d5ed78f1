package gl

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMain keeps the tests' program binaries out of the user's cache folder
// and, after the tests, checks every shader variant they built against the
// GLSL 4.30 specification (validateVariants).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "stepwise-gl-cache-")
	if err == nil {
		os.Setenv("STEPWISE_GL_CACHE", dir)
	}
	code := m.Run()
	if err == nil {
		os.RemoveAll(dir)
	}
	if report, n := validateVariants(); report != "" {
		fmt.Fprintln(os.Stderr, "FAIL: "+report)
		code = 1
	} else if n > 0 && testing.Verbose() {
		fmt.Fprintf(os.Stderr, "gl: %d shader variants are valid GLSL 4.30 (glslangValidator)\n", n)
	}
	os.Exit(code)
}

// scaleOn runs Scale(x, 2, 1) on a fresh device and returns its values.
func scaleOn(t *testing.T) ([]float32, *Device) {
	t.Helper()
	d := fresh(t)
	x := d.Upload([]float32{1, -2, 3.5}, 3)
	got, err := d.Download(d.Scale(x, 2, 1))
	require.NoError(t, err)
	return got, d
}

// cacheCounts are a device's program cache hits and writes.
func cacheCounts(d *Device) [2]int { return [2]int{d.cache.hits, d.cache.writes} }

func TestProgramCache(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("STEPWISE_GL_CACHE", dir)
	want := []float32{3, -3, 8} // exact: 2x + 1 in float32

	got, d := scaleOn(t)
	require.Equal(t, want, got)
	if d.cache.dir == "" {
		t.Skip("this driver offers no program binary formats")
	}
	require.Equal(t, [2]int{0, 1}, cacheCounts(d), "cold start: hits, writes")
	entries, _ := filepath.Glob(filepath.Join(dir, "*.bin"))
	require.Len(t, entries, 1, "the cache holds one entry")

	got, d = scaleOn(t)
	require.Equal(t, want, got)
	require.Equal(t, [2]int{1, 0}, cacheCounts(d), "warm start: hits, writes")

	// A corrupt entry (one payload byte flipped) is ignored and rewritten.
	raw, err := os.ReadFile(entries[0])
	require.NoError(t, err)
	raw[len(raw)-1] ^= 0xff
	require.NoError(t, os.WriteFile(entries[0], raw, 0o644))
	got, d = scaleOn(t)
	require.Equal(t, want, got)
	require.Equal(t, [2]int{0, 1}, cacheCounts(d), "corrupt entry: hits, writes")

	// A stale entry (a valid file the driver refuses) is ignored and rewritten.
	require.NoError(t, os.WriteFile(entries[0], encodeEntry(0x1234, []byte("not a program")), 0o644))
	got, d = scaleOn(t)
	require.Equal(t, want, got)
	require.NoError(t, d.Err())
	require.Equal(t, [2]int{0, 1}, cacheCounts(d), "stale entry: hits, writes")
	got, d = scaleOn(t)
	require.Equal(t, want, got)
	assert.Equal(t, 1, d.cache.hits, "after the rewrite")
	left, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	assert.Empty(t, left, "temporary files left behind")
}

func TestProgramCacheOff(t *testing.T) {
	t.Setenv("STEPWISE_GL_CACHE", "off")
	got, d := scaleOn(t)
	assert.Equal(t, []float32{3, -3, 8}, got)
	assert.Empty(t, d.cache.dir, "no cache folder")
}

func TestDecodeEntry(t *testing.T) {
	e := encodeEntry(7, []byte{1, 2, 3})
	f, p, err := decodeEntry(e)
	require.NoError(t, err)
	assert.Equal(t, uint32(7), f)
	assert.Equal(t, []byte{1, 2, 3}, p)
	for _, bad := range [][]byte{nil, e[:len(e)-1], append(append([]byte(nil), e...), 0), []byte("junk")} {
		_, _, err := decodeEntry(bad)
		assert.Error(t, err, "decodeEntry accepted %d bad bytes", len(bad))
	}
}
