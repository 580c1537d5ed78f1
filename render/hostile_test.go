package render

import (
	"bytes"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
