package tokenizer

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExtraNetworks(t *testing.T) {
	rest, tags := ExtraNetworks("a cat <lora:cat v2:0.8>, (red:1.2) <lyco:x:te=0.5:1> <|endoftext|> <lora:a:b=c=d>")
	assert.Equal(t, "a cat , (red:1.2)  <|endoftext|> ", rest)
	require.Len(t, tags, 3)
	assert.Equal(t, "lora", tags[0].Kind)
	assert.Equal(t, []string{"cat v2", "0.8"}, tags[0].Items)
	assert.Equal(t, []string{"x", "1"}, tags[1].Positional())
	assert.Equal(t, map[string]string{"te": "0.5"}, tags[1].Named())
	assert.Equal(t, []string{"a", "b=c=d"}, tags[2].Positional(), "two '=' is positional, as A1111 splits")

	// The tags never reach the tokenizer.
	frags, err := ParseWeights("a <lora:x:1>(b:1.2)")
	require.NoError(t, err)
	assert.Equal(t, []Fragment{{Text: "a ", Weight: 1}, {Text: "b", Weight: 1.2}}, frags)
	tok := Default()
	with, err := tok.EncodeWeighted("a photo <lora:x:0.5> of a cat")
	require.NoError(t, err)
	without, err := tok.EncodeWeighted("a photo of a cat")
	require.NoError(t, err)
	assert.Equal(t, without.Chunks, with.Chunks)
}
