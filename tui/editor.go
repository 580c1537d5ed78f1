package tui

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/sampler"
)

// focus is the component that receives keys on the main view.
type focus int

const (
	focusPrompt focus = iota
	focusNegative
	focusCFG
	focusSteps
	focusSampler
	focusSchedule
	focusSeed
	focusWidth
	focusHeight
	focusBatch
	focusClipSkip
	focusRNG
	// DeepFloyd IF's stage II (shown only with an upscaler loaded; see
	// editor.visible).
	focusUpSteps
	focusUpCFG
	focusNoiseLevel
	focusOutDir
	// The image page (imagefields.go).
	focusInit
	focusStrength
	focusMask
	focusMaskBlur
	focusControlNet
	focusControlImage
	focusControlStrength
	focusIPAdapter
	focusIPImage
	focusIPScale
	focusLoRADir
	focusTAESD
	focusTimeline
	numFocus
)

var focusLabels = [...]string{"Prompt", "Negative", "CFG", "Steps", "Sampler", "Schedule", "Seed", "Width", "Height", "Batch", "Clip skip", "RNG", "Up steps", "Up CFG", "Noise lvl", "Folder",
	"Init img", "Strength", "Mask", "Mask blur", "Ctrl net", "Ctrl img", "Ctrl str", "IP adapt", "IP image", "IP scale", "LoRA dir", "TAESD", "Timeline"}

func (f focus) isList() bool { return f == focusSampler || f == focusSchedule || f == focusRNG }

// isText reports whether printable keys type into the field.
func (f focus) isText() bool { return f != focusTimeline && !f.isList() }

// cfgMax is the right end of the guidance slider.
const cfgMax = 20.0

// editor holds the settings being edited: two multi-line prompts, numeric
// fields that take typing and arrow-key nudges, and three lists.
type editor struct {
	prompt, negative                             *textEdit
	cfg, steps, seed, width, height, batch, clip *textEdit
	outDir                                       *textEdit
	samplers, schedules, rngs                    []string
	sampler, schedule, rng                       int
	seedLocked                                   bool
	downscale                                    int // what image sides are multiples of (the step of the size fields)
	eta                                          *float64
	distilled                                    *float64 // Flux's distilled guidance, carried from a preset or PNG
	guidanceRescale                              float64
	// sizeCond is SDXL's size conditioning (original W,H, crop left,top,
	// target W,H), carried from presets and opened PNGs like eta.
	sizeCond [6]int
	// tokenCount is A1111's "N/75" beside the prompt and the negative
	// prompt ("" without a model); see Model.countTokens.
	tokenCount [2]string
	// tokenOver marks a count whose prompt an encoder truncates (SD3, Flux).
	tokenOver [2]bool
	// img holds the image page's fields (imagefields.go); page is the page
	// of the form on screen (0 the basic fields, 1 the image inputs).
	img  imageFields
	page int
	// ifUp holds DeepFloyd IF's stage II fields (deepif.go), shown only
	// while a cascade with an upscaler is loaded.
	ifUp ifUpFields
}

func newEditor(s presets.Settings, outDir string) *editor {
	e := &editor{
		prompt: newTextEdit("", true), negative: newTextEdit("", true),
		cfg: newTextEdit("", false), steps: newTextEdit("", false), seed: newTextEdit("", false),
		width: newTextEdit("", false), height: newTextEdit("", false), batch: newTextEdit("", false),
		clip: newTextEdit("", false), outDir: newTextEdit(outDir, false), downscale: 64,
		rngs: []string{presets.RNGTorchCPU, presets.RNGPhilox},
		img:  newImageFields(),
		ifUp: newIFUpFields(),
	}
	for _, f := range []*textEdit{e.cfg, e.steps, e.seed, e.width, e.height, e.batch, e.clip} {
		f.Limit = 24
	}
	for _, in := range sampler.Samplers() {
		e.samplers = append(e.samplers, in.Name)
	}
	e.schedules = append([]string(nil), presets.Schedules...)
	e.set(s)
	return e
}

// set shows settings s; a seed >= 0 is shown and locked, -1 keeps the
// editor's seed as it is.
func (e *editor) set(s presets.Settings) {
	e.prompt.SetValue(s.Prompt)
	e.negative.SetValue(s.NegativePrompt)
	e.cfg.SetValue(formatFloat(s.CFGScale))
	e.steps.SetValue(strconv.Itoa(s.Steps))
	e.width.SetValue(strconv.Itoa(s.Width))
	e.height.SetValue(strconv.Itoa(s.Height))
	e.batch.SetValue(strconv.Itoa(max(s.Batch, 1)))
	e.clip.SetValue(strconv.Itoa(max(s.ClipSkip, 1)))
	if s.Seed >= 0 {
		e.seed.SetValue(strconv.FormatInt(s.Seed, 10))
		e.seedLocked = true
	}
	name, sched := s.Sampler, s.Schedule
	if c, sc, err := sampler.LookupSampler(name); err == nil {
		name = c
		if sched == "" && sc != "" {
			sched = sc
		}
	}
	e.sampler = max(0, indexOf(e.samplers, name))
	e.schedule = max(0, indexOf(e.schedules, sched))
	e.rng = max(0, indexOf(e.rngs, s.RNG))
	e.eta, e.distilled = s.Eta, s.DistilledGuidance
	e.guidanceRescale = s.GuidanceRescale
	e.sizeCond = [6]int{s.OriginalWidth, s.OriginalHeight, s.CropLeft, s.CropTop, s.TargetWidth, s.TargetHeight}
	e.img.set(s)
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if strings.EqualFold(v, s) {
			return i
		}
	}
	return -1
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// settings parses the fields. The seed is -1 (random) unless it is locked.
func (e *editor) settings() (presets.Settings, error) {
	s := presets.Default()
	s.Prompt, s.NegativePrompt = e.prompt.Value(), e.negative.Value()
	var err error
	num := func(f *textEdit, name string) int {
		v, perr := strconv.Atoi(strings.TrimSpace(f.Value()))
		if perr != nil && err == nil {
			err = fmt.Errorf("%s: %q is not a whole number", name, f.Value())
		}
		return v
	}
	s.Steps = num(e.steps, "steps")
	s.Width = num(e.width, "width")
	s.Height = num(e.height, "height")
	s.Batch = num(e.batch, "batch")
	s.ClipSkip = num(e.clip, "clip skip")
	cfg, perr := strconv.ParseFloat(strings.TrimSpace(e.cfg.Value()), 64)
	if perr != nil || math.IsNaN(cfg) || math.IsInf(cfg, 0) {
		if err == nil {
			err = fmt.Errorf("cfg scale: %q is not a finite number", e.cfg.Value())
		}
	}
	s.CFGScale = cfg
	s.Seed = -1
	if v := strings.TrimSpace(e.seed.Value()); v != "" && e.seedLocked {
		seed, serr := strconv.ParseInt(v, 10, 64)
		if (serr != nil || seed < -1) && err == nil {
			err = fmt.Errorf("seed: %q is not a whole number >= 0 (or -1 for random)", v)
		}
		s.Seed = seed
	}
	s.Sampler = e.samplers[e.sampler]
	s.Schedule = e.schedules[e.schedule]
	s.RNG = e.rngs[e.rng]
	s.Eta, s.DistilledGuidance = e.eta, e.distilled
	s.GuidanceRescale = e.guidanceRescale
	c := e.sizeCond
	s.OriginalWidth, s.OriginalHeight, s.CropLeft, s.CropTop, s.TargetWidth, s.TargetHeight = c[0], c[1], c[2], c[3], c[4], c[5]
	if ierr := e.img.apply(&s); ierr != nil && err == nil {
		err = ierr
	}
	return s, err
}

// field returns the text editor of a focus, or nil for lists and the
// timeline.
func (e *editor) field(f focus) *textEdit {
	switch f {
	case focusPrompt:
		return e.prompt
	case focusNegative:
		return e.negative
	case focusCFG:
		return e.cfg
	case focusSteps:
		return e.steps
	case focusSeed:
		return e.seed
	case focusWidth:
		return e.width
	case focusHeight:
		return e.height
	case focusBatch:
		return e.batch
	case focusClipSkip:
		return e.clip
	case focusOutDir:
		return e.outDir
	case focusUpSteps, focusUpCFG, focusNoiseLevel:
		return e.ifUp.field(f)
	}
	return e.img.field(f)
}

// update gives a key to the focused field. It reports whether the key was
// used; an unused up/down on a prompt lets the caller move the focus.
func (e *editor) update(f focus, k tea.KeyMsg) bool {
	if f.isList() {
		d := 0
		switch k.String() {
		case "left", "up", "h", "k":
			d = -1
		case "right", "down", "l", "j", " ", "enter":
			d = 1
		}
		if d == 0 {
			return false
		}
		switch f {
		case focusSampler:
			e.sampler = wrapIndex(e.sampler+d, len(e.samplers))
		case focusSchedule:
			e.schedule = wrapIndex(e.schedule+d, len(e.schedules))
		case focusRNG:
			e.rng = wrapIndex(e.rng+d, len(e.rngs))
		}
		return true
	}
	// Up/down nudge a number; left/right move the sliders too.
	if ks := k.String(); ks == "up" || ks == "down" || (f.isSlider() && (ks == "left" || ks == "right")) {
		d := 1.0
		if ks == "down" || ks == "left" {
			d = -1
		}
		if e.nudge(f, d) {
			return true
		}
	}
	switch k.String() {
	case "ctrl+r":
		if f == focusSeed {
			e.seed.SetValue(strconv.FormatInt(gen.RandomSeed(), 10))
			e.seedLocked = true
			return true
		}
	case "alt+l":
		if f == focusSeed {
			e.seedLocked = !e.seedLocked
			return true
		}
	}
	t := e.field(f)
	if t == nil {
		return false
	}
	if t.Update(k) {
		if f == focusSeed {
			e.seedLocked = strings.TrimSpace(e.seed.Value()) != ""
		}
		return true
	}
	return false
}

func wrapIndex(i, n int) int { return ((i % n) + n) % n }

// nudge changes a numeric field by d units; false for other fields.
func (e *editor) nudge(f focus, d float64) bool {
	if f.page() == 1 {
		return e.img.nudge(f, d)
	}
	if f.isIFUp() {
		return e.ifUp.nudge(f, d)
	}
	step := map[focus]float64{focusCFG: 0.5, focusSteps: 1, focusSeed: 1, focusBatch: 1, focusClipSkip: 1,
		focusWidth: float64(e.downscale), focusHeight: float64(e.downscale)}[f]
	if step == 0 {
		return false
	}
	t := e.field(f)
	v, err := strconv.ParseFloat(strings.TrimSpace(t.Value()), 64)
	if err != nil {
		v = 0
	}
	v += d * step
	lo := map[focus]float64{focusCFG: 0, focusSteps: 1, focusSeed: 0, focusBatch: 1, focusClipSkip: 1,
		focusWidth: float64(max(presets.MinSize, e.downscale)), focusHeight: float64(max(presets.MinSize, e.downscale))}[f]
	v = math.Max(v, lo)
	if f == focusCFG {
		v = math.Round(v*2) / 2
		t.SetValue(formatFloat(v))
		return true
	}
	if f == focusWidth || f == focusHeight {
		v = math.Round(v/float64(e.downscale)) * float64(e.downscale)
	}
	t.SetValue(strconv.FormatInt(int64(v), 10))
	if f == focusSeed {
		e.seedLocked = true
	}
	return true
}

// hint describes the focused list entry (a sampler or a schedule).
func (e *editor) hint(f focus) string {
	switch f {
	case focusUpSteps, focusUpCFG, focusNoiseLevel:
		return e.ifUp.hint(f)
	case focusSampler:
		for _, in := range sampler.Samplers() {
			if in.Name == e.samplers[e.sampler] {
				return in.Description
			}
		}
	case focusSchedule:
		name := e.schedules[e.schedule]
		if name == "" {
			return "the sampler's own default schedule (A1111 \"Automatic\")"
		}
		for _, in := range sampler.Schedules() {
			if in.Name == name {
				return in.Description
			}
		}
	case focusRNG:
		if e.rngs[e.rng] == presets.RNGPhilox {
			return "torch.randn on an NVIDIA GPU (A1111 \"NV\")"
		}
		return "torch.randn on the CPU (A1111 \"CPU\", diffusers' default)"
	}
	return ""
}

// formLayout is where the form's fields are drawn: rows[f] is the first
// line of field f within the form, heights[f] its line count (0 for the
// fields of the other page). toggleRow is the line that switches pages
// (the image summary on page 0, the title on page 1).
type formLayout struct {
	rows, heights [numFocus]int
	promptRows    int
	negRows       int
	loraLine      bool // the prompt's LoRAs are listed under it
	toggleRow     int
	page          int
	lines         int
}

func layoutForm(height int, e *editor) formLayout {
	var l formLayout
	l.page = e.page
	l.promptRows, l.negRows = 3, 2
	if height < 18 {
		l.promptRows, l.negRows = 2, 1
	}
	l.loraLine = e.page == 0 && hasLoRATags(e.prompt.Value())
	y := 0
	if l.page == 1 {
		l.toggleRow = 0
		y = 1
	}
	for f := focusPrompt; f < focusTimeline; f++ {
		if f.page() != l.page || !e.visible(f) {
			l.rows[f] = -1
			continue
		}
		h := 1
		switch f {
		case focusPrompt:
			h = 1 + l.promptRows + boolInt(l.loraLine)
		case focusNegative:
			h = 1 + l.negRows
		}
		l.rows[f], l.heights[f] = y, h
		y += h
	}
	if l.page == 0 {
		l.toggleRow = y
		y++
	}
	l.lines = y
	return l
}

// view draws the form width cells wide.
func (e *editor) view(width, height int, cur focus, chunks int) string {
	l := layoutForm(height, e)
	var b strings.Builder
	label := func(f focus) string {
		st := styleLabel
		if f == cur {
			st = styleLabelOn
		}
		return st.Render(fmt.Sprintf("%-10s", focusLabels[f]))
	}
	inner := max(width-10, 4)
	if l.page == 1 {
		b.WriteString(e.img.title(width) + "\n")
	}
	for f := focusPrompt; f < focusTimeline; f++ {
		if f.page() != l.page || !e.visible(f) {
			continue
		}
		switch f {
		case focusPrompt, focusNegative:
			t, rows := e.prompt, l.promptRows
			if f == focusNegative {
				t, rows = e.negative, l.negRows
			}
			head := label(f)
			if c := e.tokenCount[f-focusPrompt]; c != "" {
				if e.tokenOver[f-focusPrompt] {
					head += styleWarn.Render(c + " (cut)")
				} else {
					head += styleDim.Render(c)
				}
			}
			if f == focusPrompt && chunks > 1 {
				head += styleWarn.Render(fmt.Sprintf(" long: split into %d chunks of 75 tokens", chunks))
			}
			b.WriteString(head + "\n")
			b.WriteString(t.View(width, rows, f == cur, styleValue, styleCursor) + "\n")
			if f == focusPrompt && l.loraLine {
				b.WriteString(e.img.loraLine(width) + "\n")
			}
		case focusSampler, focusSchedule, focusRNG:
			list, i := e.samplers, e.sampler
			if f == focusSchedule {
				list, i = e.schedules, e.schedule
			} else if f == focusRNG {
				list, i = e.rngs, e.rng
			}
			v := list[i]
			if v == "" {
				v = "automatic"
			}
			s := fmt.Sprintf("‹ %s ›", v)
			if f == cur {
				s = styleSelected.Render(s) + styleDim.Render(fmt.Sprintf(" %d/%d", i+1, len(list)))
			} else {
				s = styleValue.Render(s)
			}
			b.WriteString(label(f) + s + "\n")
		default:
			t := e.field(f)
			w := inner
			extra := ""
			switch f {
			case focusCFG, focusUpCFG, focusStrength, focusControlStrength, focusIPScale:
				w = 6
				_, sw := cfgSlider(width)
				_, hi, _ := sliderRange(f)
				extra = " " + sliderOf(t.Value(), sw, hi)
			case focusSeed:
				w = min(12, inner)
				if e.seedLocked {
					extra = styleDim.Render(" locked")
				} else {
					extra = styleDim.Render(" random")
				}
			case focusSteps, focusWidth, focusHeight, focusBatch, focusClipSkip, focusUpSteps:
				w = min(6, inner)
			case focusNoiseLevel:
				w = min(6, inner)
				extra = styleDim.Render(fmt.Sprintf(" of 0..%d", max(e.ifUp.levels-1, 0)))
			case focusMaskBlur:
				w = min(6, inner)
				extra = styleDim.Render(" px (feather)")
			case focusInit, focusMask, focusControlImage, focusIPImage:
				mark := e.img.mark(f)
				w = max(inner-lipgloss.Width(mark), 4)
				extra = mark
			case focusTAESD:
				mark := e.img.tz.mark(unquotePath(t.Value()))
				w = max(inner-lipgloss.Width(mark), 4)
				extra = mark
			}
			b.WriteString(label(f) + t.View(w, 1, f == cur, styleValue, styleCursor) + extra + "\n")
		}
	}
	if l.page == 0 {
		b.WriteString(e.img.summary(width) + "\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// cfgSlider is where the guidance slider is in a form width cells wide:
// its first column and its width (after the label and the number).
func cfgSlider(width int) (x, w int) { return 10 + 6 + 1, max(width-10-7, 3) }

// slider draws the guidance scale on a bar of w cells from 0 to cfgMax.
func slider(v string, w int) string { return sliderOf(v, w, cfgMax) }

// sliderOf draws value v on a bar of w cells from 0 to hi.
func sliderOf(v string, w int, hi float64) string {
	x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || math.IsNaN(x) {
		return styleErr.Render(strings.Repeat("─", w))
	}
	p := int(math.Round(math.Min(math.Max(x/hi, 0), 1) * float64(w-1)))
	return styleBarDone.Render(strings.Repeat("━", p)) + styleSelected.Render("●") + styleBarTodo.Render(strings.Repeat("─", w-1-p))
}
