package tui

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
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
