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
	// Flow is the timestep shift of a flow-matching model's run (zero
	// for the others).
	Flow FlowShift
}

// FlowShift is the timestep shift a flow-matching run applies: sigma(u) =
// Shift u / (1 + (Shift-1) u) for the unshifted u = t/T. A dynamic shift
// (FLUX.1-dev) is e^Mu with Mu from the image's token count SeqLen, the
// same curve as the static shift e^Mu.
type FlowShift struct {
	Shift   float64 // the effective shift (e^Mu when Dynamic); 0: not a flow run
	Mu      float64 // the dynamic shift's mu (Dynamic only)
	Dynamic bool
	SeqLen  int // the image's token count (Dynamic only)
}

// Sigma is the shifted sigma at the unshifted u in [0, 1].
func (f FlowShift) Sigma(u float64) float64 {
	k := f.Shift
	if k <= 0 {
		k = 1
	}
	return k * u / (1 + (k-1)*u)
}

// Unshift inverts Sigma: the u whose shifted sigma is sigma.
func (f FlowShift) Unshift(sigma float64) float64 {
	k := f.Shift
	if k <= 0 {
		k = 1
	}
	return sigma / (k - (k-1)*sigma)
}

// flowShift is the shift c applies to an image of seqLen tokens (used
// only when DynamicShift is set; c.ImageSeqLen wins when set).
func (c ScheduleConfig) flowShift(seqLen int) FlowShift {
	if c.DynamicShift {
		if c.ImageSeqLen > 0 {
			seqLen = c.ImageSeqLen
		}
		mu := c.FlowMu(seqLen)
		return FlowShift{Shift: math.Exp(mu), Mu: mu, Dynamic: true, SeqLen: seqLen}
	}
	k := c.Shift
	if k <= 0 {
		k = 1
	}
	return FlowShift{Shift: k}
}

// PlanRun resolves s as NewRun would and returns the run's plan; no
// network is evaluated and no noise is drawn.
func PlanRun(s Settings) (Plan, error) {
	r, err := prepare(s, nil)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Sampler: r.spec.Name, Schedule: r.Schedule(), Space: r.Space()}
	if r.tr.cfg.isFlow() {
		p.Flow = r.tr.cfg.flowShift(r.tr.cfg.ImageSeqLen)
	}
	return p, nil
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
// (1-s) x0 + s eps with s = Sigma[i] the shifted t/T), with one draw eps.
type Forward struct {
	T        []int
	AlphaBar []float64 // the signal's share of the variance at T[i]
	// Sigma[i] is a flow model's sigma at T[i], the straight line's
	// position from x0 (0) to eps (1); nil for the other models.
	Sigma []float64
	// Flow is the shift of a flow model's sigmas (zero for the others).
	Flow FlowShift
	X    []Latent
}

// ForwardProcess noises x0 (on the VP scale) at n timesteps evenly spaced
// from 0 to T-1 of the model's training schedule, as diffusers' add_noise,
// drawing eps from the generator kind ("torch-cpu", "philox") with seed.
// A flow model's x0 is noised along the straight line (1-s) x0 + s eps,
// s the model's shifted sigma; a dynamic shift (Flux) takes mu from x0's
// size in 2x2-packed tokens, as the run does.
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
	var f Forward
	if c.isFlow() {
		seq := (x0.Shape[2] / 2) * (x0.Shape[3] / 2)
		if c.DynamicShift && (c.MaxSeqLen == c.BaseSeqLen || max(seq, c.ImageSeqLen) < 1) {
			return Forward{}, fmt.Errorf("sampler: dynamic shift needs base/max image sequence lengths that differ and an image size")
		}
		f.Flow = c.flowShift(seq)
	}
	for k := 0; k < n; k++ {
		t := k * (T - 1) / (n - 1)
		var a, b, share float64
		if c.isFlow() {
			s := f.Flow.Sigma(float64(t+1) / float64(T))
			f.Sigma = append(f.Sigma, s)
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
