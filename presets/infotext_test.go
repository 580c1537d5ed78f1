package presets

import (
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestInfotextExactFormat(t *testing.T) {
	s := Default()
	s.Prompt = "a photograph of an astronaut riding a horse"
	s.NegativePrompt = "low quality, blurry, watermark"
	s.Steps, s.CFGScale, s.Sampler, s.Schedule = 20, 7.5, "DPM++ 2M", "karras"
	s.Seed, s.Width, s.Height, s.ClipSkip = 42, 64, 64, 2
	s.Model, s.ModelHash = "sd15-mini", "abcdef1234"
	want := "a photograph of an astronaut riding a horse\n" +
		"Negative prompt: low quality, blurry, watermark\n" +
		"Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 64x64, Model hash: abcdef1234, Model: sd15-mini, Clip skip: 2, RNG: CPU"
	require.Equal(t, want, s.Infotext(), "Infotext")

	// No negative prompt: the line is omitted; philox is "NV"; a value with
	// ',' or ':' is JSON-quoted; extras come last.
	s.NegativePrompt, s.RNG, s.ClipSkip, s.ModelHash = "", RNGPhilox, 1, ""
	s.Model = `my, "best": model`
	s.Schedule, s.Sampler, s.CFGScale = "", "euler_ancestral", 7
	want = "a photograph of an astronaut riding a horse\n" +
		`Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 42, Size: 64x64, Model: "my, \"best\": model", RNG: NV, Batch pos: 1`
	require.Equal(t, want, s.InfotextWith(Param{"Batch pos", "1"}), "Infotext")

	// An extra that repeats a key replaces it in place.
	s.Batch = 2
	got := s.InfotextWith(Param{"Batch size", "2"}, Param{"Batch pos", "1"}, Param{"Seed", "43"})
	require.Equal(t, 1, strings.Count(got, "Batch size"), "duplicate keys: %s", got)
	require.Contains(t, got, "Seed: 43, Size", "duplicate keys")
	require.True(t, strings.HasSuffix(got, "RNG: NV, Batch size: 2, Batch pos: 1"), "duplicate keys: %s", got)
}

func TestInfotextRoundTrip(t *testing.T) {
	base := Default()
	base.Prompt = "a castle on a hill, (golden hour:1.2)\nsecond line: with a colon\n\nafter a blank line"
	base.NegativePrompt = "blurry, lowres\nbad hands"
	base.Seed = 3141592653
	base.Model = "v1-5-pruned-emaonly"
	base.ModelHash = "6ce0161689"
	var cases []Settings
	for _, sched := range Schedules {
		s := base
		s.Schedule = sched
		cases = append(cases, s)
	}
	for _, name := range []string{"Euler a", "DPM++ 2M SDE", "DDIM", "UniPC", "LMS", "Heun"} {
		s := base
		s.Sampler = name
		cases = append(cases, s)
	}
	s := base
	s.Eta, s.GuidanceRescale, s.Batch, s.ClipSkip, s.RNG = Float(0.25), 0.7, 4, 2, RNGPhilox
	s.CFGScale, s.Width, s.Height, s.Steps = 12.25, 768, 1024, 150
	cases = append(cases, s)
	s = base
	s.Prompt, s.NegativePrompt, s.Model, s.ModelHash = "", "", "", ""
	cases = append(cases, s)
	s = base
	s.Prompt = `she said "hello", twice`
	s.Model = `odd "model", name: v2`
	cases = append(cases, s)

	for i, s := range cases {
		text := s.Infotext()
		got, unknown, err := ParseInfotext(text)
		require.NoError(t, err, "case %d: ParseInfotext(%q)", i, text)
		assert.Empty(t, unknown, "case %d: unknown keys", i)
		assert.Equal(t, s, got, "case %d: round trip of\n%s", i, text)
	}
}

// Sample texts in the formats A1111 (several versions), Civitai and ComfyUI
// A1111-style save nodes write.
func TestParseInfotextSamples(t *testing.T) {
	type want struct {
		prompt, neg       string
		steps             int
		cfg               float64
		sampler, schedule string
		seed              int64
		w, h, clip        int
		rng, model, hash  string
		loras             string
		unknown           map[string]string
	}
	cases := []struct {
		name, text string
		want       want
	}{{
		name: "A1111 2022",
		text: "girl with an artist's beret, determined, blue eyes, desert scene\nNegative prompt: ugly, fat, obese, (((deformed))), [blurry]\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b",
		want: want{prompt: "girl with an artist's beret, determined, blue eyes, desert scene", neg: "ugly, fat, obese, (((deformed))), [blurry]",
			steps: 20, cfg: 7, sampler: "Euler a", seed: 965400086, w: 512, h: 512, clip: 1, rng: RNGPhilox, hash: "45dee52b", unknown: map[string]string{}},
	}, {
		name: "A1111 1.6 old-style sampler with schedule",
		text: "portrait of an old fisherman, detailed skin\r\nNegative prompt: cartoon\r\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1234567890, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, RNG: CPU, Version: v1.6.0\r\n",
		want: want{prompt: "portrait of an old fisherman, detailed skin", neg: "cartoon", steps: 30, cfg: 7.5, sampler: "DPM++ 2M", schedule: "karras",
			seed: 1234567890, w: 512, h: 768, clip: 2, rng: RNGTorchCPU, model: "v1-5-pruned-emaonly", hash: "6ce0161689",
			unknown: map[string]string{"Version": "v1.6.0"}},
	}, {
		name: "A1111 1.10 hires, loras, multi-line prompt",
		text: "masterpiece, best quality, 1girl,\n(watercolor:1.2), looking at viewer\nNegative prompt: (worst quality, low quality:1.4), EasyNegative\nSteps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, Size: 512x768, Model hash: 7f96a1a9ca, Model: anything-v5, Denoising strength: 0.45, Clip skip: 2, Hires upscale: 2, Hires steps: 10, Hires upscaler: R-ESRGAN 4x+ Anime6B, Lora hashes: \"add_detail: 7c6bad76eb54, more_details: 3b8aa1d351ef\", TI hashes: \"EasyNegative: c74b4e810b03\", RNG: NV, Version: v1.10.1",
		want: want{prompt: "masterpiece, best quality, 1girl,\n(watercolor:1.2), looking at viewer", neg: "(worst quality, low quality:1.4), EasyNegative",
			steps: 25, cfg: 6.5, sampler: "DPM++ 2M", schedule: "karras", seed: 3141592653, w: 512, h: 768, clip: 2, rng: RNGPhilox,
			model: "anything-v5", hash: "7f96a1a9ca", loras: "add_detail: 7c6bad76eb54, more_details: 3b8aa1d351ef", unknown: map[string]string{
				"Denoising strength": "0.45", "Hires upscale": "2", "Hires steps": "10", "Hires upscaler": "R-ESRGAN 4x+ Anime6B",
				"TI hashes": "EasyNegative: c74b4e810b03", "Version": "v1.10.1"}},
	}, {
		name: "A1111 1.10 automatic schedule, no negative",
		text: "a red fox in the snow\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 7, Size: 640x448, Model hash: e6bb9ea85b, Model: sd_xl_base_1.0, Version: v1.10.1",
		want: want{prompt: "a red fox in the snow", steps: 20, cfg: 7, sampler: "Euler a", seed: 7, w: 640, h: 448, clip: 1, rng: RNGPhilox,
			model: "sd_xl_base_1.0", hash: "e6bb9ea85b", unknown: map[string]string{"Version": "v1.10.1"}},
	}, {
		name: "Civitai with unquoted JSON",
		text: "a cozy cabin in the woods, snow\nNegative prompt: blurry\nSteps: 30, CFG scale: 5, Sampler: DPM++ 2M Karras, Seed: 987654321, Size: 832x1216, Clip skip: 2, Created Date: 2024-05-01T12:34:56.7890123Z, Civitai resources: [{\"type\":\"checkpoint\",\"modelVersionId\":128713,\"modelName\":\"DreamShaper\",\"modelVersionName\":\"8\"}, {\"type\":\"lora\",\"weight\":0.8}], Civitai metadata: {}",
		want: want{prompt: "a cozy cabin in the woods, snow", neg: "blurry", steps: 30, cfg: 5, sampler: "DPM++ 2M", schedule: "karras",
			seed: 987654321, w: 832, h: 1216, clip: 2, rng: RNGPhilox, unknown: map[string]string{
				"Created Date":      "2024-05-01T12:34:56.7890123Z",
				"Civitai resources": `[{"type":"checkpoint","modelVersionId":128713,"modelName":"DreamShaper","modelVersionName":"8"}, {"type":"lora","weight":0.8}]`,
				"Civitai metadata":  "{}"}},
	}, {
		name: "ComfyUI image saver",
		text: "cyberpunk street at night, neon\nNegative prompt: text, watermark\nSteps: 20, Sampler: euler_ancestral_karras, CFG scale: 8.0, Seed: 156680208700286, Size: 512x512, Model hash: abcdef1234, Model: dreamshaper_8, Version: ComfyUI",
		want: want{prompt: "cyberpunk street at night, neon", neg: "text, watermark", steps: 20, cfg: 8, sampler: "Euler a", schedule: "karras",
			seed: 156680208700286, w: 512, h: 512, clip: 1, rng: RNGPhilox, model: "dreamshaper_8", hash: "abcdef1234",
			unknown: map[string]string{"Version": "ComfyUI"}},
	}, {
		name: "ComfyUI sampler and scheduler with space, SGM",
		text: "a bowl of fruit\nSteps: 12, Sampler: dpmpp_2m sgm_uniform, CFG scale: 4.5, Seed: 1, Size: 1024x1024",
		want: want{prompt: "a bowl of fruit", steps: 12, cfg: 4.5, sampler: "DPM++ 2M", schedule: "sgm_uniform", seed: 1,
			w: 1024, h: 1024, clip: 1, rng: RNGPhilox, unknown: map[string]string{}},
	}, {
		name: "unknown schedule kept",
		text: "x\nSteps: 10, Sampler: Euler, Schedule type: Align Your Steps, CFG scale: 3, Seed: 5, Size: 512x512",
		want: want{prompt: "x", steps: 10, cfg: 3, sampler: "Euler", seed: 5, w: 512, h: 512, clip: 1, rng: RNGPhilox,
			unknown: map[string]string{"Schedule type": "Align Your Steps"}},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, unknown, err := ParseInfotext(c.text)
			require.NoError(t, err)
			w := c.want
			got := want{s.Prompt, s.NegativePrompt, s.Steps, s.CFGScale, s.Sampler, s.Schedule, s.Seed, s.Width, s.Height,
				s.ClipSkip, s.RNG, s.Model, s.ModelHash, s.LoraHashes, unknown}
			assert.Equal(t, w, got)
		})
	}
}

func TestParseInfotextErrors(t *testing.T) {
	cases := []struct {
		text      string
		noLine    bool
		missing   []string
		badPrefix string
	}{
		{text: "", noLine: true},
		{text: "just a prompt, with commas, and more commas", noLine: true},
		{text: "cat:1.2, dog:0.5, bird:0.7", noLine: true}, // weights, not parameters
		{text: "p\nSteps: 20, Sampler: Euler, CFG scale: 7, Size: 512x512", missing: []string{"Seed"}},
		{text: "p\nSteps: many, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512", badPrefix: `Steps: "many"`},
		{text: "p\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512 by 512", badPrefix: `Size: "512 by 512"`},
		{text: "p\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, RNG: quantum", badPrefix: `RNG: "quantum"`},
	}
	for _, c := range cases {
		_, _, err := ParseInfotext(c.text)
		var ie *InfotextError
		if !assert.ErrorAs(t, err, &ie, "%q: want *InfotextError", c.text) {
			continue
		}
		assert.Equal(t, c.noLine, ie.NoLine, "%q: NoLine (%v)", c.text, err)
		assert.Equal(t, c.missing, ie.Missing, "%q: Missing (%v)", c.text, err)
		if c.badPrefix != "" && assert.Len(t, ie.Bad, 1, "%q: Bad (%v)", c.text, err) {
			assert.True(t, strings.HasPrefix(ie.Bad[0], c.badPrefix), "%q: Bad[0] = %q, want prefix %q", c.text, ie.Bad[0], c.badPrefix)
		}
	}
}

func TestSamplerLabelAndSchedule(t *testing.T) {
	for in, want := range map[string]string{"euler": "Euler", "k_euler_a": "Euler a", "DPM++  2M": "DPM++ 2M", "dpmpp_2m_sde": "DPM++ 2M SDE", "uni_pc": "UniPC"} {
		got, ok := SamplerLabel(in)
		assert.True(t, ok, "SamplerLabel(%q) not known", in)
		assert.Equal(t, want, got, "SamplerLabel(%q)", in)
	}
	_, ok := SamplerLabel("warp drive")
	assert.False(t, ok, "unknown sampler reported known")
	for in, want := range map[string]string{"Karras": "karras", "SGM Uniform": "sgm_uniform", "DDIM": "ddim_uniform", "Uniform": "normal", "Linspace": "linspace", "Automatic": "", "trailing": "trailing"} {
		got, ok := ScheduleFromLabel(in)
		assert.True(t, ok, "ScheduleFromLabel(%q) not known", in)
		assert.Equal(t, want, got, "ScheduleFromLabel(%q)", in)
	}
}

func TestValidate(t *testing.T) {
	require.NoError(t, Default().Validate(), "Default invalid")
	s := Default()
	s.Width, s.Height, s.Steps, s.Batch, s.ClipSkip, s.RNG, s.Schedule = 100, 8192, 0, 65, 0, "dice", "weird"
	s.CFGScale = nanValue()
	err := s.Validate()
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		require.ErrorAs(t, e, &fe, "not a FieldError")
		fields = append(fields, fe.Field)
	}
	want := []string{"Width", "Height", "Steps", "CFGScale", "Batch", "ClipSkip", "RNG", "Schedule"}
	require.Equal(t, want, fields, "fields\n%v", err)
	assert.ErrorContains(t, err, "width: 100 is not a multiple of 8", "message")
}

func nanValue() float64 {
	z := 0.0
	return z / z
}

func FuzzParseInfotext(f *testing.F) {
	s := Default()
	s.Prompt, s.NegativePrompt, s.Seed = "a cat, sitting", "dog", 42
	f.Add(s.Infotext())
	f.Add("p\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512, Lora hashes: \"a: 1, b: 2\"")
	f.Fuzz(func(t *testing.T, text string) {
		s, unknown, err := ParseInfotext(text)
		require.NotNil(t, unknown, "nil unknown map")
		if err != nil {
			var ie *InfotextError
			require.ErrorAs(t, err, &ie, "error %T is not an *InfotextError", err)
			require.True(t, ie.NoLine || len(ie.Missing)+len(ie.Bad) > 0, "*InfotextError does not say what is wrong: %v", err)
			return
		}
		if !utf8.ValidString(text) {
			return // JSON quoting replaces invalid UTF-8, so only valid text round-trips
		}
		// What we parsed, written and read back, must give the same settings
		// .
		s2, _, err := ParseInfotext(s.Infotext())
		require.NoError(t, err, "re-parse of %q", s.Infotext())
		require.Equal(t, s, s2, "re-parse changed settings; text %q", s.Infotext())
	})
}

// TestInfotextLoraHashes: the prompt keeps its <lora:...> tags and "Lora
// hashes" is written quoted as A1111 writes it, and read back.
func TestInfotextLoraHashes(t *testing.T) {
	s := Default()
	s.Prompt = "a lighthouse <lora:add_detail:0.6> <lora:style:1:0.5>"
	s.Seed, s.Width, s.Height = 1, 64, 64
	s.LoraHashes = "add_detail: 7c6bad76eb54, style: 3b8aa1d351ef"
	text := s.Infotext()
	want := "a lighthouse <lora:add_detail:0.6> <lora:style:1:0.5>\n" +
		`Steps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 64x64, RNG: CPU, Lora hashes: "add_detail: 7c6bad76eb54, style: 3b8aa1d351ef"`
	require.Equal(t, want, text, "Infotext")
	back, unknown, err := ParseInfotext(text)
	require.NoError(t, err)
	require.Equal(t, s.Prompt, back.Prompt, "read back prompt")
	require.Equal(t, s.LoraHashes, back.LoraHashes, "read back Lora hashes")
	require.Empty(t, unknown, "read back unknown keys")
}

// Flux's distilled guidance is written as Forge's "Distilled CFG Scale"
// and read back; a Forge line parses; a bad value is refused by key.
func TestInfotextDistilledGuidance(t *testing.T) {
	s := Default()
	s.CFGScale, s.DistilledGuidance = 1, Float(4.25)
	text := s.Infotext()
	assert.Contains(t, text, "CFG scale: 1, ")
	assert.Contains(t, text, ", Distilled CFG Scale: 4.25")
	back, unknown, err := ParseInfotext(text)
	require.NoError(t, err)
	require.NotNil(t, back.DistilledGuidance)
	assert.Equal(t, 4.25, *back.DistilledGuidance)
	assert.NotContains(t, unknown, "Distilled CFG Scale")

	forge := "a cat\nSteps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 7, Size: 896x1152, Model: flux1-dev-bnb-nf4-v2"
	f, _, err := ParseInfotext(forge)
	require.NoError(t, err)
	require.NotNil(t, f.DistilledGuidance)
	assert.Equal(t, 3.5, *f.DistilledGuidance)

	s.DistilledGuidance = nil
	assert.NotContains(t, s.Infotext(), "Distilled")
	_, _, err = ParseInfotext("x\nSteps: 20, Sampler: Euler, CFG scale: 1, Distilled CFG Scale: -2, Seed: 7, Size: 64x64")
	assert.ErrorContains(t, err, "Distilled CFG Scale")
	bad := Default()
	bad.DistilledGuidance = Float(math.NaN())
	assert.ErrorContains(t, bad.Validate(), "distilled guidance: NaN")
}
