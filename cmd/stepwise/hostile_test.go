package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
)

// evilName is a tensor name that retitles the terminal and leaves the
// alternate screen when printed raw.
const evilName = "\x1b]0;pwned\x07\x1b[?1049l\x1b[2Jevil"

// withExtraTensor copies a safetensors file with one more F32 [1] tensor.
func withExtraTensor(t *testing.T, src, dst, name string) {
	t.Helper()
	data, err := os.ReadFile(src)
	require.NoError(t, err)
	n := binary.LittleEndian.Uint64(data[:8])
	var hdr map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(data[8:8+n], &hdr))
	body := data[8+n:]
	entry, err := json.Marshal(map[string]any{"dtype": "F32", "shape": []int{1}, "data_offsets": []int{len(body), len(body) + 4}})
	require.NoError(t, err)
	hdr[name] = entry
	h, err := json.Marshal(hdr)
	require.NoError(t, err)
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	var out bytes.Buffer
	binary.Write(&out, binary.LittleEndian, uint64(len(h)))
	out.Write(h)
	out.Write(body)
	out.Write([]byte{0, 0, 0, 0})
	require.NoError(t, os.WriteFile(dst, out.Bytes(), 0o644))
}

// TestInfoEscapesFileText: a tensor name with escape sequences is shown
// escaped by `stepwise info`, never sent raw to the terminal.
func TestInfoEscapesFileText(t *testing.T) {
	g := golden.Dir(t)
	p := filepath.Join(t.TempDir(), "evil.safetensors")
	withExtraTensor(t, filepath.Join(g, "sd15-mini.fp16.safetensors"), p, evilName)
	var out bytes.Buffer
	require.NoError(t, writeInfo(&out, p, filepath.Join(g, "sd15_mini_config.json"), false, false))
	assert.NotContains(t, out.String(), "\x1b", "info printed a raw ESC")
	assert.NotContains(t, out.String(), "\x07")
	assert.Contains(t, out.String(), `\x1b]0;pwned\a\x1b[?1049l\x1b[2Jevil`)
}

// stderrOf runs f with os.Stderr captured.
func stderrOf(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	old := os.Stderr
	os.Stderr = w
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(r); done <- b }()
	f()
	os.Stderr = old
	w.Close()
	return string(<-done)
}

// TestErrorsEscaped: an error quoting a file's name or text is printed
// with its control characters escaped.
func TestErrorsEscaped(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c"+evilName+".json")
	require.NoError(t, os.WriteFile(cfg, []byte(`{"unet": {"`+strings.ReplaceAll(evilName, "\x1b", `\u001b`)+`": 1}}`), 0o644))
	var code int
	out := stderrOf(t, func() { code = run([]string{"info", "--config", cfg, filepath.Join(dir, "m"+evilName+".safetensors")}) })
	assert.Equal(t, 1, code)
	assert.Contains(t, out, `stepwise info: `)
	assert.Contains(t, out, `m\x1b]0;pwned\a`)
	assert.NotContains(t, out, "\x1b")
	assert.NotContains(t, out, "\x07")
}
