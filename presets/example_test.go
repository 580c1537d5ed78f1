package presets_test

import (
	"fmt"

	"github.com/stepwise/stepwise/presets"
)

func ExampleSettings_Infotext() {
	s := presets.Default()
	s.Prompt = "a lighthouse at dusk, oil painting"
	s.NegativePrompt = "blurry"
	s.Sampler, s.Schedule, s.Steps, s.Seed = "dpmpp_2m", "karras", 25, 1234
	fmt.Println(s.Infotext())
	// Output:
	// a lighthouse at dusk, oil painting
	// Negative prompt: blurry
	// Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x512, RNG: CPU
}

func ExampleParseInfotext() {
	s, unknown, err := presets.ParseInfotext("a red fox\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 512x768, Hires upscale: 2")
	fmt.Println(s.Sampler, s.Schedule, s.Steps, s.CFGScale, s.Seed, s.Width, s.Height, unknown, err)
	// Output: DPM++ 2M karras 30 7.5 42 512 768 map[Hires upscale:2] <nil>
}
