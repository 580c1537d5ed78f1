package tui

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/models/tokenizer"
	"github.com/stepwise/stepwise/presets"
)

// TestTraceShowsImagePrompt: a run with an IP-Adapter shows its image
// prompt and image tokens beside the text embeddings; a run without one
// does not.
func TestTraceShowsImagePrompt(t *testing.T) {
	s := presets.Default()
	s.Prompt = "a lighthouse"
	s.IPAdapter, s.IPAdapterImage, s.IPAdapterScale = "models/ip-adapter_sd15.safetensors", "refs/style.png", 0.6
	r := newRunRec(1, s, -1, 0)
	r.Status = runDone
	r.Shape = [4]int{1, 4, 8, 8}
	r.Timings = map[string]time.Duration{"image_encoder": 12 * time.Millisecond}
	m := &Model{model: &gen.Facts{Name: "mini", Tokenizer: tokenizer.Default(), TextHidden: 64, Downscale: 8}, runs: []*runRec{r}}
	view := traceView(m, 200, 60)
	emb := strings.Index(view, "embeddings")
	img := strings.Index(view, "image prompt")
	assert.Greater(t, img, emb, "the image prompt follows the text embeddings")
	assert.Contains(t, view, "style.png")
	assert.Contains(t, view, "ip-adapter_sd15.safetensors")
	assert.Contains(t, view, "12ms")
	assert.Contains(t, view, "adds 0.6 × attention")

	r.Settings.IPAdapter, r.Settings.IPAdapterImage = "", ""
	assert.NotContains(t, traceView(m, 200, 60), "image prompt")
}
