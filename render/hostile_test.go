package render

import (
	"bytes"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPNGTextTotalCap: many large text chunks, each under the per-chunk
// cap, are refused together, naming the file.
func TestPNGTextTotalCap(t *testing.T) {
	text := map[string]string{}
	for i := 0; i < 3; i++ {
		text[fmt.Sprintf("k%d", i)] = strings.Repeat("a", 12<<20)
	}
	data, err := EncodePNG(image.NewRGBA(image.Rect(0, 0, 2, 2)), text)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "many.png")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	_, err = ReadPNGTextFile(p)
	require.Error(t, err)
	assert.Contains(t, err.Error(), p+": png: tEXt chunk at byte")
	assert.Contains(t, err.Error(), "the text chunks hold more than 33554432 bytes in all")

	delete(text, "k2")
	got, err := ReadPNGText(bytes.NewReader(mustEncode(t, text)))
	require.NoError(t, err)
	assert.Len(t, got, 2)
}

func mustEncode(t *testing.T, text map[string]string) []byte {
	data, err := EncodePNG(image.NewRGBA(image.Rect(0, 0, 2, 2)), text)
	require.NoError(t, err)
	return data
}

// TestReadPNGTextFileFolder: a folder is named as one, not "bad signature".
func TestReadPNGTextFileFolder(t *testing.T) {
	d := t.TempDir()
	_, err := ReadPNGTextFile(d)
	require.Error(t, err)
	assert.Equal(t, d+" is a folder, not a regular file", err.Error())
}

// TestWritePNGLongNameAndStaleTemps: a 250-byte name is written (its
// temporary name used to pass the 255-byte limit: "file name too long"
// after the whole computation), and temporaries left by killed writes are
// removed by the next write to the folder, young ones kept.
func TestWritePNGLongNameAndStaleTemps(t *testing.T) {
	dir := t.TempDir()
	img := image.NewRGBA(image.Rect(0, 0, 2, 2))
	long := filepath.Join(dir, strings.Repeat("a", 250)+".png")
	require.NoError(t, CheckOutput(long))
	require.NoError(t, WritePNG(long, img, map[string]string{"parameters": "x"}, false))

	old := time.Now().Add(-time.Hour)
	stale := []string{filepath.Join(dir, ".stepwise-123.tmp"), filepath.Join(dir, ".x.png.tmp-456")}
	fresh := filepath.Join(dir, ".stepwise-789.tmp")
	for _, p := range append(stale, fresh) {
		require.NoError(t, os.WriteFile(p, []byte("partial"), 0o644))
	}
	for _, p := range stale {
		require.NoError(t, os.Chtimes(p, old, old))
	}
	require.NoError(t, WritePNG(filepath.Join(dir, "next.png"), img, nil, false))
	for _, p := range stale {
		assert.NoFileExists(t, p)
	}
	assert.FileExists(t, fresh)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 3, "the two PNGs and the young temporary")
}

// TestCheckOutput: names no file can have are refused before any work.
func TestCheckOutput(t *testing.T) {
	dir := t.TempDir()
	for path, want := range map[string]string{
		"":        "the output file name is empty",
		dir + "/": "is a folder name; name a file in it",
		dir:       "is a folder; name a file in it",
		filepath.Join(dir, strings.Repeat("b", 300)+".png"): "is 304 bytes, more than the 255 a file system accepts",
		filepath.Join(dir, "no", "such", "x.png"):           "does not exist",
	} {
		err := CheckOutput(path)
		require.Error(t, err, path)
		assert.Contains(t, err.Error(), want)
	}
}
