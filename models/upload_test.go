package models

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// TestTruncatedWhileMappedGL: the GL device copies the weights out of the
// mapped file on its own thread; a file truncated behind the mapping gives
// an error naming it there too, not a SIGBUS, and leaves the device clean.
func TestTruncatedWhileMappedGL(t *testing.T) {
	dev := testdev.GL(t)
	m, p := mappedThenTruncated(t)
	_, err := New(dev, m, "mini")
	var ce *safefile.ChangedError
	require.ErrorAs(t, err, &ce)
	assert.True(t, errors.Is(err, safefile.ErrChanged))
	assert.Equal(t, p, ce.Path)
	assert.NoError(t, dev.Err(), "the device after the failed load")
	assert.Zero(t, dev.Stats().Resident, "bytes left on the device")
}

// TestUploadSameOnGLAndRef: the weights the GL device holds after a load
// (copied by UploadFill straight into its buffers) read back bit for bit
// as the reference device's, for the golden checkpoint's F16 file and for
// quantized weights (packed linear weights, the rest widened to F16).
func TestUploadSameOnGLAndRef(t *testing.T) {
	models := map[string]func(t *testing.T) *checkpoint.Model{
		"sd15-mini file": func(t *testing.T) *checkpoint.Model {
			m, err := checkpoint.Load(filepath.Join(golden.Dir(t), "sd15-mini.fp16.safetensors"), filepath.Join(golden.Dir(t), "sd15_mini_config.json"))
			require.NoError(t, err)
			return m
		},
	}
	for _, dt := range []gpu.DType{gpu.Q8_0, gpu.Q4_K} {
		models["random "+dt.String()] = func(t *testing.T) *checkpoint.Model {
			m, err := RandomModelAs("sd15-mini", 3, dt)
			require.NoError(t, err)
			return m
		}
	}
	// A quantized file: its mapped quantized tensors take Get's guarded copy.
	models["fp8 file"] = func(t *testing.T) *checkpoint.Model {
		m, err := RandomModelAs("sd15-mini", 4, gpu.F8E4M3)
		require.NoError(t, err)
		entries, err := checkpoint.SingleFileEntries(m)
		require.NoError(t, err)
		cfg := map[string]any{"unet": m.UNet, "vae": m.VAE, "scheduler": m.Scheduler, "text_encoder": m.Texts[0].Config}
		js, err := json.Marshal(cfg)
		require.NoError(t, err)
		dir := t.TempDir()
		var buf bytes.Buffer
		require.NoError(t, safetensors.Write(&buf, entries, nil))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "fp8.safetensors"), buf.Bytes(), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "fp8.json"), js, 0o644))
		f, err := checkpoint.Load(filepath.Join(dir, "fp8.safetensors"), filepath.Join(dir, "fp8.json"))
		require.NoError(t, err)
		return f
	}
	gl := testdev.GL(t)
	r := ref.New()
	defer r.Close()
	for name, load := range models {
		t.Run(name, func(t *testing.T) {
			pg, err := New(gl, load(t), name)
			require.NoError(t, err)
			defer pg.Close()
			pr, err := New(r, load(t), name)
			require.NoError(t, err)
			defer pr.Close()
			compared, packed := 0, 0
			expected := map[string]map[string][]int{
				"unet":         nets.ExpectedUNet(pg.Model.UNet),
				"text_encoder": nets.ExpectedText(pg.Model.Texts[0].Config),
			}
			for _, role := range []string{"unet", "text_encoder"} {
				var names []string
				for n := range expected[role] {
					names = append(names, n)
				}
				sort.Strings(names)
				for _, n := range names {
					a, b := pg.netOf(role).Param(n), pr.netOf(role).Param(n)
					require.NotNil(t, a, n)
					require.Equal(t, b.DType, a.DType, n)
					if a.DType.Quantized() {
						packed++
					}
					va, err := gl.Download(a)
					require.NoError(t, err, n)
					vb, err := r.Download(b)
					require.NoError(t, err, n)
					require.Len(t, va, len(vb), n)
					for i := range va {
						if *(*uint32)(unsafe.Pointer(&va[i])) != *(*uint32)(unsafe.Pointer(&vb[i])) {
							assert.Fail(t, "bits differ", "%s %s [%d]: gl %v, ref %v", role, n, i, va[i], vb[i])
							break
						}
					}
					compared++
				}
			}
			assert.Greater(t, compared, 100, "parameters compared")
			if name != "sd15-mini file" { // the others' linear weights are quantized
				assert.Positive(t, packed, "packed quantized parameters compared")
			}
		})
	}
}
