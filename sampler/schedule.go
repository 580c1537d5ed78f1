package sampler

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/stepwise/stepwise/sampler/names"
)

// ScheduleConfig is a model's training noise schedule, with the fields of a
// diffusers scheduler_config.json that change inference. The zero value is not
// meaningful; start from SD15Config.
type ScheduleConfig struct {
	NumTrainTimesteps int       // 1000
	BetaStart         float64   // 0.00085
	BetaEnd           float64   // 0.012
	BetaSchedule      string    // "linear", "scaled_linear" or "squaredcos_cap_v2"
	TrainedBetas      []float64 // overrides the beta schedule when set
	// PredictionType is what the network outputs: "epsilon", "v_prediction",
	// "sample", or "flow" (rectified-flow velocity; the betas are unused).
	PredictionType  string
	TimestepSpacing string  // default spacing for the DDIM family ("leading")
	StepsOffset     int     // 1 for SD1.5
	SetAlphaToOne   bool    // DDIM/PNDM final alpha: 1 or alphas_cumprod[0]
	ClipSample      bool    // DDIM/DDPM: clamp x0 to ±ClipSampleRange
	ClipSampleRange float64 // 1
	Shift           float64 // flow matching timestep shift (1 = none)
	// PipelineSigmas: the pipeline hands the flow scheduler the sigmas
	// linspace(1, 1/N, N) (FluxPipeline) instead of letting it space them.
	PipelineSigmas bool
	// DynamicShift is FlowMatchEulerDiscreteScheduler's
	// use_dynamic_shifting (FLUX.1-dev): the shift follows the image's
	// token count, mu = linear from (BaseSeqLen, BaseShift) to (MaxSeqLen,
	// MaxShift), sigma' = e^mu / (e^mu + 1/sigma - 1).
	DynamicShift          bool
	BaseShift, MaxShift   float64
	BaseSeqLen, MaxSeqLen int
	// ImageSeqLen is the image's token count for DynamicShift (NewRun sets
	// it from the latent size: 2x2-packed tokens).
	ImageSeqLen int
}

// FlowMu is diffusers' calculate_shift: the dynamic shift mu for an
// image of seqLen tokens (extrapolated outside the base..max range).
func (c ScheduleConfig) FlowMu(seqLen int) float64 {
	m := (c.MaxShift - c.BaseShift) / float64(c.MaxSeqLen-c.BaseSeqLen)
	b := c.BaseShift - m*float64(c.BaseSeqLen)
	return float64(seqLen)*m + b
}

// SD15Config returns Stable Diffusion 1.5's scheduler configuration.
func SD15Config() ScheduleConfig {
	return ScheduleConfig{
		NumTrainTimesteps: 1000, BetaStart: 0.00085, BetaEnd: 0.012,
		BetaSchedule: "scaled_linear", PredictionType: "epsilon",
		TimestepSpacing: "leading", StepsOffset: 1, ClipSampleRange: 1, Shift: 1,
	}
}

func (c ScheduleConfig) isFlow() bool { return c.PredictionType == "flow" }

func (c ScheduleConfig) validate() error {
	switch c.PredictionType {
	case "epsilon", "v_prediction", "sample", "flow":
	default:
		return fmt.Errorf("sampler: unknown prediction type %q (valid: epsilon, v_prediction, sample, flow)", c.PredictionType)
	}
	if c.NumTrainTimesteps < 2 || c.NumTrainTimesteps > 1<<20 {
		return fmt.Errorf("sampler: num_train_timesteps %d out of range", c.NumTrainTimesteps)
	}
	if c.TrainedBetas != nil && len(c.TrainedBetas) != c.NumTrainTimesteps {
		return fmt.Errorf("sampler: %d trained betas for %d train timesteps", len(c.TrainedBetas), c.NumTrainTimesteps)
	}
	return nil
}

// linspace32 is torch.linspace(start, end, n, dtype=float32) on the CPU,
// bit for bit: ATen's kernel fills vectors of 8 from a base start+step*i
// (first half) or end-step*(n-1-i) (second half), which the AVX2 build
// computes with an FMA, adding j*step per lane without one; the last
// n%16 elements take the scalar path.
func linspace32(start, end float64, n int) []float32 {
	out := make([]float32, n)
	s, e := float32(start), float32(end)
	if n == 1 {
		out[0] = s
		return out
	}
	step := (e - s) / float32(n-1)
	fma := func(a, b, c float32) float32 { return float32(math.FMA(float64(a), float64(b), float64(c))) }
	i := 0
	for ; i+16 <= n; i += 8 {
		var base float32
		if i < n/2 {
			base = fma(step, float32(i), s)
		} else {
			base = fma(-step, float32(n-i-1), e)
		}
		for j := 0; j < 8; j++ {
			out[i+j] = base + float32(float32(j)*step)
		}
	}
	for ; i < n; i++ {
		if i < n/2 {
			out[i] = s + float32(step*float32(i))
		} else {
			out[i] = e - float32(step*float32(n-i-1))
		}
	}
	return out
}

// Betas returns the training betas as torch computes them (float32).
func (c ScheduleConfig) Betas() ([]float32, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	n := c.NumTrainTimesteps
	if c.TrainedBetas != nil {
		b := make([]float32, n)
		for i, v := range c.TrainedBetas {
			b[i] = float32(v)
		}
		return b, nil
	}
	switch c.BetaSchedule {
	case "linear":
		return linspace32(c.BetaStart, c.BetaEnd, n), nil
	case "scaled_linear":
		b := linspace32(math.Sqrt(c.BetaStart), math.Sqrt(c.BetaEnd), n)
		for i := range b {
			b[i] *= b[i]
		}
		return b, nil
	case "squaredcos_cap_v2":
		ab := func(t float64) float64 {
			v := math.Cos((t + 0.008) / 1.008 * math.Pi / 2)
			return v * v
		}
		b := make([]float32, n)
		for i := range b {
			t1, t2 := float64(i)/float64(n), float64(i+1)/float64(n)
			b[i] = float32(math.Min(1-ab(t2)/ab(t1), 0.999))
		}
		return b, nil
	}
	return nil, fmt.Errorf("sampler: unknown beta schedule %q (valid: linear, scaled_linear, squaredcos_cap_v2)", c.BetaSchedule)
}

// AlphasCumprod returns cumprod(1 - betas) as torch computes it (float32
// output, double accumulator).
func (c ScheduleConfig) AlphasCumprod() ([]float32, error) {
	b, err := c.Betas()
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(b))
	acc := 1.0
	for i, v := range b {
		acc *= float64(1 - v)
		out[i] = float32(acc)
	}
	return out, nil
}

// train holds the per-training-timestep tables a schedule is built from.
type train struct {
	cfg       ScheduleConfig
	ac        []float32 // alphas_cumprod
	sigmas    []float64 // sqrt((1-ac)/ac) in float32 arithmetic, ascending in t
	logSigmas []float64 // float32 log of sigmas
}

func newTrain(c ScheduleConfig) (*train, error) {
	tr := &train{cfg: c}
	if c.isFlow() {
		if c.NumTrainTimesteps < 2 {
			return nil, fmt.Errorf("sampler: num_train_timesteps %d out of range", c.NumTrainTimesteps)
		}
		return tr, nil
	}
	ac, err := c.AlphasCumprod()
	if err != nil {
		return nil, err
	}
	tr.ac = ac
	tr.sigmas = make([]float64, len(ac))
	tr.logSigmas = make([]float64, len(ac))
	for i, a := range ac {
		s := float32(math.Sqrt(float64((1 - a) / a)))
		tr.sigmas[i] = float64(s)
		tr.logSigmas[i] = float64(float32(math.Log(float64(s))))
	}
	return tr, nil
}

// sigmaOfAlpha converts an alphas_cumprod value to a VE sigma.
func sigmaOfAlpha(a float64) float64 { return math.Sqrt((1 - a) / a) }

// interpSigma is np.interp(t, arange(T), sigmas).
func (tr *train) interpSigma(t float64) float64 {
	n := len(tr.sigmas)
	if t <= 0 {
		return tr.sigmas[0]
	}
	if t >= float64(n-1) {
		return tr.sigmas[n-1]
	}
	i := int(math.Floor(t))
	w := t - float64(i)
	return tr.sigmas[i] + w*(tr.sigmas[i+1]-tr.sigmas[i])
}

// interpLogSigma interpolates log sigma (ComfyUI's model_sampling.sigma).
func (tr *train) interpLogSigma(t float64) float64 {
	n := len(tr.logSigmas)
	t = math.Max(0, math.Min(t, float64(n-1)))
	i := int(math.Floor(t))
	if i >= n-1 {
		return math.Exp(tr.logSigmas[n-1])
	}
	w := t - float64(i)
	return math.Exp((1-w)*tr.logSigmas[i] + w*tr.logSigmas[i+1])
}

// sigmaToT is diffusers' _sigma_to_t: piecewise-linear interpolation of the
// timestep in log-sigma.
func (tr *train) sigmaToT(sigma float64) float64 {
	ls := math.Log(math.Max(sigma, 1e-10))
	n := len(tr.logSigmas)
	low := 0
	for i, l := range tr.logSigmas {
		if ls-l >= 0 {
			low = i
		}
	}
	if low > n-2 {
		low = n - 2
	}
	lo, hi := tr.logSigmas[low], tr.logSigmas[low+1]
	w := (lo - ls) / (lo - hi)
	w = math.Max(0, math.Min(1, w))
	return (1-w)*float64(low) + w*float64(low+1)
}

// Schedule is the noise grid of one sampling run, in k-diffusion's VE
// parametrisation (x = x0 + sigma*eps).
type Schedule struct {
	// Sigmas[i] is the noise level at which step i evaluates the network.
	Sigmas []float64
	// Next[i] is the noise level step i moves x to. It equals Sigmas[i+1]
	// except where diffusers' DDIM/DDPM/PNDM step to t - T/N regardless of
	// the spacing, and at the end (0, or the final alpha's sigma).
	Next []float64
	// Timesteps[i] is the network timestep for Sigmas[i].
	Timesteps []float64
	// InitNoiseSigma is diffusers' init_noise_sigma, in the sampler's native
	// space (VP samplers: 1).
	InitNoiseSigma float64
}

// ScheduleInfo describes a schedule name for --help listings.
type ScheduleInfo struct {
	Name        string
	Aliases     []string
	Description string
}

// Schedules lists the schedule names (from the registry in sampler/names).
func Schedules() []ScheduleInfo {
	var out []ScheduleInfo
	for _, n := range names.Schedules() {
		out = append(out, ScheduleInfo{Name: n.Name, Aliases: n.Aliases, Description: n.Description})
	}
	return out
}

// LookupSchedule resolves a schedule name, A1111 label or alias
// (case-insensitive).
func LookupSchedule(name string) (string, error) {
	if n, ok := names.LookupSchedule(name); ok {
		return n.Name, nil
	}
	var valid []string
	for _, n := range names.ScheduleNames() {
		if n != "" {
			valid = append(valid, n)
		}
	}
	sort.Strings(valid)
	return "", fmt.Errorf("sampler: unknown schedule %q (valid: %s, or empty for the sampler's default)", name, strings.Join(valid, ", "))
}

// family groups samplers by how diffusers builds their timesteps.
type family int

const (
	famEuler family = iota // Euler, LMS, Heun, KDPM2...: float timesteps, final sigma 0
	famDPM                 // DPMSolver, UniPC: N+1 rounded linspace, last dropped
	famDEIS                // as famDPM, final sigma = training sigma_min
	famDDIM                // DDIM, PNDM: integer timesteps, step to t - T/N, final alpha
	famDDPM                // as famDDIM, final alpha 1
	famLCM                 // LCM: skipping steps over the original 50, final 0
	famFlow                // flow matching: sigma in [0,1], t = 1000*sigma
)

func roundHalfEven(x float64) float64 { return math.RoundToEven(x) }

// baseTimesteps returns diffusers' timesteps (descending) for a spacing.
func (tr *train) baseTimesteps(fam family, spacing string, n int) ([]float64, error) {
	T := tr.cfg.NumTrainTimesteps
	ts := make([]float64, 0, n)
	switch spacing {
	case "linspace":
		switch fam {
		case famDPM, famDEIS:
			for i := n; i >= 1; i-- { // linspace(0, T-1, n+1)[::-1][:-1]
				ts = append(ts, roundHalfEven(linspaceAt(0, float64(T-1), n+1, i)))
			}
		case famEuler:
			for i := n - 1; i >= 0; i-- { // np.linspace(..., dtype=float32)
				ts = append(ts, float64(float32(linspaceAt(0, float64(T-1), n, i))))
			}
		default:
			for i := n - 1; i >= 0; i-- {
				ts = append(ts, roundHalfEven(linspaceAt(0, float64(T-1), n, i)))
			}
		}
	case "leading":
		if fam == famDPM || fam == famDEIS { // (arange(0, n+1)*(T//(n+1)))[::-1][:-1] + offset
			ratio := T / (n + 1)
			for i := n; i >= 1; i-- {
				ts = append(ts, float64(i*ratio+tr.cfg.StepsOffset))
			}
			break
		}
		ratio := T / n
		for i := n - 1; i >= 0; i-- {
			ts = append(ts, float64(i*ratio+tr.cfg.StepsOffset))
		}
	case "trailing":
		ratio := float64(T) / float64(n)
		for i := 0; i < n; i++ {
			ts = append(ts, roundHalfEven(float64(T)-float64(i)*ratio)-1)
		}
	default:
		return nil, fmt.Errorf("sampler: spacing %q is not a timestep spacing", spacing)
	}
	return ts, nil
}

// linspaceAt is element i of np.linspace(a, b, n) (float64).
func linspaceAt(a, b float64, n, i int) float64 {
	if n == 1 {
		return a
	}
	step := (b - a) / float64(n-1)
	if i == n-1 {
		return b
	}
	return a + float64(i)*step
}

func karrasSigmas(smin, smax float64, n int, rho float64) []float64 {
	out := make([]float64, n)
	lo, hi := math.Pow(smin, 1/rho), math.Pow(smax, 1/rho)
	for i := range out {
		ramp := linspaceAt(0, 1, n, i)
		out[i] = math.Pow(hi+ramp*(lo-hi), rho)
	}
	return out
}

func exponentialSigmas(smin, smax float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = math.Exp(linspaceAt(math.Log(smax), math.Log(smin), n, i))
	}
	return out
}

// build computes the schedule of n steps for a sampler family and a
// resolved schedule name ("" = the family's diffusers default).
func (tr *train) build(fam family, name string, n int) (*Schedule, error) {
	if n < 1 || n > 10000 {
		return nil, fmt.Errorf("sampler: %d steps out of range 1..10000", n)
	}
	if fam == famFlow {
		return tr.buildFlow(name, n)
	}
	T := tr.cfg.NumTrainTimesteps
	if name == "" {
		switch fam {
		case famDDIM, famDDPM:
			name = tr.cfg.TimestepSpacing
			if name == "" {
				name = "leading"
			}
		case famLCM:
			name = "lcm"
		default:
			name = "linspace"
		}
	}
	intT := fam != famEuler
	var ts, sig []float64
	switch name {
	case "lcm":
		orig := 50
		k := T / orig
		origTs := make([]float64, 0, orig)
		for i := orig; i >= 1; i-- {
			origTs = append(origTs, float64(i*k-1))
		}
		if n > orig {
			return nil, fmt.Errorf("sampler: LCM supports at most %d steps, got %d", orig, n)
		}
		for i := 0; i < n; i++ {
			ts = append(ts, origTs[int(math.Floor(float64(i)*float64(orig)/float64(n)))])
		}
	case "linspace", "leading", "trailing":
		var err error
		if ts, err = tr.baseTimesteps(fam, name, n); err != nil {
			return nil, err
		}
	case "normal", "sgm_uniform":
		m := n
		if name == "sgm_uniform" {
			m = n + 1
		}
		for i := 0; i < n; i++ {
			t := linspaceAt(float64(T-1), 0, m, i)
			ts = append(ts, t)
			sig = append(sig, tr.interpLogSigma(t))
		}
	case "simple":
		ss := float64(T) / float64(n)
		for i := 0; i < n; i++ {
			j := T - 1 - int(float64(i)*ss)
			ts = append(ts, float64(j))
			sig = append(sig, tr.sigmas[j])
		}
	case "ddim_uniform":
		ss := T / n
		if ss < 1 {
			ss = 1
		}
		var up []int
		for x := 1; x < T; x += ss {
			up = append(up, x)
		}
		for i := len(up) - 1; i >= 0; i-- {
			ts = append(ts, float64(up[i]))
			sig = append(sig, tr.sigmas[up[i]])
		}
	case "karras", "exponential":
		smin, smax := tr.sigmas[0], tr.sigmas[T-1]
		if name == "karras" {
			sig = karrasSigmas(smin, smax, n, 7)
		} else {
			sig = exponentialSigmas(smin, smax, n)
		}
		for _, s := range sig {
			t := tr.sigmaToT(s)
			if intT {
				t = roundHalfEven(t)
			}
			ts = append(ts, t)
		}
	default:
		return nil, fmt.Errorf("sampler: schedule %q not supported", name)
	}
	if sig == nil {
		for _, t := range ts {
			if t < 0 || t > float64(T-1) {
				return nil, fmt.Errorf("sampler: %d steps give timestep %v outside 0..%d", n, t, T-1)
			}
			sig = append(sig, tr.interpSigma(t))
		}
	}
	if intT && fam != famDPM && fam != famDEIS {
		// The DDIM family reads alphas_cumprod at integer timesteps.
		for i, t := range ts {
			ts[i] = roundHalfEven(t)
			sig[i] = tr.sigmas[int(ts[i])]
		}
	}
	s := &Schedule{Sigmas: sig, Timesteps: ts, Next: make([]float64, n)}
	for i := 0; i+1 < n; i++ {
		s.Next[i] = sig[i+1]
	}
	finalAlpha := float64(tr.ac[0])
	if tr.cfg.SetAlphaToOne {
		finalAlpha = 1
	}
	switch fam {
	case famDEIS:
		s.Next[n-1] = tr.sigmas[0]
	case famDDIM, famDDPM:
		if fam == famDDPM {
			finalAlpha = 1
		}
		s.Next[n-1] = sigmaOfAlpha(finalAlpha)
		if name != "leading" && name != "linspace" && name != "trailing" {
			break
		}
		// diffusers steps to t - T/N whatever the spacing.
		ratio := T / n
		for i, t := range ts {
			if pt := int(t) - ratio; pt >= 0 {
				s.Next[i] = tr.sigmas[pt]
			} else {
				s.Next[i] = sigmaOfAlpha(finalAlpha)
			}
		}
	}
	s.InitNoiseSigma = 1
	if fam == famEuler {
		s.InitNoiseSigma = sig[0]
		if name == "leading" {
			s.InitNoiseSigma = math.Sqrt(sig[0]*sig[0] + 1)
		}
	}
	return s, nil
}

// buildFlow is FlowMatchEulerDiscreteScheduler.set_timesteps (diffusers
// 0.29, including its second application of the shift).
func (tr *train) buildFlow(name string, n int) (*Schedule, error) {
	if name != "" && name != "linspace" {
		return nil, fmt.Errorf("sampler: flow-matching models use the linspace schedule, not %q", name)
	}
	T := float64(tr.cfg.NumTrainTimesteps)
	shift := tr.cfg.Shift
	if shift <= 0 {
		shift = 1
	}
	sh := func(s float64) float64 { return shift * s / (1 + (shift-1)*s) }
	if tr.cfg.PipelineSigmas {
		return tr.buildPipelineFlow(n, sh)
	}
	smax := float64(float32(sh(1)))
	smin := float64(float32(sh(1 / T)))
	s := &Schedule{InitNoiseSigma: 1}
	for i := 0; i < n; i++ {
		t := linspaceAt(smax*T, smin*T, n, i)
		sg := float64(float32(sh(t / T)))
		s.Sigmas = append(s.Sigmas, sg)
		s.Timesteps = append(s.Timesteps, float64(float32(sg)*float32(T)))
	}
	s.Next = make([]float64, n)
	copy(s.Next, s.Sigmas[1:])
	return s, nil
}

// buildPipelineFlow is set_timesteps(sigmas=linspace(1, 1/N, N), mu) of
// diffusers 0.30 as FluxPipeline calls it: the given sigmas shifted
// (dynamically with mu, else by the static shift) in float64, then float32;
// timesteps = sigma x 1000 in float32.
func (tr *train) buildPipelineFlow(n int, sh func(float64) float64) (*Schedule, error) {
	c := tr.cfg
	if c.DynamicShift && (c.MaxSeqLen == c.BaseSeqLen || c.ImageSeqLen < 1) {
		return nil, fmt.Errorf("sampler: dynamic shift needs base/max image sequence lengths that differ and an image size")
	}
	T := float32(c.NumTrainTimesteps)
	s := &Schedule{InitNoiseSigma: 1}
	for i := 0; i < n; i++ {
		v := 1.0
		if n > 1 {
			v = 1 + float64(i)*(1/float64(n)-1)/float64(n-1)
		}
		if i == n-1 {
			v = 1 / float64(n)
		}
		if c.DynamicShift {
			e := math.Exp(c.FlowMu(c.ImageSeqLen))
			v = e / (e + (1/v - 1))
		} else {
			v = sh(v)
		}
		sg := float32(v)
		s.Sigmas = append(s.Sigmas, float64(sg))
		s.Timesteps = append(s.Timesteps, float64(sg*T))
	}
	s.Next = make([]float64, n)
	copy(s.Next, s.Sigmas[1:])
	return s, nil
}
