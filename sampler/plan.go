package sampler

import (
	"fmt"
	"math"

	"github.com/stepwise/stepwise/sampler/rng"
)

// Space is the parametrisation a run's latents (Run.X, Frame.X) are in.
type Space int

const (
	// SpaceVP is diffusers' latent scale, x = sqrt(abar) x0 + sqrt(1-abar)
	// eps: DDIM, DDPM, PLMS, DPM-Solver, UniPC, DEIS, LCM.
	SpaceVP Space = iota
	// SpaceVE is k-diffusion's, x = x0 + sigma eps: Euler, Heun, LMS,
	// DPM2 and the other Karras-style samplers.
	SpaceVE
	// SpaceFlow is rectified flow's, x = (1-sigma) x0 + sigma eps.
	SpaceFlow
)

func (s Space) String() string {
	switch s {
	case SpaceVE:
		return "VE"
	case SpaceFlow:
		return "flow"
	}
	return "VP"
}

// VP returns x, a latent of this space at noise level sigma (VE sigma; see
// Schedule), on the VP scale, where every noise level has about unit
// variance: a VE latent is divided by sqrt(1+sigma^2); the others are
// returned as they are. Previews of noisy latents read this scale.
func (s Space) VP(x Latent, sigma float64) Latent {
	if s != SpaceVE || sigma <= 0 {
		return x
	}
	k := float32(1 / math.Sqrt(1+sigma*sigma))
	out := Latent{Shape: x.Shape, Data: make([]float32, len(x.Data))}
	for i, v := range x.Data {
		out.Data[i] = v * k
	}
	return out
}

// Space returns the space of the run's latents.
func (r *Run) Space() Space {
	switch {
	case r.tr.cfg.isFlow():
		return SpaceFlow
	case r.vp():
		return SpaceVP
	}
	return SpaceVE
}

// Plan is what a run with given settings will do, known without a
// network: its canonical sampler, the schedule it follows (after the
// strength's cut) and the space of its latents.
type Plan struct {
	Sampler  string
	Schedule Schedule
	Space    Space
}

// PlanRun resolves s as NewRun would and returns the run's plan; no
// network is evaluated and no noise is drawn.
func PlanRun(s Settings) (Plan, error) {
	r, err := prepare(s, nil)
	if err != nil {
		return Plan{}, err
	}
	return Plan{Sampler: r.spec.Name, Schedule: r.Schedule(), Space: r.Space()}, nil
}

// InitialLatent returns the latent x_T that NewRun starts a text-to-image
// run from (the seed's noise times init_noise_sigma), in the sampler's
// native space, without a network. Settings.Image is ignored.
func InitialLatent(s Settings) (Latent, error) {
	s.Image = nil
	r, err := prepare(s, nil)
	if err != nil {
		return Latent{}, err
	}
	r.startNoise()
	return r.X(), nil
}

// Forward is the forward process q(x_t | x_0) at a list of timesteps:
// X[i] = sqrt(AlphaBar[i]) x0 + sqrt(1-AlphaBar[i]) eps (flow models:
// (1-s) x0 + s eps with s the shifted t/T), with one draw eps.
type Forward struct {
	T        []int
	AlphaBar []float64 // the signal's share of the variance at T[i]
	X        []Latent
}

// ForwardProcess noises x0 (on the VP scale) at n timesteps evenly spaced
// from 0 to T-1 of the model's training schedule, as diffusers' add_noise,
// drawing eps from the generator kind ("torch-cpu", "philox") with seed.
func ForwardProcess(c ScheduleConfig, x0 Latent, kind string, seed uint64, n int) (Forward, error) {
	if n < 2 {
		return Forward{}, fmt.Errorf("sampler: the forward process needs at least 2 timesteps, got %d", n)
	}
	if err := c.validate(); err != nil {
		return Forward{}, err
	}
	g, err := rng.New(kind, seed)
	if err != nil {
		return Forward{}, err
	}
	eps := make([]float32, len(x0.Data))
	g.Randn(eps)
	T := c.NumTrainTimesteps
	var ab []float32
	if !c.isFlow() {
		if ab, err = c.AlphasCumprod(); err != nil {
			return Forward{}, err
		}
	}
	shift := c.Shift
	if shift <= 0 {
		shift = 1
	}
	var f Forward
	for k := 0; k < n; k++ {
		t := k * (T - 1) / (n - 1)
		var a, b, share float64
		if c.isFlow() {
			s := float64(t+1) / float64(T)
			s = shift * s / (1 + (shift-1)*s)
			a, b = 1-s, s
			share = a * a / (a*a + b*b)
		} else {
			share = float64(ab[t])
			a, b = math.Sqrt(share), math.Sqrt(1-share)
		}
		x := Latent{Shape: x0.Shape, Data: make([]float32, len(x0.Data))}
		fa, fb := float32(a), float32(b)
		for i, v := range x0.Data {
			x.Data[i] = fa*v + fb*eps[i]
		}
		f.T, f.AlphaBar, f.X = append(f.T, t), append(f.AlphaBar, share), append(f.X, x)
	}
	return f, nil
}
