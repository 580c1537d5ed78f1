package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/stepwise/stepwise/internal/termsafe"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/bundled"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
)

func init() {
	register(command{name: "info", summary: "describe a checkpoint: layout, tensors, parameters, family, configs", run: runInfo})
}

const infoUsage = "usage: stepwise info [PATH] [--config FILE] [--check] [--json]\n" +
	"  PATH is a .safetensors single file or a diffusers folder; without it (or with\n" +
	"  \"bundled\") the model embedded in this binary is described"

// runInfo parses "info PATH [--config FILE] [--json]" (flags may follow
// PATH) and prints the checkpoint's description to stdout.
func runInfo(args []string) error {
	fs := flag.NewFlagSet("info", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	config := fs.String("config", "", "hyper-parameters of a single file: a JSON bundle of diffusers configs or an LDM .yaml")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	check := fs.Bool("check", false, "also read every weight and report NaN or Inf values (reads the whole file)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), infoUsage)
		fs.PrintDefaults()
	}
	var paths []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		paths = append(paths, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(paths) == 0 {
		paths = []string{"bundled"}
	}
	if len(paths) != 1 {
		return fmt.Errorf("%w: want exactly one PATH, got %d\n%s", errUsage, len(paths), infoUsage)
	}
	return writeInfo(os.Stdout, paths[0], *config, *check, *asJSON)
}

// componentInfo is one network's share of the weights.
type componentInfo struct {
	Name    string `json:"name"`
	Tensors int    `json:"tensors"`
	Params  int64  `json:"params"`
	Bytes   int64  `json:"bytes"`
}

// checkpointInfo is what "stepwise info" reports (also its JSON form).
type checkpointInfo struct {
	Path         string           `json:"path"`
	Layout       string           `json:"layout"`
	Files        []string         `json:"files"`
	FileBytes    int64            `json:"file_bytes"`
	Tensors      int              `json:"tensors"`
	DTypes       map[string]int   `json:"dtypes"`
	Ignored      int              `json:"ignored_tensors"`
	Components   []componentInfo  `json:"components"`
	TotalParams  int64            `json:"total_params"`
	Family       string           `json:"family"`
	FamilyWhy    string           `json:"family_why"`
	ConfigSource string           `json:"config_source"`
	UNet         nets.UNetConfig  `json:"unet"`
	VAE          nets.VAEConfig   `json:"vae"`
	Text         nets.TextConfig  `json:"text_encoder"`
	Text2        *nets.TextConfig `json:"text_encoder_2,omitempty"`
	// Transformer and T5 are SD3's MM-DiT and T5 configs (nil otherwise).
	Transformer *nets.MMDiTConfig          `json:"transformer,omitempty"`
	Flux        *nets.FluxConfig           `json:"flux_transformer,omitempty"`
	T5          *nets.T5Config             `json:"text_encoder_3,omitempty"`
	Scheduler   checkpoint.SchedulerConfig `json:"scheduler"`
	Warnings    []string                   `json:"warnings"`
	// Weights is the result of --check: "all finite", or which tensors hold
	// NaN or Inf values (empty without --check).
	Weights string `json:"weights,omitempty"`
}

// describe loads the checkpoint and gathers its description.
func describe(path, config string, check bool) (*checkpointInfo, error) {
	var m *checkpoint.Model
	var err error
	embedded := path == "" || path == "bundled"
	if embedded {
		m, err = bundled.Checkpoint()
	} else if class, ok := models.IsIFFolder(path); ok {
		// A DeepFloyd IF cascade is no latent-diffusion checkpoint: say
		// what it is rather than which LDM part it lacks.
		use := "generate with `stepwise generate --model " + path + "`"
		if strings.Contains(class, "SuperResolution") {
			use = "it is a stage II upscaler: give it as `--upscaler " + path + "` beside a stage I `--model`"
		}
		return nil, fmt.Errorf("%s is a DeepFloyd IF pipeline folder (%s): `stepwise info` describes latent-diffusion checkpoints; %s", path, class, use)
	} else {
		m, err = checkpoint.Load(path, config)
	}
	if err != nil {
		return nil, err
	}
	defer m.Close()
	info := &checkpointInfo{
		Path: m.Path, Layout: m.Layout, Files: m.Files, Tensors: m.Tensors, Ignored: m.Ignored,
		DTypes: map[string]int{}, Family: m.Family, FamilyWhy: m.FamilyWhy, ConfigSource: m.ConfigSource,
		UNet: m.UNet, VAE: m.VAE, Scheduler: m.Scheduler, Warnings: m.Warnings,
	}
	if t := m.Text("text_encoder"); t != nil {
		info.Text = t.Config
	}
	info.Transformer, info.Flux = m.Transformer, m.Flux
	if m.T5 != nil {
		c := m.T5.Config
		info.T5 = &c
	}
	if t := m.Text("text_encoder_2"); t != nil {
		c := t.Config
		info.Text2 = &c
	}
	if info.Warnings == nil {
		info.Warnings = []string{}
	}
	if check {
		info.Weights = "all finite"
		if err := m.CheckFinite(); err != nil {
			info.Weights = err.Error()
		}
	}
	// Every tensor of the files, loaded or not, for the dtype census.
	for _, p := range m.Files {
		if embedded {
			break
		}
		f, err := checkpoint.OpenWeights(p)
		if err != nil {
			return nil, err
		}
		for _, t := range f.Tensors() {
			info.DTypes[string(t.DType)]++
		}
		f.Close()
		if st, err := os.Stat(p); err == nil {
			info.FileBytes += st.Size()
		}
	}
	if embedded { // count the weights themselves
		ws := []nets.Weights{m.UNetWeights, m.VAEWeights}
		for _, t := range m.Texts {
			ws = append(ws, t.Weights)
		}
		for _, w := range ws {
			if mw, ok := w.(nets.MapWeights); ok {
				for _, p := range mw {
					info.DTypes[p.DType.String()]++
					info.FileBytes += int64(len(p.Raw))
				}
			}
		}
	}
	for _, s := range m.Stats() {
		info.Components = append(info.Components, componentInfo{Name: s.Name, Tensors: s.Tensors, Params: s.Params, Bytes: s.Bytes})
		info.TotalParams += s.Params
	}
	return info, nil
}

// writeInfo prints the description of the checkpoint at path.
func writeInfo(w io.Writer, path, config string, check, asJSON bool) error {
	info, err := describe(path, config, check)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	return writeText(w, info)
}

func writeText(w io.Writer, in *checkpointInfo) error {
	var b strings.Builder
	// Every string here may come from the file (tensor and class names,
	// warnings quoting keys): control characters are escaped.
	row := func(k, format string, args ...any) {
		for i, a := range args {
			if s, ok := a.(string); ok {
				args[i] = termsafe.Escape(s)
			}
		}
		fmt.Fprintf(&b, "  %-13s "+format+"\n", append([]any{k}, args...)...)
	}
	fmt.Fprintf(&b, "%s\n", termsafe.Escape(in.Path))
	row("layout", "%s: %d file(s), %s, %d tensors", in.Layout, len(in.Files), bytesString(in.FileBytes), in.Tensors)
	var dts []string
	for k := range in.DTypes {
		dts = append(dts, k)
	}
	sort.Strings(dts)
	for i, k := range dts {
		dts[i] = fmt.Sprintf("%s x%d", k, in.DTypes[k])
	}
	row("dtypes", "%s", strings.Join(dts, ", "))
	row("family", "%s", in.Family)
	row("why", "%s", in.FamilyWhy)
	row("config", "%s", in.ConfigSource)
	for _, c := range in.Components {
		row(strings.TrimSuffix(c.Name, "_encoder")+" params", "%s in %d tensors (%s)", countString(c.Params), c.Tensors, bytesString(c.Bytes))
	}
	row("total params", "%s (%d); %d training-only tensors ignored", countString(in.TotalParams), in.TotalParams, in.Ignored)
	configRows(row, in)
	if len(in.Warnings) == 0 {
		row("warnings", "none")
	}
	for _, wn := range in.Warnings {
		row("warning", "%s", wn)
	}
	if in.Weights != "" {
		row("weights", "%s", in.Weights)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// configRows prints the configs' key numbers.
func configRows(row func(k, format string, args ...any), in *checkpointInfo) {
	u, v, s := &in.UNet, &in.VAE, &in.Scheduler
	var attn []string
	heads := make([]int, len(u.BlockOutChannels))
	for i, bt := range u.DownBlockTypes {
		if strings.Contains(bt, "CrossAttn") {
			attn = append(attn, fmt.Sprint(i))
		}
	}
	for i := range heads {
		heads[i] = u.Heads(i)
	}
	proj := "1x1-conv"
	if u.UseLinearProjection {
		proj = "linear"
	}
	if t := in.Flux; t != nil {
		row("transformer", "Flux %d double + %d single blocks, %d heads x %d, in %d (2x2-packed), joint attention %d, pooled %d, guidance embedding %v, RoPE axes %v",
			t.NumLayers, t.NumSingleLayers, t.NumAttentionHeads, t.AttentionHeadDim, t.InChannels, t.JointAttentionDim,
			t.PooledProjectionDim, t.GuidanceEmbeds, t.AxesDimsRope)
	} else if t := in.Transformer; t != nil {
		row("transformer", "MM-DiT %d layers, %d heads x %d, patch %d, in %d out %d, joint attention %d, pooled %d, pos table %dx%d, qk norm %q, dual attention layers %v",
			t.NumLayers, t.NumAttentionHeads, t.AttentionHeadDim, t.PatchSize, t.InChannels, t.OutChannels, t.JointAttentionDim,
			t.PooledProjectionDim, t.PosEmbedMaxSize, t.PosEmbedMaxSize, t.QKNorm, t.DualAttentionLayers)
	} else {
		row("unet config", "widths %v, %d layers/block, attention at levels %s, heads %v, context %d, groups %d, in %d out %d, %s projections, sample %d",
			u.BlockOutChannels, u.LayersPerBlock, strings.Join(attn, ","), heads, u.CrossAttentionDim, u.NormNumGroups,
			u.InChannels, u.OutChannels, proj, u.SampleSize)
	}
	row("vae config", "widths %v, %d layers/block, latent %d channels, groups %d, scaling %g, x%d downscale",
		v.BlockOutChannels, v.LayersPerBlock, v.LatentChannels, v.NormNumGroups, v.ScalingFactor, v.Downscale())
	if u.AdditionEmbedType != "" {
		row("added cond", "%s: add_embedding %d -> %d, time ids %d-wide", u.AdditionEmbedType,
			u.ProjectionClassEmbeddingsInputDim, u.BlockOutChannels[0]*4, u.AdditionTimeEmbedDim)
	}
	texts := []*nets.TextConfig{&in.Text}
	if in.Text2 != nil {
		texts = append(texts, in.Text2)
	}
	for i, t := range texts {
		if t.HiddenSize == 0 {
			continue // the SDXL refiner has no first encoder
		}
		name := "text config"
		if i == 1 {
			name = "text 2 config"
		}
		row(name, "width %d, %d layers, %d heads, MLP %d %s, %d positions, vocab %d",
			t.HiddenSize, t.NumHiddenLayers, t.NumAttentionHeads, t.IntermediateSize, t.HiddenAct, t.MaxPositionEmbeddings, t.VocabSize)
	}
	betas := fmt.Sprintf("%s %g..%g", s.BetaSchedule, s.BetaStart, s.BetaEnd)
	if len(s.TrainedBetas) > 0 {
		betas = fmt.Sprintf("%d trained betas", len(s.TrainedBetas))
	}
	if t := in.T5; t != nil {
		row("t5 config", "width %d, %d layers, %d heads x %d, FF %d %s, buckets %d/%d, vocab %d",
			t.DModel, t.NumLayers, t.NumHeads, t.DKV, t.DFF, t.FeedForwardProj, t.RelativeAttentionNumBuckets, t.RelativeAttentionMaxDistance, t.VocabSize)
	}
	if s.PredictionType == "flow" {
		if s.UseDynamicShifting {
			row("scheduler", "%s, rectified flow over %d steps, dynamic shift %g..%g for %d..%d tokens", s.ClassName, s.NumTrainTimesteps,
				s.BaseShift, s.MaxShift, s.BaseImageSeqLen, s.MaxImageSeqLen)
			return
		}
		row("scheduler", "%s, rectified flow over %d steps, shift %g", s.ClassName, s.NumTrainTimesteps, s.Shift)
		return
	}
	row("scheduler", "%s, %s over %d steps, %s, %s spacing, steps_offset %d",
		s.ClassName, betas, s.NumTrainTimesteps, s.PredictionType, s.TimestepSpacing, s.StepsOffset)
}

func countString(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.3f B", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2f M", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f K", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

func bytesString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
