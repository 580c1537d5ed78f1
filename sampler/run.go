package sampler

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/stepwise/stepwise/sampler/rng"
)

// Latent is a host tensor in NCHW layout.
type Latent struct {
	Shape [4]int
	Data  []float32
}

// Cond says which prompt a batch row is conditioned on.
type Cond int

// The two conditionings of classifier-free guidance.
const (
	Positive Cond = iota
	Negative
)

// Network is the denoising model as the sampler sees it.
type Network interface {
	// Predict returns the raw model output (eps, v, x0 or flow velocity per
	// the model's prediction type) for the scaled model input x at timestep
	// t (diffusers' scale_model_input has been applied by the sampler), one
	// batch row per entry of rows.
	Predict(ctx context.Context, x Latent, t float64, rows []Cond) (Latent, error)
}

// Settings are the parameters of one sampling run.
type Settings struct {
	Sampler  string // any name LookupSampler accepts
	Schedule string // any name LookupSchedule accepts; "" = the sampler's default
	Steps    int
	// CFG is the guidance scale w: out = uncond + w*(cond - uncond). With
	// w == 1 only the positive rows are evaluated.
	CFG             float64
	GuidanceRescale float64  // diffusers' guidance_rescale phi (0 = off)
	Eta             *float64 // DDIM eta (default 0) / ancestral and SDE eta (default 1)
	Seed            uint64
	RNG             string // "torch-cpu" (default) or "philox"
	// Noise, when set, replaces the generator built from RNG and Seed (tests
	// replay recorded draws through it). The run uses it directly; give each
	// run its own.
	Noise                 rng.Generator
	Batch, Channels, H, W int // latent shape; Channels 0 means 4
	Model                 ScheduleConfig
	// Strength in (0, 1) starts the run part-way down the schedule, at
	// step N - int(N*Strength) of N, as diffusers' img2img and inpainting
	// pipelines do; 0 or 1 runs the whole schedule.
	Strength float64
	// Image, when set, conditions the run on an image (img2img,
	// inpainting; see Image): NewRun starts from it in diffusers' order of
	// draws instead of from pure noise.
	Image *Image
}

// Frame is what one step produced.
type Frame struct {
	Index    int     // the step just taken, from 0
	Total    int     // steps in the run
	Sigma    float64 // noise level the step started from (VE sigma)
	Next     float64 // noise level X is at after the step (VE sigma)
	Timestep float64 // network timestep of the step's first evaluation
	X        Latent  // x after the step, in the sampler's native space (as diffusers' latents)
	Denoised Latent  // the step's prediction of x0
	NFE      int     // model evaluations so far
}

// ErrFinished is returned by Step after the last step.
var ErrFinished = errors.New("sampler: run finished")

// Run is one steppable sampling run.
type Run struct {
	set   Settings
	spec  *spec
	tr    *train
	sched *Schedule
	net   Network
	gen   rng.Generator
	eta   float64
	shape [4]int
	st    *state
	img   *imageCond // image conditioning (nil: none); never changes
	// skipped is the number of steps the strength left out at the start
	// of the schedule (diffusers still counts them in len(timesteps)).
	skipped int

	evalSigma float64 // sigma of the network call in flight (read by tests)
}

// NewRun prepares a run: resolves the names, builds the schedule and draws
// the initial noise ([Batch,C,H,W] as one draw) times init_noise_sigma.
func NewRun(s Settings, net Network) (*Run, error) {
	if net == nil {
		return nil, errors.New("sampler: nil network")
	}
	r, err := prepare(s, net)
	if err != nil {
		return nil, err
	}
	if s.Image != nil {
		if err := r.start(s.Image); err != nil {
			return nil, err
		}
		return r, nil
	}
	r.startNoise()
	return r, nil
}

// startNoise sets the state to the initial noise times init_noise_sigma.
func (r *Run) startNoise() {
	noise := r.draw()
	sig0 := r.sched.Sigmas[0]
	x := make([]float64, len(noise))
	for i, v := range noise {
		x[i] = float64(float32(v) * float32(r.sched.InitNoiseSigma)) // as torch does
	}
	r.st = &state{X: r.toVE(x, sig0), XSigma: sig0}
}

// prepare resolves s into a run without a state; net may be nil only for
// PlanRun and InitialLatent, which never evaluate it.
func prepare(s Settings, net Network) (*Run, error) {
	sp, implied, err := lookupSpec(s.Sampler)
	if err != nil {
		return nil, err
	}
	sched := s.Schedule
	if implied != "" {
		if n, _ := LookupSchedule(sched); n != "" && n != implied {
			return nil, fmt.Errorf("sampler: %q implies the %s schedule but Schedule is %q", s.Sampler, implied, s.Schedule)
		}
		sched = implied
	}
	if sched, err = LookupSchedule(sched); err != nil {
		return nil, err
	}
	if s.Channels == 0 {
		s.Channels = 4
	}
	if s.Batch < 1 || s.H < 1 || s.W < 1 || s.Channels < 1 || s.Batch*s.Channels*s.H*s.W > 1<<28 {
		return nil, fmt.Errorf("sampler: bad latent shape [%d,%d,%d,%d]", s.Batch, s.Channels, s.H, s.W)
	}
	if math.IsNaN(s.CFG) || math.IsInf(s.CFG, 0) || math.IsNaN(s.GuidanceRescale) {
		return nil, fmt.Errorf("sampler: guidance scale %v / rescale %v not finite", s.CFG, s.GuidanceRescale)
	}
	if err := s.Model.validate(); err != nil {
		return nil, err
	}
	fam := sp.fam
	if s.Model.isFlow() {
		if sp.stochastic || (fam != famEuler && fam != famFlow) {
			return nil, fmt.Errorf("sampler: %s cannot sample a flow-matching model (use flow_euler, euler, heun, dpm_2 or lms)", sp.Name)
		}
		fam = famFlow
	} else if fam == famFlow {
		return nil, fmt.Errorf("sampler: %s needs a flow-matching model (prediction type \"flow\"), this one predicts %s", sp.Name, s.Model.PredictionType)
	}
	if s.Model.DynamicShift && s.Model.ImageSeqLen == 0 {
		s.Model.ImageSeqLen = (s.H / 2) * (s.W / 2) // 2x2-packed latent tokens
	}
	tr, err := newTrain(s.Model)
	if err != nil {
		return nil, err
	}
	sc, err := tr.build(fam, sched, s.Steps)
	if err != nil {
		return nil, err
	}
	if math.IsNaN(s.Strength) || s.Strength < 0 || s.Strength > 1 {
		return nil, fmt.Errorf("sampler: strength %v is outside [0, 1]", s.Strength)
	}
	full := len(sc.Sigmas)
	if sc, err = sliceStrength(sc, s.Steps, s.Strength); err != nil {
		return nil, err
	}
	skipped := full - len(sc.Sigmas)
	if sp.Name == "plms" {
		sc = plmsSchedule(sc)
	}
	r := &Run{set: s, spec: sp, tr: tr, sched: sc, net: net, shape: [4]int{s.Batch, s.Channels, s.H, s.W}, skipped: skipped}
	r.eta = 1
	if sp.fam == famDDIM {
		r.eta = 0
	}
	if s.Eta != nil {
		if *s.Eta < 0 || math.IsNaN(*s.Eta) {
			return nil, fmt.Errorf("sampler: eta %v must be >= 0", *s.Eta)
		}
		r.eta = *s.Eta
	}
	if s.Noise != nil {
		r.gen = s.Noise
	} else {
		kind := s.RNG
		if kind == "" {
			kind = "torch-cpu"
		}
		if r.gen, err = rng.New(kind, s.Seed); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// plmsSchedule turns a DDIM-family schedule into PNDM's N+1 calls: the
// second call re-evaluates at the second timestep and restarts from the
// first sample.
func plmsSchedule(s *Schedule) *Schedule {
	n := len(s.Sigmas)
	if n < 2 {
		return s
	}
	p := &Schedule{InitNoiseSigma: s.InitNoiseSigma}
	p.Sigmas = append([]float64{s.Sigmas[0], s.Sigmas[1]}, s.Sigmas[1:]...)
	p.Timesteps = append([]float64{s.Timesteps[0], s.Timesteps[1]}, s.Timesteps[1:]...)
	p.Next = append([]float64{s.Next[0], s.Next[0]}, s.Next[1:]...)
	return p
}

// vp reports whether the sampler's native space is diffusers' VP one.
func (r *Run) vp() bool {
	switch r.spec.fam {
	case famDPM, famDEIS, famDDIM, famDDPM, famLCM:
		return true
	}
	return false
}

func (r *Run) toVE(x []float64, sigma float64) []float64 {
	if r.vp() {
		f := math.Sqrt(1 + sigma*sigma)
		for i := range x {
			x[i] *= f
		}
	}
	return x
}

func (r *Run) native(x []float64, sigma float64) Latent {
	f := 1.0
	if r.vp() {
		f = 1 / math.Sqrt(1+sigma*sigma)
	}
	l := Latent{Shape: r.shape, Data: make([]float32, len(x))}
	for i, v := range x {
		l.Data[i] = float32(v * f)
	}
	return l
}

func (r *Run) draw() []float64 {
	n := r.shape[0] * r.shape[1] * r.shape[2] * r.shape[3]
	buf := make([]float32, n)
	r.gen.Randn(buf)
	out := make([]float64, n)
	for i, v := range buf {
		out[i] = float64(v)
	}
	return out
}

// timestep returns the network timestep for sigma: sc's own where sigma is
// on sc's grid, else diffusers' log-sigma interpolation.
func (r *Run) timestep(sc *Schedule, sigma float64) float64 {
	for i, s := range sc.Sigmas {
		if s == sigma {
			return sc.Timesteps[i]
		}
	}
	if r.tr.cfg.isFlow() {
		return sigma * float64(r.tr.cfg.NumTrainTimesteps)
	}
	t := r.tr.sigmaToT(sigma)
	if r.spec.fam != famEuler {
		t = math.RoundToEven(t)
	}
	return t
}

// denoise is D(x, sigma): scale the input, run the network once (CFG rows
// batched as [negative..., positive...]), guide, and convert the model's
// prediction to x0.
func (r *Run) denoise(ctx context.Context, x []float64, sigma float64) ([]float64, error) {
	cfg := r.tr.cfg
	cin := 1.0
	if !cfg.isFlow() {
		cin = 1 / math.Sqrt(sigma*sigma+1)
	}
	b := r.shape[0]
	per := len(x) / b
	guided := r.set.CFG != 1
	rows := make([]Cond, 0, 2*b)
	in := Latent{Shape: r.shape}
	if guided {
		in.Shape[0] = 2 * b
		in.Data = make([]float32, 2*len(x))
		for i := 0; i < b; i++ {
			rows = append(rows, Negative)
		}
	} else {
		in.Data = make([]float32, len(x))
	}
	for i := 0; i < b; i++ {
		rows = append(rows, Positive)
	}
	for i, v := range x {
		f := float32(v * cin)
		in.Data[i] = f
		if guided {
			in.Data[len(x)+i] = f
		}
	}
	t := r.timestep(r.sched, sigma)
	r.evalSigma = sigma
	netIn := in
	if r.img != nil && r.img.concat != nil {
		netIn = r.img.withConcat(in)
	}
	out, err := r.net.Predict(ctx, netIn, t, rows)
	if err != nil {
		return nil, fmt.Errorf("sampler: network at t=%g: %w", t, err)
	}
	if out.Shape != in.Shape || len(out.Data) != len(in.Data) {
		return nil, fmt.Errorf("sampler: network returned shape %v for input %v", out.Shape, in.Shape)
	}
	pred := make([]float64, len(x))
	if !guided {
		for i := range pred {
			pred[i] = float64(out.Data[i])
		}
	} else {
		w := r.set.CFG
		for i := range pred {
			u, c := float64(out.Data[i]), float64(out.Data[len(x)+i])
			pred[i] = u + w*(c-u)
		}
		if phi := r.set.GuidanceRescale; phi != 0 {
			for k := 0; k < b; k++ {
				cond := make([]float64, per)
				for i := range cond {
					cond[i] = float64(out.Data[len(x)+k*per+i])
				}
				g := pred[k*per : (k+1)*per]
				f := std(cond) / std(g)
				for i := range g {
					g[i] = phi*g[i]*f + (1-phi)*g[i]
				}
			}
		}
	}
	x0 := make([]float64, len(x))
	switch cfg.PredictionType {
	case "epsilon", "flow":
		for i := range x0 {
			x0[i] = x[i] - sigma*pred[i]
		}
	case "v_prediction":
		a, c := 1/(sigma*sigma+1), -sigma/math.Sqrt(sigma*sigma+1)
		for i := range x0 {
			x0[i] = a*x[i] + c*pred[i]
		}
	case "sample":
		copy(x0, pred)
	}
	if cfg.ClipSample && (r.spec.fam == famDDIM || r.spec.fam == famDDPM) {
		lim := cfg.ClipSampleRange
		for i := range x0 {
			x0[i] = math.Max(-lim, math.Min(lim, x0[i]))
		}
	}
	return x0, nil
}

// std is torch.std (unbiased).
func std(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m += x
	}
	m /= float64(len(v))
	s := 0.0
	for _, x := range v {
		s += (x - m) * (x - m)
	}
	return math.Sqrt(s / float64(len(v)-1))
}

// Total is the number of steps in the run.
func (r *Run) Total() int { return len(r.sched.Sigmas) }

// StepIndex is the index (from 0) of the step being taken now, or of the
// next one between steps: a Network may read it during Predict.
func (r *Run) StepIndex() int { return r.st.I }

// Done reports whether every step has been taken.
func (r *Run) Done() bool { return r.st.I >= len(r.sched.Sigmas) }

// Schedule returns a copy of the run's noise schedule.
func (r *Run) Schedule() Schedule {
	s := *r.sched
	s.Sigmas, s.Next, s.Timesteps = cloneVec(s.Sigmas), cloneVec(s.Next), cloneVec(s.Timesteps)
	return s
}

// Settings returns the run's settings (guidance as last set).
func (r *Run) Settings() Settings { return r.set }

// Sampler returns the run's canonical sampler name.
func (r *Run) Sampler() string { return r.spec.Name }

// X returns the current latent in the sampler's native space.
func (r *Run) X() Latent { return r.native(r.st.X, r.st.XSigma) }

// Step takes exactly one sampler step. It checks ctx before starting; a
// step that fails (or is cancelled inside the network) leaves the run as it
// was.
func (r *Run) Step(ctx context.Context) (Frame, error) {
	if err := ctx.Err(); err != nil {
		return Frame{}, err
	}
	if r.Done() {
		return Frame{}, ErrFinished
	}
	st := r.st.clone()
	gen := r.gen.Clone()
	i := st.I
	sigma := r.sched.Sigmas[i]
	if st.XSigma != sigma && r.vp() {
		// DDIM-family steps land on t - T/N, which need not be the next
		// grid point; the VP latent carries over unchanged.
		f := math.Sqrt((1 + sigma*sigma) / (1 + st.XSigma*st.XSigma))
		for k := range st.X {
			st.X[k] *= f
		}
	}
	st.XSigma = sigma
	c := &stepCtx{ctx: ctx, st: st, sigma: sigma, next: r.sched.Next[i], last: i == len(r.sched.Sigmas)-1, eta: r.eta, run: r}
	if err := r.spec.step(c); err != nil {
		r.gen = gen
		return Frame{}, err
	}
	if r.img != nil && r.img.kind == InpaintBlend {
		r.blend(r.img, st, c.next, c.last)
	}
	for _, v := range st.X {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			r.gen = gen
			return Frame{}, fmt.Errorf("sampler: %s step %d (sigma %g) produced a non-finite latent", r.spec.Name, i, sigma)
		}
	}
	st.XSigma = c.next
	st.I++
	r.st = st
	f := Frame{
		Index: i, Total: len(r.sched.Sigmas), Sigma: sigma, Next: c.next, Timestep: r.sched.Timesteps[i],
		X: r.native(st.X, st.XSigma), NFE: st.NFE,
		Denoised: Latent{Shape: r.shape, Data: make([]float32, len(st.Denoised))},
	}
	for k, v := range st.Denoised {
		f.Denoised.Data[k] = float32(v)
	}
	return f, nil
}

// Snapshot is everything needed to resume a run at one step: the latent,
// the sampler's history, the generator state and the step index.
type Snapshot struct {
	sampler string
	total   int
	st      *state
	gen     rng.Generator
}

// Index is the number of steps taken when the snapshot was made.
func (s *Snapshot) Index() int { return s.st.I }

// Snapshot captures the run's current state.
func (r *Run) Snapshot() *Snapshot {
	return &Snapshot{sampler: r.spec.Name, total: len(r.sched.Sigmas), st: r.st.clone(), gen: r.gen.Clone()}
}

// Restore rewinds (or forwards) the run to a snapshot taken from it or from
// a run with the same sampler and schedule.
func (r *Run) Restore(s *Snapshot) error {
	if s == nil || s.sampler != r.spec.Name || s.total != len(r.sched.Sigmas) {
		return errors.New("sampler: snapshot belongs to a run with another sampler or schedule")
	}
	r.st = s.st.clone()
	r.gen = s.gen.Clone()
	return nil
}

// SetNetwork swaps the network (e.g. new prompt embeddings) from the next step on.
func (r *Run) SetNetwork(net Network) error {
	if net == nil {
		return errors.New("sampler: nil network")
	}
	r.net = net
	return nil
}

// SetGuidance changes the guidance scale and rescale from the next step on.
func (r *Run) SetGuidance(cfg, rescale float64) error {
	if math.IsNaN(cfg) || math.IsInf(cfg, 0) || math.IsNaN(rescale) {
		return fmt.Errorf("sampler: guidance scale %v / rescale %v not finite", cfg, rescale)
	}
	r.set.CFG, r.set.GuidanceRescale = cfg, rescale
	return nil
}

// Branch returns a new run that continues from this run's current state
// with settings s and network net (this run is unchanged). With the same
// sampler, schedule and steps it keeps the sampler's history and the
// generator state; with another sampler (or schedule) the new sampler starts
// with fresh history at the current sigma and follows its own schedule's
// sigmas below it. The latent shape, model, seed stream and image
// conditioning (strength, init latent, mask) are kept.
func (r *Run) Branch(s Settings, net Network) (*Run, error) {
	s.Batch, s.Channels, s.H, s.W, s.Model = r.set.Batch, r.set.Channels, r.set.H, r.set.W, r.set.Model
	s.Strength, s.Image = r.set.Strength, r.set.Image
	if net == nil {
		return nil, errors.New("sampler: nil network")
	}
	nr, err := prepare(s, net)
	if err != nil {
		return nil, err
	}
	nr.gen = r.gen.Clone()
	nr.img = r.img
	same := nr.spec.Name == r.spec.Name && len(nr.sched.Sigmas) == len(r.sched.Sigmas)
	for i := 0; same && i < len(nr.sched.Sigmas); i++ {
		same = nr.sched.Sigmas[i] == r.sched.Sigmas[i] && nr.sched.Next[i] == r.sched.Next[i]
	}
	if same {
		nr.st = r.st.clone()
		return nr, nil
	}
	if r.Done() {
		return nil, errors.New("sampler: cannot branch a finished run into another sampler")
	}
	cur := r.sched.Sigmas[r.st.I]
	x := r.st.clone().X
	if r.st.XSigma != cur && r.vp() {
		f := math.Sqrt((1 + cur*cur) / (1 + r.st.XSigma*r.st.XSigma))
		for k := range x {
			x[k] *= f
		}
	}
	old := nr.sched
	sc := &Schedule{InitNoiseSigma: old.InitNoiseSigma, Sigmas: []float64{cur}}
	for i, sg := range old.Sigmas {
		if sg < cur {
			sc.Sigmas = append(sc.Sigmas, old.Sigmas[i:]...)
			break
		}
	}
	sc.Next = make([]float64, len(sc.Sigmas))
	copy(sc.Next, sc.Sigmas[1:])
	sc.Next[len(sc.Next)-1] = old.Next[len(old.Next)-1]
	nr.sched = sc
	nr.skipped = 0 // the branch's schedule is its own
	for _, sg := range sc.Sigmas {
		sc.Timesteps = append(sc.Timesteps, nr.timestep(old, sg))
	}
	nr.st = &state{X: x, XSigma: cur, NFE: r.st.NFE}
	return nr, nil
}
