package models

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/models/checkpoint"
)

// mappedThenTruncated loads a copy of sd15-mini (its weights mapped) and
// truncates the file behind the mapping, as another program rewriting the
// checkpoint would.
func mappedThenTruncated(t *testing.T) (*checkpoint.Model, string) {
	t.Helper()
	g := golden.Dir(t)
	data, err := os.ReadFile(filepath.Join(g, "sd15-mini.fp16.safetensors"))
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "mini.safetensors")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	m, err := checkpoint.Load(p, filepath.Join(g, "sd15_mini_config.json"))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	require.NoError(t, os.Truncate(p, 4096))
	return m, p
}

// TestTruncatedWhileMapped: reading weights whose file was truncated after
// it was mapped used to kill the process with SIGBUS (in CountNonFinite,
// or in the upload); now it is an error naming the file.
func TestTruncatedWhileMapped(t *testing.T) {
	t.Run("CheckFinite", func(t *testing.T) {
		m, p := mappedThenTruncated(t)
		err := m.CheckFinite()
		var ce *safefile.ChangedError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, p, ce.Path)
		assert.Contains(t, err.Error(), "file changed while reading")
	})
	t.Run("upload", func(t *testing.T) {
		m, p := mappedThenTruncated(t)
		// Skip the scan so that the upload is the first to read.
		gw, err := m.GuardedWeights("unet")
		require.NoError(t, err)
		var bad int
		for _, name := range []string{"conv_in.weight", "conv_out.weight", "mid_block.resnets.0.conv1.weight"} {
			if _, ok := gw.Get(name); !ok {
				bad++
			}
		}
		assert.Zero(t, bad)
		require.True(t, errors.Is(gw.Err(), safefile.ErrChanged), "err %v", gw.Err())
		assert.Contains(t, gw.Err().Error(), p)
		// The whole pipeline load says the same.
		_, err = New(ref.New(), m, "mini")
		require.True(t, errors.Is(err, safefile.ErrChanged), "err %v", err)
		assert.Contains(t, err.Error(), p)
	})
}
