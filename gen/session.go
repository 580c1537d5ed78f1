package gen

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
	"github.com/stepwise/stepwise/sampler"
)

// LoadFunc opens the compute device and loads the session's own model;
// warn receives notes worth showing (such as a fallback to another device).
type LoadFunc func(warn func(string)) (gpu.Device, *models.Pipeline, error)

// OpenFunc opens a fresh compute device without a model. A session uses it
// to reopen the device after a device error when the model loaded is one
// the user switched to; without it, it calls LoadFunc and replaces the
// model.
type OpenFunc func(warn func(string)) (gpu.Device, error)

// ModelSpec is a checkpoint and its optional config. The zero spec is the
// session's own model (LoadFunc's). Load, when set, loads the model on
// the session's device instead of models.Load(Path, Config) (the bundled
// model; Path then only names it).
type ModelSpec struct {
	Path, Config string
	Load         func(gpu.Device) (*models.Pipeline, error)
	// Upscaler is the stage II folder loaded beside a DeepFloyd IF stage
	// I folder (Path); see deepif.go.
	Upscaler string
}

// loadOn loads spec's model on dev.
func loadOn(dev gpu.Device, spec ModelSpec) (*models.Pipeline, error) {
	if spec.Load != nil {
		return spec.Load(dev)
	}
	return models.Load(dev, spec.Path, spec.Config)
}

// Session is a sequence of generations on one device: it owns the device
// and the loaded pipeline, keeps every run with a snapshot after each
// frame (so any frame can be decoded, exported or branched from), switches
// models, sweeps the guidance scale, noises an image with the forward
// process, and reopens the device after a device error. Its methods return
// values and errors; the studio and `stepwise generate` both drive it.
//
// A Session is not safe for concurrent use: call it from one goroutine,
// the one whose OS thread holds the device's GL context.
type Session struct {
	load  LoadFunc
	open  OpenFunc
	dev   gpu.Device
	pipe  *models.Pipeline
	ifp   *models.IF // a DeepFloyd IF cascade, loaded instead of a pipeline
	model ModelSpec  // what a reopened device loads
	facts *Facts
	runs  map[int]*Run
	// hash is the A1111 hash of hashOf, the pipeline it was computed for.
	hash   string
	hashOf *models.Pipeline
	// Configure, when set, is applied to every pipeline the session loads
	// (a LoRA folder, a TAESD, a prediction type).
	Configure func(*models.Pipeline) error
	// IFUpscale are the stage II settings of the DeepFloyd IF runs the
	// session starts (DefaultIFUpscale unless changed before the load).
	IFUpscale IFUpscale
}

// NewSession returns a session that loads its model with load (see Load)
// and reopens devices with open (optional).
func NewSession(load LoadFunc, open OpenFunc) *Session {
	return &Session{load: load, open: open, runs: map[int]*Run{}, IFUpscale: DefaultIFUpscale}
}

// SessionOn returns a session over a loaded pipeline (on its device),
// which it owns from now on (Close closes both). It never reopens the
// device: after a device error its calls return the *DeviceError, for a
// command that then exits.
func SessionOn(p *models.Pipeline) (*Session, error) {
	s := &Session{runs: map[int]*Run{}, dev: p.Device(), IFUpscale: DefaultIFUpscale}
	if err := s.setPipe(p); err != nil {
		return nil, err
	}
	return s, nil
}

// Run is one run of a session: a Job, the snapshot after each of its
// frames and the space its latents are in.
type Run struct {
	ID          int
	Parent, At  int // the run and frame branched from; -1 for a new run
	Job         *Job
	Space       sampler.Space
	Schedule    sampler.Schedule
	Encode      time.Duration // prompt encoding and preparation
	snaps       []*sampler.Snapshot
	owners      []*sampler.Run // the sampler run each snapshot belongs to
	gone        string         // the model it was made with, once unloaded
	sampledTime time.Duration
	ifr         *ifRun // a DeepFloyd IF run (Job then holds only the settings)
}

// Step is what one step of a run gave.
type Step struct {
	sampler.Frame
	// XT is the frame's x_t on the VP scale (see sampler.Space.VP), for
	// previews that must not saturate.
	XT   sampler.Latent
	Took time.Duration
	// Stage is a DeepFloyd IF run's stage (1 or 2; 0 for other runs),
	// whose frames are pixels.
	Stage int
}

// Gone names the model the run was made with when another model has
// replaced it ("" while it is loaded): its frames can then no longer be
// decoded or branched.
func (r *Run) Gone() string { return r.gone }

// Sampling is the time the run's steps took.
func (r *Run) Sampling() time.Duration { return r.sampledTime }

// InitialXT is the run's x_T (or, for a branch, the frame it starts from)
// on the VP scale.
func (r *Run) InitialXT() sampler.Latent {
	if r.ifr != nil {
		return r.ifr.initial
	}
	x := r.Job.Run.X()
	sigma := 0.0
	if len(r.Schedule.Sigmas) > 0 {
		sigma = r.Schedule.Sigmas[0]
	}
	return r.Space.VP(x, sigma)
}

// ErrSwitchCancelled is returned by SwitchModel when it was cancelled; the
// previous model stays loaded.
var ErrSwitchCancelled = errors.New("model switch cancelled")

// RecoveryError is a device error and what the session did about it: the
// device was reopened and the model reloaded (Facts), or that failed
// (ReloadErr). Runs keep their host-side frames.
type RecoveryError struct {
	Err       error
	Note      string
	Facts     *Facts // the reloaded model; nil when ReloadErr
	ReloadErr error
}

func (e *RecoveryError) Error() string { return e.Err.Error() + "; " + e.Note }
func (e *RecoveryError) Unwrap() error { return e.Err }

// Facts describes the loaded model (nil: none).
func (s *Session) Facts() *Facts { return s.facts }

// Pipeline is the loaded pipeline (nil: none). It belongs to the session.
func (s *Session) Pipeline() *models.Pipeline { return s.pipe }

// Device is the open device (nil: none).
func (s *Session) Device() gpu.Device { return s.dev }

// Run returns the run with id, or nil.
func (s *Session) Run(id int) *Run { return s.runs[id] }

// modelHash is the loaded model's A1111 hash ("" when it has none or it
// cannot be read), computed once per model.
func (s *Session) modelHash() string {
	if s.pipe == nil {
		return ""
	}
	if s.hashOf != s.pipe {
		s.hash, _ = ModelHash(s.pipe.Model.Path)
		s.hashOf = s.pipe
	}
	return s.hash
}

func (s *Session) setPipe(p *models.Pipeline) error {
	s.pipe, s.facts = p, nil
	if p == nil {
		return nil
	}
	if s.ifp != nil {
		return errors.New("a DeepFloyd IF cascade is loaded")
	}
	if s.Configure != nil {
		if err := s.Configure(p); err != nil {
			return err
		}
	}
	s.facts = FactsOf(p)
	return nil
}

// setModel makes what spec loaded the session's model: a pipeline, or a
// DeepFloyd IF cascade.
func (s *Session) setModel(p *models.Pipeline, ifp *models.IF, spec ModelSpec) error {
	if ifp != nil {
		s.pipe, s.ifp = nil, ifp
		s.facts = FactsOfIF(ifp, filepath.Base(spec.Path), s.IFUpscale)
		s.facts.DeviceMemory = DeviceMemory(ifp.Device())
		return nil
	}
	s.ifp = nil
	return s.setPipe(p)
}

// modelName names the loaded model ("" when none).
func (s *Session) modelName() string {
	switch {
	case s.pipe != nil:
		return s.pipe.Name
	case s.facts != nil:
		return s.facts.Name
	}
	return ""
}

// closeModel releases the loaded pipeline or cascade.
func (s *Session) closeModel() {
	if s.pipe != nil {
		s.pipe.Close()
	}
	if s.ifp != nil {
		s.ifp.Release()
	}
	s.pipe, s.ifp, s.facts = nil, nil, nil
}

// Load opens the device and loads the session's own model. It returns the
// model's facts and the warnings met.
func (s *Session) Load() (*Facts, []string, error) {
	var warns []string
	dev, pipe, ifp, err := s.openModel(ModelSpec{}, func(w string) { warns = append(warns, w) })
	s.dev = dev
	if err == nil {
		err = s.setModel(pipe, ifp, ModelSpec{})
	}
	if err != nil {
		return nil, warns, err
	}
	return s.facts, warns, nil
}

func (s *Session) openModel(spec ModelSpec, warn func(string)) (gpu.Device, *models.Pipeline, *models.IF, error) {
	if s.load == nil && (s.open == nil || !isIFSpec(spec)) {
		return nil, nil, nil, errors.New("no model to load")
	}
	if spec.Path == "" {
		dev, p, err := s.load(warn)
		return dev, p, nil, err
	}
	var dev gpu.Device
	var err error
	if s.open != nil {
		dev, err = s.open(warn)
	} else {
		var p *models.Pipeline
		dev, p, err = s.load(warn)
		if p != nil {
			p.Close()
		}
	}
	if err != nil {
		return dev, nil, nil, err
	}
	if dev == nil {
		return nil, nil, nil, errors.New("no device was opened")
	}
	if isIFSpec(spec) {
		ifp, err := loadIFOn(dev, spec)
		return dev, nil, ifp, err
	}
	p, err := loadOn(dev, spec)
	return dev, p, nil, err
}

// Close releases every run's device memory, the pipeline and the device.
func (s *Session) Close() {
	for _, r := range s.runs {
		s.End(r)
	}
	s.closeModel()
	if s.dev != nil {
		s.dev.Close()
	}
	s.dev = nil
}

// CheckDevice reopens the device when it recorded an error no call
// reported (nil when the device is fine) and returns the *RecoveryError.
func (s *Session) CheckDevice() error {
	if s.dev == nil || s.dev.Err() == nil {
		return nil
	}
	return s.recover(fmt.Errorf("GPU error: %w", s.dev.Err()))
}

// recover drops a failed device and the pipeline on it, opens a new
// device and loads the current model again. It returns err unchanged when
// the device is fine, else a *RecoveryError.
func (s *Session) recover(err error) error {
	if err == nil || s.load == nil || s.dev == nil || s.dev.Err() == nil {
		return err // fine, or a session that does not reopen (SessionOn)
	}
	t0 := time.Now()
	for _, r := range s.runs {
		s.End(r) // the prompt embeddings lived on the failed device
		r.Job.Pipe = nil
		if r.ifr != nil {
			r.ifr.p = nil
		}
	}
	s.closeModel()
	s.dev.Close()
	s.dev = nil
	var warns []string
	dev, pipe, ifp, lerr := s.openModel(s.model, func(w string) { warns = append(warns, w) })
	s.dev = dev
	if lerr == nil {
		lerr = s.setModel(pipe, ifp, s.model)
	}
	for _, r := range s.runs {
		if r.gone == "" {
			r.Job.Pipe = s.pipe
			if r.ifr != nil {
				// Its frames stay; the stage in progress (whose text
				// states were on the failed device) cannot go on.
				r.ifr.p = s.ifp
			}
		}
	}
	note := fmt.Sprintf("device reopened, model reloaded in %.2fs", time.Since(t0).Seconds())
	if lerr != nil {
		note = fmt.Sprintf("reopening the device failed: %v", lerr)
	}
	if len(warns) > 0 {
		note += " (" + strings.Join(strings.Fields(strings.Join(warns, "; ")), " ") + ")"
	}
	return &RecoveryError{Err: err, Note: note, Facts: s.facts, ReloadErr: lerr}
}

// Start encodes the prompt and prepares run id with settings st (a random
// seed is resolved; see StartInputs). An earlier run with the same id is
// replaced.
func (s *Session) Start(id int, st presets.Settings) (*Run, error) {
	return s.StartInputs(id, st, nil)
}

// StartInputs is Start with the init image and mask already read.
func (s *Session) StartInputs(id int, st presets.Settings, in *Inputs) (*Run, error) {
	if s.ifp != nil {
		return s.startIF(id, st)
	}
	if s.pipe == nil {
		return nil, errors.New("no model is loaded")
	}
	t0 := time.Now()
	st.ModelHash = s.modelHash()
	j, err := StartInputs(s.pipe, st, in)
	if err != nil {
		return nil, s.recover(err)
	}
	return s.add(&Run{ID: id, Parent: -1, At: -1, Job: j}, t0), nil
}

func (s *Session) add(r *Run, t0 time.Time) *Run {
	r.Space, r.Schedule, r.Encode = r.Job.Run.Space(), r.Job.Run.Schedule(), time.Since(t0)
	if old := s.runs[r.ID]; old != nil {
		old.Job.Close()
	}
	s.runs[r.ID] = r
	return r
}

// Branch makes run id, which continues from frame at (0-based) of run
// parent with settings st: the parent's seed, size, batch, RNG and image
// conditioning are kept; prompt, guidance, sampler, schedule and steps are
// st's. With the same sampler and schedule the branch keeps the sampler's
// history; with another it starts that sampler at the frame's noise level.
func (s *Session) Branch(id, parent, at int, st presets.Settings) (*Run, error) {
	p := s.runs[parent]
	if p == nil || at < 0 || at >= p.Len() || (p.ifr == nil && at >= len(p.snaps)) {
		return nil, fmt.Errorf("branch: run %d has no frame %d", parent, at+1)
	}
	if p.gone != "" {
		return nil, fmt.Errorf("branch: run %d was made with %s, which is no longer loaded", parent, p.gone)
	}
	if p.ifr != nil {
		return s.branchIF(id, p, at, st, p.ifr.up)
	}
	if s.pipe == nil {
		return nil, errors.New("branch: no model is loaded")
	}
	t0 := time.Now()
	ps := p.Job.Settings
	st.Seed, st.Width, st.Height, st.Batch, st.RNG = ps.Seed, ps.Width, ps.Height, ps.Batch, ps.RNG
	// The run keeps its image conditioning (sampler.Run.Branch); so do the
	// settings that describe it.
	st.InitImage, st.Strength, st.Mask, st.MaskBlur = ps.InitImage, ps.Strength, ps.Mask, ps.MaskBlur
	st.IPAdapter, st.IPAdapterImage, st.IPAdapterScale, st.ImageEncoder = ps.IPAdapter, ps.IPAdapterImage, ps.IPAdapterScale, ps.ImageEncoder
	st.ControlNet, st.ControlImage, st.ControlNetHash = ps.ControlNet, ps.ControlImage, ps.ControlNetHash
	st.ControlStrength, st.ControlStart, st.ControlEnd = ps.ControlStrength, ps.ControlStart, ps.ControlEnd
	st.Canny, st.CannyLow, st.CannyHigh = ps.Canny, ps.CannyLow, ps.CannyHigh
	st.Model, st.ModelHash = s.pipe.Name, s.modelHash()
	if err := Validate(s.pipe, st); err != nil {
		return nil, err
	}
	owner, snap := p.owners[at], p.snaps[at]
	cond, err := s.pipe.EncodePrompt(st.Prompt, st.NegativePrompt, st.ClipSkip)
	if err != nil {
		return nil, s.recover(deviceFault(s.pipe, "text encoder", 0, 0, fmt.Errorf("branch: %w", err)))
	}
	if err := EncodeImagePrompt(s.pipe, st, cond); err != nil { // the parent's IP-Adapter image prompt
		cond.Release()
		return nil, fmt.Errorf("branch: %w", err)
	}
	st.LoraHashes = s.pipe.LoRAHashes() // the prompt's LoRAs, applied by EncodePrompt
	s.pipe.SetSize(cond, st.Width, st.Height, SizeCond(st))
	s.pipe.SetGuidance(cond, st.CFGScale-1)
	st.DistilledGuidance = SetFluxGuidance(s.pipe, st)
	here := owner.Snapshot()
	if err := owner.Restore(snap); err != nil {
		cond.Release()
		return nil, fmt.Errorf("branch: %w", err)
	}
	// The parent's ControlNet keeps steering (its control tensor stays the
	// parent job's: the branch does not own it).
	net := Network{Pipe: s.pipe, Cond: cond}
	var run *sampler.Run
	if p.Job.Control != nil {
		net.Control = p.Job.Control
		net.ControlScale = func() float64 {
			return st.ControlStrength * ControlKeep(run.StepIndex(), run.Total(), st.ControlStart, st.ControlEnd)
		}
	}
	run, err = owner.Branch(SamplerSettings(s.pipe, st), net)
	if rerr := owner.Restore(here); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		cond.Release()
		return nil, fmt.Errorf("branch: %w", err)
	}
	if run.Done() {
		cond.Release()
		return nil, errors.New("branch: no steps are left after this frame; scrub back first")
	}
	j := &Job{Settings: st, Pipe: s.pipe, Cond: cond, Run: run, Started: time.Now(),
		Frames: append([]sampler.Frame(nil), p.Job.Frames[:at+1]...)}
	r := &Run{ID: id, Parent: parent, At: at, Job: j,
		snaps: append([]*sampler.Snapshot(nil), p.snaps[:at+1]...), owners: append([]*sampler.Run(nil), p.owners[:at+1]...)}
	return s.add(r, t0), nil
}

// Step takes one step of r.
func (s *Session) Step(ctx context.Context, r *Run) (Step, error) {
	if r.ifr != nil {
		return s.stepIF(ctx, r)
	}
	if r.Job.Pipe == nil {
		return Step{}, errors.New("no model is loaded for this run")
	}
	t0 := time.Now()
	f, err := r.Job.Step(ctx)
	if err != nil {
		return Step{}, s.recover(err)
	}
	d := time.Since(t0)
	r.sampledTime += d
	r.snaps = append(r.snaps, r.Job.Run.Snapshot())
	r.owners = append(r.owners, r.Job.Run)
	return Step{Frame: f, XT: r.Space.VP(f.X, f.Next), Took: d}, nil
}

// Images decodes r's final latent with the VAE.
func (s *Session) Images(ctx context.Context, r *Run) ([]*image.RGBA, error) {
	if r.ifr != nil {
		return r.ifr.images()
	}
	if r.Job.Pipe == nil {
		return nil, errors.New("no model is loaded for this run")
	}
	imgs, err := r.Job.ImagesContext(ctx)
	return imgs, s.recover(err)
}

// Finish takes r's remaining steps and decodes its images; each step is
// passed to each (when not nil) as it comes.
func (s *Session) Finish(ctx context.Context, r *Run, each func(Step)) ([]*image.RGBA, error) {
	for !r.Done() {
		st, err := s.Step(ctx, r)
		if err != nil {
			return nil, err
		}
		if each != nil {
			each(st)
		}
	}
	return s.Images(ctx, r)
}

// End releases r's prompt embeddings: an ended run never steps again (a
// branch encodes its own prompt), so a long session holds no more device
// memory than its first run did.
func (s *Session) End(r *Run) {
	r.Job.Close()
	if r.ifr != nil {
		r.ifr.end()
	}
}

// Forget drops run id (ending it first) and its snapshots: a caller that
// replaces runs (the studio's live mode) keeps the session's memory to the
// runs it shows. An unknown id is a no-op.
func (s *Session) Forget(id int) {
	r := s.runs[id]
	if r == nil {
		return
	}
	s.End(r)
	delete(s.runs, id)
}

// FrameLatent returns frame i of run id: its predicted x0, or its x_t on
// the VP scale.
func (s *Session) FrameLatent(id, frame int, x0 bool) (*Run, sampler.Latent, error) {
	r := s.runs[id]
	if r == nil {
		return nil, sampler.Latent{}, fmt.Errorf("run %d is not known to the session", id)
	}
	if r.gone != "" {
		return r, sampler.Latent{}, fmt.Errorf("run %d was made with %s, which is no longer loaded", id, r.gone)
	}
	if r.ifr != nil {
		l, err := r.ifr.frame(frame, x0)
		if err != nil {
			return r, l, fmt.Errorf("run %d: %w", id, err)
		}
		return r, l, nil
	}
	if r.Job.Pipe == nil {
		return r, sampler.Latent{}, errors.New("no model is loaded")
	}
	if frame < 0 || frame >= len(r.Job.Frames) {
		return r, sampler.Latent{}, fmt.Errorf("run %d has no frame %d", id, frame+1)
	}
	f := r.Job.Frames[frame]
	if x0 {
		return r, f.Denoised, nil
	}
	return r, r.Space.VP(f.X, f.Next), nil
}

// Decode VAE-decodes frame i of run id (its x0, or its x_t).
func (s *Session) Decode(id, frame int, x0 bool) ([]*image.RGBA, error) {
	r, l, err := s.FrameLatent(id, frame, x0)
	if err != nil {
		return nil, err
	}
	if r.ifr != nil { // pixels: no VAE
		return []*image.RGBA{IFPreview(l)}, nil
	}
	imgs, err := r.Job.Pipe.Decode(l.Data, l.Shape)
	if err != nil {
		return nil, s.recover(deviceFault(r.Job.Pipe, "VAE decoder", 0, 0, err))
	}
	return imgs, nil
}

// Infotext is the A1111 parameters text of image i of run id, with
// extra pairs; a branch records where it branched (see BranchParam).
func (s *Session) Infotext(id, i int, extra ...presets.Param) string {
	r := s.runs[id]
	if r == nil {
		return ""
	}
	if r.ifr != nil {
		return s.infotextIF(r, extra...)
	}
	st := r.Job.Settings
	var ps []presets.Param
	if st.Batch > 1 {
		ps = append(ps, presets.Param{Key: "Batch size", Value: fmt.Sprint(st.Batch)}, presets.Param{Key: "Batch pos", Value: fmt.Sprint(i)})
	}
	if b, ok := s.branchParam(r); ok {
		ps = append(ps, b)
	}
	return st.InfotextWith(append(ps, extra...)...)
}

// Export writes run id's images as PNGs in dir (stepwise_NNNN.png, never
// replacing a file): the given final images, or, when images is nil,
// frame `frame` decoded (its x0, or its x_t), marked "Stepwise frame". It
// returns the paths written.
func (s *Session) Export(id, frame int, x0 bool, images []*image.RGBA, dir string) ([]string, error) {
	r := s.runs[id]
	if r == nil {
		return nil, fmt.Errorf("export: run %d is not known to the session", id)
	}
	var extra []presets.Param
	if images == nil {
		imgs, err := s.Decode(id, frame, x0)
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		images = imgs
		what := "x_t"
		if x0 {
			what = "predicted x0"
		}
		extra = append(extra, presets.Param{Key: "Stepwise frame", Value: fmt.Sprintf("%d/%d %s", frame+1, r.Len(), what)})
	}
	var paths []string
	for i, img := range images {
		p, err := writeUnique(dir, img, s.Infotext(id, i, extra...))
		if err != nil {
			return paths, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// writeUnique writes img as dir/stepwise_NNNN.png, never replacing a file.
func writeUnique(dir string, img image.Image, infotext string) (string, error) {
	if dir == "" {
		dir = "."
	}
	for try := 0; try < 20; try++ {
		p := render.UniquePath(dir, "stepwise", "png")
		err := render.WritePNG(p, img, map[string]string{"parameters": infotext}, false)
		if err == nil {
			if abs, aerr := filepath.Abs(p); aerr == nil {
				p = abs
			}
			return p, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("export: %w", err)
		}
	}
	return "", fmt.Errorf("export: no free file name in %s", dir)
}

// SweepResult is one image of a guidance sweep.
type SweepResult struct {
	Index int
	Scale float64
	Image *image.RGBA
	Took  time.Duration
}

// Sweep generates settings st (batch 1) at every guidance scale, calling
// each with every image as it is done. It stops at the first error, or
// when ctx is cancelled (returning ctx.Err()).
func (s *Session) Sweep(ctx context.Context, st presets.Settings, scales []float64, each func(SweepResult)) error {
	if s.ifp != nil {
		return s.recover(s.sweepIF(ctx, st, scales, each))
	}
	if s.pipe == nil {
		return errors.New("no model is loaded")
	}
	for i, cfg := range scales {
		t0 := time.Now()
		ss := st
		ss.CFGScale, ss.Batch = cfg, 1
		j, err := Start(s.pipe, ss)
		if err != nil {
			return s.recover(err)
		}
		imgs, err := j.Finish(ctx)
		j.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return s.recover(err)
		}
		res := SweepResult{Index: i, Scale: cfg, Took: time.Since(t0)}
		if len(imgs) > 0 {
			res.Image = imgs[0]
		}
		each(res)
	}
	return nil
}

// Forward is the forward process of one run's image, for the studio's
// forward/reverse view.
type Forward struct {
	sampler.Forward
	Images []*image.RGBA // previews of X
}

// Forward noises run id's image (its final latent at its last frame, else
// the frame's predicted x0) with q(x_t|x0) at n timesteps from 0 to T-1,
// drawing the noise with the run's generator and seed. The previews are
// VAE decodes when vae is set (the caller knows decodes are cheap), the
// latent projection (or TAESD) otherwise.
func (s *Session) Forward(id, frame, n int, vae bool) (*Forward, error) {
	r, l, err := s.FrameLatent(id, frame, true)
	if err != nil {
		return nil, err
	}
	if r.ifr != nil {
		return s.forwardIF(r, frame, n)
	}
	if last := len(r.Job.Frames) - 1; frame == last {
		f := r.Job.Frames[last]
		l = r.Space.VP(f.X, f.Next) // the finished latent (x0 at sigma 0)
	}
	st := r.Job.Settings
	fw, err := sampler.ForwardProcess(ScheduleConfig(r.Job.Pipe.Model.Scheduler), l, st.RNG, uint64(st.Seed), n)
	if err != nil {
		return nil, err
	}
	out := &Forward{Forward: fw}
	for _, x := range fw.X {
		if vae {
			imgs, err := r.Job.Pipe.Decode(x.Data, x.Shape)
			if err != nil {
				return nil, s.recover(deviceFault(r.Job.Pipe, "VAE decoder", 0, 0, err))
			}
			out.Images = append(out.Images, imgs[0])
			continue
		}
		out.Images = append(out.Images, PreviewFor(r.Job.Pipe, x, 0))
	}
	return out, nil
}

// SwitchModel loads spec onto the device in use and, when that works,
// unloads the previous model: its runs keep their frames but can no
// longer be decoded or branched. When the load fails the previous model
// stays loaded (should the failure have left the device failed, it is
// reopened with the previous model). cancelled, when it reports true once
// the load is done, drops the new model (ErrSwitchCancelled).
func (s *Session) SwitchModel(spec ModelSpec, cancelled func() bool) (*Facts, []string, error) {
	if cancelled == nil {
		cancelled = func() bool { return false }
	}
	if cancelled() {
		return nil, nil, ErrSwitchCancelled
	}
	if s.dev == nil || s.dev.Err() != nil {
		// No usable device (the first load failed): open one with the
		// new model.
		s.unloadRuns(s.modelName())
		s.closeModel()
		if s.dev != nil {
			s.dev.Close()
		}
		var warns []string
		dev, pipe, ifp, err := s.openModel(spec, func(w string) { warns = append(warns, w) })
		s.dev = dev
		if err == nil {
			err = s.setModel(pipe, ifp, spec)
		}
		if err != nil {
			return nil, warns, err
		}
		s.model = spec
		if pipe != nil {
			warns = append(warns, pipe.Model.Warnings...)
		}
		return s.facts, warns, nil
	}
	if isIFSpec(spec) {
		ifp, err := loadIFOn(s.dev, spec)
		if err == nil && cancelled() {
			ifp.Release()
			return nil, nil, ErrSwitchCancelled
		}
		if err != nil {
			return nil, nil, s.recover(err)
		}
		s.unloadRuns(s.modelName())
		s.closeModel()
		s.model = spec
		if err := s.setModel(nil, ifp, spec); err != nil {
			return nil, nil, err
		}
		return s.facts, nil, nil
	}
	pipe, err := loadOn(s.dev, spec)
	if err == nil && cancelled() {
		pipe.Close()
		return nil, nil, ErrSwitchCancelled
	}
	if err != nil {
		if pipe != nil {
			pipe.Close()
		}
		return nil, nil, s.recover(err)
	}
	if s.pipe != nil || s.ifp != nil {
		s.unloadRuns(s.modelName())
		s.closeModel()
	}
	s.model = spec
	if err := s.setPipe(pipe); err != nil {
		return nil, nil, err
	}
	return s.facts, pipe.Model.Warnings, nil
}

// unloadRuns releases every run's device memory and marks the runs as
// made with model name (no longer loaded).
func (s *Session) unloadRuns(name string) {
	if name == "" {
		name = "a model that is no longer loaded"
	}
	for _, r := range s.runs {
		s.End(r)
		r.Job.Pipe = nil
		if r.ifr != nil {
			r.ifr.p = nil
		}
		if r.gone == "" {
			r.gone = name
		}
	}
}

// BranchKey is the infotext key under which a branched run records where
// it branched: for each branch, innermost first and separated by " < ",
// "step K of PARENT-SETTINGS", the parent's settings that differ from the
// branch's, as "Key=value" pairs separated by "; ".
const BranchKey = "Stepwise branch"

func (s *Session) branchParam(r *Run) (presets.Param, bool) {
	var levels []string
	for r != nil && r.Parent >= 0 {
		p := s.runs[r.Parent]
		if p == nil {
			break
		}
		levels = append(levels, fmt.Sprintf("step %d of %s", r.At+1, strings.Join(settingsDiff(p.Job.Settings, r.Job.Settings), "; ")))
		r = p
	}
	if len(levels) == 0 {
		return presets.Param{}, false
	}
	return presets.Param{Key: BranchKey, Value: strings.Join(levels, " < ")}, true
}

// settingsDiff lists a's values of the settings a branch may change that
// differ from b's, as "Key=value" with the infotext's keys; text values are
// Go-quoted.
func settingsDiff(a, b presets.Settings) []string {
	var out []string
	for _, k := range branchKeys {
		va, vb := branchValue(a, k), branchValue(b, k)
		if va != vb {
			out = append(out, k+"="+va)
		}
	}
	if len(out) == 0 {
		out = append(out, "the same settings")
	}
	return out
}

// branchKeys are the settings a branch may change, by infotext key (the
// seed only in a DeepFloyd IF branch; others keep the parent's).
var branchKeys = []string{"Steps", "Sampler", "Schedule type", "CFG scale", "Guidance rescale", "Clip skip", "Prompt", "Negative prompt", "Seed"}

func branchValue(s presets.Settings, k string) string {
	switch k {
	case "Steps":
		return strconv.Itoa(s.Steps)
	case "Sampler":
		return strconv.Quote(s.Sampler)
	case "Schedule type":
		return strconv.Quote(s.Schedule)
	case "CFG scale":
		return strconv.FormatFloat(s.CFGScale, 'g', -1, 64)
	case "Guidance rescale":
		return strconv.FormatFloat(s.GuidanceRescale, 'g', -1, 64)
	case "Clip skip":
		return strconv.Itoa(s.ClipSkip)
	case "Prompt":
		return strconv.Quote(s.Prompt)
	case "Negative prompt":
		return strconv.Quote(s.NegativePrompt)
	case "Seed":
		return strconv.FormatInt(s.Seed, 10)
	}
	return ""
}

func setBranchValue(s *presets.Settings, k, v string) error {
	var err error
	unq := func() string {
		var u string
		if u, err = strconv.Unquote(v); err != nil {
			u = v
		}
		return u
	}
	switch k {
	case "Steps":
		s.Steps, err = strconv.Atoi(v)
	case "Sampler":
		s.Sampler = unq()
	case "Schedule type":
		s.Schedule = unq()
	case "CFG scale":
		s.CFGScale, err = strconv.ParseFloat(v, 64)
	case "Guidance rescale":
		s.GuidanceRescale, err = strconv.ParseFloat(v, 64)
	case "Clip skip":
		s.ClipSkip, err = strconv.Atoi(v)
	case "Prompt":
		s.Prompt = unq()
	case "Negative prompt":
		s.NegativePrompt = unq()
	case "Seed":
		s.Seed, err = strconv.ParseInt(v, 10, 64)
	default:
		return fmt.Errorf("%q is not a setting a branch changes", k)
	}
	if err != nil {
		return fmt.Errorf("%s=%s: %w", k, v, err)
	}
	return nil
}

// BranchStep is one branch of a run's history as its infotext records it:
// after step At (1-based) of a run with Parent's settings, the run went on
// with the image's (or the next branch's parent's) settings.
type BranchStep struct {
	At     int
	Parent presets.Settings
}

// ParseBranch reads the value of an infotext's BranchKey for the image
// made with settings s: the branches from the first run to the image's,
// first run first. Each Parent is s with the values the record gives.
func ParseBranch(value string, s presets.Settings) ([]BranchStep, error) {
	levels := strings.Split(value, " < ")
	out := make([]BranchStep, len(levels))
	child := s
	for i, l := range levels { // innermost first
		var at int
		rest, ok := strings.CutPrefix(l, "step ")
		var n, diff string
		if ok {
			n, diff, ok = strings.Cut(rest, " of ")
		}
		if ok {
			var err error
			at, err = strconv.Atoi(n)
			ok = err == nil && at >= 1
		}
		if !ok {
			return nil, fmt.Errorf("%s %q: want \"step K of Key=value; ...\"", BranchKey, l)
		}
		parent := child
		if diff != "the same settings" {
			for len(diff) > 0 {
				k, v, ok := strings.Cut(diff, "=")
				if !ok {
					return nil, fmt.Errorf("%s %q: %q is not Key=value", BranchKey, l, diff)
				}
				if strings.HasPrefix(v, "\"") {
					q, err := strconv.QuotedPrefix(v)
					if err != nil {
						return nil, fmt.Errorf("%s %q: %w", BranchKey, l, err)
					}
					diff = strings.TrimPrefix(v[len(q):], "; ")
					v = q
				} else {
					v, diff, _ = strings.Cut(v, "; ")
				}
				if err := setBranchValue(&parent, k, v); err != nil {
					return nil, fmt.Errorf("%s: %w", BranchKey, err)
				}
			}
		}
		out[len(levels)-1-i] = BranchStep{At: at, Parent: parent}
		child = parent
	}
	return out, nil
}
