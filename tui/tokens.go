package tui

import (
	"fmt"

	"github.com/stepwise/stepwise/models/tokenizer"
)

// tokenCounter caches the token counts of the prompts last counted.
type tokenCounter struct {
	text  [2]string
	count [2]string
	tok   *tokenizer.Tokenizer
}

// countTokens sets the editor's token counts as A1111 shows them beside
// its prompts: the tokens the prompt takes (its weighting syntax and
// <lora:...> tags left out) over the 75-token chunks it needs, "12/75",
// "80/150". Only prompts that changed are counted again.
func (m *Model) countTokens() {
	if m.model == nil || m.model.Tokenizer == nil {
		m.ed.tokenCount = [2]string{}
		return
	}
	tc := &m.tokens
	if tc.tok != m.model.Tokenizer {
		*tc = tokenCounter{tok: m.model.Tokenizer}
	}
	for i, t := range []*textEdit{m.ed.prompt, m.ed.negative} {
		v := t.Value()
		if v == tc.text[i] && tc.count[i] != "" {
			continue
		}
		tc.text[i], tc.count[i] = v, ""
		text, _ := tokenizer.ExtraNetworks(v)
		enc, err := tc.tok.EncodeWeighted(text)
		if err != nil {
			tc.count[i] = " ?/75"
			continue
		}
		chunks := max(1, (enc.TokenCount+tokenizer.MaxTokens-1)/tokenizer.MaxTokens)
		tc.count[i] = fmt.Sprintf(" %d/%d", enc.TokenCount, chunks*tokenizer.MaxTokens)
	}
	m.ed.tokenCount = tc.count
}
