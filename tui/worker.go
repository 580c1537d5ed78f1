package tui

import (
	"context"
	"errors"
	"fmt"
	"image"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/bundled"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/sampler"
)

// LoadFunc opens the compute device and loads the model; see gen.LoadFunc.
// The worker calls it on its own goroutine (which keeps its OS thread, as a
// GL context needs).
type LoadFunc = gen.LoadFunc

// OpenFunc opens a fresh compute device (no model); see gen.OpenFunc.
type OpenFunc = gen.OpenFunc

// worker is the studio's adapter over a gen.Session: every kernel runs on
// its one goroutine, which takes requests from a queue, calls the session
// and answers with tea.Msgs.
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
	sess   *gen.Session
	active *active
	vae    vaeCost // what a VAE preview costs on the loaded model
	crash  string  // test-only: "worker" panics on the next step

	compiling compiling // the compile-ahead's progress, for the busy line
}

// active is the run the worker steps (or holds paused).
type active struct {
	run    *gen.Run
	ctx    context.Context
	cancel context.CancelFunc
	live   bool // a live-mode run: no VAE previews of its steps (live.go)
}

// request is a unit of work for the worker.
type request interface{ isRequest() }

type loadReq struct {
	load  LoadFunc
	open  OpenFunc
	crash string
	// spec, when its Path is set, is the model loaded instead of load's
	// (a DeepFloyd IF folder and its upscaler); ifUp the stage II
	// settings of the session's IF runs.
	spec gen.ModelSpec
	ifUp gen.IFUpscale
}

// modelReq switches to another model on the same device. Seq numbers the
// switches, for cancelling one (see worker.cancelSwitch).
type modelReq struct {
	Path, Config string
	Seq          int64
	Upscaler     string // a DeepFloyd IF stage II folder beside Path
}

// genReq starts a run (Parent < 0) or branches from frame At of run Parent.
type genReq struct {
	ID       int
	Settings presets.Settings
	Parent   int
	At       int
	// Inputs are the run's images, read and checked by the UI (nil: the
	// session reads them). LoRADir is where the prompt's LoRAs are looked
	// up (the LoRA folder field).
	Inputs  *gen.Inputs
	LoRADir string
	// IFUp are the stage II settings of a DeepFloyd IF run or branch (the
	// form's fields; nil: the session's, or the parent's).
	IFUp *gen.IFUpscale
	// Live marks a live-mode run (live.go): its steps are not
	// VAE-decoded, so its image comes as soon as the steps and the
	// final decode allow.
	Live bool
}

// forgetReq drops a run from the session (a live run that another
// replaced): its snapshots and embeddings are released.
type forgetReq struct{ ID int }

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
	IFUp     *gen.IFUpscale // DeepFloyd IF's stage II settings (nil: the session's)
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
func (forgetReq) isRequest()  {}

func newWorker(send func(tea.Msg)) *worker {
	w := &worker{
		reqs: make(chan request, 1024),
		send: send,
		done: make(chan struct{}),
		sess: gen.NewSession(nil, nil),
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
	defer w.sess.Close() // the device on the thread that made its context
	for {
		if a := w.active; a != nil && !a.run.Done() && !w.paused.Load() {
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
	if err := w.sess.CheckDevice(); err != nil {
		w.send(errMsg{w.recovered(err)})
	}
}

// recovered looks at an error from the session: when the session reopened
// the device (a *gen.RecoveryError) the UI gets the reloaded model's facts,
// and a run held paused ends (its prompt embeddings were on the failed
// device). It returns err.
func (w *worker) recovered(err error) error {
	var re *gen.RecoveryError
	if !errors.As(err, &re) {
		return err
	}
	w.send(reopenedMsg{model: re.Facts, err: re.ReloadErr})
	if a := w.active; a != nil {
		w.active = nil
		w.setRunCancel(nil)
		a.cancel()
		w.send(runDoneMsg{ID: a.run.ID, Err: fmt.Errorf("stopped at step %d: %w", a.run.Len(), err)})
	}
	return err
}

func (w *worker) handle(r request) {
	w.guard(fmt.Sprintf("%T", r), func() { w.handle1(r) })
}

func (w *worker) handle1(r request) {
	switch r := r.(type) {
	case loadReq:
		start := time.Now()
		w.sess, w.crash = gen.NewSession(r.load, r.open), r.crash
		if r.ifUp.Steps > 0 {
			w.sess.IFUpscale = r.ifUp
		}
		var facts *gen.Facts
		var warns []string
		var err error
		if r.spec.Path != "" {
			facts, warns, err = w.sess.SwitchModel(r.spec, nil)
		} else {
			facts, warns, err = w.sess.Load()
		}
		ahead := err == nil && w.sess.Pipeline() != nil && w.announceAhead() // an IF cascade compiles as it goes
		w.send(loadedMsg{model: facts, err: err, took: time.Since(start), warnings: warns})
		if ahead {
			w.prepare()
		}
	case modelReq:
		w.switchModel(r)
	case genReq:
		w.start(r)
	case stepReq:
		if a := w.active; a != nil && a.run.ID == r.ID && !a.run.Done() {
			w.step(a)
		}
	case wakeReq:
	case cancelReq:
		if a := w.active; a != nil {
			w.finish(a, context.Canceled)
		}
	case decodeReq:
		imgs, err := w.sess.Decode(r.ID, r.Frame, r.X0)
		tiny := false
		if p := w.sess.Pipeline(); p != nil {
			tiny = p.TAESD() != nil // the pipeline decodes with its TAESD when it has one
		}
		w.send(decodedMsg{ID: r.ID, Frame: r.Frame, X0: r.X0, Images: imgs, Tiny: tiny, Err: w.recovered(err)})
	case exportReq:
		var imgs []*image.RGBA
		if r.Final {
			imgs = r.Images
		}
		paths, err := w.sess.Export(r.ID, r.Frame, r.X0, imgs, r.Dir)
		w.send(exportedMsg{Paths: paths, Err: w.recovered(err)})
	case sweepReq:
		w.sweep(r)
	case taesdReq:
		w.setTAESD(r)
	case forgetReq:
		if a := w.active; a != nil && a.run.ID == r.ID {
			w.finish(a, context.Canceled)
		}
		w.sess.Forget(r.ID)
	case forwardReq:
		fw, err := w.sess.Forward(r.ID, r.Frame, max(r.N, 2), w.cheapVAE(max(r.N, 2)))
		if err != nil {
			w.send(forwardMsg{ID: r.ID, Err: w.recovered(err)})
			return
		}
		w.send(forwardMsg{ID: r.ID, T: fw.T, AlphaBar: fw.AlphaBar, Sigma: fw.Sigma, Images: fw.Images})
	}
}

// start begins a run or a branch and sends its first preview (the initial
// noise, or the frame branched from) at once.
func (w *worker) start(r genReq) {
	if a := w.active; a != nil && !a.run.Done() {
		w.finish(a, errStopped)
	}
	var run *gen.Run
	var err error
	if p := w.sess.Pipeline(); p != nil {
		p.LoRADir = r.LoRADir // changing it (or a LoRA) never reloads the model
	}
	switch {
	case r.Parent < 0:
		if r.IFUp != nil && w.sess.IF() != nil {
			w.sess.IFUpscale = *r.IFUp // the session's IF runs take the fields' stage II
		}
		run, err = w.sess.StartInputs(r.ID, r.Settings, r.Inputs)
	case r.IFUp != nil && w.sess.Run(r.Parent) != nil && w.sess.Run(r.Parent).IsIF():
		run, err = w.sess.BranchIF(r.ID, r.Parent, r.At, r.Settings, *r.IFUp)
	default:
		run, err = w.sess.Branch(r.ID, r.Parent, r.At, r.Settings)
	}
	if err != nil {
		w.send(runDoneMsg{ID: r.ID, Err: w.recovered(err)})
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &active{run: run, ctx: ctx, cancel: cancel, live: r.Live}
	w.active = a
	w.setRunCancel(cancel)
	msg := runStartedMsg{ID: r.ID, Parent: r.Parent, At: r.At, Settings: run.Job.Settings,
		Schedule: run.Schedule, Encode: run.Encode, VE: run.Space == sampler.SpaceVE,
		Shape: run.InitialXT().Shape, Noise: previewAll(w.sess.Facts(), run.InitialXT())}
	if c := run.Job.Cond; c != nil {
		msg.Chunks, msg.PromptTokens, msg.NegativeTokens, msg.PromptT5Tokens = c.Chunks, c.PromptTokens, c.NegativeTokens, c.PromptT5Tokens
	}
	if run.IsIF() {
		ifStarted(&msg, w.sess.Facts(), run)
		if up, ok := run.IFUpscaleOf(); ok {
			msg.IFUp = &up
		}
	}
	w.send(msg)
}

var errStopped = errors.New("stopped: a new run started")

// step takes one step of the active run and sends its frame (and, after
// the last, the VAE-decoded images).
func (w *worker) step(a *active) {
	if w.crash == "worker" {
		panic("STEPWISE_TEST_PANIC=worker: a panic in the worker, as the test asked")
	}
	st, err := w.sess.Step(a.ctx, a.run)
	if err != nil {
		w.finish(a, err)
		return
	}
	fr := frameRec{
		Index: st.Index, Total: st.Total, Sigma: st.Sigma, Next: st.Next, Timestep: st.Timestep, NFE: st.NFE,
		Took: st.Took, XT: previewAll(w.sess.Facts(), st.XT), Stage: st.Stage,
	}
	if st.Stage == 0 {
		fr.X0, fr.Tiny = w.previews(st.Denoised) // the TAESD's decode when one is loaded (taesd.go)
		if !a.live {
			w.vaeFrame(a.run, st.Took, &fr)
		}
	} else { // an IF frame's pixels are its picture: no VAE
		fr.X0 = previewAll(w.sess.Facts(), st.Denoised)
	}
	if w.active != a {
		return // a device error in the VAE preview stopped the run
	}
	w.send(frameMsg{ID: a.run.ID, Frame: fr})
	if a.run.Done() {
		w.finish(a, nil)
	}
}

// finish ends the active run: err nil means every step was taken, and the
// final latent is decoded with the VAE.
func (w *worker) finish(a *active, err error) {
	if w.active == a {
		w.active = nil
		w.setRunCancel(nil)
	}
	a.cancel()
	msg := runDoneMsg{ID: a.run.ID, Err: err, Encode: a.run.Encode, Sampling: a.run.Sampling()}
	if err == nil {
		t0 := time.Now()
		imgs, derr := w.sess.Images(context.Background(), a.run)
		msg.Decode = time.Since(t0)
		msg.Images, msg.Err = imgs, derr
	}
	msg.Err = w.recovered(msg.Err)
	if p := w.sess.Pipeline(); p != nil {
		msg.Timings = copyTimings(p.Timings)
	}
	msg.Cancelled = errors.Is(msg.Err, context.Canceled)
	msg.Stopped = errors.Is(msg.Err, errStopped)
	w.sess.End(a.run)
	w.send(msg)
}

func copyTimings(m map[string]time.Duration) map[string]time.Duration {
	out := make(map[string]time.Duration, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// sweep generates the same seed at every scale; each finished image is sent
// as it comes, so the view fills in.
func (w *worker) sweep(r sweepReq) {
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
	if r.IFUp != nil && w.sess.IF() != nil {
		w.sess.IFUpscale = *r.IFUp
	}
	next := 0
	err := w.sess.Sweep(ctx, r.Settings, r.Scales, func(res gen.SweepResult) {
		next = res.Index + 1
		w.send(sweepMsg{Key: r.Key, Index: res.Index, Scale: res.Scale, Image: res.Image, Took: res.Took})
	})
	if err != nil && ctx.Err() == nil {
		i := next
		if w.sess.Pipeline() == nil && next == 0 && !errors.As(err, new(*gen.RecoveryError)) {
			i = -1 // no model: nothing was tried
		}
		w.send(sweepMsg{Key: r.Key, Index: i, Err: w.recovered(err)})
	}
}

// switchModel loads r's checkpoint (see gen.Session.SwitchModel); the run
// in progress is stopped first.
func (w *worker) switchModel(r modelReq) {
	cancelled := func() bool { return r.Seq != 0 && w.cancelledSwitch.Load() == r.Seq }
	if cancelled() {
		w.send(modelMsg{path: r.Path, seq: r.Seq, cancelled: true})
		return
	}
	if a := w.active; a != nil && !a.run.Done() {
		w.finish(a, errStopped)
	}
	t0 := time.Now()
	spec := gen.ModelSpec{Path: r.Path, Config: r.Config, Upscaler: r.Upscaler}
	if r.Path == bundledPath {
		spec.Load = bundled.Load
	}
	facts, warns, err := w.sess.SwitchModel(spec, cancelled)
	if errors.Is(err, gen.ErrSwitchCancelled) {
		w.send(modelMsg{path: r.Path, seq: r.Seq, cancelled: true})
		return
	}
	if err != nil {
		w.send(modelMsg{path: r.Path, seq: r.Seq, err: w.recovered(err)})
		return
	}
	w.send(modelMsg{path: r.Path, seq: r.Seq, model: facts, took: time.Since(t0), warnings: warns})
}

// vaeCost is the VAE preview budget of pipe (see gen.PreviewBudget).
type vaeCost struct {
	pipe   *models.Pipeline
	budget gen.PreviewBudget
}

// vaeFrame replaces the frame's latent preview (a mosaic of the latent
// projection) by a VAE decode of its predicted x0, and of its x_t when the
// budget holds two, as long as the decodes stay within a fifth of the
// sampling time: on the bundled model most frames are decoded (a decode
// is a few tens of milliseconds), on SD at 512x512 on a CPU none (a decode
// costs more than a step).
func (w *worker) vaeFrame(r *gen.Run, step time.Duration, fr *frameRec) {
	p := w.sess.Pipeline()
	if p == nil || p.TAESD() != nil { // TAESD previews are the pipeline's own
		return
	}
	if w.vae.pipe != p {
		w.vae = vaeCost{pipe: p}
	}
	b := &w.vae.budget
	b.Stepped(step)
	frame := r.Len() - 1
	for _, x0 := range []bool{true, false} {
		if !b.Allows() {
			return
		}
		t0 := time.Now()
		imgs, err := w.sess.Decode(r.ID, frame, x0)
		b.Spent(time.Since(t0))
		if err != nil {
			b.Spent(time.Hour) // no more VAE previews on this model
			w.recovered(err)
			return
		}
		if x0 {
			fr.X0, fr.X0VAE = tile(imgs), true
		} else {
			fr.XT, fr.XTVAE = tile(imgs), true
		}
	}
}

// cheapVAE reports whether n VAE decodes on the loaded model take under
// two seconds, by the last preview decode measured (none measured: no).
func (w *worker) cheapVAE(n int) bool {
	if w.vae.pipe == nil || w.vae.pipe != w.sess.Pipeline() {
		return false
	}
	_, _, last := w.vae.budget.Totals()
	return last > 0 && last*time.Duration(n) < 2*time.Second
}
