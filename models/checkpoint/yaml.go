package checkpoint

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/stepwise/stepwise/models/nets"
)

// yamlInts accepts a YAML int or a list of ints.
type yamlInts []int

func (v *yamlInts) UnmarshalYAML(n *yaml.Node) error {
	var one int
	if err := n.Decode(&one); err == nil {
		*v = yamlInts{one}
		return nil
	}
	var many []int
	if err := n.Decode(&many); err != nil {
		return fmt.Errorf("line %d: want an int or a list of ints", n.Line)
	}
	*v = many
	return nil
}

// ldmYAML is the part of an original (CompVis/Stability) inference config
// such as v1-inference.yaml that determines the network shapes.
type ldmYAML struct {
	Model struct {
		Target string `yaml:"target"`
		Params struct {
			LinearStart      float64 `yaml:"linear_start"`
			LinearEnd        float64 `yaml:"linear_end"`
			Timesteps        int     `yaml:"timesteps"`
			Parameterization string  `yaml:"parameterization"`
			ScaleFactor      float64 `yaml:"scale_factor"`
			UNetConfig       struct {
				Params struct {
					InChannels             int      `yaml:"in_channels"`
					OutChannels            int      `yaml:"out_channels"`
					ModelChannels          int      `yaml:"model_channels"`
					AttentionResolutions   []int    `yaml:"attention_resolutions"`
					NumResBlocks           int      `yaml:"num_res_blocks"`
					ChannelMult            []int    `yaml:"channel_mult"`
					NumHeads               int      `yaml:"num_heads"`
					NumHeadChannels        int      `yaml:"num_head_channels"`
					ContextDim             int      `yaml:"context_dim"`
					UseLinearInTransformer bool     `yaml:"use_linear_in_transformer"`
					TransformerDepth       yamlInts `yaml:"transformer_depth"`
				} `yaml:"params"`
			} `yaml:"unet_config"`
			FirstStageConfig struct {
				Params struct {
					EmbedDim int `yaml:"embed_dim"`
					DDConfig struct {
						ZChannels    int   `yaml:"z_channels"`
						InChannels   int   `yaml:"in_channels"`
						OutCh        int   `yaml:"out_ch"`
						Ch           int   `yaml:"ch"`
						ChMult       []int `yaml:"ch_mult"`
						NumResBlocks int   `yaml:"num_res_blocks"`
					} `yaml:"ddconfig"`
				} `yaml:"params"`
			} `yaml:"first_stage_config"`
			CondStageConfig struct {
				Target string `yaml:"target"`
				Params struct {
					Layer string `yaml:"layer"`
				} `yaml:"params"`
			} `yaml:"cond_stage_config"`
		} `yaml:"params"`
	} `yaml:"model"`
}

// parseLDMYAML converts an original LDM inference config into diffusers
// configs, the way diffusers' single-file loader does.
func parseLDMYAML(path string, data []byte) (configs, error) {
	c := newConfigs()
	if len(data) > maxConfigSize {
		return c, cfgErr(path, "%d bytes is larger than the %d-byte limit", len(data), maxConfigSize)
	}
	var y ldmYAML
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&y); err != nil {
		if errors.Is(err, io.EOF) {
			return c, cfgErr(path, "empty YAML document")
		}
		return c, cfgErr(path, "%v", err)
	}
	p := y.Model.Params
	u := p.UNetConfig.Params
	if u.ModelChannels == 0 || len(u.ChannelMult) == 0 {
		return c, cfgErr(path, "model.params.unet_config.params needs model_channels and channel_mult")
	}
	if err := inRange(path, "unet channel_mult levels", len(u.ChannelMult), 1, 8); err != nil {
		return c, err
	}
	if err := inRange(path, "unet model_channels", u.ModelChannels, 1, 1<<14); err != nil {
		return c, err
	}
	attnAt := map[int]bool{}
	for _, r := range u.AttentionResolutions {
		attnAt[r] = true
	}
	n := len(u.ChannelMult)
	uc := &c.UNet
	uc.InChannels = u.InChannels
	uc.OutChannels = u.OutChannels
	uc.LayersPerBlock = u.NumResBlocks
	uc.CrossAttentionDim = u.ContextDim
	uc.UseLinearProjection = u.UseLinearInTransformer
	uc.TransformerLayers = nets.IntOrList(u.TransformerDepth)
	uc.DownBlockTypes = make([]string, n)
	uc.UpBlockTypes = make([]string, n)
	for i, m := range u.ChannelMult {
		if err := inRange(path, fmt.Sprintf("unet channel_mult[%d]", i), m, 1, 64); err != nil {
			return c, err
		}
		ch := u.ModelChannels * m
		uc.BlockOutChannels = append(uc.BlockOutChannels, ch)
		uc.DownBlockTypes[i] = "DownBlock2D"
		uc.UpBlockTypes[n-1-i] = "UpBlock2D"
		if attnAt[1<<i] {
			uc.DownBlockTypes[i] = "CrossAttnDownBlock2D"
			uc.UpBlockTypes[n-1-i] = "CrossAttnUpBlock2D"
		}
		switch {
		case u.NumHeadChannels > 0:
			uc.AttentionHeadDim = append(uc.AttentionHeadDim, ch/u.NumHeadChannels)
		case u.NumHeads > 0:
			uc.AttentionHeadDim = append(uc.AttentionHeadDim, u.NumHeads)
		default:
			return c, cfgErr(path, "unet_config needs num_heads or num_head_channels")
		}
	}

	dd := p.FirstStageConfig.Params.DDConfig
	vc := &c.VAE
	vc.InChannels = dd.InChannels
	vc.OutChannels = dd.OutCh
	vc.LayersPerBlock = dd.NumResBlocks
	vc.LatentChannels = p.FirstStageConfig.Params.EmbedDim
	if vc.LatentChannels == 0 {
		vc.LatentChannels = dd.ZChannels
	}
	vc.ScalingFactor = p.ScaleFactor
	if dd.Ch > 0 && len(dd.ChMult) > 0 {
		if err := inRange(path, "vae ch_mult levels", len(dd.ChMult), 1, 8); err != nil {
			return c, err
		}
		for i, m := range dd.ChMult {
			if err := inRange(path, fmt.Sprintf("vae ch_mult[%d]", i), m, 1, 64); err != nil {
				return c, err
			}
			vc.BlockOutChannels = append(vc.BlockOutChannels, dd.Ch*m)
		}
	}

	// LDM's Normalize always uses 32 groups; narrower test models get the
	// largest power of two up to 32 that divides their widths.
	uc.NormNumGroups = groupsFor(uc.BlockOutChannels)
	if len(vc.BlockOutChannels) > 0 {
		vc.NormNumGroups = groupsFor(vc.BlockOutChannels)
	}

	target := p.CondStageConfig.Target
	switch {
	case target == "" || strings.HasSuffix(target, ".FrozenCLIPEmbedder"):
		// SD 1.x: CLIP ViT-L/14 (the TextConfig defaults) unless the
		// checkpoint's shapes say otherwise.
		c.textFromShapes = true
		c.family = FamilyNamed("SD 1.x")
	case strings.HasSuffix(target, ".FrozenOpenCLIPEmbedder"):
		c.Texts["text_encoder"] = openCLIPH(p.CondStageConfig.Params.Layer != "last")
		c.family = FamilyNamed("SD 2.x")
	default:
		return c, cfgErr(path, "cond_stage_config target %q is not supported (want FrozenCLIPEmbedder or FrozenOpenCLIPEmbedder)", target)
	}

	s := &c.Scheduler
	if p.Timesteps > 0 {
		s.NumTrainTimesteps = p.Timesteps
	}
	if p.LinearStart > 0 {
		s.BetaStart = p.LinearStart
	}
	if p.LinearEnd > 0 {
		s.BetaEnd = p.LinearEnd
	}
	switch p.Parameterization {
	case "", "eps":
	case "v":
		s.PredictionType = "v_prediction"
		uc.SampleSize = 96 // SD 2.x v-models are 768x768
	case "x0":
		s.PredictionType = "sample"
	default:
		return c, cfgErr(path, "parameterization %q is not supported", p.Parameterization)
	}
	return c, c.validate(path)
}

// openCLIPH is the text encoder of SD 2.x (OpenCLIP ViT-H/14) as diffusers
// converts it: with the penultimate layer as output, 23 of its 24 layers.
func openCLIPH(penultimate bool) nets.TextConfig {
	layers := 24
	if penultimate {
		layers = 23
	}
	return nets.TextConfig{
		VocabSize: 49408, HiddenSize: 1024, IntermediateSize: 4096, ProjectionDim: 512,
		NumHiddenLayers: layers, NumAttentionHeads: 16, MaxPositionEmbeddings: 77,
		HiddenAct: "gelu", LayerNormEps: 1e-5,
	}
}
