package models

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models/checkpoint"
)

// goldenMini loads the golden SD 1.5 mini checkpoint from a copy of the
// file in a temporary folder (the test may change it) on dev, with
// STEPWISE_MMAP set to mmap.
func goldenMini(t *testing.T, mmap string) (*Pipeline, string) {
	t.Helper()
	g := golden.Dir(t)
	path := filepath.Join(t.TempDir(), "mini.safetensors")
	src, err := os.Open(filepath.Join(g, "sd15-mini.fp16.safetensors"))
	require.NoError(t, err)
	defer src.Close()
	dst, err := os.Create(path)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
	t.Setenv(MmapEnv, mmap)
	m, err := checkpoint.Load(path, filepath.Join(g, "sd15_mini_config.json"))
	require.NoError(t, err)
	p, err := New(testdev.GL(t), m, "mini")
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p, path
}

// predictMini is one guided U-Net call of p on a fixed latent.
func predictMini(t *testing.T, p *Pipeline) []float32 {
	t.Helper()
	c, err := p.EncodePrompt("a red fox in snow", "blurry", 0)
	require.NoError(t, err)
	x := make([]float32, 2*4*8*8)
	for i := range x {
		x[i] = float32(i%17)/8 - 1
	}
	out, err := p.PredictNoise(x, [4]int{2, 4, 8, 8}, 500, c, []Row{Uncond, Cond})
	require.NoError(t, err)
	return out
}

// TestInPlaceSameAsCopy: on llvmpipe the weights read in place from the
// mapped file (the default) give the very values the copied ones give.
func TestInPlaceSameAsCopy(t *testing.T) {
	copied, _ := goldenMini(t, "off")
	assert.False(t, copied.Model.ReadsInPlace(), "STEPWISE_MMAP=off copies")
	want := predictMini(t, copied)
	copied.Close()

	mapped, _ := goldenMini(t, "")
	require.True(t, mapped.Model.ReadsInPlace(), "the default reads in place on llvmpipe")
	assert.Equal(t, want, predictMini(t, mapped), "U-Net output, in place vs copied (bit for bit)")
}

// TestInPlaceRefusesChangedFile: a checkpoint written to while its weights
// are read in place is refused by name before the next piece of work (a
// truncated mapping would crash the device's threads); one replaced or
// deleted under its path is not (the mapping keeps the old file).
func TestInPlaceRefusesChangedFile(t *testing.T) {
	p, path := goldenMini(t, "on")
	require.True(t, p.Model.ReadsInPlace())
	predictMini(t, p)
	later := time.Now().Add(time.Hour)
	require.NoError(t, os.Chtimes(path, later, later))
	_, err := p.EncodePrompt("a fox", "", 0)
	var ce *safefile.ChangedError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, path, ce.Path)
	assert.Contains(t, err.Error(), "load it again")
	x := make([]float32, 2*4*8*8)
	_, err = p.PredictNoise(x, [4]int{2, 4, 8, 8}, 500, &Conditioning{}, []Row{Uncond, Cond})
	assert.True(t, errors.Is(err, safefile.ErrChanged), "PredictNoise: %v", err)

	// A file replaced under its path (a download renamed over it) is not a
	// change: the mapping keeps the old file, which nobody can truncate.
	r, rpath := goldenMini(t, "on")
	data, err := os.ReadFile(rpath)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(rpath+".new", data[:len(data)/2], 0o644))
	require.NoError(t, os.Rename(rpath+".new", rpath))
	_, err = r.EncodePrompt("a fox", "", 0)
	assert.NoError(t, err, "the path replaced")
	require.NoError(t, os.Remove(rpath))
	assert.NotEmpty(t, predictMini(t, r), "the path deleted")

	// A copied model does not mind: the file is not read any more.
	q, qpath := goldenMini(t, "off")
	require.NoError(t, os.Chtimes(qpath, later, later))
	_, err = q.EncodePrompt("a fox", "", 0)
	assert.NoError(t, err)
}

// TestControlNetTruncatedWhileMapped: a ControlNet's weights are uploaded
// as a checkpoint's (guarded, in place on llvmpipe), so a file truncated
// after it was mapped is an error naming it on both devices, where the
// device's unguarded copy used to die of SIGBUS.
func TestControlNetTruncatedWhileMapped(t *testing.T) {
	src := filepath.Join(golden.Wave(t, "golden-wave3"), "sd15-mini-controlnet")
	for devName, open := range testdev.All(t) {
		t.Run(devName, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range []string{"config.json", "diffusion_pytorch_model.fp16.safetensors"} {
				data, err := os.ReadFile(filepath.Join(src, f))
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(dir, f), data, 0o644))
			}
			d := open(t)
			p, err := Load(d, filepath.Join(golden.Dir(t), "sd15-mini"), "")
			require.NoError(t, err)
			defer p.Close()
			c, err := checkpoint.LoadControlNet(dir)
			require.NoError(t, err)
			weights := filepath.Join(dir, "diffusion_pytorch_model.fp16.safetensors")
			require.NoError(t, os.Truncate(weights, 4096))
			err = p.SetControlNet(c)
			var ce *safefile.ChangedError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, weights, ce.Path)
			assert.Nil(t, p.ControlNet(), "no ControlNet attached")
			assert.NoError(t, d.Err(), "the device after the failed load")
		})
	}
}
