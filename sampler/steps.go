package sampler

import (
	"context"
	"math"
)

// This file holds the samplers, each one step of a k-diffusion style loop in
// VE form (x = x0 + sigma*eps) over a denoiser D(x, sigma) -> x0, and the few
// shared helpers they are made of.

// state is everything a sampler carries between steps. It is copied whole by
// Snapshot, so it holds only values and slices it owns.
type state struct {
	X      []float64 // the latent, VE, at noise level XSigma
	XSigma float64
	I      int // next step index into the schedule
	Start  int // step at which this sampler's history began (a branch resets it)
	NFE    int // model evaluations so far

	Old      [][]float64 // history (denoised or eps or derivatives), newest last
	OldSigma []float64   // the sigma of each history entry
	Aux      []float64   // a saved sample (PLMS, singlestep, UniPC's last sample)
	AuxSigma float64
	Order    int // UniPC: the order of the last predictor

	Denoised []float64 // the prediction of x0 reported in the frame
}

func cloneVec(v []float64) []float64 {
	if v == nil {
		return nil
	}
	return append([]float64(nil), v...)
}

func (s *state) clone() *state {
	c := *s
	c.X, c.Aux, c.Denoised = cloneVec(s.X), cloneVec(s.Aux), cloneVec(s.Denoised)
	c.Old = make([][]float64, len(s.Old))
	for i, o := range s.Old {
		c.Old[i] = cloneVec(o)
	}
	c.OldSigma = cloneVec(s.OldSigma)
	return &c
}

// push appends a history entry, keeping at most keep entries.
func (s *state) push(v []float64, sigma float64, keep int) {
	s.Old = append(s.Old, v)
	s.OldSigma = append(s.OldSigma, sigma)
	if len(s.Old) > keep {
		s.Old = s.Old[len(s.Old)-keep:]
		s.OldSigma = s.OldSigma[len(s.OldSigma)-keep:]
	}
}

// stepCtx is what a step function sees.
type stepCtx struct {
	ctx   context.Context
	st    *state
	sigma float64 // Sigmas[i]
	next  float64 // Next[i]
	last  bool    // i is the final step
	eta   float64
	run   *Run
}

// d evaluates the denoiser D(x, sigma) (guidance applied) and counts it.
func (c *stepCtx) d(x []float64, sigma float64) ([]float64, error) {
	c.st.NFE++
	return c.run.denoise(c.ctx, x, sigma)
}

// denoise evaluates the denoiser at the step's own sample and sigma and
// keeps the prediction as the step's Denoised (what its frame shows).
func (c *stepCtx) denoise() ([]float64, error) {
	den, err := c.d(c.st.X, c.sigma)
	if err == nil {
		c.st.Denoised = den
	}
	return den, err
}

// noise draws one standard normal latent from the run's generator.
func (c *stepCtx) noise() []float64 { return c.run.draw() }

type stepFunc func(c *stepCtx) error

// lin returns a*x + b*y.
func lin(a float64, x []float64, b float64, y []float64) []float64 {
	out := make([]float64, len(x))
	for i := range out {
		out[i] = a*x[i] + b*y[i]
	}
	return out
}

// addScaled does x += a*y in place and returns x.
func addScaled(x []float64, a float64, y []float64) []float64 {
	for i := range x {
		x[i] += a * y[i]
	}
	return x
}

// toD is the ODE derivative (x - D)/sigma.
func toD(x []float64, sigma float64, den []float64) []float64 {
	return lin(1/sigma, x, -1/sigma, den)
}

// ancestralStep splits a step from sigma to next into a deterministic part
// down to sigmaDown and fresh noise of size sigmaUp.
func ancestralStep(sigma, next, eta float64) (down, up float64) {
	if eta == 0 || next == 0 {
		return next, 0
	}
	up = math.Min(next, eta*math.Sqrt(next*next*(sigma*sigma-next*next)/(sigma*sigma)))
	return math.Sqrt(next*next - up*up), up
}

// ancestralStep32 is ancestralStep with eta 1 evaluated in float32 in the
// order diffusers' Euler-ancestral and KDPM2-ancestral schedulers use. Where
// sigma_down is tiny (squaredcos' sigma_max ~2e4) its float32 cancellation
// moves sigma_down and the next timestep noticeably; we follow diffusers.
func ancestralStep32(sigma, next float64) (down, up float64) {
	if next == 0 {
		return 0, 0
	}
	s, n := float32(sigma), float32(next)
	n2, s2 := n*n, s*s
	u := float32(math.Sqrt(float64(n2 * (s2 - n2) / s2)))
	d := float32(math.Sqrt(math.Max(0, float64(n2-u*u)))) // diffusers gets NaN below 0
	return float64(d), float64(u)
}

// logMid32 is exp(lerp(log a, log b, 0.5)) in float32, as torch computes
// KDPM2's interpolated sigmas.
func logMid32(a, b float64) float64 {
	la, lb := float32(math.Log(float64(float32(a)))), float32(math.Log(float64(float32(b))))
	return float64(float32(math.Exp(float64(lb - (lb-la)*0.5))))
}

// dpmFirst is the first-order DPM-Solver++ update from sigma to next with
// denoised den (exact exponential integrator; next = 0 gives den).
func dpmFirst(x []float64, sigma, next float64, den []float64) []float64 {
	if next == 0 {
		return cloneVec(den)
	}
	return lin(next/sigma, x, 1-next/sigma, den)
}

func stepEuler(c *stepCtx) error {
	den, err := c.denoise()
	if err != nil {
		return err
	}
	c.noise() // diffusers' Euler draws (and ignores) one tensor a step
	// In float32, in diffusers' order: at squaredcos' sigma_max (~2e4) the
	// update cancels catastrophically and float32 rounding is the result.
	s, dt := float32(c.sigma), float32(c.next)-float32(c.sigma)
	for k, v := range c.st.X {
		x := float32(v)
		d := (x - float32(den[k])) / s
		c.st.X[k] = float64(x + float32(d*dt))
	}
	return nil
}

func stepEulerAncestral(c *stepCtx) error {
	den, err := c.denoise()
	if err != nil {
		return err
	}
	down, up := ancestralStep(c.sigma, c.next, c.eta)
	if c.eta == 1 {
		down, up = ancestralStep32(c.sigma, c.next)
	}
	x := addScaled(c.st.X, down-c.sigma, toD(c.st.X, c.sigma, den))
	c.st.X = addScaled(x, up, c.noise())
	return nil
}

func stepHeun(c *stepCtx) error {
	x := c.st.X
	den, err := c.denoise()
	if err != nil {
		return err
	}
	d := toD(x, c.sigma, den)
	dt := c.next - c.sigma
	if c.next == 0 {
		c.st.X = addScaled(x, dt, d)
		return nil
	}
	x2 := lin(1, x, dt, d)
	den2, err := c.d(x2, c.next)
	if err != nil {
		return err
	}
	d2 := toD(x2, c.next, den2)
	c.st.X = addScaled(x, dt, lin(0.5, d, 0.5, d2))
	return nil
}

func logMid(a, b float64) float64 { return math.Exp(0.5*math.Log(a) + 0.5*math.Log(b)) }

func stepDPM2(c *stepCtx) error {
	x := c.st.X
	den, err := c.denoise()
	if err != nil {
		return err
	}
	d := toD(x, c.sigma, den)
	if c.next == 0 {
		c.st.X = addScaled(x, c.next-c.sigma, d)
		return nil
	}
	mid := logMid(c.sigma, c.next)
	x2 := lin(1, x, mid-c.sigma, d)
	den2, err := c.d(x2, mid)
	if err != nil {
		return err
	}
	c.st.X = addScaled(x, c.next-c.sigma, toD(x2, mid, den2))
	return nil
}

func stepDPM2Ancestral(c *stepCtx) error {
	x := c.st.X
	den, err := c.denoise()
	if err != nil {
		return err
	}
	c.noise() // diffusers draws on the first call too, unused
	d := toD(x, c.sigma, den)
	down, up := ancestralStep(c.sigma, c.next, c.eta)
	mid := logMid(c.sigma, down)
	if c.eta == 1 {
		down, up = ancestralStep32(c.sigma, c.next)
		mid = logMid32(c.sigma, down)
	}
	if down == 0 {
		c.st.X = addScaled(x, down-c.sigma, d)
		return nil
	}
	x2 := lin(1, x, mid-c.sigma, d)
	den2, err := c.d(x2, mid)
	if err != nil {
		return err
	}
	n := c.noise()
	x = addScaled(x, down-c.sigma, toD(x2, mid, den2))
	c.st.X = addScaled(x, up, n)
	return nil
}

// lmsCoefficient integrates the Lagrange basis polynomial j over the
// history sigmas from sigma to next (Gauss-Legendre, exact for order <= 5).
func lmsCoefficient(sig []float64, j int, sigma, next float64) float64 {
	basis := func(tau float64) float64 {
		p := 1.0
		for k := range sig {
			if k != j {
				p *= (tau - sig[k]) / (sig[j] - sig[k])
			}
		}
		return p
	}
	nodes := [3]float64{-math.Sqrt(0.6), 0, math.Sqrt(0.6)}
	weights := [3]float64{5.0 / 9, 8.0 / 9, 5.0 / 9}
	h, m := (next-sigma)/2, (next+sigma)/2
	sum := 0.0
	for i, n := range nodes {
		sum += weights[i] * basis(m+h*n)
	}
	return sum * h
}

func stepLMS(c *stepCtx) error {
	den, err := c.denoise()
	if err != nil {
		return err
	}
	c.st.push(toD(c.st.X, c.sigma, den), c.sigma, 4)
	n := len(c.st.Old)
	sig := make([]float64, n) // newest first
	for k := range sig {
		sig[k] = c.st.OldSigma[n-1-k]
	}
	for k := 0; k < n; k++ {
		c.st.X = addScaled(c.st.X, lmsCoefficient(sig, k, c.sigma, c.next), c.st.Old[n-1-k])
	}
	return nil
}

func stepDPMPP2M(c *stepCtx) error {
	den, err := c.denoise()
	if err != nil {
		return err
	}
	dd := den
	if len(c.st.Old) > 0 && c.next != 0 {
		h := math.Log(c.sigma / c.next)
		r := math.Log(c.st.OldSigma[len(c.st.OldSigma)-1]/c.sigma) / h
		dd = lin(1+1/(2*r), den, -1/(2*r), c.st.Old[len(c.st.Old)-1])
	}
	c.st.X = dpmFirst(c.st.X, c.sigma, c.next, dd)
	c.st.push(den, c.sigma, 1)
	return nil
}

func stepDPMPP2MSDE(c *stepCtx) error {
	den, err := c.denoise()
	if err != nil {
		return err
	}
	n := c.noise()
	if c.next == 0 {
		c.st.X = cloneVec(den)
	} else {
		h := math.Log(c.sigma / c.next)
		eh := c.eta * h
		a := -math.Expm1(-h - eh)
		x := lin(c.next/c.sigma*math.Exp(-eh), c.st.X, a, den)
		if len(c.st.Old) > 0 {
			r := math.Log(c.st.OldSigma[len(c.st.OldSigma)-1]/c.sigma) / h
			x = addScaled(x, 0.5*a/r, lin(1, den, -1, c.st.Old[len(c.st.Old)-1]))
		}
		c.st.X = addScaled(x, c.next*math.Sqrt(-math.Expm1(-2*eh)), n)
	}
	c.st.push(den, c.sigma, 1)
	return nil
}

func stepDPMPPSDE(c *stepCtx) error {
	x := c.st.X
	den, err := c.denoise()
	if err != nil {
		return err
	}
	if c.next == 0 {
		c.st.X = addScaled(x, c.next-c.sigma, toD(x, c.sigma, den))
		return nil
	}
	mid := logMid(c.sigma, c.next)
	down, up := ancestralStep(c.sigma, mid, c.eta)
	x2 := addScaled(lin(down/c.sigma, x, 1-down/c.sigma, den), up, c.noise())
	den2, err := c.d(x2, mid)
	if err != nil {
		return err
	}
	down, up = ancestralStep(c.sigma, c.next, c.eta)
	c.st.X = addScaled(lin(down/c.sigma, x, 1-down/c.sigma, den2), up, c.noise())
	return nil
}

func stepDPMPP2SAncestral(c *stepCtx) error {
	x := c.st.X
	den, err := c.denoise()
	if err != nil {
		return err
	}
	down, up := ancestralStep(c.sigma, c.next, c.eta)
	if down == 0 {
		c.st.X = addScaled(x, down-c.sigma, toD(x, c.sigma, den))
	} else {
		mid := logMid(c.sigma, down)
		x2 := lin(mid/c.sigma, x, 1-mid/c.sigma, den)
		den2, err := c.d(x2, mid)
		if err != nil {
			return err
		}
		c.st.X = lin(down/c.sigma, x, 1-down/c.sigma, den2)
	}
	if c.next > 0 {
		c.st.X = addScaled(c.st.X, up, c.noise())
	}
	return nil
}

// stepDPMPP2S is diffusers' DPMSolverSinglestepScheduler at order 2: steps
// alternate order 1 (saving the sample) and order 2 (from the saved sample,
// using both predictions); the final step is order 1.
func stepDPMPP2S(c *stepCtx) error {
	den, err := c.denoise()
	if err != nil {
		return err
	}
	if (c.st.I-c.st.Start)%2 == 0 || c.last || len(c.st.Old) == 0 {
		c.st.Aux, c.st.AuxSigma = cloneVec(c.st.X), c.sigma
		c.st.X = dpmFirst(c.st.X, c.sigma, c.next, den)
	} else {
		s1 := c.st.AuxSigma
		h := math.Log(s1 / c.next)
		r0 := math.Log(s1/c.sigma) / h
		m1 := c.st.Old[len(c.st.Old)-1]
		c.st.X = dpmFirst(c.st.Aux, s1, c.next, lin(1-0.5/r0, m1, 0.5/r0, den))
	}
	c.st.push(den, c.sigma, 1)
	return nil
}

// uniCoeffs returns UniPC's (bh2) hh, h*phi_1 and B(h) for a step of log-size h.
func uniCoeffs(h float64) (hh, hphi1, bh float64) {
	hh = -h
	hphi1 = math.Expm1(hh)
	return hh, hphi1, hphi1
}

// stepUniPC is UniPC (bh2, order 2, x0 prediction) as diffusers runs it: the
// new model output first corrects the current sample (UniC), then the
// predictor (UniP) moves it to the next sigma.
func stepUniPC(c *stepCtx) error {
	st := c.st
	den, err := c.denoise()
	if err != nil {
		return err
	}
	if st.Aux != nil && len(st.Old) > 0 {
		st.X = uniCorrect(st, den, c.sigma)
	}
	st.push(den, c.sigma, 2)
	order := min(2, len(c.run.sched.Sigmas)-st.I, st.I-st.Start+1) // lower_order_final, warm-up
	st.Order = order
	st.Aux, st.AuxSigma = cloneVec(st.X), c.sigma
	if c.next == 0 {
		st.X = cloneVec(den)
		return nil
	}
	h := math.Log(c.sigma / c.next)
	_, hphi1, bh := uniCoeffs(h)
	x := lin(c.next/c.sigma, st.X, -hphi1, den)
	if order == 2 {
		rk := math.Log(c.sigma/st.OldSigma[len(st.OldSigma)-2]) / h
		x = addScaled(x, -bh*0.5, lin(1/rk, st.Old[len(st.Old)-2], -1/rk, den))
	}
	st.X = x
	return nil
}

// uniCorrect is UniC: it moves the last sample (st.Aux at st.AuxSigma) to
// sigma again, now also using den, the model output at sigma.
func uniCorrect(st *state, den []float64, sigma float64) []float64 {
	m0, s0 := st.Old[len(st.Old)-1], st.AuxSigma
	h := math.Log(s0 / sigma)
	hh, hphi1, bh := uniCoeffs(h)
	x := lin(sigma/s0, st.Aux, -hphi1, m0)
	dt := lin(1, den, -1, m0)
	if st.Order != 2 || len(st.Old) < 2 {
		return addScaled(x, -bh*0.5, dt)
	}
	rk := math.Log(s0/st.OldSigma[len(st.OldSigma)-2]) / h
	d1 := lin(1/rk, st.Old[len(st.Old)-2], -1/rk, m0)
	hk := hphi1/hh - 1
	b1 := hk / bh
	b2 := (hk/hh - 0.5) * 2 / bh
	rho0 := (b1 - b2) / (1 - rk) // solves [[1, 1], [rk, 1]] rho = [b1, b2]
	rho1 := b1 - rho0
	return addScaled(addScaled(x, -bh*rho0, d1), -bh*rho1, dt)
}

// stepDEIS is DEIS multistep order 2 (logrho) on eps.
func stepDEIS(c *stepCtx) error {
	st := c.st
	den, err := c.denoise()
	if err != nil {
		return err
	}
	eps := toD(st.X, c.sigma, den)
	total := len(c.run.sched.Sigmas) + c.run.skipped // diffusers counts the steps an img2img strength skips
	lowerFinal := c.last && total < 15
	if len(st.Old) == 0 || lowerFinal {
		st.X = addScaled(st.X, c.next-c.sigma, eps)
	} else {
		rt, r0, r1 := c.next, c.sigma, st.OldSigma[len(st.OldSigma)-1]
		ind := func(t, b, c float64) float64 {
			return t * (-math.Log(c) + math.Log(t) - 1) / (math.Log(b) - math.Log(c))
		}
		coef1 := ind(rt, r0, r1) - ind(r0, r0, r1)
		coef2 := ind(rt, r1, r0) - ind(r0, r1, r0)
		st.X = addScaled(addScaled(st.X, coef1, eps), coef2, st.Old[len(st.Old)-1])
	}
	st.push(eps, c.sigma, 1)
	return nil
}

// stepDDIM is DDIM: with eta 0 it is Euler on DDIM's grid; with eta > 0 the
// ancestral split of the same step (DDIM's sigma_t, in VE units).
func stepDDIM(c *stepCtx) error {
	den, err := c.denoise()
	if err != nil {
		return err
	}
	eps := toD(c.st.X, c.sigma, den)
	down, up := ancestralStep(c.sigma, c.next, c.eta)
	x := lin(1, den, down, eps)
	if c.eta > 0 {
		x = addScaled(x, up, c.noise())
	}
	c.st.X = x
	return nil
}

// stepDDPM is DDPM's posterior sample, which equals DDIM with eta 1.
func stepDDPM(c *stepCtx) error {
	den, err := c.denoise()
	if err != nil {
		return err
	}
	eps := toD(c.st.X, c.sigma, den)
	down, up := ancestralStep(c.sigma, c.next, 1)
	x := lin(1, den, down, eps)
	if c.run.sched.Timesteps[c.st.I] > 0 {
		x = addScaled(x, up, c.noise())
	}
	c.st.X = x
	return nil
}

// stepPLMS is diffusers' PNDM with skip_prk_steps: an improved-Euler second
// call that restarts from the first sample, then Adams-Bashforth on eps.
func stepPLMS(c *stepCtx) error {
	st := c.st
	den, err := c.denoise()
	if err != nil {
		return err
	}
	e := toD(st.X, c.sigma, den)
	n := st.I - st.Start
	if n == 1 && st.Aux != nil {
		e = lin(0.5, e, 0.5, st.Old[len(st.Old)-1])
		st.X = addScaled(cloneVec(st.Aux), c.next-st.AuxSigma, e)
		return nil
	}
	st.push(e, c.sigma, 4)
	if n == 0 {
		st.Aux, st.AuxSigma = cloneVec(st.X), c.sigma
	}
	o := st.Old
	k := len(o)
	switch {
	case k == 2:
		e = lin(1.5, o[1], -0.5, o[0])
	case k == 3:
		e = lin(23.0/12, o[2], -16.0/12, o[1])
		e = addScaled(e, 5.0/12, o[0])
	case k >= 4:
		e = lin(55.0/24, o[k-1], -59.0/24, o[k-2])
		e = addScaled(addScaled(e, 37.0/24, o[k-3]), -9.0/24, o[k-4])
	}
	st.X = addScaled(st.X, c.next-c.sigma, e)
	return nil
}

// stepLCM is the LCM scheduler: a boundary-condition blend of the model's x0
// and the sample, then fresh noise at the next timestep.
func stepLCM(c *stepCtx) error {
	x0, err := c.d(c.st.X, c.sigma)
	if err != nil {
		return err
	}
	t := c.run.sched.Timesteps[c.st.I] * 10 // timestep_scaling
	const sd = 0.5
	cSkip := sd * sd / (t*t + sd*sd)
	cOut := t / math.Sqrt(t*t+sd*sd)
	den := lin(cOut, x0, cSkip/math.Sqrt(1+c.sigma*c.sigma), c.st.X)
	c.st.Denoised = den
	if c.last {
		c.st.X = cloneVec(den)
		return nil
	}
	c.st.X = addScaled(cloneVec(den), c.next, c.noise())
	return nil
}
