package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"image"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/devices"
	"github.com/stepwise/stepwise/internal/termsafe"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/bundled"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/tokenizer"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
	"github.com/stepwise/stepwise/sampler"
)

func init() {
	register(command{name: "generate", summary: "generate an image (or a batch) to PNG, headless", run: runGenerate})
}

// genFlags are the flags of `stepwise generate`.
type genFlags struct {
	model, config, device, output, from string
	prediction, taesd                   string
	loraDir                             string
	samplerSet                          bool // --sampler given (or read by --from)
	preview, force                      bool
	s                                   presets.Settings
	eta                                 float64
	maxSeqLen                           int     // --max-sequence-length (0: the family's)
	guidance                            float64 // --guidance (Flux's distilled guidance; < 0: the model's)
	cfgSet                              bool    // --cfg-scale given (or read by --from)
	extra                               checkpoint.Extra
	ifFlags                             ifFlags // DeepFloyd IF's stage II (deepif.go)
	// branchAt > 0 continues the run from its step branchAt with the
	// --branch changes (the studio's "b"); xy are the X/Y plot's axes.
	branchAt int
	branch   multiFlag
	xySpecs  multiFlag
	xy       []axis
	branchFn func(*presets.Settings) error
	// chain are the branches to take, first run first: --branch-at's,
	// or those a --from PNG records.
	chain []branchLink
	// fromModel and fromHash name the model a --from PNG was made with.
	fromModel, fromHash string
	// batchPos > 0: --from read image batchPos-1 of a batch; only it is
	// written.
	batchPos int
}

// branchLink is one branch: after step at (counting the frames the run
// inherited), continue with the parent's settings changed by apply.
type branchLink struct {
	at    int
	apply func(*presets.Settings) error
	flag  string // what asked for it, for errors
}

// multiFlag is a flag that may be given several times.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// fullUsage prints every flag of generate (set by newGenFlagSet).
var fullUsage func()

func newGenFlagSet(f *genFlags, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse errors are returned; -h prints fullUsage
	f.s = presets.Default()
	f.s.Width, f.s.Height = 0, 0 // 0: the model's native size
	str := func(p *string, long, short, usage string) {
		fs.StringVar(p, long, *p, usage)
		if short != "" {
			fs.StringVar(p, short, *p, "short for --"+long)
		}
	}
	integer := func(p *int, long, short, usage string) {
		fs.IntVar(p, long, *p, usage)
		if short != "" {
			fs.IntVar(p, short, *p, "short for --"+long)
		}
	}
	str(&f.model, "model", "m", "checkpoint: a .safetensors file or a diffusers folder (default: the bundled model)")
	str(&f.config, "config", "", "config for a single-file checkpoint (JSON with unet/vae/text_encoder/scheduler, or an LDM .yaml)")
	str(&f.s.Prompt, "prompt", "p", "the prompt (A1111 weighting syntax: (word:1.2), [word])")
	str(&f.s.NegativePrompt, "negative-prompt", "n", "the negative prompt")
	integer(&f.s.Steps, "steps", "", "sampling steps")
	fs.Float64Var(&f.s.CFGScale, "cfg-scale", f.s.CFGScale, "classifier-free guidance scale (1 = no unconditional pass)")
	str(&f.s.Sampler, "sampler", "", "sampler name (see the list below)")
	str(&f.s.Schedule, "schedule", "", "schedule / timestep spacing (see the list below; empty = the sampler's default)")
	fs.Int64Var(&f.s.Seed, "seed", f.s.Seed, "seed; -1 picks a random one and prints it")
	fs.Int64Var(&f.s.Seed, "s", f.s.Seed, "short for --seed")
	str(&f.s.RNG, "rng", "", "noise generator: torch-cpu (diffusers/ComfyUI CPU noise) or philox (A1111 GPU/NV noise)")
	integer(&f.s.Width, "width", "W", "image width (default: the model's native size)")
	integer(&f.s.Height, "height", "H", "image height (default: the model's native size)")
	integer(&f.s.Batch, "batch", "b", "images drawn from one noise tensor (as diffusers' num_images_per_prompt)")
	integer(&f.s.ClipSkip, "clip-skip", "", "1 = last text-encoder layer, 2 = penultimate (A1111's Clip skip)")
	fs.Float64Var(&f.s.GuidanceRescale, "guidance-rescale", 0, "diffusers' guidance_rescale phi in [0,1]")
	fs.Float64Var(&f.eta, "eta", -1, "noise of DDIM/ancestral/SDE samplers (default: the sampler's own)")
	pair(fs, &f.s.OriginalWidth, &f.s.OriginalHeight, "original-size", "SDXL size conditioning: the original size W,H (default: the image size)")
	pair(fs, &f.s.CropLeft, &f.s.CropTop, "crop-top-left", "SDXL size conditioning: the crop's top-left corner X,Y (default 0,0)")
	pair(fs, &f.s.TargetWidth, &f.s.TargetHeight, "target-size", "SDXL size conditioning: the target size W,H (default: the image size)")
	str(&f.s.InitImage, "init-img", "i", "img2img: start from this PNG or JPEG (the output takes its size unless -W/-H resize it)")
	fs.Float64Var(&f.s.Strength, "strength", f.s.Strength, "img2img/inpainting: how much of the init image to repaint, in (0, 1] (A1111's Denoising strength); runs the last int(steps*strength) steps")
	str(&f.s.Mask, "mask", "", "inpainting: a PNG or JPEG mask the init image's size, white = repaint, black = keep")
	integer(&f.s.MaskBlur, "mask-blur", "", "inpainting: blur the mask by this many pixels first (A1111's Mask blur)")
	str(&f.s.ControlNet, "control-net", "", "ControlNet: a diffusers folder or a .safetensors file (lllyasviel's control_model.* keys or diffusers names); needs --control-image")
	str(&f.s.ControlImage, "control-image", "", "ControlNet: the control image (PNG or JPEG; an edge map, a pose, ... or a photo with --canny), resized to the output size")
	fs.Float64Var(&f.s.ControlStrength, "control-strength", f.s.ControlStrength, "ControlNet: multiplies its residuals (diffusers' controlnet_conditioning_scale, A1111's Weight)")
	fs.Float64Var(&f.s.ControlStart, "control-start", f.s.ControlStart, "ControlNet: the fraction of the run where it starts acting (A1111's Guidance Start)")
	fs.Float64Var(&f.s.ControlEnd, "control-end", f.s.ControlEnd, "ControlNet: the fraction of the run where it stops acting (A1111's Guidance End)")
	fs.BoolVar(&f.s.Canny, "canny", false, "ControlNet: turn the control image into its Canny edge map first (A1111's canny preprocessor, OpenCV's algorithm)")
	integer(&f.s.CannyLow, "canny-low", "", "--canny: the low hysteresis threshold (on |dx|+|dy| of the 3x3 Sobel)")
	integer(&f.s.CannyHigh, "canny-high", "", "--canny: the high hysteresis threshold")
	str(&f.s.IPAdapter, "ip-adapter", "", "IP-Adapter file: image prompt (h94's ip-adapter_sd15.safetensors layout or diffusers' names; .bin files must be converted to .safetensors)")
	str(&f.s.IPAdapterImage, "ip-adapter-image", "ip-image", "IP-Adapter: the reference image, a PNG or JPEG (diffusers' ip_adapter_image)")
	fs.Float64Var(&f.s.IPAdapterScale, "ip-adapter-scale", f.s.IPAdapterScale, "IP-Adapter: weight of the image prompt (diffusers' set_ip_adapter_scale, ComfyUI's weight)")
	fs.Float64Var(&f.s.IPAdapterScale, "ip-scale", f.s.IPAdapterScale, "short for --ip-adapter-scale")
	str(&f.s.ImageEncoder, "image-encoder", "clip-vision", "IP-Adapter: the CLIP vision encoder folder (config.json, model.safetensors, preprocessor_config.json; default: image_encoder/ beside the adapter file)")
	str(&f.loraDir, "lora-dir", "", "folder the prompt's <lora:NAME:WEIGHT> tags are looked up in (NAME.safetensors, also in sub-folders; default $"+models.LoRADirEnv+")")
	fs.StringVar(&f.loraDir, "lora-model-dir", "", "the same as --lora-dir (stable-diffusion.cpp's name)")
	str(&f.extra.CLIPL, "clip-l", "", "SD3/Flux single file: the CLIP-L text encoder's file, when the checkpoint lacks it (stable-diffusion.cpp's flag)")
	str(&f.extra.CLIPG, "clip-g", "", "SD3 single file: the CLIP-G text encoder's file")
	str(&f.extra.T5XXL, "t5xxl", "", "SD3/Flux single file: the T5-XXL text encoder's file")
	str(&f.extra.VAE, "vae", "", "SD3/Flux single file: the VAE's file (original or diffusers names; Flux's ae.safetensors)")
	str(&f.extra.T5Tokenizer, "t5-tokenizer", "", "SD3/Flux single file: the T5 tokenizer (spiece.model, or its folder); default: beside the checkpoint")
	fs.Float64Var(&f.guidance, "guidance", -1, "FLUX.1-dev's distilled guidance (stable-diffusion.cpp's name; default 3.5); Flux runs --cfg-scale 1 unless given")
	integer(&f.maxSeqLen, "max-sequence-length", "", "T5 tokens the prompt is padded or cut to (diffusers' max_sequence_length; default the family's: SD3 256)")
	str(&f.prediction, "prediction", "", "what the model predicts, overriding its config: eps or v (SD 2.x 768-v single files without a config)")
	str(&f.taesd, "taesd", "", "decode with a TAESD (tiny autoencoder: a diffusers folder, a .safetensors with diffusers names, or taesd_decoder.safetensors): the final image and --preview")
	addIFFlags(fs, &f.ifFlags)
	addNoMmap(fs)
	str(&f.device, "device", "", "compute device: auto, gl or ref")
	str(&f.output, "output", "o", "output PNG; a batch writes NAME_0.png, NAME_1.png, ...")
	str(&f.from, "from", "", "read the settings from a PNG's parameters (ours or A1111's); other flags override them")
	integer(&f.branchAt, "branch-at", "", "branch the run after step K (1-based) with the --branch changes, as the studio's b; writes the branch's image")
	fs.Var(&f.branch, "branch", "a change for --branch-at: KEY=VALUE (cfg, steps, sampler, schedule, clip-skip, prompt, negative, guidance-rescale); repeat for several")
	fs.Var(&f.xySpecs, "xy", "X/Y plot axis KEY=V1,V2,... (cfg, steps, sampler, schedule, seed, clip-skip, prompt as A1111's Prompt S/R, negative, guidance-rescale): the first is X, a second is Y; -o gets one labelled grid")
	fs.BoolVar(&f.preview, "preview", false, "draw each step's half-block preview above the progress bar")
	fs.BoolVar(&f.force, "force", false, "overwrite existing output files, and try a size or batch estimated not to fit the device's memory")
	f.device = "auto"
	f.output = "out.png"
	f.loraDir = os.Getenv(models.LoRADirEnv)
	// A mistyped flag gets the error and one line, not every flag; -h
	// gets them all (parseGenerate).
	fs.Usage = func() {}
	fullUsage = func() {
		fmt.Fprintf(stderr, "usage: stepwise generate -p PROMPT [flags]\n\nflags:\n")
		fs.VisitAll(func(fl *flag.Flag) {
			if strings.HasPrefix(fl.Usage, "short for") {
				return
			}
			short := ""
			fs.VisitAll(func(o *flag.Flag) {
				if o.Usage == "short for --"+fl.Name {
					short = "-" + o.Name + ", "
				}
			})
			def := ""
			if fl.DefValue != "" && fl.DefValue != "0" && fl.DefValue != "false" {
				def = fmt.Sprintf(" (default %s)", fl.DefValue)
			}
			fmt.Fprintf(stderr, "  %s--%s\n      %s%s\n", short, fl.Name, fl.Usage, def)
		})
		fmt.Fprintf(stderr, "\n%s", gen.SamplerHelp())
	}
	return fs
}

func runGenerate(args []string) error {
	f, err := parseGenerate(args, os.Stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := onSignal("generate", cancel)
	err = generate(ctx, f, os.Stderr)
	if s := got(); s != 0 {
		return &signalError{sig: s, err: err}
	}
	return err
}

// parseGenerate reads the flags (and --from's PNG) and refuses settings no
// model accepts, before any model is loaded.
func parseGenerate(args []string, stderr io.Writer) (genFlags, error) {
	var f genFlags
	fs := newGenFlagSet(&f, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			if fullUsage != nil {
				fullUsage()
			}
			return f, err
		}
		return f, fmt.Errorf("%w (run 'stepwise generate -h' for every flag)", err)
	}
	// `--xy "cfg=1,3" "steps=10,20" ...`: an axis right after --xy's
	// value is the Y axis; the flags after it are read on.
	for len(f.xySpecs) == 1 && fs.NArg() > 0 && strings.Contains(fs.Arg(0), "=") && !strings.HasPrefix(fs.Arg(0), "-") {
		f.xySpecs = append(f.xySpecs, fs.Arg(0))
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return f, fmt.Errorf("%w (run 'stepwise generate -h' for every flag)", err)
		}
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected argument %q (quote the prompt and pass it with -p)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if f.from != "" {
		if err := settingsFromPNG(&f, set, stderr); err != nil {
			return f, err
		}
	}
	if err := parseSessionFlags(&f); err != nil {
		return f, err
	}
	f.samplerSet = set["sampler"] || f.from != ""
	f.cfgSet = set["cfg-scale"] || f.from != ""
	if set["guidance"] && (f.guidance < 0 || math.IsNaN(f.guidance) || math.IsInf(f.guidance, 0)) {
		return f, fmt.Errorf("--guidance %v: want a finite number >= 0", f.guidance)
	}
	if set["eta"] {
		f.s.Eta = presets.Float(f.eta)
	}
	switch f.prediction {
	case "", "eps", "epsilon", "v", "v_prediction":
	default:
		return f, fmt.Errorf("--prediction %q: want eps or v", f.prediction)
	}
	if err := precheck(f.s); err != nil {
		return f, err
	}
	// The prompt's LoRAs are found before any model is loaded.
	if _, err := models.PromptLoRAs(f.s.Prompt, f.loraDir); err != nil {
		if f.from != "" && f.s.LoraHashes != "" {
			err = fmt.Errorf("%w (--from %s was made with Lora hashes %q)", err, f.from, f.s.LoraHashes)
		}
		return f, fmt.Errorf("prompt: %w", err)
	}
	return f, nil
}

// lcmSampler picks the lcm sampler for a model whose scheduler is
// LCMScheduler when no sampler was asked for, and says when lcm was asked
// for a model that is neither LCM-distilled nor scheduled for LCM (it then
// needs an LCM-LoRA to make sense).
func lcmSampler(p *models.Pipeline, name string, asked bool, note func(string)) string {
	lcmModel := p.GuidanceDistilled() || p.Model.Scheduler.ClassName == "LCMScheduler"
	canon, _, _ := sampler.LookupSampler(name)
	switch {
	case lcmModel && !asked && canon != "lcm":
		note(fmt.Sprintf("%s is a latent consistency model: sampling with lcm (pass --sampler to choose another)", p.Name))
		return "lcm"
	case !lcmModel && canon == "lcm":
		note(fmt.Sprintf("the lcm sampler expects an LCM model or an LCM-LoRA; %s is neither an LCM-distilled model nor scheduled for LCM", p.Name))
	}
	return name
}

// pairValue is a flag "A,B" of two non-negative integers.
type pairValue struct{ a, b *int }

func (v pairValue) String() string {
	if v.a == nil || (*v.a == 0 && *v.b == 0) {
		return ""
	}
	return fmt.Sprintf("%d,%d", *v.a, *v.b)
}

func (v pairValue) Set(s string) error {
	x, y, ok := strings.Cut(s, ",")
	if !ok {
		x, y, ok = strings.Cut(s, "x")
	}
	a, err1 := strconv.Atoi(strings.TrimSpace(x))
	b, err2 := strconv.Atoi(strings.TrimSpace(y))
	if !ok || err1 != nil || err2 != nil || a < 0 || b < 0 || a > 1<<16 || b > 1<<16 {
		return fmt.Errorf("want two numbers A,B from 0 to 65536, got %q", s)
	}
	*v.a, *v.b = a, b
	return nil
}

func pair(fs *flag.FlagSet, a, b *int, name, usage string) { fs.Var(pairValue{a, b}, name, usage) }

// settingsFromPNG loads the settings stored in a PNG's parameters text;
// flags given on the command line override them. An init image or mask the
// PNG names that is missing (also beside the PNG, for a relative name) is
// dropped with a warning naming it.
func settingsFromPNG(f *genFlags, set map[string]bool, stderr io.Writer) error {
	text, err := render.ReadPNGTextFile(f.from)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	params, ok := text["parameters"]
	if !ok {
		return fmt.Errorf("--from %s: the PNG has no \"parameters\" text chunk (not written by Stepwise or AUTOMATIC1111?)", f.from)
	}
	s, unknown, err := presets.ParseInfotext(params)
	if err != nil {
		return fmt.Errorf("--from %s: %w", f.from, err)
	}
	cur := f.s
	f.s = s
	override := map[string]func(){
		"prompt": func() { f.s.Prompt = cur.Prompt }, "negative-prompt": func() { f.s.NegativePrompt = cur.NegativePrompt },
		"steps": func() { f.s.Steps = cur.Steps }, "cfg-scale": func() { f.s.CFGScale = cur.CFGScale },
		"sampler": func() { f.s.Sampler = cur.Sampler }, "schedule": func() { f.s.Schedule = cur.Schedule },
		"seed": func() { f.s.Seed = cur.Seed }, "rng": func() { f.s.RNG = cur.RNG },
		"width": func() { f.s.Width = cur.Width }, "height": func() { f.s.Height = cur.Height },
		"batch": func() { f.s.Batch = cur.Batch }, "clip-skip": func() { f.s.ClipSkip = cur.ClipSkip },
		"guidance-rescale": func() { f.s.GuidanceRescale = cur.GuidanceRescale },
		"original-size":    func() { f.s.OriginalWidth, f.s.OriginalHeight = cur.OriginalWidth, cur.OriginalHeight },
		"crop-top-left":    func() { f.s.CropLeft, f.s.CropTop = cur.CropLeft, cur.CropTop },
		"target-size":      func() { f.s.TargetWidth, f.s.TargetHeight = cur.TargetWidth, cur.TargetHeight },
		"init-img":         func() { f.s.InitImage = cur.InitImage },
		"strength":         func() { f.s.Strength = cur.Strength },
		"mask":             func() { f.s.Mask = cur.Mask },
		"mask-blur":        func() { f.s.MaskBlur = cur.MaskBlur },
		"control-net":      func() { f.s.ControlNet = cur.ControlNet },
		"control-image":    func() { f.s.ControlImage = cur.ControlImage },
		"control-strength": func() { f.s.ControlStrength = cur.ControlStrength },
		"control-start":    func() { f.s.ControlStart = cur.ControlStart },
		"control-end":      func() { f.s.ControlEnd = cur.ControlEnd },
		"canny":            func() { f.s.Canny = cur.Canny },
		"canny-low":        func() { f.s.CannyLow = cur.CannyLow },
		"canny-high":       func() { f.s.CannyHigh = cur.CannyHigh },
		"ip-adapter":       func() { f.s.IPAdapter = cur.IPAdapter },
		"ip-adapter-image": func() { f.s.IPAdapterImage = cur.IPAdapterImage },
		"ip-adapter-scale": func() { f.s.IPAdapterScale = cur.IPAdapterScale },
		"image-encoder":    func() { f.s.ImageEncoder = cur.ImageEncoder },
	}
	aliases := map[string]string{"p": "prompt", "n": "negative-prompt", "s": "seed", "W": "width", "H": "height", "b": "batch", "i": "init-img",
		"ip-image": "ip-adapter-image", "ip-scale": "ip-adapter-scale", "clip-vision": "image-encoder"}
	for name := range set {
		if long, ok := aliases[name]; ok {
			name = long
		}
		if o, ok := override[name]; ok {
			o()
		}
	}
	warn := func(format string, args ...any) {
		fmt.Fprintf(stderr, "warning: --from %s: %s\n", termsafe.Text(f.from), termsafe.Text(fmt.Sprintf(format, args...)))
	}
	find := func(name string) (string, bool) {
		if _, err := os.Stat(name); err == nil {
			return name, true
		}
		if !filepath.IsAbs(name) {
			beside := filepath.Join(filepath.Dir(f.from), name)
			if _, err := os.Stat(beside); err == nil {
				return beside, true
			}
		}
		return name, false
	}
	named := f.s.InitImage != ""
	if !set["init-img"] && !set["i"] && f.s.InitImage != "" {
		if p, ok := find(f.s.InitImage); ok {
			f.s.InitImage = p
		} else {
			what := "generating from noise"
			if f.s.Mask != "" && !set["mask"] {
				what += " without its mask " + f.s.Mask + " either"
				f.s.Mask = ""
			}
			warn("its init image %s is missing; %s (pass --init-img PATH)", f.s.InitImage, what)
			f.s.InitImage = ""
		}
	}
	if !set["mask"] && f.s.Mask != "" {
		if p, ok := find(f.s.Mask); ok {
			f.s.Mask = p
		} else {
			warn("its mask %s is missing; generating img2img without it (pass --mask PATH)", f.s.Mask)
			f.s.Mask = ""
		}
	}
	// The ControlNet and its control image: a PNG of A1111's names the
	// ControlNet by name only ("ControlNet 0: ... Model: NAME [hash]");
	// either file missing drops the ControlNet, with a warning.
	if f.s.ControlNet != "" && !set["control-net"] {
		if p, ok := find(f.s.ControlNet); ok {
			f.s.ControlNet = p
		} else {
			name := f.s.ControlNet
			if f.s.ControlNetHash != "" {
				name += " [" + f.s.ControlNetHash + "]"
			}
			warn("its ControlNet %s is missing; generating without it (pass --control-net PATH --control-image PATH)", name)
			f.s.ControlNet = ""
			if !set["control-image"] {
				f.s.ControlImage = ""
			}
		}
	}
	if f.s.ControlImage != "" && !set["control-image"] {
		if p, ok := find(f.s.ControlImage); ok {
			f.s.ControlImage = p
		} else {
			warn("its control image %s is missing; generating without the ControlNet %s (pass --control-image PATH)", f.s.ControlImage, f.s.ControlNet)
			f.s.ControlImage = ""
			if !set["control-net"] {
				f.s.ControlNet = ""
			}
		}
	}
	if f.s.ControlNet != "" && f.s.ControlImage == "" && !set["control-net"] {
		warn("its ControlNet %s was given no control image that its parameters name; generating without it (pass --control-image PATH)", f.s.ControlNet)
		f.s.ControlNet = ""
	}
	if v, ok := unknown["ControlNet 0"]; ok {
		warn("it was made with a ControlNet whose preprocessor Stepwise does not have (%s); generating without it", v)
	}
	ipFilesBeside(f, set)
	// A1111's img2img PNGs carry the strength but name no file.
	_, hires := unknown["Denoising strength"]
	last := params[strings.LastIndex(strings.TrimSpace(params), "\n")+1:]
	if !named && !hires && strings.Contains(last, "Denoising strength:") {
		warn("it was made by img2img (Denoising strength %g) from an init image its parameters do not name; generating from noise (pass --init-img PATH)", s.Strength)
	}
	return fromPNGExtras(f, set, unknown, warn)
}

// precheck refuses settings that no model accepts, before loading one.
func precheck(s presets.Settings) error {
	// A side left out (0) is the model's native size: name only the side
	// given ("-W 33", not "size 33x0").
	for _, side := range []struct {
		flag string
		v    int
	}{{"-W", s.Width}, {"-H", s.Height}} {
		if side.v%8 != 0 {
			return fmt.Errorf("%s %d: width and height must be multiples of 8 (and of the model's own step, 64 for SD 1.x/2.x, 32 for SDXL)", side.flag, side.v)
		}
	}
	probe := s
	if probe.Width == 0 {
		probe.Width = presets.MinSize
	}
	if probe.Height == 0 {
		probe.Height = presets.MinSize
	}
	if err := probe.Validate(); err != nil {
		return err
	}
	if _, _, err := sampler.LookupSampler(s.Sampler); err != nil {
		return err
	}
	if s.Schedule != "" {
		if _, err := sampler.LookupSchedule(s.Schedule); err != nil {
			return err
		}
	}
	return nil
}

// outputPaths names the files of a batch and refuses existing ones unless
// force is set.
func outputPaths(out string, batch int, force bool) ([]string, error) {
	// "-o ''" and "-o dir/" used to write ./.png and dir/.png.
	if out == "" || strings.HasSuffix(out, "/") {
		return nil, fmt.Errorf("-o: %w", render.CheckOutput(out))
	}
	switch ext := strings.ToLower(filepath.Ext(out)); ext {
	case "":
		out += ".png"
	case ".png":
	default:
		// -o out.jpg used to write PNG bytes under a .jpg name.
		return nil, fmt.Errorf("-o %s: Stepwise writes PNG files (they carry the generation parameters that --from and A1111 read); name the output .png, not %s", out, ext)
	}
	paths := []string{out}
	if batch > 1 {
		ext := filepath.Ext(out)
		base := strings.TrimSuffix(out, ext)
		paths = paths[:0]
		for i := 0; i < batch; i++ {
			paths = append(paths, fmt.Sprintf("%s_%d%s", base, i, ext))
		}
	}
	if !force {
		for _, p := range paths {
			if _, err := os.Stat(p); err == nil {
				return nil, fmt.Errorf("%s exists; pass --force to overwrite it", p)
			}
		}
	}
	// Every name is checked before the work: a name too long for the file
	// system, or a folder that cannot be written, used to fail after it.
	for _, p := range paths {
		if err := render.CheckOutput(p); err != nil {
			return nil, fmt.Errorf("-o: %w", err)
		}
	}
	return paths, nil
}

// openDevice opens the named device; tests replace it to inject faults.
var openDevice = devices.Open

// loadPipeline opens the device and the model (the bundled one when path is
// empty).
func loadPipeline(device, path, config string, warn func(string)) (*models.Pipeline, error) {
	return loadPipelineWith(device, path, config, checkpoint.Extra{}, warn)
}

// loadPipelineWith is loadPipeline with separate component files. The
// device opens on another goroutine (the GL driver's libraries load and
// relocate: about a tenth of a second) while this one parses the
// checkpoint and the tokenizer's vocabulary; a device that does not open
// is reported first, as before.
func loadPipelineWith(device, path, config string, ex checkpoint.Extra, warn func(string)) (*models.Pipeline, error) {
	if path == "" && ex != (checkpoint.Extra{}) {
		return nil, fmt.Errorf("--clip-l, --clip-g, --t5xxl, --vae and --t5-tokenizer need --model (an SD3 or Flux single file)")
	}
	start := time.Now()
	type opened struct {
		dev   gpu.Device
		err   error
		warns []string
	}
	ch := make(chan opened, 1)
	go func() {
		var o opened
		o.dev, o.err = openDevice(device, func(w string) { o.warns = append(o.warns, w) })
		ch <- o
	}()
	tokenizer.Default() // parsed once per process; the pipeline takes it
	var m *checkpoint.Model
	var err error
	if path == "" {
		m, err = bundled.Checkpoint()
	} else {
		m, err = checkpoint.LoadExtra(path, config, ex)
	}
	o := <-ch
	for _, w := range o.warns {
		warn(w)
	}
	if o.err != nil || err != nil {
		if m != nil {
			m.Close()
		}
		if o.err != nil {
			return nil, o.err
		}
		o.dev.Close()
		return nil, err
	}
	name := bundled.Name
	if path != "" {
		name = models.DisplayName(path)
	}
	p, err := models.New(o.dev, m, name)
	if err != nil {
		m.Close()
		o.dev.Close()
		return nil, err
	}
	p.LoadTime = time.Since(start)
	for _, w := range p.Model.Warnings {
		warn(w)
	}
	return p, nil
}

func generate(ctx context.Context, f genFlags, stderr io.Writer) error {
	nOut := max(f.s.Batch, 1)
	if f.batchPos > 0 {
		nOut = 1 // one image of a batch (--from)
	}
	paths, err := outputPaths(f.output, nOut, f.force)
	if err != nil {
		return err
	}
	warn := func(s string) { fmt.Fprintf(stderr, "warning: %s\n", termsafe.Text(s)) }
	if _, ok := models.IsIFFolder(f.model); ok {
		return generateIF(ctx, f, paths, stderr)
	}
	// The init image and mask are read and checked before the model loads.
	in, err := gen.LoadInputs(f.s)
	if err != nil {
		return fmt.Errorf("%w; nothing written", err)
	}
	if f.maxSeqLen < 0 || f.maxSeqLen > 4096 {
		return fmt.Errorf("--max-sequence-length %d: want 1..4096 T5 tokens; nothing written", f.maxSeqLen)
	}
	// So is the ControlNet file (its family is checked once the model is).
	var cn *checkpoint.ControlNet
	if f.s.ControlNet != "" {
		if cn, err = checkpoint.LoadControlNet(f.s.ControlNet); err != nil {
			return fmt.Errorf("%w; nothing written", err)
		}
		for _, w := range cn.Warnings {
			warn(w)
		}
	}
	// An adapter for another family is refused from the model's configs,
	// before its weights are uploaded.
	if err := precheckIPAdapter(f); err != nil {
		return fmt.Errorf("%w; nothing written", err)
	}
	t0 := time.Now()
	busy := &busyLine{w: stderr, tty: isTerminal(stderr)}
	defer busy.end()
	busy.start("loading the model")
	p, err := loadPipelineWith(f.device, f.model, f.config, f.extra, busy.quiet(warn))
	busy.end()
	if err != nil {
		if cn != nil {
			cn.Close()
		}
		return err
	}
	dev := p.Device()
	owned := false // by the session, once it exists
	defer func() {
		if !owned {
			p.Close()
			dev.Close()
		}
	}()
	p.LoRADir = f.loraDir
	if cn != nil {
		if err := p.SetControlNet(cn); err != nil {
			return fmt.Errorf("%w; nothing written", err)
		}
	}
	if f.maxSeqLen != 0 {
		if p.T5Tokenizer() == nil {
			warn(fmt.Sprintf("--max-sequence-length ignored: %s has no T5 encoder", p.Name))
		}
		p.MaxSequenceLength = f.maxSeqLen
	}
	if f.taesd != "" {
		tm, err := checkpoint.LoadTiny(f.taesd)
		if err != nil {
			return fmt.Errorf("%w; nothing written", err)
		}
		if err := p.SetTAESD(tm); err != nil {
			tm.Close()
			return fmt.Errorf("%w; nothing written", err)
		}
	}
	switch f.prediction {
	case "eps", "epsilon":
		p.Model.Scheduler.PredictionType = "epsilon"
	case "v", "v_prediction":
		p.Model.Scheduler.PredictionType = "v_prediction"
	}
	s := f.s
	if p.Model.Flux != nil {
		if !f.cfgSet {
			s.CFGScale = 1 // guidance is distilled into the model (--guidance)
		}
		if f.guidance >= 0 && !p.Model.Flux.GuidanceEmbeds {
			warn(fmt.Sprintf("--guidance ignored: %s has no guidance embedding (schnell-like)", p.Name))
		}
		switch {
		case !p.Model.Flux.GuidanceEmbeds:
			s.DistilledGuidance = nil // schnell: nothing to record
		case f.guidance >= 0:
			s.DistilledGuidance = presets.Float(f.guidance)
		case s.DistilledGuidance == nil: // recorded in the PNG, as Forge does
			s.DistilledGuidance = presets.Float(models.DefaultFluxGuidance)
		}
	} else {
		if f.guidance >= 0 {
			warn(fmt.Sprintf("--guidance ignored: it is Flux's distilled guidance, and %s is %s (use --cfg-scale)", p.Name, p.Model.Family))
		}
		s.DistilledGuidance = nil // a Flux PNG's (--from) means nothing here
	}
	fromInit := in.Init != nil && (s.Width == 0 || s.Height == 0)
	if in.Init != nil {
		// img2img keeps the init image's size unless -W/-H say otherwise.
		sz := in.Init.Bounds().Size()
		if s.Width == 0 {
			s.Width = sz.X
		}
		if s.Height == 0 {
			s.Height = sz.Y
		}
	}
	if s.Width == 0 {
		s.Width = p.NativeSize()
	}
	if s.Height == 0 {
		s.Height = p.NativeSize()
	}
	if fromInit {
		if err := gen.Validate(p, s); err != nil {
			m := p.SizeMultiple()
			up := func(v int) int { return max((v+m/2)/m*m, m) }
			return fmt.Errorf("%w: that is the size of the init image %s; pass -W %d -H %d (or other multiples of %d) to resize it; nothing written",
				err, termsafe.Text(in.InitPath), up(s.Width), up(s.Height), m)
		}
	}
	if note := in.ResizeNote(s.Width, s.Height); note != "" {
		fmt.Fprintf(stderr, "note: %s\n", termsafe.Text(note))
	}
	// Estimate before any work: a size far above the model's native one
	// can need more memory than the device has, and hours.
	facts := gen.FactsOf(p)
	if err := facts.CheckMemory(s); err != nil && !f.force {
		return fmt.Errorf("%w (pass --force to try anyway); nothing written", err)
	}
	if c := facts.Estimate(s); c.Total(max(s.Steps, 1)) > bigWork {
		rate := gen.Throughput(dev)
		eta := ""
		if rate > 0 {
			eta = fmt.Sprintf(", about %s on this device", (time.Duration(c.Total(s.Steps)/rate) * time.Second).Round(time.Second))
		}
		fmt.Fprintf(stderr, "estimate: %s of memory at the peak, %.1f TFLOP%s (Ctrl+C stops it)\n", gen.GiB(c.PeakBytes), c.Total(s.Steps)/1e12, eta)
	}
	s.Sampler = lcmSampler(p, s.Sampler, f.samplerSet, func(msg string) {
		// lcm on an ordinary model with a LoRA in the prompt: an LCM-LoRA.
		if tags, _ := models.ParseLoRATags(s.Prompt); len(tags) > 0 && strings.Contains(msg, "LCM-LoRA") {
			return
		}
		fmt.Fprintf(stderr, "note: %s\n", msg)
	})
	randomSeed := s.Seed < 0
	sess, err := gen.SessionOn(p)
	if err != nil {
		return err
	}
	owned = true
	defer sess.Close()
	if h, err := gen.ModelHash(p.Model.Path); err == nil {
		if n := modelNote(f, p.Name, h); n != "" {
			warn(n)
		}
	}
	if len(f.xy) > 0 {
		return generateXY(ctx, sess, f, s, in, paths[0], stderr)
	}
	compileAhead(ctx, sess, s, in, busy, stderr)
	busy.start("encoding the prompt")
	run, err := sess.StartInputs(1, s, in)
	busy.end()
	if err != nil {
		return fmt.Errorf("%w; nothing written", err)
	}
	j := run.Job
	defer j.Close()
	if randomSeed {
		fmt.Fprintf(stderr, "seed: %d\n", j.Settings.Seed)
	}
	for _, w := range loraHashWarnings(f.s.LoraHashes, j.Settings.LoraHashes) {
		warn(w)
	}
	if j.Cond.Chunks > 1 {
		fmt.Fprintf(stderr, "note: the prompt is %d tokens, longer than 75; it was split into %d chunks of 75\n", j.Cond.PromptTokens, j.Cond.Chunks)
	}
	fmt.Fprintf(stderr, "model %s on %s, loaded in %.2fs\n", p.Name, dev.Name(), time.Since(t0).Seconds())
	if s.IPAdapter != "" {
		fmt.Fprintf(stderr, "image prompt %s through the IP-Adapter %s (scale %g)\n", termsafe.Text(s.IPAdapterImage), termsafe.Text(s.IPAdapter), s.IPAdapterScale)
	}
	if k := j.Run.ImageKind(); k != 0 {
		from := "no init image"
		if in.Init != nil {
			from = termsafe.Text(in.InitPath)
		}
		fmt.Fprintf(stderr, "%s from %s: %d of %d steps\n", k, from, j.Run.Total(), s.Steps)
	}

	if cn := p.ControlNet(); cn != nil {
		module := ""
		if s.Canny {
			module = fmt.Sprintf(", canny %d/%d", s.CannyLow, s.CannyHigh)
		}
		fmt.Fprintf(stderr, "controlnet %s (%s) on %s%s: strength %g from %g to %g of the run\n", termsafe.Text(cn.Name), cn.Layout,
			termsafe.Text(in.ControlPath), module, s.ControlStrength, s.ControlStart, s.ControlEnd)
	}
	prog := newProgress(stderr, f.preview, p)
	var budget gen.PreviewBudget // VAE previews for --preview
	stepTo := func(r *gen.Run, n int) error {
		for !r.Job.Done() && len(r.Job.Frames) < n {
			if len(r.Job.Frames) == 0 {
				busy.start("step 1 (the first run on a device compiles its shaders)")
			}
			st, err := sess.Step(ctx, r)
			busy.end()
			if err != nil {
				prog.finish()
				if errors.Is(err, context.Canceled) || ctx.Err() != nil {
					return fmt.Errorf("interrupted at step %d/%d; nothing written", len(r.Job.Frames), r.Job.Run.Total())
				}
				return fmt.Errorf("%w; nothing written", err)
			}
			if f.preview {
				prog.pic = vaePreview(sess, r, st, &budget)
			}
			prog.step(st.Frame)
		}
		return nil
	}
	for _, link := range f.chain {
		if err := stepTo(run, link.at); err != nil {
			return err
		}
		prog.finish()
		if link.at >= len(run.Job.Frames) && run.Job.Done() {
			return fmt.Errorf("%s: the run has %d steps; branch before the last; nothing written", link.flag, len(run.Job.Frames))
		}
		bs := j.Settings
		if err := link.apply(&bs); err != nil {
			return err
		}
		b, err := sess.Branch(run.ID+1, run.ID, link.at-1, bs)
		if err != nil {
			return fmt.Errorf("%w; nothing written", err)
		}
		defer b.Job.Close()
		fmt.Fprintf(stderr, "branched after step %d: %s\n", link.at, strings.Join(branchChanges(j.Settings, b.Job.Settings), ", "))
		run, j = b, b.Job
		prog = newProgress(stderr, f.preview, p)
	}
	if err := stepTo(run, math.MaxInt); err != nil {
		return err
	}
	prog.finish()
	busy.start("VAE decoding")
	imgs, err := sess.Images(ctx, run)
	busy.end()
	if ctx.Err() != nil {
		return errors.New("interrupted while decoding; nothing written")
	}
	if err != nil {
		return fmt.Errorf("%w; nothing written", err)
	}
	if ctx.Err() != nil {
		return errors.New("interrupted before writing; nothing written")
	}
	for i, im := range imgs {
		if f.batchPos > 0 {
			if i != f.batchPos-1 {
				continue
			}
			i = 0 // the one path
		}
		text := map[string]string{"parameters": sess.Infotext(run.ID, max(i, f.batchPos-1))}
		if err := render.WritePNG(paths[i], im, text, f.force); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "wrote %s\n", paths[i])
	}
	fmt.Fprintf(stderr, "done in %.2fs\n", time.Since(t0).Seconds())
	return nil
}

// bigWork is the arithmetic (FLOP) above which generate prints its
// estimate of the time before starting.
const bigWork = 5e11

// progress reports steps on stderr: a redrawn bar (and optional preview)
// on a terminal, plain lines otherwise.
type progress struct {
	// pic, when set, is the next preview (a VAE decode; see
	// vaePreview), used once.
	pic     *image.RGBA
	w       io.Writer
	tty     bool
	preview bool
	start   time.Time
	drawn   int // lines drawn last time (to move back over them)
	mode    render.ColorMode
	pipe    *models.Pipeline
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newProgress(w io.Writer, preview bool, p *models.Pipeline) *progress {
	tty := isTerminal(w)
	return &progress{w: w, tty: tty, preview: preview, pipe: p, start: time.Now(), mode: render.DetectColorMode()}
}

func (p *progress) step(fr sampler.Frame) {
	done := fr.Index + 1
	el := time.Since(p.start).Seconds()
	rate := float64(done) / el
	eta := float64(fr.Total-done) / rate
	if !p.tty {
		fmt.Fprintf(p.w, "step %d/%d sigma %.4f %.2f it/s eta %.1fs\n", done, fr.Total, fr.Sigma, rate, eta)
		return
	}
	var b strings.Builder
	// Back to the start of what was drawn: the bar's own line, plus the
	// preview's lines above it. "ESC[0A" would not mean "stay": terminals
	// read a zero count as one and climb over earlier output.
	b.WriteString("\r")
	if p.drawn > 1 {
		fmt.Fprintf(&b, "\x1b[%dA", p.drawn-1)
	}
	lines := 0
	if p.preview {
		var img image.Image = p.pic
		if p.pic == nil {
			img = gen.PreviewFor(p.pipe, fr.Denoised, 0)
		}
		p.pic = nil
		pic := render.HalfBlock(img, 32, 16, p.mode)
		for _, l := range strings.Split(pic, "\n") {
			b.WriteString("\x1b[2K" + l + "\n")
			lines++
		}
	}
	const width = 30
	fill := done * width / fr.Total
	fmt.Fprintf(&b, "\x1b[2K[%s%s] %d/%d  %.2f it/s  ETA %.1fs", strings.Repeat("█", fill), strings.Repeat("░", width-fill), done, fr.Total, rate, eta)
	lines++
	p.drawn = lines
	io.WriteString(p.w, b.String())
}

func (p *progress) finish() {
	if p.tty && p.drawn > 0 {
		io.WriteString(p.w, "\n")
		p.drawn = 0
	}
}

// loraHashWarnings compares the "Lora hashes" a PNG was made with (--from)
// with those of the files found now, by name.
func loraHashWarnings(was, now string) []string {
	if was == "" {
		return nil
	}
	parse := func(v string) map[string]string {
		out := map[string]string{}
		for _, item := range strings.Split(v, ",") {
			name, hash, ok := strings.Cut(item, ":")
			if ok {
				out[strings.TrimSpace(name)] = strings.TrimSpace(hash)
			}
		}
		return out
	}
	before, after := parse(was), parse(now)
	var out []string
	for name, h := range before {
		switch got, ok := after[name]; {
		case !ok:
			out = append(out, fmt.Sprintf("the PNG was made with LoRA %s (hash %s), which the prompt no longer names", name, h))
		case got != h:
			out = append(out, fmt.Sprintf("LoRA %s: the file found has hash %s, the PNG was made with %s: the image may differ", name, got, h))
		}
	}
	sort.Strings(out)
	return out
}
