package tui

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
)

// A1111's token counter beside the prompts: tokens over the 75-token
// chunks needed; weights and LoRA tags are not tokens.
func TestTokenCounter(t *testing.T) {
	h := newMini(t)
	h.setField(focusPrompt, "a red fox")
	h.setField(focusNegative, "(blurry:1.3) <lora:x:1>")
	h.mustView("Prompt     3/75", "Negative   1/75")
	h.setField(focusPrompt, strings.TrimSpace(strings.Repeat("fox ", 80)))
	h.mustView("Prompt     80/150")
	assert.Equal(t, " 80/150", h.m.ed.tokenCount[0])
}

// SD3 (CLIP and T5) counts each encoder's tokens against its own limit,
// as the pipeline truncates them: CLIP's between BOS and EOS, T5's with
// </s>, both read from diffusers' ids in the golden; a prompt past CLIP's
// 75 is flagged as cut.
func TestTokenCounterPerEncoder(t *testing.T) {
	w3 := golden.Wave(t, "golden-wave3")
	g := golden.Open(t, filepath.Join(w3, "sd3_text_encoders.safetensors"))
	clipIDs, t5IDs := g.I64("input_ids"), g.I64("input_ids_3")
	clip := 0
	for _, id := range clipIDs[1:77] { // after BOS, up to EOS
		if id == 49407 {
			break
		}
		clip++
	}
	t5 := 0
	for _, id := range t5IDs[:256] {
		if id != 0 {
			t5++
		}
	}
	require.Equal(t, 8, clip)
	s := testSettings()
	s.Steps, s.CFGScale = 4, 7
	h := newHarness(t, s, folderLoad(t, "sd3-mini"))
	require.NotNil(t, h.m.model, h.m.status)
	h.setField(focusPrompt, "a photograph of an astronaut riding a horse")
	want := fmt.Sprintf(" CLIP %d/75 · T5 %d/256", clip, t5)
	h.mustView("Prompt    " + want)
	assert.Equal(t, want, h.m.ed.tokenCount[0])
	assert.False(t, h.m.ed.tokenOver[0])
	h.setField(focusPrompt, strings.TrimSpace(strings.Repeat("fox ", 80)))
	h.mustView("(cut)")
	assert.True(t, strings.HasPrefix(h.m.ed.tokenCount[0], " CLIP 80/75 · T5 "), h.m.ed.tokenCount[0])
	assert.True(t, h.m.ed.tokenOver[0])
}
