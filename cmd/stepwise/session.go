package main

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/internal/termsafe"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
)

// parseSessionFlags checks --branch-at/--branch and --xy before any model
// is loaded.
func parseSessionFlags(f *genFlags) error {
	if len(f.branch) > 0 && f.branchAt == 0 {
		return errors.New("--branch needs --branch-at K: the step to branch after")
	}
	if f.branchAt < 0 {
		return fmt.Errorf("--branch-at %d: want a step, from 1", f.branchAt)
	}
	fn, err := parseBranch(f.branch)
	if err != nil {
		return err
	}
	f.branchFn = fn
	if f.branchAt > 0 {
		f.chain = []branchLink{{at: f.branchAt, apply: fn, flag: fmt.Sprintf("--branch-at %d", f.branchAt)}}
	}
	if len(f.xySpecs) == 0 {
		return nil
	}
	switch {
	case len(f.xySpecs) > 2:
		return fmt.Errorf("--xy given %d times: an X/Y plot has at most two axes (X, then Y)", len(f.xySpecs))
	case len(f.chain) > 0:
		return errors.New("--xy and --branch-at (or a --from PNG that records a branch) cannot be combined")
	case f.s.Batch > 1:
		return errors.New("--xy draws one image a cell: leave --batch at 1")
	}
	for _, spec := range f.xySpecs {
		a, err := parseAxis(spec)
		if err != nil {
			return err
		}
		if a.key == "prompt" && !strings.Contains(f.s.Prompt, a.values[0]) {
			return fmt.Errorf("--xy %q: Prompt S/R replaces the first value, %q, which the prompt %q does not contain", spec, a.values[0], f.s.Prompt)
		}
		f.xy = append(f.xy, a)
	}
	if len(f.xy) == 2 && f.xy[0].key == f.xy[1].key {
		return fmt.Errorf("--xy: both axes set %s", f.xy[0].label)
	}
	if n := len(f.xy[0].values) * max(1, len(f.xy[len(f.xy)-1].values)); n > 256 {
		return fmt.Errorf("--xy: %d cells; at most 256", n)
	}
	return nil
}

// branchChanges says what a branch changed, for the terminal.
func branchChanges(was, now presets.Settings) []string {
	var out []string
	add := func(k string, a, b any) {
		if fmt.Sprint(a) != fmt.Sprint(b) {
			out = append(out, fmt.Sprintf("%s %v -> %v", k, a, b))
		}
	}
	add("steps", was.Steps, now.Steps)
	add("sampler", was.Sampler, now.Sampler)
	add("schedule", was.Schedule, now.Schedule)
	add("cfg", was.CFGScale, now.CFGScale)
	add("clip skip", was.ClipSkip, now.ClipSkip)
	add("guidance rescale", was.GuidanceRescale, now.GuidanceRescale)
	add("prompt", termsafe.Text(was.Prompt), termsafe.Text(now.Prompt))
	add("negative prompt", termsafe.Text(was.NegativePrompt), termsafe.Text(now.NegativePrompt))
	if len(out) == 0 {
		out = append(out, "no changes")
	}
	return out
}

// generateXY runs every cell of the X/Y plot (one seed for all, as A1111
// unless seed is an axis) and writes one labelled grid to path. Its
// "parameters" are the first cell's with A1111's X/Y plot keys; each
// cell's own parameters are in a "parameters X,Y" text chunk.
func generateXY(ctx context.Context, sess *gen.Session, f genFlags, base presets.Settings, in *gen.Inputs, path string, stderr io.Writer) error {
	x := f.xy[0]
	var y axis
	if len(f.xy) > 1 {
		y = f.xy[1]
	}
	if base.Seed < 0 {
		base.Seed = gen.RandomSeed()
		fmt.Fprintf(stderr, "seed: %d\n", base.Seed)
	}
	rows := max(len(y.values), 1)
	cells := make([]gridCell, 0, rows*len(x.values))
	text := map[string]string{}
	t0 := time.Now()
	for r := 0; r < rows; r++ {
		for c, xv := range x.values {
			s := base
			if err := x.apply(&s, x.values[0], xv); err != nil {
				return err
			}
			label := x.label + " " + xv
			if len(y.values) > 0 {
				if err := y.apply(&s, y.values[0], y.values[r]); err != nil {
					return err
				}
				label += ", " + y.label + " " + y.values[r]
			}
			if err := gen.Validate(sess.Pipeline(), s); err != nil {
				return fmt.Errorf("cell %s: %w; nothing written", termsafe.Text(label), err)
			}
			id := len(cells) + 1
			run, err := sess.StartInputs(id, s, in)
			if err != nil {
				return fmt.Errorf("cell %s: %w; nothing written", termsafe.Text(label), err)
			}
			fmt.Fprintf(stderr, "cell %d/%d: %s\n", id, cap(cells), termsafe.Text(label))
			prog := newProgress(stderr, f.preview, sess.Pipeline())
			imgs, err := sess.Finish(ctx, run, func(st gen.Step) { prog.step(st.Frame) })
			prog.finish()
			sess.End(run)
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted at cell %d/%d; nothing written", id, cap(cells))
			}
			if err != nil {
				return fmt.Errorf("cell %s: %w; nothing written", termsafe.Text(label), err)
			}
			cells = append(cells, gridCell{img: imgs[0], settings: run.Job.Settings})
			text[fmt.Sprintf("parameters %d,%d", c, r)] = sess.Infotext(id, 0)
		}
	}
	extra := []presets.Param{{Key: "Script", Value: "X/Y/Z plot"}, {Key: "X Type", Value: x.label}, {Key: "X Values", Value: strings.Join(x.values, ",")}}
	if len(y.values) > 0 {
		extra = append(extra, presets.Param{Key: "Y Type", Value: y.label}, presets.Param{Key: "Y Values", Value: strings.Join(y.values, ",")})
	}
	text["parameters"] = cells[0].settings.InfotextWith(extra...)
	var grid image.Image = drawGrid(cells, x, y)
	if err := render.WritePNG(path, grid, text, f.force); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s (%d cells)\ndone in %.2fs\n", path, len(cells), time.Since(t0).Seconds())
	return nil
}

// branchTo returns a branchLink's apply that sets the settings a branch
// may change to target's.
func branchTo(target presets.Settings) func(*presets.Settings) error {
	return func(s *presets.Settings) error {
		s.Steps, s.Sampler, s.Schedule, s.CFGScale = target.Steps, target.Sampler, target.Schedule, target.CFGScale
		s.GuidanceRescale, s.ClipSkip = target.GuidanceRescale, target.ClipSkip
		s.Prompt, s.NegativePrompt = target.Prompt, target.NegativePrompt
		return nil
	}
}

// fromPNGExtras applies what a --from PNG holds beyond the settings: the
// branches it records (reproduced unless --branch-at is given), the image's
// place in a batch (only it is written), the model it names (compared
// after loading; its hash is never copied next to another model's name),
// and a warning naming every field that is not applied.
func fromPNGExtras(f *genFlags, set map[string]bool, unknown map[string]string, warn func(string, ...any)) error {
	f.fromModel, f.fromHash = f.s.Model, f.s.ModelHash
	f.s.ModelHash = "" // the loaded model's own is written
	if v, ok := unknown[gen.BranchKey]; ok {
		delete(unknown, gen.BranchKey)
		steps, err := gen.ParseBranch(v, f.s)
		switch {
		case err != nil:
			warn("%v; generating without the branch", err)
		case f.branchAt == 0:
			f.chain = nil
			for i, st := range steps {
				target := f.s
				if i+1 < len(steps) {
					target = steps[i+1].Parent
				}
				f.chain = append(f.chain, branchLink{at: st.At, apply: branchTo(target), flag: fmt.Sprintf("--from %s: the branch after step %d", f.from, st.At)})
			}
			leaf := f.s
			f.s = steps[0].Parent
			// Flags given override the first run's settings as well.
			if set["seed"] || set["s"] {
				f.s.Seed = leaf.Seed
			}
		}
	}
	if v, ok := unknown["Batch pos"]; ok {
		delete(unknown, "Batch pos")
		pos, err := strconv.Atoi(v)
		if err == nil && pos >= 0 && pos < f.s.Batch && !set["batch"] && !set["b"] {
			f.batchPos = pos + 1
			warn("it is image %d of a batch of %d: the batch is drawn again (its noise is one draw) and only that image is written", pos+1, f.s.Batch)
		}
	}
	if v, ok := unknown["Stepwise frame"]; ok {
		delete(unknown, "Stepwise frame")
		warn("it is a mid-run frame (%s); generating the finished image", v)
	}
	delete(unknown, "Version")
	ifFromPNG(f, set, unknown, warn)
	var keys []string
	for k, v := range unknown {
		keys = append(keys, k+": "+v)
	}
	sort.Strings(keys)
	if len(keys) > 0 {
		warn("not applied (Stepwise has no such setting): %s", strings.Join(keys, ", "))
	}
	return nil
}

// modelNote says when the model loaded is not the one a --from PNG names.
func modelNote(f genFlags, name, hash string) string {
	if f.fromModel == "" && f.fromHash == "" {
		return ""
	}
	same := (f.fromHash != "" && hash != "" && f.fromHash == hash) || (f.fromHash == "" || hash == "") && f.fromModel == name
	if same {
		return ""
	}
	was := f.fromModel
	if f.fromHash != "" {
		was += " (hash " + f.fromHash + ")"
	}
	now := name
	if hash != "" {
		now += " (hash " + hash + ")"
	}
	return fmt.Sprintf("--from %s was made with the model %s; generating with %s, so the image will differ", f.from, strings.TrimSpace(was), now)
}

// vaePreview is the VAE decode of the step's predicted x0 for --preview
// while the budget allows it (nil: use the latent projection, or the
// TAESD the pipeline has).
func vaePreview(sess *gen.Session, r *gen.Run, st gen.Step, b *gen.PreviewBudget) *image.RGBA {
	if p := sess.Pipeline(); p == nil || p.TAESD() != nil {
		return nil
	}
	b.Stepped(st.Took)
	if !b.Allows() {
		return nil
	}
	t0 := time.Now()
	imgs, err := sess.Decode(r.ID, len(r.Job.Frames)-1, true)
	b.Spent(time.Since(t0))
	if err != nil || len(imgs) == 0 {
		b.Spent(time.Hour) // the step's own error path reports device faults
		return nil
	}
	return imgs[0]
}
