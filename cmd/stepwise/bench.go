package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/devices"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/safetensors"
	"github.com/stepwise/stepwise/presets"
)

func init() {
	register(command{name: "bench", summary: "time the pipeline stage by stage (GFLOP/s, it/s, memory)", run: runBench})
}

// stageResult is one row of a benchmark report.
type stageResult struct {
	Stage   string  `json:"stage"`
	Seconds float64 `json:"seconds"`
	GFLOP   float64 `json:"gflop"`
	GFLOPS  float64 `json:"gflop_per_s"`
}

// benchReport is what `stepwise bench --json` prints.
type benchReport struct {
	Model        string        `json:"model"`
	Device       string        `json:"device"`
	Size         int           `json:"size"`
	Steps        int           `json:"steps"`
	CFG          float64       `json:"cfg"`
	LoadSeconds  float64       `json:"load_seconds"`
	Stages       []stageResult `json:"stages"`
	StepSeconds  float64       `json:"unet_step_seconds"` // mean over steps after the first
	ItPerSec     float64       `json:"it_per_s"`
	TotalSeconds float64       `json:"total_seconds"` // prompt to decoded image, load excluded
	PeakBytes    int64         `json:"peak_device_bytes"`
	Resident     int64         `json:"resident_device_bytes"`
	// NewBuffers counts the GL buffer objects made during steps after the
	// first (0 when every step reuses the pool); -1 for devices without a pool.
	NewBuffers int `json:"buffers_created_after_first_step"`
	// WeightBytes is the size of the weights as stored; PeakRSS the
	// process's peak resident memory (VmHWM; 0 where /proc is missing).
	WeightBytes int64 `json:"weight_bytes"`
	// TAESDSeconds is one TAESD preview decode (with --taesd), to set
	// against StepSeconds.
	TAESDSeconds float64 `json:"taesd_preview_seconds,omitempty"`
	PeakRSS      int64   `json:"peak_rss_bytes"`
	// Weights is --weights: the storage type of the linear weights.
	Weights string `json:"weights,omitempty"`
}

// benchWeightTypes maps --weights to a storage type.
var benchWeightTypes = map[string]gpu.DType{
	"f16": gpu.F16, "q8_0": gpu.Q8_0, "q4_0": gpu.Q4_0, "q4_k": gpu.Q4_K, "q5_k": gpu.Q5_K, "fp8": gpu.F8E4M3, "fp8_e5m2": gpu.F8E5M2,
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// peakRSS reads the process's peak resident set size from /proc.
func peakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

func runBench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	model := fs.String("model", "", "checkpoint to benchmark (default: the bundled model)")
	config := fs.String("config", "", "config for a single-file checkpoint")
	random := fs.String("random", "", "synthesise random weights instead (fp16, or --weights): "+strings.Join(models.RandomKinds, ", "))
	device := fs.String("device", "auto", "compute device: auto, gl or ref")
	size := fs.Int("size", 0, "image width and height (default: the model's native size)")
	steps := fs.Int("steps", 4, "sampling steps (the first one includes shader compilation)")
	cfg := fs.Float64("cfg-scale", 7.5, "guidance scale (1 = one U-Net row per step)")
	sampler := fs.String("sampler", "euler", "sampler")
	asJSON := fs.Bool("json", false, "print one JSON object")
	taesd := fs.String("taesd", "", "also time a TAESD preview decode: a TAESD path, or 'random' for TAESD's published shapes with random weights")
	weights := fs.String("weights", "f16", "with --random: the linear weights' storage type: f16, q8_0, q4_0, q4_k, q5_k, fp8 (made directly in that type)")
	addNoMmap(fs)
	save := fs.String("save", "", "with --random: write the synthesised model as a single-file checkpoint in its family's original layout (and FILE's .json config beside it), then stop")
	if err := fs.Parse(args); err != nil {
		return err
	}
	warn := func(s string) { fmt.Fprintf(os.Stderr, "warning: %s\n", s) }
	dev, err := devices.Open(*device, warn)
	if err != nil {
		return err
	}
	defer dev.Close()
	counter := &gpu.Counter{Device: dev}

	t0 := time.Now()
	var p *models.Pipeline
	switch {
	case *random != "":
		wt, ok := benchWeightTypes[strings.ToLower(*weights)]
		if !ok {
			return fmt.Errorf("--weights %q: want f16, q8_0, q4_0, q4_k, q5_k or fp8", *weights)
		}
		m, err := models.RandomModelAs(*random, 1, wt)
		if err != nil {
			return err
		}
		if *random == "flux" && !flagSet(fs, "cfg-scale") {
			*cfg = 1 // FLUX.1-dev's guidance is distilled: one transformer row per step
		}
		if *save != "" {
			return saveRandom(m, *save)
		}
		p, err = models.New(counter, m, "random "+*random)
		if err != nil {
			return err
		}
	case *model != "":
		ck, err := checkpoint.Load(*model, *config)
		if err != nil {
			return err
		}
		if p, err = models.New(counter, ck, filepath.Base(*model)); err != nil {
			ck.Close()
			return err
		}
	default:
		if p, err = defaultModel(counter); err != nil {
			return err
		}
	}
	defer p.Close()
	load := time.Since(t0)
	loaded := counter.Stats().Resident // the weights, as the device holds them
	var tiny *checkpoint.Tiny
	if *taesd != "" {
		if tiny, err = benchTAESD(*taesd); err != nil {
			return err
		}
	}

	s := presets.Default()
	s.Prompt, s.NegativePrompt = "a photograph of an astronaut riding a horse", "blurry"
	s.Steps, s.CFGScale, s.Sampler, s.Seed = *steps, *cfg, *sampler, 1
	s.Width, s.Height = *size, *size
	if *size == 0 {
		s.Width, s.Height = p.NativeSize(), p.NativeSize()
	}
	r, err := bench(counter, p, s, tiny, os.Stderr)
	if err != nil {
		return err
	}
	r.LoadSeconds = load.Seconds()
	r.Weights = strings.ToLower(*weights)
	if r.WeightBytes == 0 { // weights made on demand (--weights) are not held on the host
		r.WeightBytes = loaded
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printBench(os.Stdout, r)
	return nil
}

// benchTAESD loads a TAESD, or for "random" synthesises one with TAESD's
// published shapes (64 channels) and random weights.
func benchTAESD(path string) (*checkpoint.Tiny, error) {
	if path != "random" {
		return checkpoint.LoadTiny(path)
	}
	return models.RandomTiny(1)
}

// saveRandom writes a synthesised model as a single file plus its config
// bundle (FILE without .safetensors + .json), atomically.
func saveRandom(m *checkpoint.Model, path string) error {
	entries, err := checkpoint.SingleFileEntries(m)
	if err != nil {
		return err
	}
	cfg := map[string]any{"unet": m.UNet, "vae": m.VAE, "scheduler": m.Scheduler}
	for _, t := range m.Texts {
		cfg[t.Spec.Role] = t.Config
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	// Streamed to a temporary file beside path, synced, then renamed: a
	// 6.9 GB SDXL file is never held twice in memory.
	err = presets.WriteAtomic(path, 0o644, func(w io.Writer) error {
		return safetensors.Write(w, entries, map[string]string{"stepwise": "random weights, " + m.FamilyWhy})
	})
	if err != nil {
		return fmt.Errorf("--save: %w", err)
	}
	side := strings.TrimSuffix(path, filepath.Ext(path)) + ".json"
	if err := presets.WriteFileAtomic(side, js, 0o644); err != nil {
		return err
	}
	var n int64
	for _, e := range entries {
		n += int64(len(e.Data))
	}
	fmt.Printf("wrote %s (%d tensors, %.1f MiB) and %s\n", path, len(entries), float64(n)/(1<<20), side)
	return nil
}

// bench runs one generation stage by stage, counting FLOPs on c.
func bench(c *gpu.Counter, p *models.Pipeline, s presets.Settings, tiny *checkpoint.Tiny, progress io.Writer) (*benchReport, error) {
	r := &benchReport{Model: p.Name, Device: c.Name(), Size: s.Width, Steps: s.Steps, CFG: s.CFGScale}
	stage := func(name string, f func() error) error {
		f0, t0 := c.FLOPs, time.Now()
		if err := f(); err != nil {
			return err
		}
		if err := c.Finish(); err != nil {
			return err
		}
		sec := time.Since(t0).Seconds()
		g := float64(c.FLOPs-f0) / 1e9
		r.Stages = append(r.Stages, stageResult{Stage: name, Seconds: sec, GFLOP: g, GFLOPS: g / sec})
		if progress != nil { // a long run (Flux on a CPU: an hour a step) reports as it goes
			fmt.Fprintf(progress, "%s: %.1f s, %.1f GFLOP/s, peak RSS %.0f MiB\n", name, sec, g/sec, float64(peakRSS())/(1<<20))
		}
		return nil
	}
	start := time.Now()
	var j *gen.Job
	if err := stage("tokenize + text encoder", func() (err error) { j, err = gen.Start(p, s); return }); err != nil {
		return nil, err
	}
	defer j.Close()
	var later float64
	pool, _ := c.Device.(interface{ BuffersCreated() int })
	r.NewBuffers = -1
	var created int
	for i := 0; !j.Done(); i++ {
		if i == 1 && pool != nil {
			created = pool.BuffersCreated()
		}
		name := fmt.Sprintf("unet step %d", i+1)
		if err := stage(name, func() error { _, err := j.Step(context.Background()); return err }); err != nil {
			return nil, err
		}
		if i > 0 {
			later += r.Stages[len(r.Stages)-1].Seconds
		}
	}
	if pool != nil && s.Steps > 1 {
		r.NewBuffers = pool.BuffersCreated() - created
	}
	if s.Steps > 1 {
		r.StepSeconds = later / float64(s.Steps-1)
	} else {
		r.StepSeconds = r.Stages[len(r.Stages)-1].Seconds
	}
	r.ItPerSec = 1 / r.StepSeconds
	if err := stage("vae decode + readback", func() error { _, err := j.Images(); return err }); err != nil {
		return nil, err
	}
	if tiny != nil && len(j.Frames) > 0 {
		// What a TAESD step preview costs: one decode of the last step's
		// x0, after a first (compiling) one.
		if err := p.SetTAESD(tiny); err != nil {
			tiny.Close()
			return nil, err
		}
		den := j.Frames[len(j.Frames)-1].Denoised
		one := [4]int{1, den.Shape[1], den.Shape[2], den.Shape[3]}
		x0 := den.Data[:one[1]*one[2]*one[3]]
		if err := stage("taesd decode (full size)", func() error { _, err := p.DecodeTiny(x0, one); return err }); err != nil {
			return nil, err
		}
		for _, name := range []string{"taesd preview (first)", "taesd preview"} {
			if err := stage(name, func() error { _, err := p.PreviewTiny(x0, one, models.PreviewSide); return err }); err != nil {
				return nil, err
			}
		}
		r.TAESDSeconds = r.Stages[len(r.Stages)-1].Seconds
	}
	r.TotalSeconds = time.Since(start).Seconds()
	st := c.Stats()
	r.PeakBytes, r.Resident = st.Peak, st.Resident
	for _, cs := range p.Model.Stats() {
		r.WeightBytes += cs.Bytes
	}
	r.PeakRSS = peakRSS()
	return r, nil
}

func printBench(w io.Writer, r *benchReport) {
	fmt.Fprintf(w, "model   %s\ndevice  %s\nimage   %dx%d, %d steps, cfg %g\nload    %.3fs\n", r.Model, r.Device, r.Size, r.Size, r.Steps, r.CFG, r.LoadSeconds)
	if r.Weights != "" && r.Weights != "f16" {
		fmt.Fprintf(w, "weights %s (linear layers), %.1f MiB on the device\n", r.Weights, float64(r.WeightBytes)/(1<<20))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-26s %10s %10s %10s\n", "stage", "seconds", "GFLOP", "GFLOP/s")
	for _, s := range r.Stages {
		fmt.Fprintf(w, "%-26s %10.4f %10.2f %10.2f\n", s.Stage, s.Seconds, s.GFLOP, s.GFLOPS)
	}
	rate := fmt.Sprintf("%.2f it/s", r.ItPerSec)
	if r.ItPerSec < 1 { // A1111's convention for slow steps
		rate = fmt.Sprintf("%.2f s/it", r.StepSeconds)
	}
	fmt.Fprintf(w, "\nunet step (mean after the first) %.4fs = %s\n", r.StepSeconds, rate)
	fmt.Fprintf(w, "prompt to image %.3fs; device memory peak %.1f MiB, resident %.1f MiB\n",
		r.TotalSeconds, float64(r.PeakBytes)/(1<<20), float64(r.Resident)/(1<<20))
	if r.NewBuffers >= 0 {
		fmt.Fprintf(w, "GL buffers created during steps 2..%d: %d\n", r.Steps, r.NewBuffers)
	}
	if r.TAESDSeconds > 0 {
		fmt.Fprintf(w, "taesd preview %.4fs = %.1f%% of a U-Net step\n", r.TAESDSeconds, 100*r.TAESDSeconds/r.StepSeconds)
	}
	if r.PeakRSS > 0 && r.WeightBytes > 0 {
		fmt.Fprintf(w, "weights %.1f MiB; peak process RSS %.1f MiB = %.2f x the weights\n",
			float64(r.WeightBytes)/(1<<20), float64(r.PeakRSS)/(1<<20), float64(r.PeakRSS)/float64(r.WeightBytes))
	}
}
