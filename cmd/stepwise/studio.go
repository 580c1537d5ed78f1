package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/devices"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/tui"
)

func init() {
	register(command{name: "studio", summary: "the interactive studio (the default): edit, watch every step, branch, export", run: runStudio})
}

const studioUsage = "usage: stepwise [studio] [--model PATH [--config FILE] | --model IF_FOLDER [--upscaler SR_FOLDER]] [--device auto|gl|ref] [--out DIR] [--presets DIR] [--lora-dir DIR] [--no-mmap]"

func runStudio(args []string) error {
	fs := flag.NewFlagSet("studio", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	model := fs.String("model", "", "checkpoint: a .safetensors file or a diffusers folder (default: the bundled model)")
	config := fs.String("config", "", "hyper-parameters of a single file: a JSON bundle of diffusers configs or an LDM .yaml")
	device := fs.String("device", "auto", "compute device: "+strings.Join(devices.Names, ", "))
	out := fs.String("out", ".", "folder PNG exports are written to")
	presetDir := fs.String("presets", "", "preset folder (default $XDG_CONFIG_HOME/stepwise/presets)")
	taesd := fs.String("taesd", "", "TAESD (tiny autoencoder) the model the studio starts with decodes with, step previews (at most 256 px a side) and exports alike (stable-diffusion.cpp's --taesd): a diffusers folder or .safetensors file")
	loraDir := fs.String("lora-dir", os.Getenv(models.LoRADirEnv), "folder the prompt's <lora:NAME:WEIGHT> tags are looked up in (default $"+models.LoRADirEnv+")")
	var iff ifFlags
	addIFFlags(fs, &iff)
	addNoMmap(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), studioUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q\n%s", errUsage, fs.Arg(0), studioUsage)
	}
	// Every pipeline the studio loads (switches, device recovery) takes
	// its LoRA folder from the environment.
	os.Setenv(models.LoRADirEnv, *loraDir)
	if st, err := os.Stat(*out); err != nil || !st.IsDir() {
		return fmt.Errorf("--out %s: not a folder", *out)
	}
	label := "the bundled model"
	if *model != "" {
		label = filepath.Base(*model)
	}
	label += " on " + *device
	load := studioLoad(*device, *model, *config, *taesd)
	open := func(warn func(string)) (gpu.Device, error) {
		dev, err := devices.Open(*device, warn)
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", *device, err)
		}
		return dev, nil
	}
	opts := tui.Options{Load: load, Open: open, ModelLabel: label, OutDir: *out, PresetDir: *presetDir,
		CrashTest: os.Getenv("STEPWISE_TEST_PANIC"), TAESD: *taesd}
	// A DeepFloyd IF folder loads as a cascade (gen.Session), with its
	// stage II when --upscaler names one.
	if _, ok := models.IsIFFolder(*model); ok && *model != "" {
		opts.Model = gen.ModelSpec{Path: *model, Upscaler: iff.upscaler}
		opts.IFUpscale = gen.IFUpscale{Steps: iff.upscalerSteps, CFG: iff.upscalerCFG, NoiseLevel: iff.noiseLevel}
	} else if iff.upscaler != "" {
		return fmt.Errorf("--upscaler %s: only a DeepFloyd IF stage I --model takes an upscaler", iff.upscaler)
	}
	return tui.Run(opts)
}

// studioLoad is how the studio opens its device and first model (and reopens
// them after a device fault): the bundled model when model is "", with the
// TAESD at taesd attached when given.
func studioLoad(device, model, config, taesd string) func(warn func(string)) (gpu.Device, *models.Pipeline, error) {
	return func(warn func(string)) (gpu.Device, *models.Pipeline, error) {
		dev, err := devices.Open(device, warn)
		if err != nil {
			return nil, nil, fmt.Errorf("device %s: %w", device, err)
		}
		var p *models.Pipeline
		if model == "" {
			p, err = defaultModel(dev)
		} else {
			p, err = models.Load(dev, model, config)
		}
		if err != nil {
			return dev, nil, err
		}
		if taesd != "" {
			// Step previews through the TAESD; one that does not fit the
			// model is reported and the previews stay the latent projection.
			tm, err := checkpoint.LoadTiny(taesd)
			if err == nil {
				if err = p.SetTAESD(tm); err != nil {
					tm.Close()
				}
			}
			if err != nil {
				warn(fmt.Sprintf("--taesd: %v; previews use the latent projection", err))
			}
		}
		return dev, p, nil
	}
}

// addNoMmap registers --no-mmap (llama.cpp's name): copy the checkpoint's
// weights into the device's memory instead of reading them in place from
// the mapped file (see models.MmapEnv).
func addNoMmap(fs *flag.FlagSet) {
	fs.BoolFunc("no-mmap", "copy the checkpoint's weights into memory instead of reading them from the mapped file as they are used (more memory, slower load; the file may then change while loaded)",
		func(string) error { return os.Setenv(models.MmapEnv, "off") })
}
