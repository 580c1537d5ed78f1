package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/stepwise/stepwise/models/nets"
)

// maxConfigSize bounds a config file we are willing to parse.
const maxConfigSize = 4 << 20

// SchedulerConfig is diffusers' scheduler_config.json (the fields the SD
// schedulers use). DefaultScheduler gives SD 1.5's.
type SchedulerConfig struct {
	ClassName         string    `json:"_class_name"`
	NumTrainTimesteps int       `json:"num_train_timesteps"`
	BetaStart         float64   `json:"beta_start"`
	BetaEnd           float64   `json:"beta_end"`
	BetaSchedule      string    `json:"beta_schedule"`
	TrainedBetas      []float64 `json:"trained_betas"`
	PredictionType    string    `json:"prediction_type"`
	TimestepSpacing   string    `json:"timestep_spacing"`
	StepsOffset       int       `json:"steps_offset"`
	ClipSample        bool      `json:"clip_sample"`
	SetAlphaToOne     bool      `json:"set_alpha_to_one"`
	SkipPrkSteps      bool      `json:"skip_prk_steps"`
	// Shift is FlowMatchEulerDiscreteScheduler's timestep shift (SD3: 3).
	Shift float64 `json:"shift"`
	// FLUX.1-dev's resolution-dependent shift (see sampler.ScheduleConfig).
	UseDynamicShifting bool    `json:"use_dynamic_shifting"`
	BaseShift          float64 `json:"base_shift"`
	MaxShift           float64 `json:"max_shift"`
	BaseImageSeqLen    int     `json:"base_image_seq_len"`
	MaxImageSeqLen     int     `json:"max_image_seq_len"`
	// PipelineSigmas: the family's pipeline passes sigmas linspace(1, 1/N,
	// N) to the scheduler (FluxPipeline); set by the loader, not the file.
	PipelineSigmas bool `json:"-"`
}

// FlowMatchScheduler is the class name of rectified-flow schedulers.
const FlowMatchScheduler = "FlowMatchEulerDiscreteScheduler"

// DefaultScheduler returns SD 1.5's scheduler: PNDM, scaled_linear betas
// 0.00085..0.012 over 1000 steps, epsilon prediction, leading spacing,
// steps_offset 1.
func DefaultScheduler() SchedulerConfig {
	return SchedulerConfig{
		ClassName:         "PNDMScheduler",
		NumTrainTimesteps: 1000,
		BetaStart:         0.00085,
		BetaEnd:           0.012,
		BetaSchedule:      "scaled_linear",
		PredictionType:    "epsilon",
		TimestepSpacing:   "leading",
		StepsOffset:       1,
		SkipPrkSteps:      true,
	}
}

// configs is the set of hyper-parameters of one model.
type configs struct {
	UNet nets.UNetConfig
	VAE  nets.VAEConfig
	// Texts holds the text encoder configs by role ("text_encoder",
	// "text_encoder_2"); Pads the padding ids the tokenizer configs name.
	Texts     map[string]nets.TextConfig
	Pads      map[string]int32
	Scheduler SchedulerConfig
	// textFromShapes: the config only names the text encoder's kind (LDM
	// YAML), so its sizes are read from the checkpoint's shapes.
	textFromShapes bool
	// family, when the config names it (an LDM YAML's target).
	family *Family
}

func newConfigs() configs {
	return configs{Scheduler: DefaultScheduler(), Texts: map[string]nets.TextConfig{}, Pads: map[string]int32{}}
}

// unsupportedKeys lists, per component, diffusers config keys that change
// the result and that Stepwise does not implement, with the value that
// means "off" ("" for JSON null/absent). A config setting one of them to
// anything else is refused by name rather than silently ignored.
var unsupportedKeys = map[string][]struct{ key, off string }{
	"unet": {
		{"class_embed_type", ""}, {"num_class_embeds", ""},
		{"timestep_post_act", ""}, {"time_embedding_act_fn", ""}, {"time_embedding_type", `"positional"`},
		{"resnet_out_scale_factor", "1"}, {"resnet_out_scale_factor", "1.0"}, {"resnet_skip_time_act", "false"},
		{"only_cross_attention", "false"}, {"mid_block_only_cross_attention", ""}, {"dual_cross_attention", "false"},
		{"cross_attention_norm", ""}, {"attention_type", `"default"`}, {"encoder_hid_dim", ""},
		{"encoder_hid_dim_type", ""}, {"class_embeddings_concat", "false"}, {"reverse_transformer_layers_per_block", ""},
		{"attention_legacy_order", "false"},
	},
	"scheduler": {
		{"thresholding", "false"}, {"rescale_betas_zero_snr", "false"},
	},
}

// refuseUnsupported reports the first key of data (a component's config
// object) that unsupportedKeys lists with another value than its off one.
func refuseUnsupported(path, component string, data []byte) error {
	keys := unsupportedKeys[component]
	if len(keys) == 0 || len(data) == 0 {
		return nil
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(data, &raw) != nil {
		return nil // the typed decode reports the syntax
	}
	for _, k := range keys {
		v, ok := raw[k.key]
		if !ok {
			continue
		}
		val := strings.TrimSpace(string(v))
		if val == "null" || val == k.off || (k.off == "false" && val == "[]") {
			continue
		}
		if k.key == "resnet_out_scale_factor" && (val == "1" || val == "1.0") {
			continue
		}
		if k.key == "only_cross_attention" && !strings.Contains(val, "true") {
			continue
		}
		return cfgErr(path, "%s %s = %s is not supported by Stepwise (it changes the result, so the model is refused rather than run without it)", component, k.key, clip(v))
	}
	return nil
}

// padID maps a tokenizer config's pad_token (a string or {"content": ...})
// to its CLIP id.
func padID(path string, raw json.RawMessage) (int32, bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false, nil
	}
	var tok string
	if err := json.Unmarshal(raw, &tok); err != nil {
		var obj struct {
			Content string `json:"content"`
		}
		if err := json.Unmarshal(raw, &obj); err != nil {
			return 0, false, cfgErr(path, "pad_token: want a string or {\"content\": ...}, got %s", clip(raw))
		}
		tok = obj.Content
	}
	switch tok {
	case "<|endoftext|>":
		return 49407, true, nil
	case "!":
		return 0, true, nil
	case "<|startoftext|>":
		return 49406, true, nil
	}
	return 0, false, cfgErr(path, "pad_token %q is not one Stepwise knows (want <|endoftext|> or !)", tok)
}

// ConfigError reports an unusable config file.
type ConfigError struct {
	Path string
	Msg  string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("config %s: %s", e.Path, e.Msg) }

func cfgErr(path, format string, args ...any) error {
	return &ConfigError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// decodeJSON decodes one JSON object into v; errors name the file.
func decodeJSON(path string, data []byte, v any) error {
	if len(data) > maxConfigSize {
		return cfgErr(path, "%d bytes is larger than the %d-byte limit", len(data), maxConfigSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return cfgErr(path, "%v", err)
	}
	// More() alone misses a stray closing bracket ("{} }"); only the end
	// of the input may follow.
	if _, err := dec.Token(); err != io.EOF {
		return cfgErr(path, "trailing data after the JSON object")
	}
	return nil
}

// parseBundle reads a JSON file holding the diffusers configs under "unet",
// "vae", "text_encoder", "text_encoder_2" and "scheduler", and the
// tokenizer configs under "tokenizer" and "tokenizer_2" (every part
// optional).
func parseBundle(path string, data []byte) (configs, error) {
	var raw map[string]json.RawMessage
	c := newConfigs()
	if err := decodeJSON(path, data, &raw); err != nil {
		return c, err
	}
	parts := []struct {
		name string
		v    any
	}{{"unet", &c.UNet}, {"vae", &c.VAE}, {"scheduler", &c.Scheduler}}
	for _, p := range parts {
		r := raw[p.name]
		if len(r) == 0 || string(r) == "null" {
			continue
		}
		if err := json.Unmarshal(r, p.v); err != nil {
			return c, cfgErr(path, "%s: %v", p.name, err)
		}
		if err := refuseUnsupported(path, p.name, r); err != nil {
			return c, err
		}
	}
	for _, role := range []string{"text_encoder", "text_encoder_2"} {
		r := raw[role]
		if len(r) == 0 || string(r) == "null" {
			continue
		}
		var t nets.TextConfig
		if err := json.Unmarshal(r, &t); err != nil {
			return c, cfgErr(path, "%s: %v", role, err)
		}
		c.Texts[role] = t
	}
	for _, tok := range []string{"tokenizer", "tokenizer_2"} {
		r := raw[tok]
		if len(r) == 0 || string(r) == "null" {
			continue
		}
		var t struct {
			Pad json.RawMessage `json:"pad_token"`
		}
		if err := json.Unmarshal(r, &t); err != nil {
			return c, cfgErr(path, "%s: %v", tok, err)
		}
		id, ok, err := padID(path, t.Pad)
		if err != nil {
			return c, err
		}
		if ok {
			c.Pads[tok] = id
		}
	}
	if _, ok := raw["text_encoder"]; !ok && len(c.Texts) == 0 {
		// SD 1.5's CLIP ViT-L when the bundle names no encoder.
		c.Texts["text_encoder"] = nets.TextConfig{}
	}
	return c, c.validate(path)
}

// validate fills defaults and checks that the configs describe a network we
// can build, with sizes small enough to enumerate.
func (c *configs) validate(path string) error {
	c.UNet.Defaults()
	c.VAE.Defaults()
	if err := validateUNet(path, &c.UNet); err != nil {
		return err
	}
	if err := validateVAE(path, &c.VAE); err != nil {
		return err
	}
	for role, t := range c.Texts {
		t.Defaults()
		if err := validateText(path, role, &t); err != nil {
			return err
		}
		c.Texts[role] = t
	}
	return validateScheduler(path, &c.Scheduler)
}

func inRange(path, what string, v, lo, hi int) error {
	if v < lo || v > hi {
		return cfgErr(path, "%s = %d, want %d..%d", what, v, lo, hi)
	}
	return nil
}

func checkChannels(path, what string, ch []int, groups int) error {
	if err := inRange(path, what+" levels", len(ch), 1, 8); err != nil {
		return err
	}
	if err := inRange(path, what+" norm_num_groups", groups, 1, 1<<12); err != nil {
		return err
	}
	for i, c := range ch {
		if err := inRange(path, fmt.Sprintf("%s block_out_channels[%d]", what, i), c, 1, 1<<14); err != nil {
			return err
		}
		if c%groups != 0 {
			return cfgErr(path, "%s block_out_channels[%d] = %d is not a multiple of norm_num_groups %d", what, i, c, groups)
		}
	}
	return nil
}

func validateUNet(path string, c *nets.UNetConfig) error {
	n := len(c.BlockOutChannels)
	if err := checkChannels(path, "unet", c.BlockOutChannels, c.NormNumGroups); err != nil {
		return err
	}
	if len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n {
		return cfgErr(path, "unet has %d down_block_types and %d up_block_types for %d block_out_channels", len(c.DownBlockTypes), len(c.UpBlockTypes), n)
	}
	for i, t := range c.DownBlockTypes {
		if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
			return cfgErr(path, "unet down_block_types[%d] = %q is not supported", i, t)
		}
	}
	for i, t := range c.UpBlockTypes {
		if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
			return cfgErr(path, "unet up_block_types[%d] = %q is not supported", i, t)
		}
	}
	if c.MidBlockType != "UNetMidBlock2DCrossAttn" {
		return cfgErr(path, "unet mid_block_type %q is not supported", c.MidBlockType)
	}
	checks := []struct {
		what      string
		v, lo, hi int
	}{
		{"unet layers_per_block", c.LayersPerBlock, 1, 16},
		{"unet in_channels", c.InChannels, 1, 1024},
		{"unet out_channels", c.OutChannels, 1, 1024},
		{"unet cross_attention_dim", c.CrossAttentionDim, 1, 1 << 14},
		{"unet conv_in_kernel", c.ConvInKernel, 1, 7},
		{"unet conv_out_kernel", c.ConvOutKernel, 1, 7},
		{"unet sample_size", c.SampleSize, 1, 1 << 14},
		{"unet time_cond_proj_dim", c.TimeCondProjDim, 0, 1 << 12},
	}
	for _, k := range checks {
		if err := inRange(path, k.what, k.v, k.lo, k.hi); err != nil {
			return err
		}
	}
	if c.ConvInKernel%2 == 0 || c.ConvOutKernel%2 == 0 {
		return cfgErr(path, "unet conv kernels must be odd, got %d and %d", c.ConvInKernel, c.ConvOutKernel)
	}
	for i, ch := range c.BlockOutChannels {
		if err := inRange(path, fmt.Sprintf("unet transformer_layers_per_block[%d]", i), c.TransformerLayers.At(i), 1, 64); err != nil {
			return err
		}
		h := c.Heads(i)
		if err := inRange(path, fmt.Sprintf("unet attention heads[%d]", i), h, 1, ch); err != nil {
			return err
		}
		if ch%h != 0 {
			return cfgErr(path, "unet block_out_channels[%d] = %d is not divisible by its %d attention heads", i, ch, h)
		}
	}
	if !(c.NormEps > 0 && c.NormEps < 1) {
		return cfgErr(path, "unet norm_eps = %g, want 0 < eps < 1", c.NormEps)
	}
	if c.TimeCondProjDim%2 != 0 || c.TimeCondProjDim == 2 {
		return cfgErr(path, "unet time_cond_proj_dim = %d, want 0 or an even number >= 4", c.TimeCondProjDim)
	}
	switch c.AdditionEmbedType {
	case "":
	case "text_time":
		if c.AdditionTimeEmbedDim < 2 || c.AdditionTimeEmbedDim%2 != 0 || c.AdditionTimeEmbedDim > 1<<12 ||
			c.ProjectionClassEmbeddingsInputDim <= c.AdditionTimeEmbedDim || c.ProjectionClassEmbeddingsInputDim > 1<<16 {
			return cfgErr(path, "unet addition_time_embed_dim %d / projection_class_embeddings_input_dim %d do not describe text_time embeddings",
				c.AdditionTimeEmbedDim, c.ProjectionClassEmbeddingsInputDim)
		}
	default:
		return cfgErr(path, "unet addition_embed_type %q is not supported (want text_time or none)", c.AdditionEmbedType)
	}
	return nil
}

func validateVAE(path string, c *nets.VAEConfig) error {
	n := len(c.BlockOutChannels)
	if err := checkChannels(path, "vae", c.BlockOutChannels, c.NormNumGroups); err != nil {
		return err
	}
	if len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n {
		return cfgErr(path, "vae has %d down_block_types and %d up_block_types for %d block_out_channels", len(c.DownBlockTypes), len(c.UpBlockTypes), n)
	}
	for i := range n {
		if c.DownBlockTypes[i] != "DownEncoderBlock2D" || c.UpBlockTypes[i] != "UpDecoderBlock2D" {
			return cfgErr(path, "vae block types %q/%q are not supported", c.DownBlockTypes[i], c.UpBlockTypes[i])
		}
	}
	checks := []struct {
		what      string
		v, lo, hi int
	}{
		{"vae layers_per_block", c.LayersPerBlock, 1, 16},
		{"vae in_channels", c.InChannels, 1, 1024},
		{"vae out_channels", c.OutChannels, 1, 1024},
		{"vae latent_channels", c.LatentChannels, 1, 1024},
		{"vae sample_size", c.SampleSize, 1, 1 << 16},
	}
	for _, k := range checks {
		if err := inRange(path, k.what, k.v, k.lo, k.hi); err != nil {
			return err
		}
	}
	if !(c.ScalingFactor > 0) || math.IsInf(c.ScalingFactor, 0) {
		return cfgErr(path, "vae scaling_factor = %g, want > 0", c.ScalingFactor)
	}
	if (c.LatentsMean == nil) != (c.LatentsStd == nil) ||
		(c.LatentsMean != nil && (len(c.LatentsMean) != c.LatentChannels || len(c.LatentsStd) != c.LatentChannels)) {
		return cfgErr(path, "vae latents_mean (%d values) and latents_std (%d values) must both be set, one per latent channel (%d)",
			len(c.LatentsMean), len(c.LatentsStd), c.LatentChannels)
	}
	for i, v := range c.LatentsStd {
		if !(v > 0) || math.IsInf(v, 0) || math.IsNaN(c.LatentsMean[i]) || math.IsInf(c.LatentsMean[i], 0) {
			return cfgErr(path, "vae latents_std[%d] = %g / latents_mean[%d] = %g: want a positive std and a finite mean", i, v, i, c.LatentsMean[i])
		}
	}
	return nil
}

func validateText(path, role string, c *nets.TextConfig) error {
	checks := []struct {
		what      string
		v, lo, hi int
	}{
		{role + " vocab_size", c.VocabSize, 1, 1 << 20},
		{role + " hidden_size", c.HiddenSize, 1, 1 << 14},
		{role + " intermediate_size", c.IntermediateSize, 1, 1 << 16},
		{role + " num_hidden_layers", c.NumHiddenLayers, 1, 256},
		{role + " num_attention_heads", c.NumAttentionHeads, 1, c.HiddenSize},
		{role + " max_position_embeddings", c.MaxPositionEmbeddings, 1, 1 << 16},
		{role + " projection_dim", c.ProjectionDim, 1, 1 << 14},
	}
	for _, k := range checks {
		if err := inRange(path, k.what, k.v, k.lo, k.hi); err != nil {
			return err
		}
	}
	if c.HiddenSize%c.NumAttentionHeads != 0 {
		return cfgErr(path, "%s hidden_size %d is not divisible by num_attention_heads %d", role, c.HiddenSize, c.NumAttentionHeads)
	}
	switch c.HiddenAct {
	case "quick_gelu", "gelu":
	default:
		return cfgErr(path, "%s hidden_act %q is not supported (want quick_gelu or gelu)", role, c.HiddenAct)
	}
	if !(c.LayerNormEps > 0 && c.LayerNormEps < 1) {
		return cfgErr(path, "%s layer_norm_eps = %g, want 0 < eps < 1", role, c.LayerNormEps)
	}
	return nil
}

func validateScheduler(path string, s *SchedulerConfig) error {
	if err := inRange(path, "scheduler num_train_timesteps", s.NumTrainTimesteps, 2, 100000); err != nil {
		return err
	}
	if s.ClassName == FlowMatchScheduler {
		// Rectified flow: no betas; the network predicts a velocity.
		s.PredictionType, s.TimestepSpacing = "flow", "linspace"
		if s.Shift == 0 {
			s.Shift = 1
		}
		if !(s.Shift > 0 && s.Shift < 1e6) {
			return cfgErr(path, "scheduler shift %g, want a positive number", s.Shift)
		}
		if s.UseDynamicShifting && (s.BaseImageSeqLen == s.MaxImageSeqLen || math.IsNaN(s.BaseShift) || math.IsNaN(s.MaxShift)) {
			return cfgErr(path, "scheduler use_dynamic_shifting with base_image_seq_len %d = max_image_seq_len %d (or shifts not numbers)", s.BaseImageSeqLen, s.MaxImageSeqLen)
		}
		return nil
	}
	switch s.BetaSchedule {
	case "linear", "scaled_linear":
		if !(s.BetaStart > 0 && s.BetaStart < s.BetaEnd && s.BetaEnd < 1) {
			return cfgErr(path, "scheduler betas %g..%g, want 0 < beta_start < beta_end < 1", s.BetaStart, s.BetaEnd)
		}
	case "squaredcos_cap_v2":
	default:
		if len(s.TrainedBetas) == 0 {
			return cfgErr(path, "scheduler beta_schedule %q is not supported", s.BetaSchedule)
		}
	}
	if len(s.TrainedBetas) > 0 {
		if len(s.TrainedBetas) != s.NumTrainTimesteps {
			return cfgErr(path, "scheduler has %d trained_betas for %d timesteps", len(s.TrainedBetas), s.NumTrainTimesteps)
		}
		for i, b := range s.TrainedBetas {
			if !(b > 0 && b < 1) {
				return cfgErr(path, "scheduler trained_betas[%d] = %g, want 0 < beta < 1", i, b)
			}
		}
	}
	if acp := finalAlphaCumprod(s); !(acp > 1e-12) {
		return cfgErr(path, "scheduler betas leave alphas_cumprod at %.3g by the last timestep: the noise level would be %.3g, not a usable schedule (is beta_end or a trained beta near 1?)",
			acp, math.Sqrt((1-acp)/acp))
	}
	switch s.PredictionType {
	case "epsilon", "v_prediction", "sample":
	default:
		return cfgErr(path, "scheduler prediction_type %q is not supported", s.PredictionType)
	}
	switch s.TimestepSpacing {
	case "leading", "trailing", "linspace":
	default:
		return cfgErr(path, "scheduler timestep_spacing %q is not supported", s.TimestepSpacing)
	}
	if err := inRange(path, "scheduler steps_offset", s.StepsOffset, 0, s.NumTrainTimesteps); err != nil {
		return err
	}
	return nil
}

// finalAlphaCumprod is the product of (1 - beta) over the schedule's betas.
func finalAlphaCumprod(s *SchedulerConfig) float64 {
	n := s.NumTrainTimesteps
	acp := 1.0
	if len(s.TrainedBetas) > 0 {
		for _, b := range s.TrainedBetas {
			acp *= 1 - b
		}
		return acp
	}
	for i := 0; i < n; i++ {
		f := float64(i) / float64(n-1)
		var b float64
		switch s.BetaSchedule {
		case "linear":
			b = s.BetaStart + f*(s.BetaEnd-s.BetaStart)
		case "scaled_linear":
			r := math.Sqrt(s.BetaStart) + f*(math.Sqrt(s.BetaEnd)-math.Sqrt(s.BetaStart))
			b = r * r
		default:
			return 1 // squaredcos_cap_v2 caps its betas at 0.999 by construction
		}
		acp *= 1 - b
	}
	return acp
}

// isLDMYAML reports whether a config path names a YAML file.
func isLDMYAML(path string) bool {
	p := strings.ToLower(path)
	return strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")
}
