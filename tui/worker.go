package tui

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io/fs"
	"math"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
	"github.com/stepwise/stepwise/sampler"
)

// LoadFunc opens the compute device and loads the model; warn receives
// notes worth showing (such as a fallback to another device). The worker
// calls it on its own goroutine (which keeps its OS thread, as a GL context
// needs).
type LoadFunc func(warn func(string)) (gpu.Device, *models.Pipeline, error)

// OpenFunc opens a fresh compute device (no model). The worker uses it to
// reopen the device after a device error when the model loaded is not the
// one LoadFunc loads (the user switched models); without it, the worker
// calls LoadFunc and replaces its model.
type OpenFunc func(warn func(string)) (gpu.Device, error)

// modelSpec is a model the user switched to: a checkpoint path and its
// optional config. The zero spec is LoadFunc's own model.
type modelSpec struct{ Path, Config string }

// worker owns the device and the pipeline: every kernel runs on its one
// goroutine, taking requests from a queue and answering with tea.Msgs.
type worker struct {
	reqs   chan request
	send   func(tea.Msg)
	paused atomic.Bool
	done   chan struct{}

	// cancelledSwitch is the Seq of a model switch the user cancelled: the
	// worker skips it, or drops the model it loaded.
	cancelledSwitch atomic.Int64

	mu          sync.Mutex
	runCancel   context.CancelFunc // of the active run
	sweepCancel context.CancelFunc // of the sweep in progress
	sweepGen    int64              // sweeps with another Gen are cancelled
	closed      bool

	// Owned by the worker goroutine.
	dev    gpu.Device
	pipe   *models.Pipeline
	jobs   map[int]*jobState
	active *jobState
	load   LoadFunc
	open   OpenFunc
	model  modelSpec // what a reopened device loads
	crash  string    // test-only: "worker" panics on the next step
	// pf are the facts of pfOf (the pipeline of the last preview).
	pf   *gen.Facts
	pfOf *models.Pipeline
}

// facts returns the loaded pipeline's facts, copied once per pipeline.
func (w *worker) facts() *gen.Facts {
	if w.pf == nil || w.pfOf != w.pipe {
		w.pf, w.pfOf = factsOf(w.pipe), w.pipe
	}
	return w.pf
}

// jobState is one run as the worker keeps it: the gen.Job and, for every
// frame, a snapshot after it (with the run that took it, for branches of
// branches) and the noise level x is at.
type jobState struct {
	id     int
	job    *gen.Job
	snaps  []ownedSnap
	ctx    context.Context
	cancel context.CancelFunc
	ve     bool // the sampler's native space is VE (x = x0 + sigma*eps)
	encode time.Duration
	steps  time.Duration
	last   time.Time
	// gone names the model the run was made with once another model
	// replaced it; its frames can no longer be decoded or branched.
	gone string
}

type ownedSnap struct {
	run  *sampler.Run
	snap *sampler.Snapshot
	next float64 // sigma of the frame's x
}

// request is a unit of work for the worker.
type request interface{ isRequest() }

type loadReq struct {
	load  LoadFunc
	open  OpenFunc
	crash string
}

// modelReq switches to another model on the same device. Seq numbers the
// switches, for cancelling one (see worker.cancelSwitch).
type modelReq struct {
	Path, Config string
	Seq          int64
}

// genReq starts a run (Parent < 0) or branches from frame At of run Parent.
type genReq struct {
	ID       int
	Settings presets.Settings
	Parent   int
	At       int
}

type stepReq struct{ ID int }
type wakeReq struct{}
type cancelReq struct{}

// decodeReq asks for the VAE decode of a frame's x_t (X0 false) or x0.
type decodeReq struct {
	ID, Frame int
	X0        bool
}

// exportReq writes a run's images (given, or decoded from a frame) as PNGs.
type exportReq struct {
	ID, Frame int
	X0        bool
	Final     bool
	Images    []*image.RGBA
	Dir       string
}

// sweepReq runs the same seed at several guidance scales.
type sweepReq struct {
	Gen      int64 // see worker.newSweep
	Key      string
	Settings presets.Settings
	Scales   []float64
}

// forwardReq noises a run's image with q(x_t|x0) at n timesteps.
type forwardReq struct {
	ID, Frame int
	N         int
}

func (loadReq) isRequest()    {}
func (modelReq) isRequest()   {}
func (genReq) isRequest()     {}
func (stepReq) isRequest()    {}
func (wakeReq) isRequest()    {}
func (cancelReq) isRequest()  {}
func (decodeReq) isRequest()  {}
func (exportReq) isRequest()  {}
func (sweepReq) isRequest()   {}
func (forwardReq) isRequest() {}

func newWorker(send func(tea.Msg)) *worker {
	w := &worker{
		reqs: make(chan request, 1024),
		send: send,
		done: make(chan struct{}),
		jobs: map[int]*jobState{},
	}
	go w.loop()
	return w
}

// submit queues r without blocking the caller for long; it is dropped after
// Close.
func (w *worker) submit(r request) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	select {
	case w.reqs <- r:
	default:
		go w.send(errMsg{fmt.Errorf("the worker queue is full; dropped a %T", r)})
	}
}

// cancelRun cancels the active run right now (a step in flight returns at
// its next context check) and tells the loop to end it.
func (w *worker) cancelRun() {
	w.mu.Lock()
	if w.runCancel != nil {
		w.runCancel()
	}
	w.mu.Unlock()
	w.submit(cancelReq{})
}

// cancelSweep cancels the sweep in progress and any queued one.
func (w *worker) cancelSweep() {
	w.mu.Lock()
	w.sweepGen++
	if w.sweepCancel != nil {
		w.sweepCancel()
	}
	w.mu.Unlock()
}

// newSweep cancels earlier sweeps and returns the generation number of a
// new sweepReq.
func (w *worker) newSweep() int64 {
	w.cancelSweep()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sweepGen
}

func (w *worker) setPaused(p bool) {
	w.paused.Store(p)
	w.submit(wakeReq{})
}

// close stops the worker after the request in progress, waiting at most d.
func (w *worker) close(d time.Duration) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.sweepGen++
	for _, c := range []context.CancelFunc{w.runCancel, w.sweepCancel} {
		if c != nil {
			c()
		}
	}
	close(w.reqs)
	w.mu.Unlock()
	select {
	case <-w.done:
	case <-time.After(d):
	}
}

func (w *worker) setRunCancel(c context.CancelFunc) {
	w.mu.Lock()
	w.runCancel = c
	w.mu.Unlock()
}

func (w *worker) loop() {
	runtime.LockOSThread() // a GL context is current on one OS thread
	defer close(w.done)
	defer w.release()
	for {
		if a := w.active; a != nil && !a.job.Done() && !w.paused.Load() {
			select {
			case r, ok := <-w.reqs:
				if !ok {
					return
				}
				w.handle(r)
			default:
				w.guard("a step", func() { w.step(a) })
			}
			w.checkDevice()
			continue
		}
		r, ok := <-w.reqs
		if !ok {
			return
		}
		w.handle(r)
		w.checkDevice()
	}
}

// guard runs f; a panic in it is a bug: the UI is told (with the stack) and
// quits, restoring the terminal, and the worker takes no more work.
func (w *worker) guard(what string, f func()) {
	defer func() {
		if p := recover(); p != nil {
			stack := string(debug.Stack())
			w.active = nil
			w.mu.Lock()
			w.closed = true
			w.mu.Unlock()
			w.send(crashMsg{&CrashError{Where: "the worker (" + what + ")", Value: fmt.Sprint(p), Stack: stack}})
		}
	}()
	f()
}

// checkDevice reopens the device when it recorded an error that no run
// reported (a failed decode, export or sweep), and says so.
func (w *worker) checkDevice() {
	if w.dev == nil || w.dev.Err() == nil {
		return
	}
	err := w.dev.Err()
	w.send(errMsg{w.recoverDevice(fmt.Errorf("GPU error: %w", err))})
}

// recoverDevice drops the failed device and the pipeline on it, opens a
// new device and loads the current model again (the one switched to, if
// any). Runs keep their host-side frames, so they can still be scrubbed,
// decoded and branched. It returns err with what was done appended.
func (w *worker) recoverDevice(err error) error {
	if w.dev == nil || w.dev.Err() == nil {
		return err
	}
	stopped := w.active
	if a := stopped; a != nil {
		w.active = nil
		w.setRunCancel(nil)
		a.cancel()
	}
	t0 := time.Now()
	for _, j := range w.jobs {
		j.job.Close() // the prompt embeddings lived on the failed device
		j.job.Pipe = nil
	}
	if w.pipe != nil {
		w.pipe.Close()
	}
	w.dev.Close()
	w.dev, w.pipe = nil, nil
	var warns []string
	dev, pipe, lerr := w.openModel(w.model, func(s string) { warns = append(warns, s) })
	w.dev, w.pipe = dev, pipe
	for _, j := range w.jobs {
		if j.gone == "" {
			j.job.Pipe = pipe
		}
	}
	w.send(reopenedMsg{model: factsOf(pipe), err: lerr})
	note := fmt.Sprintf("device reopened, model reloaded in %.2fs", time.Since(t0).Seconds())
	if lerr != nil {
		note = fmt.Sprintf("reopening the device failed: %v", lerr)
	}
	if len(warns) > 0 {
		note += " (" + oneLine(strings.Join(warns, "; ")) + ")"
	}
	var out error = &recoveryError{err: err, note: note}
	if stopped != nil {
		// A run held paused while something else failed the device: its
		// prompt embeddings are gone, so it ends here.
		w.send(runDoneMsg{ID: stopped.id, Err: fmt.Errorf("stopped at step %d: %w", len(stopped.job.Frames), out)})
	}
	return out
}

// factsOf copies what the UI may know of p (nil for no pipeline): the UI
// reads the copy, never the pipeline, which this goroutine may close.
func factsOf(p *models.Pipeline) *gen.Facts {
	if p == nil {
		return nil
	}
	return gen.FactsOf(p)
}

// recoveryError is a device error and what the worker did about it.
type recoveryError struct {
	err  error
	note string
}

func (e *recoveryError) Error() string { return e.err.Error() + "; " + e.note }
func (e *recoveryError) Unwrap() error { return e.err }

// openModel opens a device and loads spec on it (LoadFunc's own model for
// the zero spec).
func (w *worker) openModel(spec modelSpec, warn func(string)) (gpu.Device, *models.Pipeline, error) {
	if w.load == nil {
		return nil, nil, errors.New("no model to load")
	}
	if spec.Path == "" {
		return w.load(warn)
	}
	var dev gpu.Device
	var err error
	if w.open != nil {
		dev, err = w.open(warn)
	} else {
		var p *models.Pipeline
		dev, p, err = w.load(warn)
		if p != nil {
			p.Close()
		}
	}
	if err != nil {
		return dev, nil, err
	}
	if dev == nil {
		return nil, nil, errors.New("no device was opened")
	}
	p, err := models.Load(dev, spec.Path, spec.Config)
	return dev, p, err
}

func (w *worker) release() {
	for _, j := range w.jobs {
		j.job.Close()
	}
	if w.pipe != nil {
		w.pipe.Close()
	}
	if w.dev != nil {
		w.dev.Close() // on the thread that made its context
	}
}

func (w *worker) handle(r request) {
	w.guard(fmt.Sprintf("%T", r), func() { w.handle1(r) })
}

func (w *worker) handle1(r request) {
	switch r := r.(type) {
	case loadReq:
		start := time.Now()
		w.load, w.open, w.crash = r.load, r.open, r.crash
		var warns []string
		dev, pipe, err := w.openModel(modelSpec{}, func(s string) { warns = append(warns, s) })
		w.dev, w.pipe = dev, pipe
		w.send(loadedMsg{model: factsOf(pipe), err: err, took: time.Since(start), warnings: warns})
	case modelReq:
		w.switchModel(r)
	case genReq:
		w.start(r)
	case stepReq:
		if a := w.active; a != nil && a.id == r.ID && !a.job.Done() {
			w.step(a)
		}
	case wakeReq:
	case cancelReq:
		if a := w.active; a != nil {
			w.finish(a, context.Canceled)
		}
	case decodeReq:
		w.decode(r)
	case exportReq:
		w.export(r)
	case sweepReq:
		w.sweep(r)
	case forwardReq:
		w.forward(r)
	}
}

// start begins a run or a branch and sends its first preview (the initial
// noise, or the frame branched from) at once.
func (w *worker) start(r genReq) {
	if w.pipe == nil {
		w.send(runDoneMsg{ID: r.ID, Err: errors.New("no model is loaded")})
		return
	}
	if a := w.active; a != nil && !a.job.Done() {
		w.finish(a, errStopped)
	}
	t0 := time.Now()
	var job *gen.Job
	var snaps []ownedSnap
	if r.Parent < 0 {
		j, err := gen.Start(w.pipe, r.Settings)
		if err != nil {
			w.send(runDoneMsg{ID: r.ID, Err: w.recoverDevice(err)})
			return
		}
		job = j
	} else {
		j, s, err := w.branch(r)
		if err != nil {
			w.send(runDoneMsg{ID: r.ID, Err: w.recoverDevice(err)})
			return
		}
		job, snaps = j, s
	}
	ctx, cancel := context.WithCancel(context.Background())
	sched := job.Run.Schedule()
	js := &jobState{id: r.ID, job: job, snaps: snaps, ctx: ctx, cancel: cancel,
		ve: sched.InitNoiseSigma > 1.5, encode: time.Since(t0), last: time.Now()}
	w.jobs[r.ID] = js
	w.active = js
	w.setRunCancel(cancel)
	x := job.Run.X()
	msg := runStartedMsg{ID: r.ID, Parent: r.Parent, At: r.At, Settings: job.Settings,
		Schedule: sched, Chunks: job.Cond.Chunks, PromptTokens: job.Cond.PromptTokens,
		NegativeTokens: job.Cond.NegativeTokens, Encode: js.encode, VE: js.ve,
		Shape: x.Shape, Noise: previewAll(w.facts(), w.vpLatent(js, x, sched.InitNoiseSigma))}
	w.send(msg)
}

var errStopped = errors.New("stopped: a new run started")

// branch makes a job that continues from frame r.At of run r.Parent with
// r.Settings (the parent's seed, size and batch are kept).
func (w *worker) branch(r genReq) (*gen.Job, []ownedSnap, error) {
	parent := w.jobs[r.Parent]
	if parent == nil || r.At < 0 || r.At >= len(parent.snaps) {
		return nil, nil, fmt.Errorf("branch: run %d has no frame %d", r.Parent, r.At+1)
	}
	if parent.gone != "" {
		return nil, nil, fmt.Errorf("branch: run %d was made with %s, which is no longer loaded", r.Parent, parent.gone)
	}
	ps := parent.job.Settings
	s := r.Settings
	s.Seed, s.Width, s.Height, s.Batch, s.RNG = ps.Seed, ps.Width, ps.Height, ps.Batch, ps.RNG
	// The run keeps its image conditioning (sampler.Run.Branch); so do
	// the settings that describe it.
	s.InitImage, s.Strength, s.Mask, s.MaskBlur = ps.InitImage, ps.Strength, ps.Mask, ps.MaskBlur
	s.IPAdapter, s.IPAdapterImage, s.IPAdapterScale, s.ImageEncoder = ps.IPAdapter, ps.IPAdapterImage, ps.IPAdapterScale, ps.ImageEncoder
	s.Model = w.pipe.Name
	if err := gen.Validate(w.pipe, s); err != nil {
		return nil, nil, err
	}
	owner := parent.snaps[r.At]
	cond, err := w.pipe.EncodePrompt(s.Prompt, s.NegativePrompt, s.ClipSkip)
	if err != nil {
		return nil, nil, fmt.Errorf("branch: %w", err)
	}
	if err := gen.EncodeImagePrompt(w.pipe, s, cond); err != nil { // the parent's IP-Adapter image prompt
		cond.Release()
		return nil, nil, fmt.Errorf("branch: %w", err)
	}
	s.LoraHashes = w.pipe.LoRAHashes() // the prompt's LoRAs, applied by EncodePrompt
	w.pipe.SetSize(cond, s.Width, s.Height, gen.SizeCond(s))
	here := owner.run.Snapshot()
	if err := owner.run.Restore(owner.snap); err != nil {
		cond.Release()
		return nil, nil, fmt.Errorf("branch: %w", err)
	}
	run, err := owner.run.Branch(gen.SamplerSettings(w.pipe, s), gen.Network{Pipe: w.pipe, Cond: cond})
	if rerr := owner.run.Restore(here); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		cond.Release()
		return nil, nil, fmt.Errorf("branch: %w", err)
	}
	if run.Done() {
		cond.Release()
		return nil, nil, errors.New("branch: no steps are left after this frame; scrub back first")
	}
	frames := append([]sampler.Frame(nil), parent.job.Frames[:r.At+1]...)
	snaps := append([]ownedSnap(nil), parent.snaps[:r.At+1]...)
	return &gen.Job{Settings: s, Pipe: w.pipe, Cond: cond, Run: run, Frames: frames, Started: time.Now()}, snaps, nil
}

// step takes one step of the active run and sends its frame (and, after
// the last, the VAE-decoded images).
func (w *worker) step(a *jobState) {
	if w.crash == "worker" {
		panic("STEPWISE_TEST_PANIC=worker: a panic in the worker, as the test asked")
	}
	t0 := time.Now()
	f, err := a.job.Step(a.ctx)
	if err != nil {
		w.finish(a, err)
		return
	}
	d := time.Since(t0)
	a.steps += d
	sched := a.job.Run.Schedule()
	next := 0.0
	if i := f.Index; i >= 0 && i < len(sched.Next) {
		next = sched.Next[i]
	}
	a.snaps = append(a.snaps, ownedSnap{run: a.job.Run, snap: a.job.Run.Snapshot(), next: next})
	w.send(frameMsg{ID: a.id, Frame: frameRec{
		Index: f.Index, Total: f.Total, Sigma: f.Sigma, Next: next, Timestep: f.Timestep, NFE: f.NFE,
		Took: d, XT: previewAll(w.facts(), w.vpLatent(a, f.X, next)), X0: previewAll(w.facts(), f.Denoised),
	}})
	if a.job.Done() {
		w.finish(a, nil)
	}
}

// vpLatent rescales a VE-space latent x0+sigma*eps to the VP scale
// (divides by sqrt(1+sigma^2)) so that its preview does not saturate.
func (w *worker) vpLatent(a *jobState, x sampler.Latent, sigma float64) sampler.Latent {
	return vpScale(x, sigma, a.ve)
}

func vpScale(x sampler.Latent, sigma float64, ve bool) sampler.Latent {
	if !ve || sigma <= 0 {
		return x
	}
	k := float32(1 / math.Sqrt(1+sigma*sigma))
	out := sampler.Latent{Shape: x.Shape, Data: make([]float32, len(x.Data))}
	for i, v := range x.Data {
		out.Data[i] = v * k
	}
	return out
}

// finish ends the active run: err nil means every step was taken, and the
// final latent is decoded with the VAE.
func (w *worker) finish(a *jobState, err error) {
	if w.active == a {
		w.active = nil
		w.setRunCancel(nil)
	}
	a.cancel()
	msg := runDoneMsg{ID: a.id, Err: err, Encode: a.encode, Sampling: a.steps}
	if err == nil {
		t0 := time.Now()
		imgs, derr := a.job.Images()
		msg.Decode = time.Since(t0)
		msg.Images, msg.Err = imgs, derr
	}
	if msg.Err != nil {
		msg.Err = w.recoverDevice(msg.Err)
	}
	if w.pipe != nil {
		msg.Timings = copyTimings(w.pipe.Timings)
	}
	msg.Cancelled = errors.Is(msg.Err, context.Canceled)
	msg.Stopped = errors.Is(msg.Err, errStopped)
	// An ended run never steps again (a branch encodes its own prompt):
	// its prompt embeddings leave the device now, so that a long session
	// holds no more device memory than its first run did.
	a.job.Close()
	w.send(msg)
}

func copyTimings(m map[string]time.Duration) map[string]time.Duration {
	out := make(map[string]time.Duration, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// frameLatent returns the latent of a run's frame (or its final state).
func (w *worker) frameLatent(id, frame int, x0 bool) (*jobState, sampler.Latent, error) {
	a := w.jobs[id]
	if a == nil {
		return nil, sampler.Latent{}, fmt.Errorf("run %d is not known to the worker", id)
	}
	if a.gone != "" {
		return a, sampler.Latent{}, fmt.Errorf("run %d was made with %s, which is no longer loaded", id, a.gone)
	}
	if a.job.Pipe == nil {
		return a, sampler.Latent{}, errors.New("no model is loaded")
	}
	if frame < 0 || frame >= len(a.job.Frames) {
		return a, sampler.Latent{}, fmt.Errorf("run %d has no frame %d", id, frame+1)
	}
	f := a.job.Frames[frame]
	if x0 {
		return a, f.Denoised, nil
	}
	return a, w.vpLatent(a, f.X, nextSigma(a, frame)), nil
}

func nextSigma(a *jobState, frame int) float64 { return a.snaps[frame].next }

func (w *worker) decode(r decodeReq) {
	a, l, err := w.frameLatent(r.ID, r.Frame, r.X0)
	if err != nil {
		w.send(decodedMsg{ID: r.ID, Frame: r.Frame, X0: r.X0, Err: err})
		return
	}
	imgs, err := a.job.Pipe.Decode(l.Data, l.Shape)
	if err != nil {
		err = w.recoverDevice(err)
	}
	w.send(decodedMsg{ID: r.ID, Frame: r.Frame, X0: r.X0, Images: imgs, Err: err})
}

func (w *worker) export(r exportReq) {
	a := w.jobs[r.ID]
	if a == nil {
		w.send(exportedMsg{Err: fmt.Errorf("run %d is not known to the worker", r.ID)})
		return
	}
	imgs := r.Images
	var extra []presets.Param
	if !r.Final {
		_, l, err := w.frameLatent(r.ID, r.Frame, r.X0)
		if err == nil {
			imgs, err = a.job.Pipe.Decode(l.Data, l.Shape)
		}
		if err != nil {
			w.send(exportedMsg{Err: w.recoverDevice(fmt.Errorf("export: %w", err))})
			return
		}
		what := "x_t"
		if r.X0 {
			what = "predicted x0"
		}
		extra = append(extra, presets.Param{Key: "Stepwise frame", Value: fmt.Sprintf("%d/%d %s", r.Frame+1, len(a.job.Frames), what)})
	}
	var paths []string
	for i, img := range imgs {
		s := a.job.Settings
		ps := extra
		if s.Batch > 1 {
			ps = append([]presets.Param{{Key: "Batch size", Value: fmt.Sprint(s.Batch)}, {Key: "Batch pos", Value: fmt.Sprint(i)}}, extra...)
		}
		text := s.InfotextWith(ps...)
		p, err := writeUnique(r.Dir, img, text)
		if err != nil {
			w.send(exportedMsg{Paths: paths, Err: err})
			return
		}
		paths = append(paths, p)
	}
	w.send(exportedMsg{Paths: paths})
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

// sweep generates the same seed at every scale; each finished image is sent
// as it comes, so the view fills in.
func (w *worker) sweep(r sweepReq) {
	if w.pipe == nil {
		w.send(sweepMsg{Key: r.Key, Index: -1, Err: errors.New("no model is loaded")})
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.mu.Lock()
	stale := r.Gen != w.sweepGen
	w.sweepCancel = cancel
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.sweepCancel = nil
		w.mu.Unlock()
	}()
	if stale {
		return
	}
	for i, cfg := range r.Scales {
		t0 := time.Now()
		s := r.Settings
		s.CFGScale = cfg
		s.Batch = 1
		job, err := gen.Start(w.pipe, s)
		if err != nil {
			w.send(sweepMsg{Key: r.Key, Index: i, Err: w.recoverDevice(err)})
			return
		}
		imgs, err := job.Finish(ctx)
		job.Close()
		if ctx.Err() != nil {
			return // cancelled: the view has already let go of it
		}
		if err != nil {
			err = w.recoverDevice(err)
		}
		m := sweepMsg{Key: r.Key, Index: i, Scale: cfg, Took: time.Since(t0), Err: err}
		if len(imgs) > 0 {
			m.Image = imgs[0]
		}
		w.send(m)
		if err != nil {
			return
		}
	}
}

// forward noises the run's image (its final latent, or the predicted x0
// of the frame) with q(x_t|x0) = sqrt(abar_t) x0 + sqrt(1-abar_t) eps at n
// timesteps from 0 to T-1 and sends the latent previews.
func (w *worker) forward(r forwardReq) {
	a, l, err := w.frameLatent(r.ID, r.Frame, true)
	if err != nil {
		w.send(forwardMsg{ID: r.ID, Err: err})
		return
	}
	if last := len(a.job.Frames) - 1; r.Frame == last {
		l = a.job.Frames[last].X // the finished latent (x0 at sigma 0)
		if a.ve {
			l = w.vpLatent(a, l, nextSigma(a, last))
		}
	}
	cfg := gen.ScheduleConfig(w.pipe.Model.Scheduler)
	ab, err := cfg.AlphasCumprod()
	if err != nil {
		w.send(forwardMsg{ID: r.ID, Err: err})
		return
	}
	n := max(r.N, 2)
	rng := rand.New(rand.NewPCG(uint64(a.job.Settings.Seed), 7))
	eps := make([]float32, len(l.Data))
	for i := range eps {
		eps[i] = float32(rng.NormFloat64())
	}
	m := forwardMsg{ID: r.ID}
	x := sampler.Latent{Shape: l.Shape, Data: make([]float32, len(l.Data))}
	for k := 0; k < n; k++ {
		t := k * (len(ab) - 1) / (n - 1)
		s, q := float32(math.Sqrt(float64(ab[t]))), float32(math.Sqrt(1-float64(ab[t])))
		for i := range x.Data {
			x.Data[i] = s*l.Data[i] + q*eps[i]
		}
		m.T = append(m.T, t)
		m.AlphaBar = append(m.AlphaBar, float64(ab[t]))
		m.Images = append(m.Images, gen.PreviewFor(w.pipe, x, 0))
	}
	w.send(m)
}

// switchModel loads r's checkpoint onto the device in use and, when that
// works, unloads the previous model: its runs keep what the UI holds (their
// frames and final images) but can no longer be decoded or branched. When
// the load fails the previous model stays loaded; should the failure have
// left the device failed, the device is reopened with the previous model.
func (w *worker) switchModel(r modelReq) {
	cancelled := func() bool { return r.Seq != 0 && w.cancelledSwitch.Load() == r.Seq }
	if cancelled() {
		w.send(modelMsg{path: r.Path, seq: r.Seq, cancelled: true})
		return
	}
	if a := w.active; a != nil && !a.job.Done() {
		w.finish(a, errStopped)
	}
	t0 := time.Now()
	spec := modelSpec{Path: r.Path, Config: r.Config}
	if w.dev == nil || w.dev.Err() != nil {
		// No usable device (the first load failed): open one with the
		// new model.
		oldName := ""
		if w.pipe != nil {
			oldName = w.pipe.Name
		}
		w.unloadJobs(oldName)
		if w.pipe != nil {
			w.pipe.Close()
		}
		if w.dev != nil {
			w.dev.Close()
		}
		var warns []string
		dev, pipe, err := w.openModel(spec, func(s string) { warns = append(warns, s) })
		w.dev, w.pipe = dev, pipe
		if err != nil {
			w.send(modelMsg{path: r.Path, err: err})
			return
		}
		w.model = spec
		w.send(modelMsg{path: r.Path, model: factsOf(pipe), took: time.Since(t0), warnings: append(warns, pipe.Model.Warnings...)})
		return
	}
	pipe, err := models.Load(w.dev, r.Path, r.Config)
	if err == nil && cancelled() {
		// Cancelled while it loaded: the previous model stays.
		pipe.Close()
		w.send(modelMsg{path: r.Path, seq: r.Seq, cancelled: true})
		return
	}
	if err != nil {
		if pipe != nil {
			pipe.Close()
		}
		err = w.recoverDevice(err)
		w.send(modelMsg{path: r.Path, seq: r.Seq, err: err})
		return
	}
	if old := w.pipe; old != nil {
		w.unloadJobs(old.Name)
		old.Close()
	}
	w.pipe, w.model = pipe, spec
	w.send(modelMsg{path: r.Path, seq: r.Seq, model: factsOf(pipe), took: time.Since(t0), warnings: pipe.Model.Warnings})
}

// unloadJobs releases every run's device memory and marks the runs as made
// with the model name (no longer loaded).
func (w *worker) unloadJobs(name string) {
	if name == "" {
		name = "a model that is no longer loaded"
	}
	for _, j := range w.jobs {
		j.job.Close()
		j.job.Pipe = nil
		if j.gone == "" {
			j.gone = name
		}
	}
}
