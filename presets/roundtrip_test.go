package presets

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPromptsTheInfotextCannotCarry: a prompt with a "Negative prompt:" line
// used to be written as is and read back split (prompt "red heart",
// negative "blue"), so --from made another image silently. Such settings
// are refused; what the format carries round-trips.
func TestPromptsTheInfotextCannotCarry(t *testing.T) {
	s := Default()
	s.Seed = 1
	for _, p := range [][2]string{
		{"red heart\nNegative prompt: blue", ""},
		{"red heart\nNegative prompt: blue", "green"},
		{"Negative prompt: all of it", ""},
	} {
		s.Prompt, s.NegativePrompt = p[0], p[1]
		err := s.Validate()
		require.Error(t, err, "%q", p)
		assert.Contains(t, err.Error(), `prompt: a line starts with "Negative prompt:"`)
	}
	for _, p := range [][2]string{
		{"red heart", ""},
		{"red heart\nblue sky", "ugly\nNegative prompt: twice"},
		{"", "only negative"},
		{"  spaced  prompt \n", " neg "},
		{"a: b, c", "x\nSteps: 20, Sampler: Euler, Seed: 1, CFG scale: 7, Size: 512x512"},
	} {
		s.Prompt, s.NegativePrompt = p[0], p[1]
		require.NoError(t, s.Validate(), "%q", p)
		back, _, err := ParseInfotext(s.Infotext())
		require.NoError(t, err)
		assert.Equal(t, strings.Join(strings.Fields(p[0]), " "), strings.Join(strings.Fields(back.Prompt), " "))
		assert.Equal(t, strings.Join(strings.Fields(p[1]), " "), strings.Join(strings.Fields(back.NegativePrompt), " "))
	}
}

// TestFieldLabels: messages name fields in words, not "cFGScale" or "rNG".
func TestFieldLabels(t *testing.T) {
	s := Default()
	s.CFGScale, s.RNG, s.ClipSkip, s.GuidanceRescale = -1, "gpu", 0, 2
	err := s.Validate()
	require.Error(t, err)
	for _, want := range []string{"cfg scale: -1 is outside", `rng: "gpu" is not one of`, "clip skip: 0 is outside", "guidance rescale: 2 is outside"} {
		assert.Contains(t, err.Error(), want)
	}
	assert.NotContains(t, err.Error(), "cFG")
	assert.NotContains(t, err.Error(), "rNG")
}

// TestInfotextErrorsAreShort: a bad value megabytes long is not echoed.
func TestInfotextErrorsAreShort(t *testing.T) {
	text := "cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: " + strings.Repeat("9", 2<<20)
	_, _, err := ParseInfotext(text)
	require.Error(t, err)
	assert.Less(t, len(err.Error()), 300, "the error echoes the text")
	assert.Contains(t, err.Error(), "(2097152 bytes)")
}
