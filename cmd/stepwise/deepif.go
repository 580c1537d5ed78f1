package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"time"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/render"
)

// ifFlags are DeepFloyd IF's stage II settings.
type ifFlags struct {
	upscaler      string
	upscalerSteps int
	upscalerCFG   float64
	noiseLevel    int
}

func addIFFlags(fs *flag.FlagSet, f *ifFlags) {
	fs.StringVar(&f.upscaler, "upscaler", "", "DeepFloyd IF: the stage II (x4 super-resolution) folder run after the --model stage I folder")
	fs.IntVar(&f.upscalerSteps, "upscaler-steps", 50, "DeepFloyd IF: stage II steps (diffusers' default 50)")
	fs.Float64Var(&f.upscalerCFG, "upscaler-cfg-scale", 4, "DeepFloyd IF: stage II guidance scale (diffusers' default 4)")
	fs.IntVar(&f.noiseLevel, "noise-level", 250, "DeepFloyd IF: the noise level stage II adds to the upscaled stage I image (0..999)")
}

// generateIF runs a DeepFloyd IF cascade: stage I from --model (its size,
// --steps, --cfg-scale, --seed with torch's CPU generator), then stage II
// from --upscaler on stage I's un-clamped output with a fresh generator of
// the same seed. The PNG is the last stage's clamp(x/2+0.5).
func generateIF(ctx context.Context, f genFlags, paths []string, stderr io.Writer) error {
	s := f.s
	switch {
	case s.Batch > 1:
		return fmt.Errorf("DeepFloyd IF: --batch is not supported yet; nothing written")
	case s.InitImage != "" || s.Mask != "" || s.ControlNet != "" || s.IPAdapter != "":
		return fmt.Errorf("DeepFloyd IF: img2img, inpainting, ControlNet and IP-Adapter are not supported; nothing written")
	case s.Width != 0 && s.Width != s.Height:
		return fmt.Errorf("DeepFloyd IF: only square sizes are supported (got %dx%d); nothing written", s.Width, s.Height)
	}
	seed := s.Seed
	if seed < 0 {
		seed = rand.New(rand.NewSource(time.Now().UnixNano())).Int63n(1 << 32)
		fmt.Fprintf(stderr, "seed %d\n", seed)
	}
	dev, err := openDevice(f.device, func(w string) { fmt.Fprintf(stderr, "warning: %s\n", w) })
	if err != nil {
		return err
	}
	defer dev.Close()
	p, err := models.LoadIF(dev, f.model)
	if err != nil {
		return fmt.Errorf("%w; nothing written", err)
	}
	defer p.Release()
	if f.ifFlags.upscaler != "" {
		if err := p.LoadUpscaler(f.ifFlags.upscaler); err != nil {
			return fmt.Errorf("%w; nothing written", err)
		}
	}
	if p.Upper != nil {
		if n := p.Upper.Noising.NumTrainTimesteps; f.ifFlags.noiseLevel < 0 || f.ifFlags.noiseLevel >= n {
			return fmt.Errorf("--noise-level %d: want 0..%d; nothing written", f.ifFlags.noiseLevel, n-1)
		}
		if _, err := p.Upper.Sched.Timesteps(f.ifFlags.upscalerSteps); err != nil {
			return fmt.Errorf("--upscaler-steps: %w; nothing written", err)
		}
	}
	o := models.IFOptions{Prompt: s.Prompt, Negative: s.NegativePrompt, Steps: s.Steps, CFG: s.CFGScale,
		Seed: uint64(seed), Size: s.Width, UpscalerSteps: f.ifFlags.upscalerSteps,
		UpscalerCFG: f.ifFlags.upscalerCFG, NoiseLevel: f.ifFlags.noiseLevel, Stop: ctx.Err}
	progress := func(st models.IFStep) {
		if ctx.Err() == nil {
			fmt.Fprintf(stderr, "\rstage %d step %d (t %d)   ", st.Stage, st.Index+1, st.T)
		}
	}
	x, err := p.Stage1(o, progress)
	if err != nil {
		return err
	}
	size := o.Size
	if size == 0 {
		size = p.Base.UNet.Config.SampleSize
	}
	h, w := size, size
	// The studio's IF runs write the same text (gen.IFInfotext).
	ps := s
	ps.Seed, ps.Width, ps.Height = seed, w, h
	var up *gen.IFUpscale
	if p.Upper != nil {
		if x, h, w, err = p.Stage2(x, h, w, o, progress); err != nil {
			return err
		}
		up = &gen.IFUpscale{Steps: o.UpscalerSteps, CFG: o.UpscalerCFG, NoiseLevel: o.NoiseLevel}
	}
	params := map[string]string{"parameters": gen.IFInfotext(ps, up)}
	fmt.Fprintln(stderr)
	if err := render.WritePNG(paths[0], models.IFImage(x, h, w), params, f.force); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s (%dx%d)\n", paths[0], w, h)
	return nil
}
