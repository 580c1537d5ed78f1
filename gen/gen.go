// Package gen runs one generation: it turns presets.Settings into a
// sampler.Run over a loaded models.Pipeline, steps it, and decodes and
// describes the result. Both `stepwise generate` and the studio drive
// generations through it, so a seed gives the same image in either.
package gen

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"math"
	"strings"
	"time"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/sampler"
)

// Job is one generation in progress.
type Job struct {
	Settings presets.Settings // as resolved: the seed is never -1
	Pipe     *models.Pipeline
	Cond     *models.Conditioning
	Run      *sampler.Run
	// Frames holds every frame produced so far, in order.
	Frames []sampler.Frame
	// Started is when the job was created (prompt encoding included).
	Started time.Time
	// Control is the ControlNet's control image, when the run has one.
	Control *models.Control
}

// Validate checks settings against what the loaded model can do, before
// any work: sizes must be multiples of the model's latent downscale,
// names must resolve, numbers must be finite and in range.
func Validate(p *models.Pipeline, s presets.Settings) error {
	return validate(FactsOf(p), s)
}

func validate(f *Facts, s presets.Settings) error {
	if f.IF != nil {
		return validateIF(f, s)
	}
	if err := s.Validate(); err != nil {
		return err
	}
	if m := f.SizeMultiple; (s.Width%m != 0 || s.Height%m != 0 || s.Width < m || s.Height < m) && f.Levels == 0 {
		return fmt.Errorf("size %dx%d: width and height must be positive multiples of %d for %s (the VAE divides by %d, the transformer's patches by %d more)",
			s.Width, s.Height, m, f.Family, f.Downscale, m/f.Downscale)
	}
	if f.MaxSide > 0 && (s.Width > f.MaxSide || s.Height > f.MaxSide) {
		return fmt.Errorf("size %dx%d: %s takes at most %d pixels a side (its positional table covers %d patches)",
			s.Width, s.Height, f.Family, f.MaxSide, f.MaxSide/f.SizeMultiple)
	}
	if m := f.SizeMultiple; s.Width%m != 0 || s.Height%m != 0 || s.Width < m || s.Height < m {
		return fmt.Errorf("size %dx%d: width and height must be positive multiples of %d for %s (the VAE divides by %d, the U-Net's %d levels by %d more)",
			s.Width, s.Height, m, f.Family, f.Downscale, f.Levels, m/f.Downscale)
	}
	if _, _, err := sampler.LookupSampler(s.Sampler); err != nil {
		return err
	}
	if s.Schedule != "" {
		if _, err := sampler.LookupSchedule(s.Schedule); err != nil {
			return err
		}
	}
	if math.IsNaN(s.CFGScale) || math.IsInf(s.CFGScale, 0) {
		return fmt.Errorf("cfg scale %v is not a finite number", s.CFGScale)
	}
	if s.RNG != "" && s.RNG != presets.RNGTorchCPU && s.RNG != presets.RNGPhilox {
		return fmt.Errorf("rng %q: want %s or %s", s.RNG, presets.RNGTorchCPU, presets.RNGPhilox)
	}
	if s.ClipSkip > f.MaxClipSkip {
		return fmt.Errorf("clip skip %d: the text encoders allow at most %d", s.ClipSkip, f.MaxClipSkip)
	}
	if st := s.Strength; s.InitImage != "" && st > 0 && st < 1 && int(float64(s.Steps)*st) < 1 {
		return fmt.Errorf("strength %g of %d steps runs int(%d*%g) = 0 steps (img2img runs the last int(steps*strength)); raise the strength or the steps",
			st, s.Steps, s.Steps, st)
	}
	return nil
}

// RandomSeed returns a seed in A1111's range [0, 2^32).
func RandomSeed() int64 {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return time.Now().UnixNano() & 0xffffffff
	}
	return int64(binary.LittleEndian.Uint32(b[:]))
}

// ScheduleConfig maps a checkpoint's scheduler config onto the sampler's.
func ScheduleConfig(c checkpoint.SchedulerConfig) sampler.ScheduleConfig {
	sc := sampler.SD15Config()
	if c.NumTrainTimesteps > 0 {
		sc.NumTrainTimesteps = c.NumTrainTimesteps
	}
	if c.BetaStart > 0 {
		sc.BetaStart = c.BetaStart
	}
	if c.BetaEnd > 0 {
		sc.BetaEnd = c.BetaEnd
	}
	if c.BetaSchedule != "" {
		sc.BetaSchedule = c.BetaSchedule
	}
	sc.TrainedBetas = c.TrainedBetas
	if c.PredictionType != "" {
		sc.PredictionType = c.PredictionType
	}
	if c.TimestepSpacing != "" {
		sc.TimestepSpacing = c.TimestepSpacing
	}
	sc.StepsOffset = c.StepsOffset
	sc.SetAlphaToOne = c.SetAlphaToOne
	sc.ClipSample = c.ClipSample
	if c.Shift > 0 {
		sc.Shift = c.Shift
	}
	sc.PipelineSigmas, sc.DynamicShift = c.PipelineSigmas, c.UseDynamicShifting
	sc.BaseShift, sc.MaxShift, sc.BaseSeqLen, sc.MaxSeqLen = c.BaseShift, c.MaxShift, c.BaseImageSeqLen, c.MaxImageSeqLen
	return sc
}

// SamplerSettings converts image settings to a sampling run's settings for
// pipeline p. The seed must already be resolved (not -1).
func SamplerSettings(p *models.Pipeline, s presets.Settings) sampler.Settings {
	return samplerSettings(p.Downscale(), p.LatentChannels(), p.GuidanceDistilled(), p.Model.Scheduler, s)
}

// samplerSettings: a guidance-distilled (LCM) model takes the guidance as
// an input (Pipeline.SetGuidance), so its runs have no unconditional row.
// Strength applies with an init image only.
func samplerSettings(ds, channels int, distilled bool, sched checkpoint.SchedulerConfig, s presets.Settings) sampler.Settings {
	cfg := s.CFGScale
	if distilled {
		cfg = 1
	}
	strength := 0.0 // the whole schedule
	if s.InitImage != "" {
		strength = s.Strength
	}
	return sampler.Settings{
		Strength:        strength,
		Sampler:         s.Sampler,
		Schedule:        s.Schedule,
		Steps:           s.Steps,
		CFG:             cfg,
		GuidanceRescale: s.GuidanceRescale,
		Eta:             s.Eta,
		Seed:            uint64(s.Seed),
		RNG:             s.RNG,
		Batch:           max(s.Batch, 1),
		Channels:        channels,
		H:               s.Height / ds,
		W:               s.Width / ds,
		Model:           ScheduleConfig(sched),
	}
}

// Network adapts a pipeline and an encoded prompt pair to sampler.Network.
type Network struct {
	Pipe *models.Pipeline
	Cond *models.Conditioning
	// Control, when set, steers every call through the pipeline's
	// ControlNet, its residuals multiplied by ControlScale() (the control
	// strength, 0 outside the run's control start and end).
	Control      *models.Control
	ControlScale func() float64
}

// ControlKeep is diffusers' controlnet_keep for step i of n: 1 when the
// step lies within [start, end] as fractions of the run, 0 when i/n <
// start or (i+1)/n > end.
func ControlKeep(i, n int, start, end float64) float64 {
	if float64(i)/float64(n) < start || float64(i+1)/float64(n) > end {
		return 0
	}
	return 1
}

// Predict implements sampler.Network.
func (n Network) Predict(ctx context.Context, x sampler.Latent, t float64, rows []sampler.Cond) (sampler.Latent, error) {
	if err := ctx.Err(); err != nil {
		return sampler.Latent{}, err
	}
	rs := make([]models.Row, len(rows))
	for i, r := range rows {
		rs[i] = models.Row(r == sampler.Positive)
	}
	if i := firstNonFinite(x.Data); i >= 0 {
		return sampler.Latent{}, &NonFiniteError{Stage: "U-Net input", Index: i, Value: x.Data[i]}
	}
	var out []float32
	err := interruptible(ctx, n.Pipe.Device(), func() (err error) {
		if n.Control != nil && n.ControlScale != nil {
			out, err = n.Pipe.PredictNoiseControl(x.Data, x.Shape, t, n.Cond, rs, n.Control, n.ControlScale())
			return err
		}
		out, err = n.Pipe.PredictNoise(x.Data, x.Shape, t, n.Cond, rs)
		return err
	})
	if err != nil {
		return sampler.Latent{}, err
	}
	if i := firstNonFinite(out); i >= 0 {
		return sampler.Latent{}, &NonFiniteError{Stage: fmt.Sprintf("U-Net output at timestep %g", t), Index: i, Value: out[i]}
	}
	shape := x.Shape
	shape[1] = n.Pipe.LatentChannels() // an inpainting U-Net takes more channels than it gives
	return sampler.Latent{Shape: shape, Data: out}, nil
}

// Start validates s, resolves a random seed, reads the init image and mask
// that s names (see LoadInputs), encodes the prompts and prepares the
// sampling run.
func Start(p *models.Pipeline, s presets.Settings) (*Job, error) {
	return StartInputs(p, s, nil)
}

// StartInputs is Start with the init image and mask already read (by
// LoadInputs, so that bad files are refused before a model loads); nil
// reads them now. An init image of another size than s's is resized (see
// Inputs.ResizeNote). The run is img2img with an init image, inpainting
// with a mask as well (blending the kept region back after every step on
// an ordinary model, mask and masked image as extra U-Net channels on an
// inpainting one), in diffusers' order of random draws.
func StartInputs(p *models.Pipeline, s presets.Settings, in *Inputs) (*Job, error) {
	if s.Seed < 0 {
		s.Seed = RandomSeed()
	}
	if s.Batch < 1 {
		s.Batch = 1
	}
	if s.RNG == "" {
		s.RNG = presets.RNGTorchCPU
	}
	if err := Validate(p, s); err != nil {
		return nil, err
	}
	if in == nil {
		var err error
		if in, err = LoadInputs(s); err != nil {
			return nil, err
		}
	}
	s.Model = p.Name
	// The ControlNet (loaded unless it is the pipeline's already) is
	// checked against the model before any generation work.
	if err := p.UseControlNet(s.ControlNet); err != nil {
		return nil, err
	}
	s.ControlNetHash = ""
	if cn := p.ControlNet(); cn != nil {
		if in.Control == nil {
			return nil, fmt.Errorf("controlnet %s: no control image (--control-image)", s.ControlNet)
		}
		h, err := cn.Hash()
		if err != nil {
			return nil, err
		}
		s.ControlNetHash = h
	}
	j := &Job{Settings: s, Pipe: p, Started: time.Now()}
	if err := LoadIPAdapter(p, s); err != nil {
		return nil, err
	}
	c, err := p.EncodePrompt(s.Prompt, s.NegativePrompt, s.ClipSkip)
	if err != nil {
		return nil, deviceFault(p, "text encoder", 0, 0, err)
	}
	j.Cond = c
	if err := conditionIPImage(p, s, in, c); err != nil {
		c.Release()
		return nil, err
	}
	j.Settings.LoraHashes = p.LoRAHashes() // the prompt's <lora:...> tags, applied by EncodePrompt
	p.SetSize(c, s.Width, s.Height, SizeCond(s))
	p.SetGuidance(c, s.CFGScale-1) // LCM models: guidance is an input, w = cfg - 1
	j.Settings.DistilledGuidance = SetFluxGuidance(p, s)
	ss := SamplerSettings(p, s)
	if ss.Image, err = conditionImage(p, s, in); err != nil {
		c.Release()
		return nil, err
	}
	net := Network{Pipe: p, Cond: c}
	if px := controlPixels(s, in); px != nil && p.ControlNet() != nil {
		if j.Control, err = p.NewControl(px, s.Height, s.Width); err != nil {
			c.Release()
			return nil, err
		}
		net.Control = j.Control
		net.ControlScale = func() float64 {
			return s.ControlStrength * ControlKeep(j.Run.StepIndex(), j.Run.Total(), s.ControlStart, s.ControlEnd)
		}
	}
	j.Run, err = sampler.NewRun(ss, net)
	if err != nil {
		j.Close()
		return nil, err
	}
	return j, nil
}

// SizeCond is the SDXL size conditioning that settings ask for.
func SizeCond(s presets.Settings) models.SizeCond {
	return models.SizeCond{
		OriginalW: s.OriginalWidth, OriginalH: s.OriginalHeight,
		CropLeft: s.CropLeft, CropTop: s.CropTop,
		TargetW: s.TargetWidth, TargetH: s.TargetHeight,
	}
}

// Step advances the run by one sampler step and records the frame.
// A step whose network output is not finite fails before the run moves
// (the error says which step and which stage); the run is left as it was.
func (j *Job) Step(ctx context.Context) (sampler.Frame, error) {
	f, err := j.Run.Step(ctx)
	if err != nil {
		if derr := deviceFault(j.Pipe, "U-Net", len(j.Frames)+1, j.Run.Total(), err); derr != err {
			return f, derr
		}
		var nf *NonFiniteError
		if errors.As(err, &nf) {
			return f, fmt.Errorf("step %d/%d: %w", len(j.Frames)+1, j.Run.Total(), err)
		}
		return f, err
	}
	if i := firstNonFinite(f.X.Data); i >= 0 {
		return f, fmt.Errorf("step %d/%d: %w", f.Index+1, f.Total, &NonFiniteError{Stage: "sampler update", Index: i, Value: f.X.Data[i]})
	}
	j.Frames = append(j.Frames, f)
	return f, nil
}

// NonFiniteError reports a NaN or Inf where a generation computed numbers:
// which stage, and the first bad element.
type NonFiniteError struct {
	Stage string
	Index int
	Value float32
}

func (e *NonFiniteError) Error() string {
	return fmt.Sprintf("%s holds a non-finite value (%v at element %d); the run was stopped", e.Stage, e.Value, e.Index)
}

func firstNonFinite(xs []float32) int {
	for i, v := range xs {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return i
		}
	}
	return -1
}

// Done reports whether every step has been taken.
func (j *Job) Done() bool { return j.Run.Done() }

// Finish takes the remaining steps (stopping at the first error or when
// ctx is cancelled) and decodes the final latent.
func (j *Job) Finish(ctx context.Context) ([]*image.RGBA, error) {
	for !j.Done() {
		if _, err := j.Step(ctx); err != nil {
			return nil, err
		}
	}
	return j.ImagesContext(ctx)
}

// interruptible runs f, which computes on d, and interrupts d's work as
// soon as ctx is cancelled (the kernels stop between rows or tiles, see
// gpu.Interrupter): a Ctrl+C, a SIGTERM or an Esc stops a step of a huge
// image within a second instead of minutes. When ctx was cancelled it
// returns ctx.Err() (f's results are meaningless) with d resumed.
func interruptible(ctx context.Context, d gpu.Device, f func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		gpu.Interrupt(d)
		close(fired)
	})
	err := f()
	if !stop() {
		<-fired
		gpu.Resume(d)
		return ctx.Err()
	}
	return err
}

// Images decodes the run's current latent with the VAE.
func (j *Job) Images() ([]*image.RGBA, error) { return j.ImagesContext(context.Background()) }

// ImagesContext is Images, stopped when ctx is cancelled.
func (j *Job) ImagesContext(ctx context.Context) ([]*image.RGBA, error) {
	x := j.Run.X()
	if i := firstNonFinite(x.Data); i >= 0 {
		return nil, &NonFiniteError{Stage: "final latent", Index: i, Value: x.Data[i]}
	}
	var imgs []*image.RGBA
	// The U-Net's released buffers are of no use to the VAE, and the VAE's
	// none to the next run's first step: dropping them before and after
	// keeps the process's peak at the larger stage's.
	dev := j.Pipe.Device()
	gpu.TrimPool(dev)
	defer gpu.TrimPool(dev)
	err := interruptible(ctx, dev, func() (err error) {
		imgs, err = j.Pipe.Decode(x.Data, x.Shape)
		return err
	})
	if err != nil {
		return nil, deviceFault(j.Pipe, "VAE decoder", 0, 0, err)
	}
	return imgs, nil
}

// DeviceError reports that the compute device failed (a lost context, a
// shader that does not compile, an allocation that does not fit) and where
// the generation met it. Device errors are sticky (see gpu.Device): the
// pipeline and its device are unusable afterwards, and the caller must
// close both and open new ones before the next generation.
type DeviceError struct {
	Stage       string // "text encoder", "U-Net" or "VAE decoder"
	Step, Total int    // the U-Net's step (1-based) of Total; 0 elsewhere
	Err         error  // the device's error
}

func (e *DeviceError) Error() string {
	where := "in the " + e.Stage
	if e.Step > 0 {
		where = fmt.Sprintf("at step %d/%d (%s)", e.Step, e.Total, e.Stage)
	}
	msg := fmt.Sprintf("GPU error %s: %v", where, e.Err)
	var oom *gpu.OOMError
	if errors.As(e.Err, &oom) {
		msg += " (try a smaller size or batch)"
	}
	return msg
}

func (e *DeviceError) Unwrap() error { return e.Err }

// deviceFault wraps err in a *DeviceError when p's device has recorded an
// error, and returns err unchanged otherwise.
func deviceFault(p *models.Pipeline, stage string, step, total int, err error) error {
	derr := p.Device().Err()
	if derr == nil {
		return err
	}
	var de *DeviceError
	if errors.As(err, &de) {
		return err
	}
	return &DeviceError{Stage: stage, Step: step, Total: total, Err: derr}
}

// Close releases the job's device memory (the prompt embeddings).
func (j *Job) Close() {
	if j.Cond != nil {
		j.Cond.Release()
		j.Cond = nil
	}
	j.Control.Release()
	j.Control = nil
}

// SetFluxGuidance gives a Flux pipeline the settings' distilled guidance
// (FLUX.1-dev's default 3.5 when they have none) and returns what the
// run's infotext records: the guidance a model with a guidance embedding
// uses, nil for the others (other families' pipelines are left alone).
func SetFluxGuidance(p *models.Pipeline, s presets.Settings) *float64 {
	if p.Model.Flux == nil {
		return nil
	}
	p.FluxGuidance = models.DefaultFluxGuidance
	if s.DistilledGuidance != nil {
		p.FluxGuidance = *s.DistilledGuidance
	}
	if !p.Model.Flux.GuidanceEmbeds {
		return nil
	}
	return presets.Float(p.FluxGuidance)
}

// Infotext is the A1111 "parameters" text for image i of the batch. The
// images of a batch share one noise draw (as diffusers' num_images_per_prompt
// does), so each carries the batch's seed with A1111's "Batch size" and
// "Batch pos" keys.
func (j *Job) Infotext(i int) string {
	if j.Settings.Batch > 1 {
		return j.Settings.InfotextWith(
			presets.Param{Key: "Batch size", Value: fmt.Sprint(j.Settings.Batch)},
			presets.Param{Key: "Batch pos", Value: fmt.Sprint(i)})
	}
	return j.Settings.Infotext()
}

// PreviewFor renders batch row i of a latent (best the predicted x0) as an
// RGB image: with the pipeline's TAESD when one is loaded (at most
// models.PreviewSide pixels a side), else through the model's linear latent
// -> RGB projection, which costs nothing.
func PreviewFor(p *models.Pipeline, l sampler.Latent, i int) *image.RGBA {
	if p.TAESD() != nil {
		c, h, w := l.Shape[1], l.Shape[2], l.Shape[3]
		n := c * h * w
		if (i+1)*n <= len(l.Data) {
			if img, err := p.PreviewTiny(l.Data[i*n:(i+1)*n], [4]int{1, c, h, w}, models.PreviewSide); err == nil {
				return img
			}
		}
	}
	factors, bias := p.LatentRGB()
	return preview(factors, bias, l, i)
}

// SamplerHelp lists the sampler and schedule names for --help texts.
func SamplerHelp() string {
	var b strings.Builder
	b.WriteString("Samplers (any alias works, case-insensitively):\n")
	for _, s := range sampler.Samplers() {
		fmt.Fprintf(&b, "  %-22s %s\n", s.Name, s.Description)
		if len(s.Aliases) > 0 {
			fmt.Fprintf(&b, "  %-22s aliases: %s\n", "", strings.Join(s.Aliases, ", "))
		}
	}
	b.WriteString("Schedules:\n")
	for _, s := range sampler.Schedules() {
		fmt.Fprintf(&b, "  %-22s %s\n", s.Name, s.Description)
	}
	return b.String()
}
