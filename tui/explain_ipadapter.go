package tui

import (
	"fmt"
	"path/filepath"

	"github.com/stepwise/stepwise/presets"
)

// traceImagePrompt adds an IP-Adapter's image prompt to the pipeline
// trace, beside the text embeddings: the reference image, the vision
// encoder and projection, and the image tokens every cross-attention
// layer attends to.
func traceImagePrompt(s presets.Settings, stage func(name, shape, detail string), arrow func(op, t string), tm func(string) string) {
	if s.IPAdapter == "" {
		return
	}
	stage("image prompt", oneLine(filepath.Base(s.IPAdapterImage)), "reference image for the IP-Adapter "+oneLine(filepath.Base(s.IPAdapter)))
	arrow("CLIP vision encoder → image_embeds → image projection", tm("image_encoder"))
	stage("image tokens", "×2", fmt.Sprintf("the image's + zeros' (negative row); each cross-attention adds %s × attention to them beside the text tokens",
		formatFloat(s.IPAdapterScale)))
}
