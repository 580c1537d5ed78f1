package main

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/presets"
)

// A --from PNG of an IF cascade gives back its stage II settings (what
// gen.IFInfotext writes); flags given win; a bad value is warned about.
func TestIFFromPNG(t *testing.T) {
	st := presets.Default()
	st.Prompt, st.NegativePrompt, st.Seed, st.Steps, st.CFGScale, st.Width, st.Height = "a horse", "blurry", 42, 10, 7, 16, 16
	text := gen.IFInfotext(st, &gen.IFUpscale{Steps: 12, CFG: 3.5, NoiseLevel: 100})
	s, unknown, err := presets.ParseInfotext(text)
	require.NoError(t, err)
	assert.Equal(t, "a horse", s.Prompt)
	assert.Equal(t, "blurry", s.NegativePrompt)
	assert.Equal(t, 10, s.Steps)
	assert.Equal(t, 16, s.Width)

	var f genFlags
	f.ifFlags = ifFlags{upscalerSteps: 50, upscalerCFG: 4, noiseLevel: 250}
	var warns []string
	warn := func(format string, a ...any) { warns = append(warns, fmt.Sprintf(format, a...)) }
	ifFromPNG(&f, map[string]bool{}, unknown, warn)
	assert.Equal(t, ifFlags{upscalerSteps: 12, upscalerCFG: 3.5, noiseLevel: 100}, f.ifFlags)
	assert.NotContains(t, unknown, "Noise level")
	assert.Empty(t, warns)

	f.ifFlags = ifFlags{upscalerSteps: 50, upscalerCFG: 4, noiseLevel: 250}
	ifFromPNG(&f, map[string]bool{"noise-level": true}, map[string]string{"Noise level": "100", "Upscaler steps": "x"}, warn)
	assert.Equal(t, ifFlags{upscalerSteps: 50, upscalerCFG: 4, noiseLevel: 250}, f.ifFlags)
	require.Len(t, warns, 1)
	assert.Contains(t, warns[0], "Upscaler steps")
}
