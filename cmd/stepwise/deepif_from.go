package main

import (
	"strconv"
)

// ifFromPNG applies the stage II settings a --from PNG of a DeepFloyd IF
// cascade records ("Upscaler steps", "Upscaler CFG scale", "Noise level",
// as gen.IFInfotext writes them) unless their flags were given; a value
// that does not parse is warned about and left out.
func ifFromPNG(f *genFlags, set map[string]bool, unknown map[string]string, warn func(string, ...any)) {
	for _, k := range []struct {
		key, flag string
		apply     func(string) error
	}{
		{"Upscaler steps", "upscaler-steps", func(v string) (err error) { f.ifFlags.upscalerSteps, err = strconv.Atoi(v); return }},
		{"Upscaler CFG scale", "upscaler-cfg-scale", func(v string) (err error) {
			f.ifFlags.upscalerCFG, err = strconv.ParseFloat(v, 64)
			return
		}},
		{"Noise level", "noise-level", func(v string) (err error) { f.ifFlags.noiseLevel, err = strconv.Atoi(v); return }},
	} {
		v, ok := unknown[k.key]
		if !ok {
			continue
		}
		delete(unknown, k.key)
		if set[k.flag] {
			continue
		}
		old := f.ifFlags
		if err := k.apply(v); err != nil {
			f.ifFlags = old
			warn("%s: %q is not a number; using --%s's value", k.key, v, k.flag)
		}
	}
}
