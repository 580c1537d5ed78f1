package gen

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/sampler/rng"
)

// A Flux run's forward process is the straight line x_t = (1-σ) x0 + σ
// eps with the run's generator and seed, σ shifted by the dynamic shift
// the run used (mu 0.459375 at 64x64, golden README); its Facts carry
// T5's sequence length, and the run's distilled guidance is the
// settings'.
func TestSessionForwardFlux(t *testing.T) {
	dir := filepath.Join(golden.Wave(t, "golden-wave3"), "flux-mini")
	s := NewSession(func(func(string)) (gpu.Device, *models.Pipeline, error) {
		dev := ref.New()
		p, err := models.Load(dev, dir, "")
		return dev, p, err
	}, nil)
	f, _, err := s.Load()
	require.NoError(t, err)
	t.Cleanup(s.Close)
	assert.Equal(t, 512, f.MaxSequenceLength)
	st := presets.Default()
	st.Prompt, st.Steps, st.Seed, st.CFGScale, st.Sampler, st.Schedule = "a horse", 2, 42, 1, "euler", ""
	st.Width, st.Height, st.DistilledGuidance = 64, 64, presets.Float(2)
	r, err := s.Start(1, st)
	require.NoError(t, err)
	_, err = s.Finish(context.Background(), r, nil)
	require.NoError(t, err)
	assert.Equal(t, 2.0, s.Pipeline().FluxGuidance)
	assert.Contains(t, s.Infotext(1, 0), ", Distilled CFG Scale: 2")
	// Without one, the run records FLUX.1-dev's default it used.
	st.DistilledGuidance = nil
	r2, err := s.Start(2, st)
	require.NoError(t, err)
	s.End(r2)
	assert.Equal(t, models.DefaultFluxGuidance, s.Pipeline().FluxGuidance)
	assert.Contains(t, s.Infotext(2, 0), ", Distilled CFG Scale: 3.5")
	last := len(r.Job.Frames) - 1
	fw, err := s.Forward(1, last, 3, false)
	require.NoError(t, err)
	// float64 calculate_shift: 1e-12.
	assert.InDelta(t, 0.459375, fw.Flow.Mu, 1e-12)
	x0 := r.Job.Frames[last].X
	g, err := rng.New(st.RNG, uint64(st.Seed))
	require.NoError(t, err)
	eps := make([]float32, len(x0.Data))
	g.Randn(eps)
	e := math.Exp(0.459375)
	for k, tt := range fw.T {
		u := float64(tt+1) / 1000
		sg := e * u / (1 + (e-1)*u)
		assert.InDelta(t, sg, fw.Sigma[k], 1e-12)
		a, b := float32(1-fw.Sigma[k]), float32(fw.Sigma[k])
		for i := range x0.Data {
			// The same float32 products: exact.
			require.Equal(t, a*x0.Data[i]+b*eps[i], fw.X[k].Data[i], "t=%d i=%d", tt, i)
		}
	}
}
