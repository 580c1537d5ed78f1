package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"image"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/render"
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

// within fails the test when f does not return in d (a FIFO that blocks).
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		require.Failf(t, "timed out", "%s hung for %s", what, d)
	}
}

// mkfifo makes a FIFO at path (nothing ever writes to it).
func mkfifo(t *testing.T, path string) string {
	t.Helper()
	require.NoError(t, syscall.Mkfifo(path, 0o644))
	return path
}

// TestHostilePaths: FIFOs, folders and devices where files are expected,
// and oversized files, are refused at once with what the path is.
func TestHostilePaths(t *testing.T) {
	g := golden.Dir(t)
	dir := t.TempDir()
	mini := filepath.Join(g, "sd15-mini.fp16.safetensors")
	zero := filepath.Join(dir, "zero.json")
	require.NoError(t, os.Symlink("/dev/zero", zero))
	big := filepath.Join(dir, "big.json")
	require.NoError(t, os.WriteFile(big, append([]byte(`{"unet": {}, "pad": "`), bytes.Repeat([]byte("x"), 5<<20)...), 0o644))
	// A single file whose side config (same name, .json) is a FIFO.
	side := filepath.Join(dir, "side.safetensors")
	require.NoError(t, os.Symlink(mini, side))
	mkfifo(t, filepath.Join(dir, "side.json"))
	// Diffusers folders: model_index.json a FIFO; unet/config.json /dev/zero.
	diffusers := func(name string, poison func(d string)) string {
		d := filepath.Join(dir, name)
		for _, sub := range []string{"unet", "vae", "text_encoder", "scheduler"} {
			src := filepath.Join(g, "sd15-mini", sub)
			entries, err := os.ReadDir(src)
			require.NoError(t, err)
			require.NoError(t, os.MkdirAll(filepath.Join(d, sub), 0o755))
			for _, e := range entries {
				require.NoError(t, os.Symlink(filepath.Join(src, e.Name()), filepath.Join(d, sub, e.Name())))
			}
		}
		poison(d)
		return d
	}
	indexFIFO := diffusers("index-fifo", func(d string) { mkfifo(t, filepath.Join(d, "model_index.json")) })
	unetZero := diffusers("unet-zero", func(d string) {
		p := filepath.Join(d, "unet", "config.json")
		require.NoError(t, os.Remove(p))
		require.NoError(t, os.Symlink("/dev/zero", p))
	})
	for _, tc := range []struct {
		name, path, config, want string
	}{
		{"model FIFO", mkfifo(t, filepath.Join(dir, "m.safetensors")), "", "is a named pipe (FIFO), not a .safetensors file or a diffusers folder"},
		{"--config FIFO", mini, mkfifo(t, filepath.Join(dir, "c.json")), "c.json is a named pipe (FIFO), not a regular file"},
		{"--config /dev/zero", mini, zero, "zero.json is a character device, not a regular file"},
		{"--config too large", mini, big, "big.json: larger than the 4194304-byte limit"},
		{"side config FIFO", side, "", "side.json is a named pipe (FIFO), not a regular file"},
		{"model_index.json FIFO", indexFIFO, "", "model_index.json is a named pipe (FIFO), not a regular file"},
		{"unet/config.json /dev/zero", unetZero, "", "config.json is a character device, not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			within(t, 10*time.Second, "info", func() { err = writeInfo(io.Discard, tc.path, tc.config, false, false) })
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}

	t.Run("--from", func(t *testing.T) {
		for path, want := range map[string]string{
			mkfifo(t, filepath.Join(dir, "p.png")): "p.png is a named pipe (FIFO), not a regular file",
			dir:                                    "is a folder, not a regular file",
		} {
			var err error
			within(t, 10*time.Second, "--from", func() { _, err = parseGenerate([]string{"--from", path}, io.Discard) })
			require.Error(t, err)
			assert.Contains(t, err.Error(), want)
			assert.NotContains(t, err.Error(), "bad signature")
		}
	})

	t.Run("tokenize - caps stdin", func(t *testing.T) {
		err := tokenizeTo(io.Discard, io.LimitReader(zeroReader{}, 2<<20), []string{"-"})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "the prompt on stdin is larger than the 1 MiB limit")
		var out bytes.Buffer
		require.NoError(t, tokenizeTo(&out, strings.NewReader("red heart\n"), []string{"-"}))
		assert.Contains(t, out.String(), `"red heart"`)
	})
}

// zeroReader reads NULs forever, as /dev/zero does.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestOutputPathsCheckedFirst: "-o ”" and "-o dir/" used to write ./.png
// and dir/.png; a name too long for the file system failed after the run.
func TestOutputPathsCheckedFirst(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		out   string
		batch int
		want  string
	}{
		{"", 1, "-o: the output file name is empty"},
		{dir + "/", 1, "is a folder name; name a file in it"},
		{filepath.Join(dir, strings.Repeat("n", 252)), 1, "more than the 255 a file system accepts"},
		{filepath.Join(dir, strings.Repeat("n", 250)), 2, "more than the 255 a file system accepts"},
	} {
		_, err := outputPaths(tc.out, tc.batch, false)
		require.Error(t, err, "%q", tc.out)
		assert.Contains(t, err.Error(), tc.want)
	}
	paths, err := outputPaths(filepath.Join(dir, strings.Repeat("n", 250)), 1, false)
	require.NoError(t, err)
	assert.Len(t, filepath.Base(paths[0]), 254)
}

// TestFromHugeParameters: --from on a PNG whose parameters text is 2 MB
// says what is wrong without echoing the text.
func TestFromHugeParameters(t *testing.T) {
	p := filepath.Join(t.TempDir(), "huge.png")
	params := "cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: " + strings.Repeat("9", 2<<20)
	require.NoError(t, render.WritePNG(p, image.NewRGBA(image.Rect(0, 0, 8, 8)), map[string]string{"parameters": params}, false))
	_, err := parseGenerate([]string{"--from", p}, io.Discard)
	require.Error(t, err)
	assert.Less(t, len(err.Error()), 500, "the error echoes the parameters text")
	assert.Contains(t, err.Error(), "Size")
}
