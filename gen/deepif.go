package gen

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"path/filepath"
	"strconv"
	"time"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/sampler"
	"github.com/stepwise/stepwise/sampler/rng"
)

// DeepFloyd IF in a session. IF is a pixel-space cascade (models.IF), not
// a models.Pipeline: a session holds either a pipeline or a cascade. An IF
// run is one run of both stages: stage I's steps, then (with an upscaler
// loaded) stage II's, one frame per scheduler step. A frame is the
// stage's sample x_t after the step, in pixels ([-1,1]; decoding is
// clamp(x/2+0.5)), with the step's predicted x0 and the generator's state,
// so that any frame can be shown, exported or branched from.

// IFUpscale are the stage II settings of a DeepFloyd IF run.
type IFUpscale struct {
	Steps      int
	CFG        float64
	NoiseLevel int
}

// DefaultIFUpscale are diffusers' IFSuperResolutionPipeline defaults
// (`stepwise generate`'s too).
var DefaultIFUpscale = IFUpscale{Steps: 50, CFG: 4, NoiseLevel: 250}

// IFFamily is the Family of an IF cascade's Facts.
const IFFamily = "DeepFloyd IF"

// IFFacts are what Facts add for a DeepFloyd IF cascade.
type IFFacts struct {
	// Upscaler names the stage II folder ("" when none is loaded).
	Upscaler string
	// Factor is stage II's upscale factor (4), UpscalerSize its native
	// output side.
	Factor, UpscalerSize int
	// NoisingTimesteps is the number of noise levels stage II knows.
	NoisingTimesteps int
	// Upscale are the stage II settings runs take (Session.IFUpscale when
	// the cascade loaded).
	Upscale IFUpscale
}

// ifRun is the IF part of a Run.
type ifRun struct {
	p       *models.IF
	up      IFUpscale
	upscale bool // stage II follows stage I
	cur     *models.IFStageRun
	frames  []ifFrame
	// n1 and n2 are the planned frame counts of stage I and stage II.
	n1, n2 int
	// low is stage I's un-clamped output once it is done.
	low        []float32
	lowH, lowW int
	initial    sampler.Latent
	done       bool
}

// ifFrame is one step of an IF run.
type ifFrame struct {
	Stage, Index, T, Steps int
	X, X0                  []float32
	H, W                   int
	Gen                    *rng.TorchCPU // after the step
	Up, UpNoise            []float32     // stage II: its upscale and the noise drawn for it
	NoiseLevel             int
}

func (f ifFrame) latent(x []float32) sampler.Latent {
	return sampler.Latent{Shape: [4]int{1, 3, f.H, f.W}, Data: x}
}

// IF is the loaded DeepFloyd IF cascade (nil: none). It belongs to the
// session.
func (s *Session) IF() *models.IF { return s.ifp }

// isIFSpec reports whether spec names a DeepFloyd IF folder.
func isIFSpec(spec ModelSpec) bool {
	if spec.Load != nil || spec.Path == "" {
		return false
	}
	_, ok := models.IsIFFolder(spec.Path)
	return ok
}

// loadIFOn loads spec's cascade (stage I, and stage II when
// spec.Upscaler is set) on dev.
func loadIFOn(dev gpu.Device, spec ModelSpec) (*models.IF, error) {
	p, err := models.LoadIF(dev, spec.Path)
	if err != nil {
		return nil, err
	}
	if spec.Upscaler != "" {
		if err := p.LoadUpscaler(spec.Upscaler); err != nil {
			p.Release()
			return nil, err
		}
	}
	return p, nil
}

// FactsOfIF describes a loaded cascade named name.
func FactsOfIF(p *models.IF, name string, up IFUpscale) *Facts {
	b := p.Base
	u := b.UNet.Config
	levels := len(u.BlockOutChannels)
	f := &Facts{
		Name: name, Family: IFFamily, Downscale: 1, SizeMultiple: 1 << max(levels-1, 0), Levels: 0,
		NativeSize: u.SampleSize, LatentChannels: u.InChannels, MaxClipSkip: 1, TextHidden: p.TextWidth(),
		MaxSequenceLength: models.IFMaxLength, T5Tokenizer: p.Tokenizer(),
		Encoders:  []string{"text_encoder (T5) " + strconv.Itoa(models.IFMaxLength) + " tokens"},
		Scheduler: ifSchedulerConfig(b.Sched),
		// Frames are pixels in [-1,1]: the "latent" projection is
		// x/2+0.5 per channel.
		LatentRGB:     [][]float32{{0.5, 0, 0}, {0, 0.5, 0}, {0, 0, 0.5}},
		LatentRGBBias: [3]float32{0.5, 0.5, 0.5},
		UNetWidths:    append([]int(nil), u.BlockOutChannels...),
		IF:            &IFFacts{Factor: 4, Upscale: up},
	}
	if s := p.Upper; s != nil {
		f.IF.Upscaler = filepath.Base(s.Dir)
		f.IF.UpscalerSize = s.UNet.Config.SampleSize
		f.IF.NoisingTimesteps = s.Noising.NumTrainTimesteps
	}
	return f
}

func ifSchedulerConfig(s *models.IFScheduler) checkpoint.SchedulerConfig {
	return checkpoint.SchedulerConfig{ClassName: "DDPMScheduler", NumTrainTimesteps: s.NumTrainTimesteps,
		BetaStart: s.BetaStart, BetaEnd: s.BetaEnd, BetaSchedule: s.BetaSchedule, PredictionType: s.PredictionType,
		TimestepSpacing: s.TimestepSpacing, StepsOffset: s.StepsOffset, ClipSample: s.ClipSample}
}

// validateIF checks settings against what the cascade runs.
func validateIF(f *Facts, s presets.Settings) error {
	if err := s.Validate(); err != nil {
		return err
	}
	switch {
	case s.Width != s.Height:
		return fmt.Errorf("size %dx%d: DeepFloyd IF runs square sizes only", s.Width, s.Height)
	case s.Width%f.SizeMultiple != 0:
		return fmt.Errorf("size %dx%d: the stage I side must be a multiple of %d", s.Width, s.Height, f.SizeMultiple)
	case s.Batch > 1:
		return fmt.Errorf("batch %d: DeepFloyd IF runs one image at a time", s.Batch)
	case s.InitImage != "" || s.Mask != "" || s.ControlNet != "" || s.IPAdapter != "":
		return errors.New("DeepFloyd IF: img2img, inpainting, ControlNet and IP-Adapter are not supported")
	case math.IsNaN(s.CFGScale) || math.IsInf(s.CFGScale, 0):
		return fmt.Errorf("cfg scale %v is not a finite number", s.CFGScale)
	}
	return nil
}

// checkIFUpscale checks stage II settings against the loaded upscaler.
func checkIFUpscale(p *models.IF, up IFUpscale) error {
	if p.Upper == nil {
		return nil
	}
	if n := p.Upper.Noising.NumTrainTimesteps; up.NoiseLevel < 0 || up.NoiseLevel >= n {
		return fmt.Errorf("noise level %d: want 0..%d", up.NoiseLevel, n-1)
	}
	if _, err := p.Upper.Sched.Timesteps(up.Steps); err != nil {
		return fmt.Errorf("upscaler steps: %w", err)
	}
	if math.IsNaN(up.CFG) || math.IsInf(up.CFG, 0) {
		return fmt.Errorf("upscaler cfg scale %v is not a finite number", up.CFG)
	}
	return nil
}

// IFOptions are the models.IFOptions of IF settings.
func IFOptions(st presets.Settings, up IFUpscale) models.IFOptions {
	return models.IFOptions{Prompt: st.Prompt, Negative: st.NegativePrompt, Steps: st.Steps, CFG: st.CFGScale,
		Seed: uint64(st.Seed), Size: st.Width, UpscalerSteps: up.Steps, UpscalerCFG: up.CFG, NoiseLevel: up.NoiseLevel}
}

// IFInfotext is the PNG "parameters" text of an IF image (what `stepwise
// generate` writes): the prompt, the negative prompt when there is one,
// stage I's settings, and stage II's when up is not nil.
func IFInfotext(st presets.Settings, up *IFUpscale, extra ...presets.Param) string {
	t := st.Prompt
	if st.NegativePrompt != "" {
		t += "\nNegative prompt: " + st.NegativePrompt
	}
	t += fmt.Sprintf("\nSteps: %d, Sampler: DDPM, CFG scale: %s, Seed: %d, Size: %dx%d, Model: DeepFloyd IF",
		st.Steps, strconv.FormatFloat(st.CFGScale, 'g', -1, 64), st.Seed, st.Width, st.Height)
	if up != nil {
		t += fmt.Sprintf(", Upscaler steps: %d, Upscaler CFG scale: %s, Noise level: %d",
			up.Steps, strconv.FormatFloat(up.CFG, 'g', -1, 64), up.NoiseLevel)
	}
	for _, p := range extra {
		t += ", " + p.Key + ": " + p.Value
	}
	return t
}

// startIF prepares an IF run: stage I's prompt encoding and x_T.
func (s *Session) startIF(id int, st presets.Settings) (*Run, error) {
	t0 := time.Now()
	if st.Seed < 0 {
		st.Seed = RandomSeed()
	}
	if st.Batch < 1 {
		st.Batch = 1
	}
	if st.Width == 0 {
		st.Width, st.Height = s.facts.NativeSize, s.facts.NativeSize
	}
	if err := validateIF(s.facts, st); err != nil {
		return nil, err
	}
	up := s.IFUpscale
	if err := checkIFUpscale(s.ifp, up); err != nil {
		return nil, err
	}
	st.Sampler, st.Schedule, st.Model, st.RNG = "DDPM", "", s.facts.Name, presets.RNGTorchCPU
	cur, err := s.ifp.NewStage1(IFOptions(st, up))
	if err != nil {
		return nil, s.recover(err)
	}
	ir := &ifRun{p: s.ifp, up: up, upscale: s.ifp.Upper != nil, cur: cur, n1: cur.Total(),
		initial: sampler.Latent{Shape: [4]int{1, cur.C, cur.H, cur.W}, Data: append([]float32(nil), cur.X...)}}
	if ir.upscale {
		ir.n2 = up.Steps
	}
	r := &Run{ID: id, Parent: -1, At: -1, Job: &Job{Settings: st, Started: time.Now()}, ifr: ir}
	return s.addIF(r, t0), nil
}

func (s *Session) addIF(r *Run, t0 time.Time) *Run {
	r.Schedule, r.Encode = r.ifr.schedule(), time.Since(t0)
	if old := s.runs[r.ID]; old != nil {
		s.End(old)
	}
	s.runs[r.ID] = r
	return r
}

// schedule is the run's noise levels as a VE schedule, one entry per
// frame (both stages), for the explanations.
func (ir *ifRun) schedule() sampler.Schedule {
	var sc sampler.Schedule
	sc.InitNoiseSigma = 1
	add := func(st *models.IFStage, ts []int, n int) {
		for _, t := range ts {
			sc.Timesteps = append(sc.Timesteps, float64(t))
			sc.Sigmas = append(sc.Sigmas, veSigma(st.Sched.AlphaBar(t)))
			sc.Next = append(sc.Next, veSigma(st.Sched.AlphaBar(st.Sched.Prev(t, n))))
		}
	}
	for _, f := range ir.frames {
		st := ir.p.Base
		if f.Stage == 2 {
			st = ir.p.Upper
		}
		if st == nil {
			return sc
		}
		add(st, []int{f.T}, f.Steps)
	}
	if c := ir.cur; c != nil {
		st := ir.p.Base
		if c.Stage == 2 {
			st = ir.p.Upper
		}
		add(st, c.Timesteps[c.Taken:], c.Steps)
	}
	if ir.upscale && ir.p.Upper != nil && (ir.cur == nil || ir.cur.Stage == 1) && !ir.done {
		if ts, err := ir.p.Upper.Sched.Timesteps(ir.up.Steps); err == nil {
			add(ir.p.Upper, ts, ir.up.Steps)
		}
	}
	return sc
}

func veSigma(ab float64) float64 {
	if ab >= 1 {
		return 0
	}
	return math.Sqrt((1 - ab) / ab)
}

// IFBoundary is the number of stage I frames of an IF run (the stage
// boundary on its timeline), 0 for other runs.
func (r *Run) IFBoundary() int {
	if r.ifr == nil {
		return 0
	}
	return r.ifr.n1
}

// IsIF reports whether r is a DeepFloyd IF run.
func (r *Run) IsIF() bool { return r.ifr != nil }

// IFStage returns the stage (1 or 2) and the step within it (from 0) of
// frame i of an IF run (0, 0 for other runs or frames not taken).
func (r *Run) IFStage(i int) (stage, step int) {
	if r.ifr == nil || i < 0 || i >= len(r.ifr.frames) {
		return 0, 0
	}
	f := r.ifr.frames[i]
	return f.Stage, f.Index
}

// IFStageOutput is stage I's un-clamped output of an IF run once stage I
// is done (nil before), and its size.
func (r *Run) IFStageOutput() ([]float32, int, int) {
	if r.ifr == nil {
		return nil, 0, 0
	}
	return r.ifr.low, r.ifr.lowH, r.ifr.lowW
}

// IFFrame is frame i of an IF run: its sample after the step [1,3,H,W]
// (nil when there is no such frame).
func (r *Run) IFFrame(i int) ([]float32, int, int) {
	if r.ifr == nil || i < 0 || i >= len(r.ifr.frames) {
		return nil, 0, 0
	}
	f := r.ifr.frames[i]
	return f.X, f.H, f.W
}

// Done reports whether every step of r has been taken.
func (r *Run) Done() bool {
	if r.ifr != nil {
		return r.ifr.done
	}
	return r.Job.Done()
}

// Len is the number of frames r has.
func (r *Run) Len() int {
	if r.ifr != nil {
		return len(r.ifr.frames)
	}
	return len(r.Job.Frames)
}

// stepIF takes one step of an IF run: the next step of its stage, or the
// first of stage II once stage I is done.
func (s *Session) stepIF(ctx context.Context, r *Run) (Step, error) {
	ir := r.ifr
	if ir.p == nil {
		if r.gone != "" {
			return Step{}, fmt.Errorf("run %d was made with %s, which is no longer loaded", r.ID, r.gone)
		}
		return Step{}, errors.New("no model is loaded for this run")
	}
	if ir.done {
		return Step{}, errors.New("the run is finished")
	}
	t0 := time.Now()
	o := IFOptions(r.Job.Settings, ir.up)
	if ir.cur == nil || ir.cur.Done() {
		if err := ir.next(o); err != nil {
			return Step{}, s.recover(err)
		}
		if ir.done {
			return Step{}, errors.New("the run is finished")
		}
	}
	c := ir.cur
	c.Stop = ctx.Err
	var st models.IFStep
	err := interruptible(ctx, ir.p.Device(), func() (err error) {
		st, err = c.Step()
		return err
	})
	if err != nil {
		if derr := ir.p.Device().Err(); derr != nil {
			err = &DeviceError{Stage: "U-Net", Step: len(ir.frames) + 1, Total: ir.n1 + ir.n2, Err: derr}
		}
		return Step{}, s.recover(err)
	}
	if i := firstNonFinite(st.X); i >= 0 {
		return Step{}, fmt.Errorf("step %d/%d: %w", len(ir.frames)+1, ir.n1+ir.n2, &NonFiniteError{Stage: "sampler update", Index: i, Value: st.X[i]})
	}
	f := ifFrame{Stage: st.Stage, Index: st.Index, T: st.T, Steps: c.Steps, X: st.X, X0: st.X0, H: st.H, W: st.W,
		Gen: c.Gen.Clone().(*rng.TorchCPU), Up: c.Up, UpNoise: c.UpNoise, NoiseLevel: c.NoiseLevel}
	ir.frames = append(ir.frames, f)
	if c.Done() {
		if err := ir.next(o); err != nil {
			return Step{}, s.recover(err)
		}
	}
	d := time.Since(t0)
	r.sampledTime += d
	sched := ir.p.Base.Sched
	if f.Stage == 2 {
		sched = ir.p.Upper.Sched
	}
	fr := sampler.Frame{Index: len(ir.frames) - 1, Total: ir.n1 + ir.n2, Timestep: float64(f.T),
		Sigma: veSigma(sched.AlphaBar(f.T)), Next: veSigma(sched.AlphaBar(sched.Prev(f.T, f.Steps))),
		X: f.latent(f.X), Denoised: f.latent(f.X0), NFE: 2 * len(ir.frames)}
	return Step{Frame: fr, XT: fr.X, Took: d, Stage: f.Stage}, nil
}

// next moves an IF run past a finished stage: stage I's output is kept
// and stage II prepared (when an upscaler is loaded), or the run is done.
func (ir *ifRun) next(o models.IFOptions) error {
	c := ir.cur
	if c != nil && !c.Done() {
		return nil
	}
	if c != nil {
		c.Release()
		ir.cur = nil
		if c.Stage == 1 {
			ir.low, ir.lowH, ir.lowW = append([]float32(nil), c.X...), c.H, c.W
		}
		if c.Stage == 2 || !ir.upscale {
			ir.done = true
			return nil
		}
	}
	if ir.low == nil {
		return errors.New("stage II: stage I is not done")
	}
	n, err := ir.p.NewStage2(ir.low, ir.lowH, ir.lowW, o)
	if err != nil {
		return fmt.Errorf("stage II: %w", err)
	}
	ir.cur = n
	return nil
}

// branchIF continues frame at of IF run parent with settings st and
// stage II settings up. What a branch keeps: the frames up to at, the
// frame's x_t and stage; stage I's output and the upscale's noise when it
// branches in stage II. What it takes from st and up: the prompt and
// negative prompt (re-encoded), the guidance, the step counts (the stage
// goes on with the timesteps of its new schedule below the frame's), the
// noise level (the parent's upscale noise re-noised at it) and the seed:
// the same seed continues the parent's generator state at the frame,
// another seeds a fresh generator with it for the rest of the stage (and
// for stage II, which always starts a fresh generator of the seed). The
// size stays the parent's.
func (s *Session) branchIF(id int, p *Run, at int, st presets.Settings, up IFUpscale) (*Run, error) {
	t0 := time.Now()
	pr := p.ifr
	if at < 0 || at >= len(pr.frames) {
		return nil, fmt.Errorf("branch: run %d has no frame %d", p.ID, at+1)
	}
	if s.ifp == nil || pr.p != s.ifp {
		return nil, errors.New("branch: the run's DeepFloyd IF model is no longer loaded")
	}
	ps := p.Job.Settings
	if st.Seed < 0 {
		st.Seed = ps.Seed
	}
	st.Width, st.Height, st.Batch = ps.Width, ps.Height, 1
	if err := validateIF(s.facts, st); err != nil {
		return nil, fmt.Errorf("branch: %w", err)
	}
	if err := checkIFUpscale(s.ifp, up); err != nil {
		return nil, fmt.Errorf("branch: %w", err)
	}
	st.Sampler, st.Schedule, st.Model, st.RNG = "DDPM", "", s.facts.Name, presets.RNGTorchCPU
	f := pr.frames[at]
	var g *rng.TorchCPU
	if st.Seed == ps.Seed {
		g = f.Gen
	}
	o := IFOptions(st, up)
	cur, err := s.ifp.ResumeStage(models.IFResume{Stage: f.Stage, X: f.X, H: f.H, W: f.W, T: f.T, Gen: g,
		Up: f.Up, UpNoise: f.UpNoise}, o)
	if err != nil {
		return nil, fmt.Errorf("branch: %w", s.recover(err))
	}
	ir := &ifRun{p: s.ifp, up: up, upscale: pr.upscale, cur: cur,
		frames:  append([]ifFrame(nil), pr.frames[:at+1]...),
		initial: f.latent(append([]float32(nil), f.X...))}
	left := len(cur.Timesteps)
	if f.Stage == 1 {
		ir.n1 = at + 1 + left
		if ir.upscale {
			ir.n2 = up.Steps
		}
	} else {
		ir.n1, ir.n2 = pr.n1, at+1-pr.n1+left
		ir.low, ir.lowH, ir.lowW = pr.low, pr.lowH, pr.lowW
	}
	if left == 0 && (f.Stage == 2 || !ir.upscale) {
		cur.Release()
		return nil, errors.New("branch: no steps are left after this frame; scrub back first")
	}
	r := &Run{ID: id, Parent: p.ID, At: at, Job: &Job{Settings: st, Started: time.Now()}, ifr: ir}
	return s.addIF(r, t0), nil
}

// BranchIF is Branch for a DeepFloyd IF run with new stage II settings
// (see branchIF for what a branch keeps).
func (s *Session) BranchIF(id, parent, at int, st presets.Settings, up IFUpscale) (*Run, error) {
	p := s.runs[parent]
	if p == nil || p.ifr == nil {
		return nil, fmt.Errorf("branch: run %d is not a DeepFloyd IF run", parent)
	}
	if p.gone != "" {
		return nil, fmt.Errorf("branch: run %d was made with %s, which is no longer loaded", parent, p.gone)
	}
	return s.branchIF(id, p, at, st, up)
}

// IFUpscaleOf is the stage II settings of an IF run.
func (r *Run) IFUpscaleOf() (IFUpscale, bool) {
	if r.ifr == nil {
		return IFUpscale{}, false
	}
	return r.ifr.up, r.ifr.upscale
}

// imagesIF is the run's image: the last frame's pixels (stage II's output
// when an upscaler is loaded and the run is done).
func (ir *ifRun) images() ([]*image.RGBA, error) {
	if len(ir.frames) == 0 {
		return nil, errors.New("the run has no frames yet")
	}
	f := ir.frames[len(ir.frames)-1]
	if i := firstNonFinite(f.X); i >= 0 {
		return nil, &NonFiniteError{Stage: "final image", Index: i, Value: f.X[i]}
	}
	return []*image.RGBA{models.IFImage(f.X, f.H, f.W)}, nil
}

// endIF releases an IF run's device memory (its stage's text states).
func (ir *ifRun) end() {
	if ir.cur != nil {
		ir.cur.Release()
		ir.cur = nil
	}
}

// infotextIF is the parameters text of an IF run's image.
func (s *Session) infotextIF(r *Run, extra ...presets.Param) string {
	var up *IFUpscale
	if r.ifr.upscale {
		u := r.ifr.up
		up = &u
	}
	var ps []presets.Param
	if b, ok := s.branchParam(r); ok {
		ps = append(ps, b)
	}
	return IFInfotext(r.Job.Settings, up, append(ps, extra...)...)
}

// sweepIF runs the cascade at every guidance scale (stage I's; stage II
// keeps its own).
func (s *Session) sweepIF(ctx context.Context, st presets.Settings, scales []float64, each func(SweepResult)) error {
	for i, cfg := range scales {
		t0 := time.Now()
		ss := st
		ss.CFGScale, ss.Batch = cfg, 1
		r, err := s.startIF(-1-i, ss)
		if err != nil {
			return err
		}
		delete(s.runs, r.ID)
		for !r.Done() && err == nil {
			_, err = s.stepIF(ctx, r)
		}
		r.ifr.end()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return err
		}
		imgs, err := r.ifr.images()
		if err != nil {
			return err
		}
		each(SweepResult{Index: i, Scale: cfg, Image: imgs[0], Took: time.Since(t0)})
	}
	return nil
}

// forwardIF noises frame's predicted x0 (the finished image at the last
// frame) with q(x_t|x0) on the frame's stage's schedule.
func (s *Session) forwardIF(r *Run, frame, n int) (*Forward, error) {
	ir := r.ifr
	if frame < 0 || frame >= len(ir.frames) {
		return nil, fmt.Errorf("run %d has no frame %d", r.ID, frame+1)
	}
	f := ir.frames[frame]
	x := f.X0
	if frame == len(ir.frames)-1 {
		x = f.X
	}
	sched := ir.p.Base.Sched
	if f.Stage == 2 {
		sched = ir.p.Upper.Sched
	}
	fw, err := sampler.ForwardProcess(ScheduleConfig(ifSchedulerConfig(sched)), f.latent(x), presets.RNGTorchCPU, uint64(r.Job.Settings.Seed), n)
	if err != nil {
		return nil, err
	}
	out := &Forward{Forward: fw}
	for _, l := range fw.X {
		out.Images = append(out.Images, models.IFImage(l.Data, l.Shape[2], l.Shape[3]))
	}
	return out, nil
}

// frameIF is frame i of an IF run: its predicted x0 or its x_t.
func (ir *ifRun) frame(i int, x0 bool) (sampler.Latent, error) {
	if i < 0 || i >= len(ir.frames) {
		return sampler.Latent{}, fmt.Errorf("no frame %d", i+1)
	}
	f := ir.frames[i]
	if x0 {
		return f.latent(f.X0), nil
	}
	return f.latent(f.X), nil
}

// IFPreview is the picture of an IF frame's pixels [1,3,H,W]:
// clamp(x/2+0.5), as the PNG.
func IFPreview(l sampler.Latent) *image.RGBA {
	return models.IFImage(l.Data, l.Shape[2], l.Shape[3])
}
