package checkpoint

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// bundleOf is a config bundle (as --config takes) holding m's configs.
func bundleOf(t *testing.T, m *Model) []byte {
	t.Helper()
	b := map[string]any{"unet": m.UNet, "vae": m.VAE, "scheduler": m.Scheduler}
	for _, tm := range m.Texts {
		b[tm.Spec.Role] = tm.Config
	}
	data, err := json.Marshal(b)
	require.NoError(t, err)
	return data
}

// sameWeights asserts that two weight sets hold the same tensors bit for bit.
func sameWeights(t *testing.T, what string, got, want nets.Weights) {
	t.Helper()
	g, w := got.(nets.MapWeights), want.(nets.MapWeights)
	assert.Equalf(t, len(w), len(g), "%s: tensor count", what)
	for k, p := range w {
		q, ok := g[k]
		if assert.Truef(t, ok, "%s: %s missing", what, k) {
			assert.Truef(t, q.DType == p.DType && slices.Equal(q.Shape, p.Shape) && bytes.Equal(q.Raw, p.Raw), "%s: %s differs", what, k)
		}
	}
}

// TestWave2Layouts checks the family recognition and the declarations
// against what diffusers wrote: the SDXL single file's keys and shapes are
// exactly those SingleFileKeys derives; the single file and the folder give
// the same weights bit for bit; and writing the folder back out as a
// single file (SDXL, and SD 2.x with OpenCLIP's fused q/k/v and extra
// block) reproduces diffusers' own file and loads back identically.
func TestWave2Layouts(t *testing.T) {
	dir := golden.Wave(t, "golden-wave2")
	folder, err := Load(filepath.Join(dir, "sdxl-mini"), "")
	require.NoError(t, err)
	defer folder.Close()
	assert.Equal(t, "SDXL", folder.Family, folder.FamilyWhy)
	require.Len(t, folder.Texts, 2)
	assert.Equal(t, int32(49407), folder.Texts[0].Pad)
	assert.Equal(t, int32(0), folder.Texts[1].Pad, "tokenizer_2 pads with '!'")

	single, err := Load(filepath.Join(dir, "sdxl-mini.fp16.safetensors"), filepath.Join(dir, "sdxl_mini_config.json"))
	require.NoError(t, err)
	defer single.Close()
	assert.Equal(t, "SDXL", single.Family, single.FamilyWhy)
	assert.Zero(t, len(single.Warnings), "warnings %q", single.Warnings)
	sameWeights(t, "unet", single.UNetWeights, folder.UNetWeights)
	sameWeights(t, "vae", single.VAEWeights, folder.VAEWeights)
	for i := range folder.Texts {
		sameWeights(t, folder.Texts[i].Spec.Role, single.Texts[i].Weights, folder.Texts[i].Weights)
	}

	keys := readKeyList(t, filepath.Join(dir, "sdxl_mini_keys.txt"))
	want, err := SingleFileKeys(folder)
	require.NoError(t, err)
	compareShapes(t, "sdxl single file", keys, want)

	// Written back from the folder: diffusers' file, byte for byte per tensor.
	entries, err := SingleFileEntries(folder)
	require.NoError(t, err)
	f, err := safetensors.Open(filepath.Join(dir, "sdxl-mini.fp16.safetensors"))
	require.NoError(t, err)
	defer f.Close()
	require.Len(t, entries, len(f.Tensors()))
	for _, e := range entries {
		raw, err := f.Data(e.Name)
		if assert.NoError(t, err, e.Name) {
			assert.Truef(t, bytes.Equal(raw, e.Data), "%s: bytes differ from diffusers' single file", e.Name)
		}
	}

	// SD 2.x: no faithful single file is published; ours loads back as the folder.
	sd2, err := Load(filepath.Join(dir, "sd2-mini"), "")
	require.NoError(t, err)
	defer sd2.Close()
	assert.Equal(t, "SD 2.x", sd2.Family, sd2.FamilyWhy)
	assert.Equal(t, int32(0), sd2.Texts[0].Pad)
	entries, err = SingleFileEntries(sd2)
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, safetensors.Write(&buf, entries, nil))
	back, err := LoadBytes("sd2-mini.safetensors", buf.Bytes(), bundleOf(t, sd2))
	require.NoError(t, err)
	assert.Equal(t, "SD 2.x", back.Family, back.FamilyWhy)
	assert.Positive(t, back.Ignored, "the extra OpenCLIP block is dropped")
	sameWeights(t, "sd2 unet", back.UNetWeights, sd2.UNetWeights)
	sameWeights(t, "sd2 vae", back.VAEWeights, sd2.VAEWeights)
	sameWeights(t, "sd2 text", back.Texts[0].Weights, sd2.Texts[0].Weights)
}
