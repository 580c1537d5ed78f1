package models

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// TestRefinerRow builds an SDXL refiner from sdxl-mini's parts (bigG-like
// encoder only, a U-Net taking 64-wide context and pooled + 5 time ids),
// writes it as an SGM single file (conditioner.embedders.0.model.*), and
// checks that it is recognised as the refiner, loads back bit for bit, and
// conditions on the aesthetic-score time ids (6 / 2.5).
func TestRefinerRow(t *testing.T) {
	dir := golden.Wave(t, "golden-wave2")
	xl, err := checkpoint.Load(filepath.Join(dir, "sdxl-mini"), "")
	require.NoError(t, err)
	defer xl.Close()
	fam := checkpoint.FamilyNamed("SDXL refiner")
	te2 := *xl.Text("text_encoder_2")
	te2.Spec = fam.Texts[0]
	u := xl.UNet
	u.CrossAttentionDim, u.ProjectionClassEmbeddingsInputDim = 64, 32+5*8
	m := &checkpoint.Model{Path: "refiner-mini", Spec: fam, Family: fam.Name, UNet: u, VAE: xl.VAE, Scheduler: xl.Scheduler,
		Texts: []checkpoint.TextModel{te2}, VAEWeights: xl.VAEWeights,
		UNetWeights: randomWeights(nets.ExpectedUNet(u), rand.New(rand.NewPCG(7, 7)))}
	entries, err := checkpoint.SingleFileEntries(m)
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, safetensors.Write(&buf, entries, nil))
	cfg, err := json.Marshal(map[string]any{"unet": u, "vae": xl.VAE, "text_encoder_2": te2.Config, "scheduler": xl.Scheduler})
	require.NoError(t, err)
	back, err := checkpoint.LoadBytes("refiner-mini.safetensors", buf.Bytes(), cfg)
	require.NoError(t, err)
	assert.Equal(t, "SDXL refiner", back.Family, back.FamilyWhy)
	require.Len(t, back.Texts, 1)
	assert.Equal(t, "text_encoder_2", back.Texts[0].Spec.Role)

	d := ref.New()
	defer d.Close()
	p, err := New(d, back, "refiner-mini")
	require.NoError(t, err)
	defer p.Close()
	c, err := p.EncodePrompt("a lighthouse", "blurry", 1)
	require.NoError(t, err)
	defer c.Release()
	p.SetSize(c, 64, 64, SizeCond{})
	assert.Equal(t, []float32{64, 64, 0, 0, 6}, c.CondTimeIDs)
	assert.Equal(t, []float32{64, 64, 0, 0, 2.5}, c.UncondTimeIDs)
	x := make([]float32, 2*4*8*8)
	for i := range x {
		x[i] = float32(i%7) / 7
	}
	out, err := p.PredictNoise(x, [4]int{2, 4, 8, 8}, 500, c, []Row{Uncond, Cond})
	require.NoError(t, err)
	for i, v := range out {
		require.Falsef(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0), "output %d is %v", i, v)
	}
	assert.NotEqual(t, out[:256], out[256:], "the aesthetic score and prompt did not change the rows")
}
