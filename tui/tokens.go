package tui

import (
	"fmt"

	"github.com/stepwise/stepwise/models/tokenizer"
)

// tokenCounter caches the token counts of the prompts last counted.
type tokenCounter struct {
	text  [2]string
	count [2]string
	over  [2]bool
	tok   *tokenizer.Tokenizer
	t5    *tokenizer.Unigram
}

// countTokens sets the editor's token counts beside the prompts. Models
// with one kind of text encoder get A1111's count: the tokens the prompt
// takes (its weighting syntax and <lora:...> tags left out) over the
// 75-token chunks it needs, "12/75", "80/150". Models with CLIP and T5
// (SD3, Flux) truncate each encoder's tokens instead of chunking, so each
// gets its count and limit, "CLIP 12/75 · T5 14/256" (T5's count holds
// its </s>), flagged when a prompt is cut. Only prompts that changed are
// counted again.
func (m *Model) countTokens() {
	if m.model == nil || m.model.Tokenizer == nil {
		m.ed.tokenCount, m.ed.tokenOver = [2]string{}, [2]bool{}
		return
	}
	tc := &m.tokens
	if tc.tok != m.model.Tokenizer || tc.t5 != m.model.T5Tokenizer {
		*tc = tokenCounter{tok: m.model.Tokenizer, t5: m.model.T5Tokenizer}
	}
	for i, t := range []*textEdit{m.ed.prompt, m.ed.negative} {
		v := t.Value()
		if v == tc.text[i] && tc.count[i] != "" {
			continue
		}
		tc.text[i] = v
		tc.count[i], tc.over[i] = countOne(tc, v, m.model.MaxSequenceLength)
	}
	m.ed.tokenCount, m.ed.tokenOver = tc.count, tc.over
}

// countOne is the count shown for one prompt and whether it is cut.
func countOne(tc *tokenCounter, v string, t5Max int) (string, bool) {
	if tc.t5 != nil {
		clip := len(tc.tok.Encode(v))
		t5 := len(tc.t5.Encode(v)) + 1
		return fmt.Sprintf(" CLIP %d/%d · T5 %d/%d", clip, tokenizer.MaxTokens, t5, t5Max),
			clip > tokenizer.MaxTokens || t5 > t5Max
	}
	text, _ := tokenizer.ExtraNetworks(v)
	enc, err := tc.tok.EncodeWeighted(text)
	if err != nil {
		return " ?/75", false
	}
	chunks := max(1, (enc.TokenCount+tokenizer.MaxTokens-1)/tokenizer.MaxTokens)
	return fmt.Sprintf(" %d/%d", enc.TokenCount, chunks*tokenizer.MaxTokens), false
}
