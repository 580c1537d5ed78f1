package checkpoint

import "github.com/stepwise/stepwise/models/nets"

// Shorthands for tests written against the networks' declarations.
func ExpectedUNet(c nets.UNetConfig) map[string][]int { return nets.ExpectedUNet(c) }
func ExpectedVAE(c nets.VAEConfig) map[string][]int   { return nets.ExpectedVAE(c) }
func ExpectedText(c nets.TextConfig) map[string][]int { return nets.ExpectedText(c) }

// text1 is the first text encoder's config.
func (c configs) text1() nets.TextConfig { return c.Texts["text_encoder"] }

// Single-file prefixes of SD 1.x/2.x.
const (
	ldmUNet = "model.diffusion_model."
	ldmVAE  = "first_stage_model."
	ldmText = "cond_stage_model.transformer."
	ldmOpen = "cond_stage_model.model."
)
