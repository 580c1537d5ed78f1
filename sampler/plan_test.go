package sampler

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/sampler/rng"
)

// PlanRun and InitialLatent give, without a network, exactly the schedule
// and the first latent NewRun makes; Space is the sampler family's.
func TestPlanRunMatchesNewRun(t *testing.T) {
	for _, c := range []struct {
		sampler, schedule string
		space             Space
	}{
		{"Euler", "", SpaceVE}, {"Euler a", "leading", SpaceVE}, {"DPM++ 2M Karras", "", SpaceVP},
		{"DDIM", "", SpaceVP}, {"plms", "", SpaceVP}, {"Heun", "karras", SpaceVE},
	} {
		s := Settings{Sampler: c.sampler, Schedule: c.schedule, Steps: 7, CFG: 1, Seed: 3, Batch: 1, H: 4, W: 4, Model: SD15Config()}
		plan, err := PlanRun(s)
		require.NoError(t, err, c.sampler)
		r, err := NewRun(s, &halfNet{c: 4})
		require.NoError(t, err, c.sampler)
		assert.Equal(t, r.Schedule(), plan.Schedule, c.sampler)
		assert.Equal(t, r.Sampler(), plan.Sampler)
		assert.Equal(t, c.space, plan.Space, c.sampler)
		assert.Equal(t, c.space, r.Space(), c.sampler)
		x, err := InitialLatent(s)
		require.NoError(t, err)
		assert.Equal(t, r.X(), x, c.sampler)
	}
	flow := SD15Config()
	flow.PredictionType = "flow"
	plan, err := PlanRun(Settings{Sampler: "euler", Steps: 4, CFG: 1, Batch: 1, H: 2, W: 2, Model: flow})
	require.NoError(t, err)
	assert.Equal(t, SpaceFlow, plan.Space)
	_, err = PlanRun(Settings{Sampler: "nope", Steps: 4, Batch: 1, H: 2, W: 2, Model: SD15Config()})
	assert.ErrorContains(t, err, "unknown sampler")
	_, err = PlanRun(Settings{Sampler: "DPM++ 3M SDE", Steps: 4, Batch: 1, H: 2, W: 2, Model: SD15Config()})
	assert.ErrorContains(t, err, "Stepwise does not implement")
}

// Space.VP divides a VE latent by sqrt(1+sigma^2) and leaves the others.
func TestSpaceVP(t *testing.T) {
	x := Latent{Shape: [4]int{1, 1, 1, 2}, Data: []float32{3, -6}}
	got := SpaceVE.VP(x, 2)
	// float32 arithmetic: 1e-6 relative.
	assert.InDelta(t, 3/math.Sqrt(5), float64(got.Data[0]), 1e-6)
	assert.InDelta(t, -6/math.Sqrt(5), float64(got.Data[1]), 1e-6)
	assert.Equal(t, x, SpaceVP.VP(x, 2))
	assert.Equal(t, x, SpaceFlow.VP(x, 2))
}

// ForwardProcess draws eps from the named generator: at t=0 with abar
// near 1 x_t is x0, at T-1 it is almost eps.
func TestForwardProcess(t *testing.T) {
	x0 := Latent{Shape: [4]int{1, 1, 2, 2}, Data: []float32{1, 2, 3, 4}}
	f, err := ForwardProcess(SD15Config(), x0, "torch-cpu", 9, 2)
	require.NoError(t, err)
	g, err := rng.New("torch-cpu", 9)
	require.NoError(t, err)
	eps := make([]float32, 4)
	g.Randn(eps)
	for i := range eps {
		a, b := math.Sqrt(f.AlphaBar[1]), math.Sqrt(1-f.AlphaBar[1])
		// float32 products: 1e-5.
		assert.InDelta(t, a*float64(x0.Data[i])+b*float64(eps[i]), float64(f.X[1].Data[i]), 1e-5)
		assert.InDelta(t, float64(x0.Data[i]), float64(f.X[0].Data[i]), 0.1)
	}
	assert.Equal(t, []int{0, 999}, f.T)
	_, err = ForwardProcess(SD15Config(), x0, "nope", 9, 2)
	assert.Error(t, err)
}
