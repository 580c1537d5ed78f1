package main

// The A1111-style X/Y plot of `stepwise generate --xy AXIS [--xy AXIS]`
// and the settings changes of `--branch KEY=VALUE`: one axis is a setting
// and its values ("cfg=1,3,7.5,12", "steps=10,20", "sampler=Euler a,DDIM",
// "prompt=heart,star" as A1111's Prompt S/R); the grid is one PNG with the
// values written beside the rows and above the columns.

import (
	"encoding/csv"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"strconv"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/sampler"
)

// axis is one dimension of an X/Y plot: a setting and its values.
type axis struct {
	key    string // canonical key: cfg, steps, sampler, schedule, seed, clip-skip, prompt
	label  string // A1111's axis type ("CFG Scale", "Steps", "Prompt S/R", ...)
	values []string
}

// axisKeys maps the names an axis or a --branch change may use to the
// canonical key and A1111's axis type label.
var axisKeys = map[string][2]string{
	"cfg": {"cfg", "CFG Scale"}, "cfg-scale": {"cfg", "CFG Scale"}, "cfg scale": {"cfg", "CFG Scale"},
	"steps":    {"steps", "Steps"},
	"sampler":  {"sampler", "Sampler"},
	"schedule": {"schedule", "Schedule type"}, "schedule type": {"schedule", "Schedule type"}, "scheduler": {"schedule", "Schedule type"},
	"seed":      {"seed", "Seed"},
	"clip-skip": {"clip-skip", "Clip skip"}, "clip skip": {"clip-skip", "Clip skip"},
	"prompt": {"prompt", "Prompt S/R"}, "prompt s/r": {"prompt", "Prompt S/R"},
	"negative": {"negative", "Negative prompt"}, "negative-prompt": {"negative", "Negative prompt"},
	"guidance-rescale": {"guidance-rescale", "Guidance rescale"},
}

func axisKeyList() string {
	return "cfg, steps, sampler, schedule, seed, clip-skip, prompt (A1111's Prompt S/R), negative, guidance-rescale"
}

// parseAxis reads "KEY=V1,V2,..." (values as CSV: quote one holding a
// comma); every value is checked by applying it.
func parseAxis(spec string) (axis, error) {
	k, vals, ok := strings.Cut(spec, "=")
	if !ok {
		return axis{}, fmt.Errorf("--xy %q: want KEY=V1,V2,... with KEY one of %s", spec, axisKeyList())
	}
	kk, ok := axisKeys[strings.ToLower(strings.TrimSpace(k))]
	if !ok {
		return axis{}, fmt.Errorf("--xy %q: unknown axis %q (valid: %s)", spec, strings.TrimSpace(k), axisKeyList())
	}
	r := csv.NewReader(strings.NewReader(vals))
	r.TrimLeadingSpace = true
	fields, err := r.Read()
	if err != nil {
		return axis{}, fmt.Errorf("--xy %q: the values: %w", spec, err)
	}
	a := axis{key: kk[0], label: kk[1]}
	for _, f := range fields {
		if f = strings.TrimSpace(f); f != "" {
			a.values = append(a.values, f)
		}
	}
	if len(a.values) == 0 {
		return axis{}, fmt.Errorf("--xy %q: no values", spec)
	}
	if len(a.values) > 64 {
		return axis{}, fmt.Errorf("--xy %q: %d values; at most 64 an axis", spec, len(a.values))
	}
	base := presets.Default()
	base.Prompt = a.values[0]
	for _, v := range a.values {
		s := base
		if err := a.apply(&s, base.Prompt, v); err != nil {
			return axis{}, fmt.Errorf("--xy %q: %w", spec, err)
		}
	}
	return a, nil
}

// apply sets the axis' setting of s to v. Prompt S/R replaces every
// occurrence of first (the axis' first value) in the prompt with v.
func (a axis) apply(s *presets.Settings, first, v string) error {
	bad := func(err error) error { return fmt.Errorf("%s %q: %w", a.label, v, err) }
	switch a.key {
	case "cfg", "guidance-rescale":
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return bad(err)
		}
		if a.key == "cfg" {
			s.CFGScale = f
		} else {
			s.GuidanceRescale = f
		}
	case "steps", "seed", "clip-skip":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return bad(err)
		}
		switch a.key {
		case "steps":
			s.Steps = int(n)
		case "seed":
			s.Seed = n
		default:
			s.ClipSkip = int(n)
		}
	case "sampler":
		if _, _, err := sampler.LookupSampler(v); err != nil {
			return err
		}
		s.Sampler = v
	case "schedule":
		name, err := sampler.LookupSchedule(v)
		if err != nil {
			return err
		}
		s.Schedule = name
	case "prompt":
		if !strings.Contains(s.Prompt, first) {
			return fmt.Errorf("Prompt S/R: the prompt %q does not contain %q, the first value", s.Prompt, first)
		}
		s.Prompt = strings.ReplaceAll(s.Prompt, first, v)
	case "negative":
		s.NegativePrompt = v
	}
	if err := s.Validate(); err != nil {
		return bad(err)
	}
	return nil
}

// parseBranch reads the --branch changes ("cfg=12", "sampler=DDIM") into a
// function applying them to the branch's settings.
func parseBranch(specs []string) (func(*presets.Settings) error, error) {
	var axes []axis
	for _, spec := range specs {
		k, v, ok := strings.Cut(spec, "=")
		kk, known := axisKeys[strings.ToLower(strings.TrimSpace(k))]
		if !ok || !known || kk[0] == "seed" {
			return nil, fmt.Errorf("--branch %q: want KEY=VALUE with KEY one of cfg, steps, sampler, schedule, clip-skip, prompt, negative, guidance-rescale (a branch keeps the seed)", spec)
		}
		a := axis{key: kk[0], label: kk[1], values: []string{strings.TrimSpace(v)}}
		if a.key == "prompt" {
			a.label = "Prompt"
		}
		axes = append(axes, a)
	}
	apply := func(s *presets.Settings) error {
		for _, a := range axes {
			if a.key == "prompt" {
				s.Prompt = a.values[0]
				continue
			}
			if err := a.apply(s, "", a.values[0]); err != nil {
				return fmt.Errorf("--branch: %w", err)
			}
		}
		return nil
	}
	s := presets.Default()
	if err := apply(&s); err != nil {
		return nil, err
	}
	return apply, nil
}

// gridCell is one image of the plot and the settings it was made with.
type gridCell struct {
	img      *image.RGBA
	settings presets.Settings
}

// drawGrid lays cells (row-major, len(xs) columns) out as A1111 does: the
// X values above the columns, the Y values left of the rows, on white.
func drawGrid(cells []gridCell, x, y axis) *image.RGBA {
	face := basicfont.Face7x13
	const pad = 6
	textW := func(s string) int { return font.MeasureString(face, s).Ceil() }
	cw, ch := 0, 0
	for _, c := range cells {
		b := c.img.Bounds()
		cw, ch = max(cw, b.Dx()), max(ch, b.Dy())
	}
	// Labels longer than a cell wrap onto lines of the cell's width (at
	// least 12 characters).
	lineChars := max(cw/7, 16)
	xLabels := make([][]string, len(x.values))
	xLines := 1
	for i, v := range x.values {
		xLabels[i] = wrap(x.label+": "+v, lineChars)
		xLines = max(xLines, len(xLabels[i]))
	}
	colW := cw
	for _, ls := range xLabels {
		for _, l := range ls {
			colW = max(colW, textW(l))
		}
	}
	colW += 3 * pad
	left := 0
	var yLabels [][]string
	if len(y.values) > 0 {
		for _, v := range y.values {
			ls := wrap(y.label+": "+v, 24)
			yLabels = append(yLabels, ls)
			for _, l := range ls {
				left = max(left, textW(l))
			}
		}
		left += 2 * pad
	}
	top := xLines*13 + 2*pad
	rows := max(len(y.values), 1)
	rowH := max(ch, 13*maxLines(yLabels)) + pad
	out := image.NewRGBA(image.Rect(0, 0, left+colW*len(x.values), top+rowH*rows))
	draw.Draw(out, out.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	d := &font.Drawer{Dst: out, Src: image.NewUniform(color.Black), Face: face}
	put := func(s string, px, py int) {
		d.Dot = fixed.P(px, py)
		d.DrawString(s)
	}
	for i, ls := range xLabels {
		for j, l := range ls {
			put(l, left+i*colW+(colW-textW(l))/2, pad+11+j*13)
		}
	}
	for r, ls := range yLabels {
		y0 := top + r*rowH + (rowH-13*len(ls))/2
		for j, l := range ls {
			put(l, pad, y0+11+j*13)
		}
	}
	for i, c := range cells {
		col, row := i%len(x.values), i/len(x.values)
		b := c.img.Bounds()
		at := image.Pt(left+col*colW+(colW-b.Dx())/2, top+row*rowH+(rowH-b.Dy())/2)
		draw.Draw(out, image.Rectangle{Min: at, Max: at.Add(b.Size())}, c.img, b.Min, draw.Src)
	}
	return out
}

func maxLines(ls [][]string) int {
	n := 1
	for _, l := range ls {
		n = max(n, len(l))
	}
	return n
}

// wrap breaks s into lines of at most n characters, at spaces where it can.
func wrap(s string, n int) []string {
	var out []string
	for len([]rune(s)) > n {
		r := []rune(s)
		cut := n
		for i := n; i > n/2; i-- {
			if r[i] == ' ' {
				cut = i
				break
			}
		}
		out = append(out, strings.TrimSpace(string(r[:cut])))
		s = strings.TrimSpace(string(r[cut:]))
	}
	return append(out, s)
}
