package presets

// The AUTOMATIC1111 "infotext": the text A1111 stores in a PNG's "parameters"
// chunk and shows under "PNG Info". Layout, as A1111 v1.10 writes it
// (modules/processing.py create_infotext, modules/infotext_utils.py quote):
//
//	a photograph of an astronaut riding a horse
//	second prompt line
//	Negative prompt: low quality, blurry
//	Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x512, Model hash: 6ce0161689, Model: v1-5, Clip skip: 2, RNG: CPU, Eta: 0.5
//
// The "Negative prompt:" line is omitted when empty. The last line is a list
// of "Key: value" pairs joined by ", "; a value containing ',', ':', '\n' (or,
// here, '"') is written as a JSON string. Versions before 1.9 wrote the
// schedule into the sampler name ("Sampler: DPM++ 2M Karras"); both are read.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"

	"github.com/stepwise/stepwise/sampler/names"
)

// Param is one extra "Key: value" pair of an infotext.
type Param struct {
	Key, Value string
}

// InfotextError reports an infotext whose parameters line is missing,
// incomplete or holds values that do not parse.
type InfotextError struct {
	Missing []string // required keys that are absent
	Bad     []string // "Key: value (why)" for values that do not parse
	NoLine  bool     // no parameters line at all
}

func (e *InfotextError) Error() string {
	if e.NoLine {
		return "infotext: no generation parameters line (\"Steps: ..., Sampler: ..., Seed: ...\")"
	}
	var parts []string
	if len(e.Missing) > 0 {
		parts = append(parts, "missing "+strings.Join(e.Missing, ", "))
	}
	if len(e.Bad) > 0 {
		parts = append(parts, "bad "+strings.Join(e.Bad, "; "))
	}
	return "infotext: " + strings.Join(parts, "; ")
}

// SamplerLabel returns A1111's label for a sampler name or alias ("euler",
// "k_euler_a", "dpmpp_2m", "DPM++ 2M" ...), and whether the name is known
// to the name registry (sampler/names). A sampler without an A1111 label
// keeps its id.
func SamplerLabel(name string) (string, bool) {
	n, ok := names.LookupSampler(name)
	if !ok {
		return "", false
	}
	return n.Name(), true
}

// scheduleLabel is the label A1111 writes for one of our schedule names.
func scheduleLabel(name string) (string, bool) {
	n, ok := names.LookupSchedule(name)
	if !ok || n.Name != name {
		return "", false
	}
	return n.Label, true
}

// ScheduleFromLabel maps a schedule label as A1111, ComfyUI or we write it
// ("Karras", "SGM Uniform", "sgm_uniform", "Automatic" ...) to our name.
// A1111's "Uniform" is our "normal" and its "DDIM" our "ddim_uniform".
func ScheduleFromLabel(label string) (string, bool) {
	n, ok := names.LookupSchedule(label)
	return n.Name, ok
}

// Infotext formats s as the A1111 "parameters" text. See InfotextWith.
func (s Settings) Infotext() string { return s.InfotextWith() }

// InfotextWith formats s as the A1111 "parameters" text, with extra pairs
// (e.g. {"Batch pos", "1"}) appended where A1111 puts its extra generation
// parameters. Keys are written in A1111's order: Steps, Sampler, Schedule
// type, CFG scale, Seed, Size, Model hash, Model, Clip skip, RNG, Eta,
// Guidance rescale, Distilled CFG Scale (Flux), Batch size (when > 1),
// SDXL's sizes, Lora hashes, then
// extras. An extra whose key
// is already written replaces that value in place (no key is written twice).
func (s Settings) InfotextWith(extra ...Param) string {
	sampler := s.Sampler
	if l, ok := SamplerLabel(sampler); ok {
		sampler = l
	}
	sched, ok := scheduleLabel(s.Schedule)
	if !ok {
		sched = s.Schedule
	}
	ps := []Param{
		{"Steps", strconv.Itoa(s.Steps)},
		{"Sampler", sampler},
		{"Schedule type", sched},
		{"CFG scale", fmtFloat(s.CFGScale)},
		{"Seed", strconv.FormatInt(s.Seed, 10)},
		{"Size", fmt.Sprintf("%dx%d", s.Width, s.Height)},
	}
	if s.ModelHash != "" {
		ps = append(ps, Param{"Model hash", s.ModelHash})
	}
	if s.Model != "" {
		ps = append(ps, Param{"Model", s.Model})
	}
	// img2img: A1111 writes "Denoising strength"; we also write it for a
	// strength other than the default without an init image, so that
	// nothing read from a PNG is lost when it is written again.
	if s.InitImage != "" || s.Strength != DefaultStrength {
		ps = append(ps, Param{"Denoising strength", fmtFloat(s.Strength)})
	}
	if s.ClipSkip > 1 {
		ps = append(ps, Param{"Clip skip", strconv.Itoa(s.ClipSkip)})
	}
	switch s.RNG {
	case RNGTorchCPU:
		ps = append(ps, Param{"RNG", "CPU"})
	case RNGPhilox:
		ps = append(ps, Param{"RNG", "NV"})
	}
	if s.Eta != nil {
		ps = append(ps, Param{"Eta", fmtFloat(*s.Eta)})
	}
	if s.GuidanceRescale != 0 {
		ps = append(ps, Param{"Guidance rescale", fmtFloat(s.GuidanceRescale)})
	}
	if s.DistilledGuidance != nil {
		ps = append(ps, Param{"Distilled CFG Scale", fmtFloat(*s.DistilledGuidance)})
	}
	if s.Batch > 1 {
		ps = append(ps, Param{"Batch size", strconv.Itoa(s.Batch)})
	}
	// SDXL's size conditioning, only where it is not the default.
	if s.OriginalWidth > 0 && s.OriginalHeight > 0 && (s.OriginalWidth != s.Width || s.OriginalHeight != s.Height) {
		ps = append(ps, Param{"Original size", fmt.Sprintf("%dx%d", s.OriginalWidth, s.OriginalHeight)})
	}
	if s.CropLeft != 0 || s.CropTop != 0 {
		ps = append(ps, Param{"Crop top-left", fmt.Sprintf("%dx%d", s.CropLeft, s.CropTop)})
	}
	if s.TargetWidth > 0 && s.TargetHeight > 0 && (s.TargetWidth != s.Width || s.TargetHeight != s.Height) {
		ps = append(ps, Param{"Target size", fmt.Sprintf("%dx%d", s.TargetWidth, s.TargetHeight)})
	}
	// The files an image was made from (our keys: A1111 names neither),
	// and A1111's "Mask blur" (written with a mask, or when not 0).
	if s.InitImage != "" {
		ps = append(ps, Param{"Init image", s.InitImage})
	}
	if s.Mask != "" {
		ps = append(ps, Param{"Mask image", s.Mask})
	}
	if s.Mask != "" || s.MaskBlur != 0 {
		ps = append(ps, Param{"Mask blur", strconv.Itoa(s.MaskBlur)})
	}
	if s.LoraHashes != "" {
		ps = append(ps, Param{"Lora hashes", s.LoraHashes})
	}
	// A ControlNet: sd-webui-controlnet's unit (the fields that apply),
	// then the files (our keys: A1111 names the model by name and hash).
	if s.ControlNet != "" {
		ps = append(ps, Param{"ControlNet 0", s.ControlUnit()},
			Param{"ControlNet model", s.ControlNet}, Param{"Control image", s.ControlImage})
	}
	// The image prompt (our keys; A1111 writes IP-Adapter as a ControlNet
	// unit, which carries no file paths).
	if s.IPAdapter != "" {
		ps = append(ps, Param{"IP-Adapter", s.IPAdapter}, Param{"IP-Adapter image", s.IPAdapterImage},
			Param{"IP-Adapter scale", fmtFloat(s.IPAdapterScale)})
		if s.ImageEncoder != "" {
			ps = append(ps, Param{"Image encoder", s.ImageEncoder})
		}
	}
	for _, e := range extra {
		replaced := false
		for i := range ps {
			if ps[i].Key == e.Key {
				ps[i].Value, replaced = e.Value, true
			}
		}
		if !replaced {
			ps = append(ps, e)
		}
	}

	var b strings.Builder
	b.WriteString(s.Prompt)
	if s.NegativePrompt != "" {
		b.WriteString("\nNegative prompt: ")
		b.WriteString(s.NegativePrompt)
	}
	b.WriteString("\n")
	for i, p := range ps {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(p.Key)
		b.WriteString(": ")
		b.WriteString(quoteValue(p.Value))
	}
	return strings.TrimSpace(b.String())
}

// parsePair reads "AxB" where either may be 0.
func parsePair(v string) (int, int, bool) {
	x, y, ok := strings.Cut(v, "x")
	a, err1 := strconv.Atoi(x)
	b, err2 := strconv.Atoi(y)
	return a, b, ok && err1 == nil && err2 == nil && a >= 0 && b >= 0 && a <= 1<<16 && b <= 1<<16
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// quoteValue writes v as a JSON string when it holds a character that would
// break the "Key: value, " list (A1111 quotes on ',', ':' and '\n'; we also
// quote '"' and leading or trailing spaces, so such values survive).
func quoteValue(v string) string {
	if !strings.ContainsAny(v, ",:\n\"") && v == strings.TrimSpace(v) {
		return v
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // a string always encodes
	return strings.TrimSuffix(buf.String(), "\n")
}

// quoteShort quotes a value for a message, cut to its first 60 characters:
// a parameters text may be megabytes long, and an error must not echo it.
func quoteShort(v string) string {
	const max = 60
	if r := []rune(v); len(r) > max {
		return fmt.Sprintf("%q… (%d bytes)", string(r[:max]), len(v))
	}
	return fmt.Sprintf("%q", v)
}

// roundTrip reports what of s's prompts its infotext cannot carry: the text
// is written and read back, and the prompts must come back the same up to
// whitespace (which the tokenizer ignores). A prompt with a line starting
// "Negative prompt:" would otherwise come back split in two.
func (s Settings) roundTrip() error {
	back, _, _ := ParseInfotext(s.Infotext())
	same := func(a, b string) bool {
		return strings.Join(strings.Fields(a), " ") == strings.Join(strings.Fields(b), " ")
	}
	if same(back.Prompt, s.Prompt) && same(back.NegativePrompt, s.NegativePrompt) {
		return nil
	}
	for _, line := range strings.Split(s.Prompt, "\n") {
		if strings.HasPrefix(line, "Negative prompt:") {
			return errors.New("a line starts with \"Negative prompt:\", which A1111's parameters text (and so the PNG) cannot carry: the image could not be reproduced from its PNG; reword that line")
		}
	}
	return fmt.Errorf("the PNG's parameters text cannot carry these prompts: it would read back as prompt %s, negative prompt %s",
		quoteShort(back.Prompt), quoteShort(back.NegativePrompt))
}

// known keys that ParseInfotext maps onto Settings fields.
var knownKeys = map[string]bool{
	"Steps": true, "Sampler": true, "Schedule type": true, "CFG scale": true, "Seed": true,
	"Size": true, "Model hash": true, "Model": true, "Clip skip": true, "RNG": true,
	"Eta": true, "Eta DDIM": true, "Guidance rescale": true, "Distilled CFG Scale": true, "Batch size": true,
	"Original size": true, "Crop top-left": true, "Target size": true, "Lora hashes": true,
	"Mask blur": true, "Init image": true, "Mask image": true,
	"ControlNet 0": true, "ControlNet model": true, "Control image": true,
	"IP-Adapter": true, "IP-Adapter image": true, "IP-Adapter scale": true, "Image encoder": true,
}

// ControlUnit is the value of sd-webui-controlnet's "ControlNet 0" key for
// s's ControlNet: module (canny or none), model (name [hash]), weight,
// resize mode (Stepwise resizes the control image to the output size),
// the canny thresholds, guidance start and end, and the control mode
// (Balanced: prompt and control both, diffusers' guess_mode off).
func (s Settings) ControlUnit() string {
	name := filepath.Base(filepath.Clean(s.ControlNet))
	name = strings.TrimSuffix(name, filepath.Ext(name))
	if s.ControlNetHash != "" {
		name += " [" + s.ControlNetHash + "]"
	}
	module := "none"
	if s.Canny {
		module = "canny"
	}
	ps := []string{"Module: " + module, "Model: " + name, "Weight: " + fmtFloat(s.ControlStrength), "Resize Mode: Just Resize"}
	if s.Canny {
		ps = append(ps, fmt.Sprintf("Threshold A: %d", s.CannyLow), fmt.Sprintf("Threshold B: %d", s.CannyHigh))
	}
	ps = append(ps, "Guidance Start: "+fmtFloat(s.ControlStart), "Guidance End: "+fmtFloat(s.ControlEnd), "Control Mode: Balanced")
	return strings.Join(ps, ", ")
}

// parseControlUnit reads a "ControlNet 0" value into s: A1111's module
// (canny or none; another preprocessor cannot be reproduced, ok false),
// model name and hash, weight, thresholds, guidance start and end.
func parseControlUnit(s *Settings, v string, bad func(key, why string)) (ok bool) {
	vals := map[string]string{}
	for _, p := range splitParams(v) {
		vals[p.Key] = p.Value
	}
	switch strings.ToLower(vals["Module"]) {
	case "canny", "none", "":
	default:
		return false
	}
	num := func(key string, dst *float64) {
		if x, found := vals[key]; found {
			if f, err := parseFinite(x); err != nil {
				bad("ControlNet 0", key+" is not a finite number")
			} else {
				*dst = f
			}
		}
	}
	num("Weight", &s.ControlStrength)
	num("Guidance Start", &s.ControlStart)
	num("Guidance End", &s.ControlEnd)
	if m := vals["Model"]; m != "" && m != "None" {
		name, hash := m, ""
		if i := strings.LastIndex(m, " ["); i > 0 && strings.HasSuffix(m, "]") {
			name, hash = m[:i], m[i+2:len(m)-1]
		}
		s.ControlNet, s.ControlNetHash = name, hash
	}
	switch strings.ToLower(vals["Module"]) {
	case "canny":
		s.Canny = true
		for key, dst := range map[string]*int{"Threshold A": &s.CannyLow, "Threshold B": &s.CannyHigh} {
			if x, found := vals[key]; found {
				f, err := parseFinite(x)
				if err != nil || f < 0 || f != float64(int(f)) {
					bad("ControlNet 0", key+" is not a whole number >= 0")
				} else {
					*dst = int(f)
				}
			}
		}
	}
	return true
}

// ParseInfotext reads an A1111-style "parameters" text: as written by A1111
// (old and new), by ComfyUI nodes that imitate it, by Civitai and by
// InfotextWith. It returns the settings (fields absent from the text keep
// Default's values, except RNG which defaults to philox, A1111's "GPU"), the
// pairs it did not map onto Settings (e.g. "Hires upscale", "Version",
// "Schedule type" when its value is unknown) and, when the parameters line
// is missing, lacks Steps, Sampler, CFG scale, Seed or Size, or holds values
// that do not parse, an *InfotextError (the settings are then best effort).
func ParseInfotext(text string) (Settings, map[string]string, error) {
	s := Default()
	s.RNG = RNGPhilox
	unknown := map[string]string{}

	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(text, "\r\n", "\n")), "\n")
	last := lines[len(lines)-1]
	pairs := splitParams(last)
	isParams := len(pairs) >= 3
	if isParams {
		isParams = false
		for _, p := range pairs {
			switch p.Key {
			case "Steps", "Sampler", "Seed", "CFG scale", "Size":
				isParams = true
			}
		}
	}
	if isParams {
		lines = lines[:len(lines)-1]
	} else {
		pairs = nil
	}

	var prompt, neg []string
	inNeg := false
	for _, line := range lines {
		line = strings.TrimRight(line, " \t\r")
		if rest, ok := strings.CutPrefix(line, "Negative prompt:"); ok && !inNeg {
			inNeg = true
			line = strings.TrimLeft(rest, " ")
		}
		if inNeg {
			neg = append(neg, line)
		} else {
			prompt = append(prompt, line)
		}
	}
	s.Prompt = strings.Join(prompt, "\n")
	s.NegativePrompt = strings.Join(neg, "\n")

	if !isParams {
		return s, unknown, &InfotextError{NoLine: true}
	}

	vals := map[string]string{}
	for _, p := range pairs {
		vals[p.Key] = p.Value
		if !knownKeys[p.Key] {
			unknown[p.Key] = p.Value
		}
	}
	perr := &InfotextError{}
	bad := func(key, why string) {
		perr.Bad = append(perr.Bad, fmt.Sprintf("%s: %s (%s)", key, quoteShort(vals[key]), why))
	}
	for _, k := range []string{"Steps", "Sampler", "CFG scale", "Seed", "Size"} {
		if _, ok := vals[k]; !ok {
			perr.Missing = append(perr.Missing, k)
		}
	}

	if v, ok := vals["Steps"]; ok {
		if n, err := strconv.Atoi(v); err != nil || n < 0 {
			bad("Steps", "not a step count")
		} else {
			s.Steps = n
		}
	}
	if v, ok := vals["CFG scale"]; ok {
		if f, err := parseFinite(v); err != nil {
			bad("CFG scale", "not a finite number")
		} else {
			s.CFGScale = f
		}
	}
	if v, ok := vals["Seed"]; ok {
		if n, err := strconv.ParseInt(v, 10, 64); err != nil {
			bad("Seed", "not an integer")
		} else {
			s.Seed = n
		}
	}
	if v, ok := vals["Size"]; ok {
		w, h, ok := parseSize(v)
		if !ok {
			bad("Size", "not WIDTHxHEIGHT")
		} else {
			s.Width, s.Height = w, h
		}
	}
	for _, k := range []struct {
		key  string
		a, b *int
	}{{"Original size", &s.OriginalWidth, &s.OriginalHeight}, {"Crop top-left", &s.CropLeft, &s.CropTop}, {"Target size", &s.TargetWidth, &s.TargetHeight}} {
		if v, ok := vals[k.key]; ok {
			a, b, ok := parseSize(v)
			if !ok && k.key == "Crop top-left" {
				a, b, ok = parsePair(v)
			}
			if !ok {
				bad(k.key, "not AxB")
			} else {
				*k.a, *k.b = a, b
			}
		}
	}
	if v, ok := vals["Clip skip"]; ok {
		if n, err := strconv.Atoi(v); err != nil || n < 1 {
			bad("Clip skip", "not an integer >= 1")
		} else {
			s.ClipSkip = n
		}
	}
	if v, ok := vals["Batch size"]; ok {
		if n, err := strconv.Atoi(v); err != nil || n < 1 {
			bad("Batch size", "not an integer >= 1")
		} else {
			s.Batch = n
		}
	}
	if v, ok := vals["RNG"]; ok {
		switch strings.ToUpper(v) {
		case "CPU":
			s.RNG = RNGTorchCPU
		case "NV", "GPU":
			s.RNG = RNGPhilox
		default:
			bad("RNG", "want CPU, NV or GPU")
		}
	}
	for _, k := range []string{"Eta", "Eta DDIM"} {
		if v, ok := vals[k]; ok {
			if f, err := parseFinite(v); err != nil {
				bad(k, "not a finite number")
			} else {
				s.Eta = &f
			}
		}
	}
	if v, ok := vals["Distilled CFG Scale"]; ok {
		if f, err := parseFinite(v); err == nil && f >= 0 {
			s.DistilledGuidance = &f
		} else {
			bad("Distilled CFG Scale", "not a finite number >= 0")
		}
	}
	for _, k := range []string{"Guidance rescale", "CFG Rescale", "CFG Rescale phi", "CFG rescale"} {
		if v, ok := vals[k]; ok {
			if f, err := parseFinite(v); err == nil {
				s.GuidanceRescale = f
				delete(unknown, k)
			} else if k == "Guidance rescale" {
				bad(k, "not a finite number")
			}
		}
	}
	// "Denoising strength" is img2img's, except in an A1111 text-to-image
	// with hires fix ("Hires upscale" etc.), where it is the hires pass's:
	// that one stays among the unknown pairs.
	hires := false
	for k := range vals {
		hires = hires || strings.HasPrefix(k, "Hires ")
	}
	if v, ok := vals["Denoising strength"]; ok && (!hires || vals["Init image"] != "") {
		delete(unknown, "Denoising strength")
		if f, err := parseFinite(v); err != nil {
			bad("Denoising strength", "not a finite number")
		} else {
			s.Strength = f
		}
	}
	if v, ok := vals["Mask blur"]; ok {
		if n, err := strconv.Atoi(v); err != nil || n < 0 {
			bad("Mask blur", "not an integer >= 0")
		} else {
			s.MaskBlur = n
		}
	}
	s.InitImage = vals["Init image"]
	s.Mask = vals["Mask image"]
	s.IPAdapter = vals["IP-Adapter"]
	s.IPAdapterImage = vals["IP-Adapter image"]
	s.ImageEncoder = vals["Image encoder"]
	if v, ok := vals["IP-Adapter scale"]; ok {
		if f, err := parseFinite(v); err != nil {
			bad("IP-Adapter scale", "not a finite number")
		} else {
			s.IPAdapterScale = f
		}
	}
	s.Model = vals["Model"]
	s.ModelHash = vals["Model hash"]
	s.LoraHashes = vals["Lora hashes"]
	if v, ok := vals["ControlNet 0"]; ok && !parseControlUnit(&s, v, bad) {
		unknown["ControlNet 0"] = v // another preprocessor: not reproducible here
	}
	if v := vals["ControlNet model"]; v != "" {
		s.ControlNet = v
	}
	s.ControlImage = vals["Control image"]

	// Sampler and schedule, new style ("DPM++ 2M" + "Schedule type: Karras")
	// or old style ("DPM++ 2M Karras", ComfyUI "dpmpp_2m_karras").
	schedSet := false
	if v, ok := vals["Schedule type"]; ok {
		if name, ok := ScheduleFromLabel(v); ok {
			s.Schedule = name
			schedSet = name != ""
		} else {
			unknown["Schedule type"] = v
		}
	}
	if v, ok := vals["Sampler"]; ok {
		s.Sampler = v
		if l, ok := SamplerLabel(v); ok {
			s.Sampler = l
		} else if base, sched, ok := splitSamplerSchedule(v); ok {
			s.Sampler = base
			if !schedSet {
				s.Schedule = sched
			}
		}
	}

	if len(perr.Missing) > 0 || len(perr.Bad) > 0 {
		return s, unknown, perr
	}
	return s, unknown, nil
}

// splitSamplerSchedule splits "DPM++ 2M Karras" or "dpmpp_2m_karras" into a
// known sampler label and a schedule name.
func splitSamplerSchedule(v string) (string, string, bool) {
	for _, suf := range []string{"sgm_uniform", "sgm uniform", "ddim_uniform", "karras", "exponential", "normal", "simple", "uniform"} {
		for _, sep := range []string{" ", "_"} {
			n := len(v) - len(sep) - len(suf)
			if n > 0 && strings.EqualFold(v[n:], sep+suf) {
				label, ok1 := SamplerLabel(v[:n])
				sched, ok2 := ScheduleFromLabel(suf)
				if ok1 && ok2 {
					return label, sched, true
				}
			}
		}
	}
	return "", "", false
}

func parseFinite(v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
		err = errors.New("not finite")
	}
	return f, err
}

func parseSize(v string) (int, int, bool) {
	ws, hs, ok := strings.Cut(v, "x")
	if !ok {
		return 0, 0, false
	}
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	if err1 != nil || err2 != nil || w < 0 || h < 0 {
		return 0, 0, false
	}
	return w, h, true
}

// splitParams splits a parameters line into its "Key: value" pairs. A value
// that starts with '"' is a JSON string (A1111's quoting); one that starts
// with '[' or '{' runs to its matching bracket (Civitai writes unquoted JSON
// such as "Civitai resources: [{...}, {...}]"); any other value runs to the
// next comma. Items that are not "Key: value" with a plausible key are skipped.
func splitParams(line string) []Param {
	var out []Param
	i := 0
	for i < len(line) {
		for i < len(line) && (line[i] == ' ' || line[i] == ',' || line[i] == '\t') {
			i++
		}
		if i >= len(line) {
			break
		}
		j := strings.IndexAny(line[i:], ":,")
		if j < 0 {
			break // a trailing flag with no value
		}
		j += i
		if line[j] == ',' {
			i = j + 1 // a flag item ("Tiling") or stray text
			continue
		}
		key := strings.TrimSpace(line[i:j])
		i = j + 1
		for i < len(line) && line[i] == ' ' {
			i++
		}
		var val string
		end := -1
		if i < len(line) {
			switch line[i] {
			case '"':
				end = scanQuoted(line, i)
			case '[', '{':
				end = scanBracketed(line, i)
			}
		}
		if end > 0 {
			k := end
			for k < len(line) && line[k] == ' ' {
				k++
			}
			if k < len(line) && line[k] != ',' {
				end = -1 // text after the closing quote: not a quoted value
			}
		}
		if end > 0 {
			val = line[i:end]
			if val[0] == '"' {
				var u string
				if json.Unmarshal([]byte(val), &u) == nil {
					val = u
				}
			}
			i = end
		} else {
			k := strings.IndexByte(line[i:], ',')
			if k < 0 {
				k = len(line) - i
			}
			val = strings.TrimSpace(line[i : i+k])
			i += k
		}
		if validKey(key) {
			out = append(out, Param{key, val})
		}
	}
	return out
}

// scanQuoted returns the index just past the JSON string starting at
// line[i] == '"', or -1 when it does not close.
func scanQuoted(line string, i int) int {
	for k := i + 1; k < len(line); k++ {
		switch line[k] {
		case '\\':
			k++
		case '"':
			return k + 1
		}
	}
	return -1
}

// scanBracketed returns the index just past the bracket that closes the one
// at line[i], skipping JSON strings, or -1 when it does not close.
func scanBracketed(line string, i int) int {
	var stack []byte
	for k := i; k < len(line); k++ {
		switch c := line[k]; c {
		case '"':
			e := scanQuoted(line, k)
			if e < 0 {
				return -1
			}
			k = e - 1
		case '[', '{':
			stack = append(stack, c)
		case ']', '}':
			if len(stack) == 0 {
				return -1
			}
			open := stack[len(stack)-1]
			if (open == '[') != (c == ']') {
				return -1
			}
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				return k + 1
			}
		}
	}
	return -1
}

// validKey reports whether k looks like an infotext key: A1111 accepts
// \w[\w \-/]+; we also allow '.', '(', ')' and '+' after the first rune.
func validKey(k string) bool {
	if len(k) < 2 || len(k) > 80 {
		return false
	}
	for n, r := range k {
		word := unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_'
		if n == 0 && !word {
			return false
		}
		if !word && !strings.ContainsRune(" -/.()+", r) {
			return false
		}
	}
	return true
}
