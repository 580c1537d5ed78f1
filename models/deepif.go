package models

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
	"github.com/stepwise/stepwise/models/tokenizer"
	"github.com/stepwise/stepwise/sampler/rng"
)

// IFMaxLength is the T5 sequence length DeepFloyd IF's pipelines encode
// prompts to (padding included; every position reaches the U-Net).
const IFMaxLength = 77

// IFStage is one U-Net of a DeepFloyd IF cascade with its scheduler (and,
// for stage II, the scheduler that noises the upscaled low-res image).
type IFStage struct {
	Dir     string
	UNet    *nets.IFUNet
	Sched   *IFScheduler
	Noising *IFScheduler // stage II only
}

// IF is a DeepFloyd IF cascade: the T5 text encoder and tokenizer of the
// stage I folder, stage I, and (after LoadUpscaler) stage II.
type IF struct {
	dev   gpu.Device
	tok   *tokenizer.Unigram
	te    *nets.T5Encoder
	Base  *IFStage
	Upper *IFStage
	// adjustText, when set, rewrites the T5 states [2,77,width] after
	// encoding (tests use it to measure how the cascade responds to one
	// ulp of rounding in its text conditioning).
	adjustText func([]float32)
}

// IsIFFolder reports whether dir is a diffusers folder of one of IF's
// pipelines (model_index.json's _class_name IFPipeline or
// IFSuperResolutionPipeline), and which.
func IsIFFolder(dir string) (class string, ok bool) {
	b, err := safefile.ReadFile(filepath.Join(dir, "model_index.json"), ifConfigLimit)
	if err != nil {
		return "", false
	}
	var idx struct {
		Class string `json:"_class_name"`
	}
	if json.Unmarshal(b, &idx) != nil {
		return "", false
	}
	switch idx.Class {
	case "IFPipeline", "IFSuperResolutionPipeline":
		return idx.Class, true
	}
	return "", false
}

// readWeights reads a safetensors file into memory as nets weights.
func readWeights(path string) (nets.MapWeights, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	w := nets.MapWeights{}
	for _, ti := range f.Tensors() {
		dt, ok := ti.DType.GPU()
		if !ok {
			return nil, fmt.Errorf("%s: tensor %s has unsupported dtype %s", path, ti.Name, ti.DType)
		}
		raw, err := f.Data(ti.Name)
		if err != nil {
			return nil, err
		}
		w[ti.Name] = nets.Param{DType: dt, Shape: append([]int(nil), ti.Shape...), Raw: append([]byte(nil), raw...)}
	}
	return w, nil
}

// componentWeights finds dir/<comp>/<base>.safetensors or its fp16 variant.
func componentWeights(dir, comp, base string) (nets.MapWeights, error) {
	for _, name := range []string{base + ".safetensors", base + ".fp16.safetensors"} {
		p := filepath.Join(dir, comp, name)
		if _, err := os.Stat(p); err == nil {
			return readWeights(p)
		}
	}
	return nil, fmt.Errorf("%s: no %s.safetensors or %s.fp16.safetensors", filepath.Join(dir, comp), base, base)
}

// ifConfigLimit bounds the JSON files of an IF folder (configs are a few
// KB); safefile never blocks on a FIFO or reads a device.
const ifConfigLimit = 4 << 20

func readJSON(path string, v any) error {
	b, err := safefile.ReadFile(path, ifConfigLimit)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// loadIFStage reads a stage's U-Net and schedulers; upscaler says which
// stage the caller wants, and a folder of the other kind is refused.
func loadIFStage(d gpu.Device, dir string, upscaler bool, textDim int) (*IFStage, error) {
	class, ok := IsIFFolder(dir)
	if !ok {
		return nil, fmt.Errorf("%s: not a DeepFloyd IF folder (model_index.json with _class_name IFPipeline or IFSuperResolutionPipeline)", dir)
	}
	cfgPath := filepath.Join(dir, "unet", "config.json")
	var c nets.IFUNetConfig
	if err := readJSON(cfgPath, &c); err != nil {
		return nil, err
	}
	isSR := class == "IFSuperResolutionPipeline" || c.ClassEmbedType != ""
	switch {
	case isSR && !upscaler:
		return nil, fmt.Errorf("%s: a stage II (super-resolution) model cannot be the base model; pass it as the upscaler", cfgPath)
	case !isSR && upscaler:
		return nil, fmt.Errorf("%s: a stage I model, not a stage II upscaler", cfgPath)
	}
	if c.Defaults(); textDim > 0 && c.TextDim() != textDim {
		return nil, fmt.Errorf("%s: stage II takes text states of width %d, stage I's T5 gives %d", cfgPath, c.TextDim(), textDim)
	}
	w, err := componentWeights(dir, "unet", "diffusion_pytorch_model")
	if err != nil {
		return nil, err
	}
	u, err := nets.NewIFUNet(d, c, w)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "unet"), err)
	}
	st := &IFStage{Dir: dir, UNet: u}
	if st.Sched, err = LoadIFScheduler(filepath.Join(dir, "scheduler", "scheduler_config.json")); err != nil {
		u.Release()
		return nil, err
	}
	if upscaler {
		if st.Noising, err = LoadIFScheduler(filepath.Join(dir, "image_noising_scheduler", "scheduler_config.json")); err != nil {
			u.Release()
			return nil, err
		}
	}
	return st, nil
}

// LoadIF loads a stage I folder (IFPipeline: text_encoder, tokenizer,
// unet, scheduler) onto d.
func LoadIF(d gpu.Device, dir string) (*IF, error) {
	p := &IF{dev: d}
	class, ok := IsIFFolder(dir)
	switch {
	case !ok:
		return nil, fmt.Errorf("%s: not a DeepFloyd IF folder (model_index.json with _class_name IFPipeline)", dir)
	case class == "IFSuperResolutionPipeline":
		return nil, fmt.Errorf("%s: a stage II (super-resolution) model cannot be the base model; pass it as the upscaler", filepath.Join(dir, "model_index.json"))
	}
	var err error
	if p.tok, err = tokenizer.LoadUnigram(filepath.Join(dir, "tokenizer")); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "tokenizer"), err)
	}
	var tc nets.T5Config
	if err := readJSON(filepath.Join(dir, "text_encoder", "config.json"), &tc); err != nil {
		return nil, err
	}
	tw, err := componentWeights(dir, "text_encoder", "model")
	if err != nil {
		return nil, err
	}
	if p.te, err = nets.NewT5Encoder(d, tc, tw); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "text_encoder"), err)
	}
	if p.Base, err = loadIFStage(d, dir, false, 0); err != nil {
		p.te.Release()
		return nil, err
	}
	if got, want := tc.DModel, p.Base.UNet.Config.TextDim(); got != want {
		p.Release()
		return nil, fmt.Errorf("%s: the T5 width %d differs from the U-Net's text width %d", filepath.Join(dir, "text_encoder", "config.json"), got, want)
	}
	return p, nil
}

// LoadUpscaler loads a stage II folder (IFSuperResolutionPipeline) whose
// text width must match stage I's.
func (p *IF) LoadUpscaler(dir string) error {
	st, err := loadIFStage(p.dev, dir, true, p.Base.UNet.Config.TextDim())
	if err != nil {
		return err
	}
	p.Upper = st
	return nil
}

// Release frees everything on the device.
func (p *IF) Release() {
	if p.te != nil {
		p.te.Release()
	}
	for _, st := range []*IFStage{p.Base, p.Upper} {
		if st != nil {
			st.UNet.Release()
		}
	}
}

// Tokens returns IF's T5 ids for text (pieces, </s>, <pad> to 77) and the
// attention mask (true up to and including </s>).
func (p *IF) Tokens(text string) ([]int32, []bool) {
	ids, _ := p.tok.EncodePadded(text, IFMaxLength)
	n := min(len(p.tok.Encode(text))+1, IFMaxLength)
	mask := make([]bool, len(ids))
	for i := 0; i < n && i < len(mask); i++ {
		mask[i] = true
	}
	return ids, mask
}

// Encode returns the masked T5 states [2,77,width] of rows [negative,
// prompt], as IFPipeline.encode_prompt with classifier-free guidance.
func (p *IF) Encode(prompt, negative string) (*gpu.Tensor, error) {
	ni, nm := p.Tokens(negative)
	pi, pm := p.Tokens(prompt)
	t, err := p.te.EncodeMasked([][]int32{ni, pi}, [][]bool{nm, pm})
	if err != nil || p.adjustText == nil {
		return t, err
	}
	v, err := p.dev.Download(t)
	p.dev.Release(t)
	if err != nil {
		return nil, err
	}
	p.adjustText(v)
	return p.dev.Upload(v, t.Dim(0), t.Dim(1), t.Dim(2)), nil
}

// IFOptions are the settings of one IF run.
type IFOptions struct {
	Prompt, Negative string
	Steps            int
	CFG              float64
	Seed             uint64
	// Size is stage I's square image size (0: the U-Net's sample_size).
	Size int
	// UpscalerSteps, UpscalerCFG and NoiseLevel drive stage II.
	UpscalerSteps int
	UpscalerCFG   float64
	NoiseLevel    int
	// Stop, when set, is asked before each step; a non-nil error ends
	// the run with it (an interrupt).
	Stop func() error
}

// IFStep is reported after each scheduler step: the stage (1 or 2), the
// step index, the timestep and the images after the step [1,3,H,W].
type IFStep struct {
	Stage, Index, T int
	X               []float32
	// X0 is the step's predicted (thresholded) x0.
	X0   []float32
	H, W int
}

// predict runs u on cat([x, x]) (plus extra channels) with rows
// [negative, prompt] and applies IF's guidance: eps guided on the first C
// channels, the variance channels taken from the cond row.
func (p *IF) predict(u *nets.IFUNet, x []float32, extra []float32, c, h, w, t int, ctx *gpu.Tensor, g float64, labels []float32) ([]float32, error) {
	d := p.dev
	in := append([]float32(nil), x...)
	ch := c
	if extra != nil {
		in = append(in, extra...)
		ch += len(extra) / (h * w)
	}
	d.PushScope()
	xt := d.Upload(append(append([]float32(nil), in...), in...), 2, ch, h, w)
	out := u.Forward(xt, []float32{float32(t), float32(t)}, ctx, labels)
	v, err := d.Download(out)
	d.PopScope()
	if err == nil {
		err = d.Err()
	}
	if err != nil {
		return nil, err
	}
	per := c * h * w
	oc := len(v) / 2 / (h * w)
	if oc != 2*c {
		return nil, fmt.Errorf("unet: %d output channels, want %d (noise and variance)", oc, 2*c)
	}
	un, co := v[:2*per], v[2*per:]
	res := make([]float32, 2*per)
	gs := float32(g)
	for i := 0; i < per; i++ {
		res[i] = un[i] + gs*(co[i]-un[i])
	}
	copy(res[per:], co[per:])
	return res, nil
}

// Stage1 runs stage I from the seed's noise and returns its un-clamped
// output [1,3,S,S].
func (p *IF) Stage1(o IFOptions, cb func(IFStep)) ([]float32, error) {
	r, err := p.NewStage1(o)
	if err != nil {
		return nil, err
	}
	defer r.Release()
	if err := r.Run(cb); err != nil {
		return nil, err
	}
	return r.X, nil
}

// Stage2 upscales stage I's un-clamped output low [1,3,h,w] x4 with a
// fresh generator of the same seed, as diffusers' examples chain them.
func (p *IF) Stage2(low []float32, h, w int, o IFOptions, cb func(IFStep)) ([]float32, int, int, error) {
	r, err := p.NewStage2(low, h, w, o)
	if err != nil {
		return nil, 0, 0, err
	}
	defer r.Release()
	if err := r.Run(cb); err != nil {
		return nil, 0, 0, err
	}
	return r.X, r.H, r.W, nil
}

// IFStageRun is one stage of an IF run taken one scheduler step at a time
// (the studio steps, scrubs and branches through it; Stage1 and Stage2
// run it to the end). Its exported fields are the state a branch copies.
type IFStageRun struct {
	p     *IF
	st    *IFStage
	Stage int // 1 or 2
	// C, H and W are the image's channels and size.
	C, H, W int
	// X is the sample x_t after the steps taken (updated in place).
	X []float32
	// Timesteps are the stage's timesteps from the one the next step
	// takes; Steps is the step count they were made for (DDPM steps from
	// t to t - T/Steps); First is the index of Timesteps[0] in the full
	// schedule of Steps steps.
	Timesteps    []int
	Steps, First int
	// Taken counts the steps this run has taken.
	Taken int
	// Gen draws the variance noise (stage II: it drew the initial noise
	// and the upscale's noise first).
	Gen *rng.TorchCPU
	CFG float64
	// Stage II: the bilinear x4 upscale of stage I's output, the noise
	// drawn for it, the noise level and the noised upscale the U-Net is
	// conditioned on (concatenated after X on the channels).
	Up, UpNoise, Noised []float32
	NoiseLevel          int
	// Stop, when set, is asked before each step (see IFOptions.Stop).
	Stop func() error
	ctx  *gpu.Tensor
}

// NewStage1 prepares stage I from the seed's noise: the prompt is encoded
// and the initial x_T drawn.
func (p *IF) NewStage1(o IFOptions) (*IFStageRun, error) {
	st := p.Base
	size := o.Size
	if size == 0 {
		size = st.UNet.Config.SampleSize
	}
	c := st.UNet.Config.InChannels
	ts, err := st.Sched.Timesteps(o.Steps)
	if err != nil {
		return nil, err
	}
	ctx, err := p.Encode(o.Prompt, o.Negative)
	if err != nil {
		return nil, err
	}
	g := rng.NewTorchCPU(o.Seed)
	x := make([]float32, c*size*size)
	g.Randn(x)
	return &IFStageRun{p: p, st: st, Stage: 1, C: c, H: size, W: size, X: x, Timesteps: ts, Steps: o.Steps,
		Gen: g, CFG: o.CFG, Stop: o.Stop, ctx: ctx}, nil
}

// NewStage2 prepares stage II on stage I's un-clamped output low
// [1,3,h,w]: a fresh generator of the seed draws x_T and the noise of the
// upscale, which is noised to o.NoiseLevel.
func (p *IF) NewStage2(low []float32, h, w int, o IFOptions) (*IFStageRun, error) {
	st := p.Upper
	if st == nil {
		return nil, fmt.Errorf("no upscaler loaded")
	}
	c := 3
	H, W := 4*h, 4*w
	if s := st.UNet.Config.SampleSize; s > 0 && h == p.Base.UNet.Config.SampleSize {
		H, W = s, s
	}
	if st.UNet.Config.InChannels != 2*c {
		return nil, fmt.Errorf("%s: stage II takes %d input channels, want %d", st.Dir, st.UNet.Config.InChannels, 2*c)
	}
	ts, err := st.Sched.Timesteps(o.UpscalerSteps)
	if err != nil {
		return nil, err
	}
	if err := p.checkNoiseLevel(o.NoiseLevel); err != nil {
		return nil, err
	}
	ctx, err := p.Encode(o.Prompt, o.Negative)
	if err != nil {
		return nil, err
	}
	g := rng.NewTorchCPU(o.Seed)
	x := make([]float32, c*H*W)
	g.Randn(x)
	up := BilinearAlignCorners(low, c, h, w, H, W)
	nz := make([]float32, len(up))
	g.Randn(nz)
	noised, err := st.Noising.AddNoise(up, nz, o.NoiseLevel)
	if err != nil {
		p.dev.Release(ctx)
		return nil, err
	}
	return &IFStageRun{p: p, st: st, Stage: 2, C: c, H: H, W: W, X: x, Timesteps: ts, Steps: o.UpscalerSteps,
		Gen: g, CFG: o.UpscalerCFG, Up: up, UpNoise: nz, Noised: noised, NoiseLevel: o.NoiseLevel, Stop: o.Stop, ctx: ctx}, nil
}

func (p *IF) checkNoiseLevel(n int) error {
	if p.Upper == nil {
		return fmt.Errorf("no upscaler loaded")
	}
	if n < 0 || n >= p.Upper.Noising.NumTrainTimesteps {
		return fmt.Errorf("noise level %d: want 0..%d", n, p.Upper.Noising.NumTrainTimesteps-1)
	}
	return nil
}

// IFResume is where a stage continues from: the sample x_t after step
// After (0-based) of a run of that stage, with Gen (nil: a fresh
// generator of the options' seed) drawing the rest of the variance noise.
// Stage II also takes the upscale and its noise draw, which are re-noised
// at the options' noise level.
type IFResume struct {
	Stage int
	X     []float32
	H, W  int
	// T is the timestep the step After took (x is at its predecessor).
	T           int
	Gen         *rng.TorchCPU
	Up, UpNoise []float32
}

// ResumeStage prepares the rest of a stage from r with options o (their
// prompt, guidance, steps and, for stage II, noise level): x is r.X, and
// the remaining timesteps are those of o's schedule below r.T (with the
// same step count, the ones after r's step).
func (p *IF) ResumeStage(r IFResume, o IFOptions) (*IFStageRun, error) {
	st, steps, cfg := p.Base, o.Steps, o.CFG
	c := p.Base.UNet.Config.InChannels
	if r.Stage == 2 {
		st, steps, cfg, c = p.Upper, o.UpscalerSteps, o.UpscalerCFG, 3
		if st == nil {
			return nil, fmt.Errorf("no upscaler loaded")
		}
		if err := p.checkNoiseLevel(o.NoiseLevel); err != nil {
			return nil, err
		}
		if len(r.Up) != c*r.H*r.W || len(r.UpNoise) != len(r.Up) {
			return nil, fmt.Errorf("stage II resume: the upscale has %d values, want %d", len(r.Up), c*r.H*r.W)
		}
	}
	if len(r.X) != c*r.H*r.W {
		return nil, fmt.Errorf("stage %d resume: x has %d values, want %d", r.Stage, len(r.X), c*r.H*r.W)
	}
	ts, err := st.Sched.Timesteps(steps)
	if err != nil {
		return nil, err
	}
	first := len(ts)
	for i, t := range ts {
		if t < r.T {
			first = i
			break
		}
	}
	g := r.Gen
	if g == nil {
		g = rng.NewTorchCPU(o.Seed)
	} else {
		g = g.Clone().(*rng.TorchCPU)
	}
	run := &IFStageRun{p: p, st: st, Stage: r.Stage, C: c, H: r.H, W: r.W, X: append([]float32(nil), r.X...),
		Timesteps: ts[first:], Steps: steps, First: first, Gen: g, CFG: cfg, Stop: o.Stop}
	if r.Stage == 2 {
		run.Up, run.UpNoise, run.NoiseLevel = r.Up, r.UpNoise, o.NoiseLevel
		if run.Noised, err = st.Noising.AddNoise(r.Up, r.UpNoise, o.NoiseLevel); err != nil {
			return nil, err
		}
	}
	if run.ctx, err = p.Encode(o.Prompt, o.Negative); err != nil {
		return nil, err
	}
	return run, nil
}

// Done reports whether every step of the stage has been taken.
func (r *IFStageRun) Done() bool { return r.Taken >= len(r.Timesteps) }

// Total is the number of steps of the stage's schedule (taken before this
// run included, for a resumed one).
func (r *IFStageRun) Total() int { return r.First + len(r.Timesteps) }

// Step takes the next scheduler step and reports it.
func (r *IFStageRun) Step() (IFStep, error) {
	if r.Done() {
		return IFStep{}, fmt.Errorf("stage %d: no steps are left", r.Stage)
	}
	if r.Stop != nil {
		if err := r.Stop(); err != nil {
			return IFStep{}, err
		}
	}
	if r.ctx == nil {
		return IFStep{}, fmt.Errorf("stage %d: the run was released", r.Stage)
	}
	i, t := r.First+r.Taken, r.Timesteps[r.Taken]
	eps, err := r.p.predict(r.st.UNet, r.X, r.Noised, r.C, r.H, r.W, t, r.ctx, r.CFG, r.labels())
	if err != nil {
		if r.Stage == 2 {
			return IFStep{}, fmt.Errorf("stage II step %d: %w", i, err)
		}
		return IFStep{}, fmt.Errorf("stage I step %d: %w", i, err)
	}
	x0 := r.st.Sched.PredictX0(eps, r.X, t, r.Steps)
	if err := r.st.Sched.Step(eps, r.X, 1, r.C, t, r.Steps, r.Gen.Randn); err != nil {
		return IFStep{}, err
	}
	r.Taken++
	return IFStep{Stage: r.Stage, Index: i, T: t, X: append([]float32(nil), r.X...), X0: x0, H: r.H, W: r.W}, nil
}

func (r *IFStageRun) labels() []float32 {
	if r.Stage != 2 {
		return nil
	}
	return []float32{float32(r.NoiseLevel), float32(r.NoiseLevel)}
}

// Run takes the remaining steps, reporting each to cb (when not nil).
func (r *IFStageRun) Run(cb func(IFStep)) error {
	for !r.Done() {
		s, err := r.Step()
		if err != nil {
			return err
		}
		if cb != nil {
			cb(s)
		}
	}
	return nil
}

// Release frees the run's text states on the device.
func (r *IFStageRun) Release() {
	if r.ctx != nil {
		r.p.dev.Release(r.ctx)
		r.ctx = nil
	}
}

// PredictX0 is the x0 a DDPM step at t (of n steps) predicts from the
// guided output out [1, C or 2C, ...] and x [1,C,...], thresholded or
// clipped as the step does (for previews; the step computes its own).
func (s *IFScheduler) PredictX0(out, x []float32, t, n int) []float32 {
	a, _ := s.alphas(t, n)
	sqB := float32(math.Sqrt(float64(1 - a)))
	sqA := float32(math.Sqrt(float64(a)))
	x0 := make([]float32, len(x))
	for i := range x {
		x0[i] = (x[i] - sqB*out[i]) / sqA
	}
	if s.Thresholding {
		s.threshold(x0, 1)
	} else if s.ClipSample {
		r := float32(s.ClipSampleRange)
		for i, v := range x0 {
			x0[i] = float32(math.Min(math.Max(float64(v), float64(-r)), float64(r)))
		}
	}
	return x0
}

// AlphaBar is alphas_cumprod[t] (1 for t < 0, before the first step).
func (s *IFScheduler) AlphaBar(t int) float64 {
	if t < 0 {
		return 1
	}
	if t >= len(s.ac) {
		t = len(s.ac) - 1
	}
	return float64(s.ac[t])
}

// Prev is the timestep a DDPM step from t of n steps lands on (negative:
// the clean image).
func (s *IFScheduler) Prev(t, n int) int { return s.prev(t, n) }

// Tokenizer is the cascade's T5 tokenizer (immutable).
func (p *IF) Tokenizer() *tokenizer.Unigram { return p.tok }

// Device is the device the cascade runs on.
func (p *IF) Device() gpu.Device { return p.dev }

// TextWidth is the width of the T5 states.
func (p *IF) TextWidth() int { return p.Base.UNet.Config.TextDim() }

// BilinearAlignCorners is F.interpolate(x, (H,W), mode="bilinear",
// align_corners=True) of x [1,c,h,w].
func BilinearAlignCorners(x []float32, c, h, w, H, W int) []float32 {
	out := make([]float32, c*H*W)
	scale := func(in, out int) float32 {
		if out > 1 {
			return float32(in-1) / float32(out-1)
		}
		return 0
	}
	sh, sw := scale(h, H), scale(w, W)
	for ch := 0; ch < c; ch++ {
		src := x[ch*h*w : (ch+1)*h*w]
		for i := 0; i < H; i++ {
			fy := sh * float32(i)
			y0 := int(fy)
			y1 := min(y0+1, h-1)
			ly := fy - float32(y0)
			for j := 0; j < W; j++ {
				fx := sw * float32(j)
				x0 := int(fx)
				x1 := min(x0+1, w-1)
				lx := fx - float32(x0)
				v := (1-ly)*((1-lx)*src[y0*w+x0]+lx*src[y0*w+x1]) + ly*((1-lx)*src[y1*w+x0]+lx*src[y1*w+x1])
				out[(ch*H+i)*W+j] = v
			}
		}
	}
	return out
}

// IFImage is the PNG of an IF output [1,3,h,w]: clamp(x/2+0.5, 0, 1),
// times 255, rounded half to even (numpy_to_pil).
func IFImage(x []float32, h, w int) *image.RGBA {
	im := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < h; i++ {
		for j := 0; j < w; j++ {
			var px [3]uint8
			for c := 0; c < 3; c++ {
				v := x[(c*h+i)*w+j]/2 + 0.5
				v = float32(math.Min(math.Max(float64(v), 0), 1))
				px[c] = uint8(math.RoundToEven(float64(v * 255)))
			}
			im.SetRGBA(j, i, color.RGBA{px[0], px[1], px[2], 255})
		}
	}
	return im
}
