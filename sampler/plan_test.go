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

// fluxDevConfig is FLUX.1-dev's scheduler: dynamic shift from 256 to 4096
// tokens, 0.5 to 1.15, sigmas given by the pipeline.
func fluxDevConfig() ScheduleConfig {
	c := SD15Config()
	c.PredictionType, c.PipelineSigmas, c.DynamicShift = "flow", true, true
	c.BaseShift, c.MaxShift, c.BaseSeqLen, c.MaxSeqLen = 0.5, 1.15, 256, 4096
	return c
}

// The flow forward process is the straight line (1-s) x0 + s eps with s
// the model's shifted sigma at t, eps the generator's draw; the VP one is
// untouched (no sigmas).
func TestForwardProcessFlow(t *testing.T) {
	x0 := Latent{Shape: [4]int{1, 1, 4, 4}, Data: make([]float32, 16)}
	for i := range x0.Data {
		x0.Data[i] = float32(i)/8 - 1
	}
	g, err := rng.New("philox", 5)
	require.NoError(t, err)
	eps := make([]float32, 16)
	g.Randn(eps)
	sd3 := SD15Config()
	sd3.PredictionType, sd3.Shift = "flow", 3
	for _, c := range []struct {
		name  string
		cfg   ScheduleConfig
		shift float64
	}{
		{"sd3 shift 3", sd3, 3},
		// 2x2 tokens of a 4x4 latent: mu = 0.5 + (4-256)(0.65/3840).
		{"flux dynamic", fluxDevConfig(), math.Exp(0.5 + (4-256)*0.65/3840)},
	} {
		f, err := ForwardProcess(c.cfg, x0, "philox", 5, 5)
		require.NoError(t, err, c.name)
		require.Len(t, f.Sigma, 5, c.name)
		// mu in float64 arithmetic: 1e-12.
		assert.InDelta(t, c.shift, f.Flow.Shift, 1e-12, c.name)
		for k, tt := range f.T {
			u := float64(tt+1) / 1000
			s := c.shift * u / (1 + (c.shift-1)*u)
			// float64 shift formula: 1e-12.
			assert.InDelta(t, s, f.Sigma[k], 1e-12, c.name)
			a, b := float32(1-f.Sigma[k]), float32(f.Sigma[k])
			for i := range eps {
				// The same float32 products: exact.
				assert.Equal(t, a*x0.Data[i]+b*eps[i], f.X[k].Data[i], "%s t=%d i=%d", c.name, tt, i)
			}
		}
		assert.InDelta(t, 1, f.Sigma[4], 1e-12, "t=T-1 is pure noise")
	}
	vp, err := ForwardProcess(SD15Config(), x0, "philox", 5, 5)
	require.NoError(t, err)
	assert.Nil(t, vp.Sigma)
	assert.Zero(t, vp.Flow.Shift)
	ab, err := SD15Config().AlphasCumprod()
	require.NoError(t, err)
	for k, tt := range vp.T {
		a, b := float32(math.Sqrt(float64(ab[tt]))), float32(math.Sqrt(1-float64(ab[tt])))
		for i := range eps {
			assert.Equal(t, a*x0.Data[i]+b*eps[i], vp.X[k].Data[i], "VP t=%d i=%d", tt, i)
		}
	}
	bad := fluxDevConfig()
	bad.MaxSeqLen = bad.BaseSeqLen
	_, err = ForwardProcess(bad, x0, "philox", 5, 5)
	assert.ErrorContains(t, err, "dynamic shift")
}

// PlanRun reports a flow run's shift: SD3's static one, Flux's e^mu for
// the image's token count; each planned sigma lies on that curve at the
// pipeline's unshifted sigma linspace(1, 1/N, N).
func TestPlanRunFlowShift(t *testing.T) {
	sd3 := SD15Config()
	sd3.PredictionType, sd3.Shift = "flow", 3
	p, err := PlanRun(Settings{Sampler: "euler", Steps: 4, CFG: 1, Batch: 1, H: 8, W: 8, Model: sd3})
	require.NoError(t, err)
	assert.Equal(t, FlowShift{Shift: 3}, p.Flow)
	vp, err := PlanRun(Settings{Sampler: "euler", Steps: 4, CFG: 1, Batch: 1, H: 8, W: 8, Model: SD15Config()})
	require.NoError(t, err)
	assert.Zero(t, vp.Flow)

	p, err = PlanRun(Settings{Sampler: "euler", Steps: 4, CFG: 1, Batch: 1, Channels: 16, H: 64, W: 64, Model: fluxDevConfig()})
	require.NoError(t, err)
	mu := 0.5 + float64(32*32-256)*0.65/3840
	assert.True(t, p.Flow.Dynamic)
	assert.Equal(t, 1024, p.Flow.SeqLen)
	// float64: 1e-12.
	assert.InDelta(t, mu, p.Flow.Mu, 1e-12)
	assert.InDelta(t, math.Exp(mu), p.Flow.Shift, 1e-12)
	require.Len(t, p.Schedule.Sigmas, 4)
	for i, s := range p.Schedule.Sigmas {
		v := 1 + float64(i)*(0.25-1)/3
		// The plan's sigmas are float32: 1e-6.
		assert.InDelta(t, v, p.Flow.Unshift(s), 1e-6, "step %d", i)
		assert.InDelta(t, s, p.Flow.Sigma(v), 1e-6, "step %d", i)
	}
}
