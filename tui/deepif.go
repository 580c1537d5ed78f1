package tui

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/presets"
)

// DeepFloyd IF in the studio: a run is both stages of the cascade, stage
// I's frames then stage II's (runRec.Boundary of them are stage I's).
// Frames are pixels, shown as they are (no VAE).

// ifBoundaryGlyph marks the first cell of stage II on the timeline.
const ifBoundaryGlyph = "┃"

// stepLabel is the progress line's step counter: "step i/n", or for a
// DeepFloyd IF run the stage and the step within it ("stage I 3/10",
// "stage II 4/10").
func stepLabel(r *runRec, i, n int) string {
	if r.Boundary <= 0 {
		return fmt.Sprintf("step %d/%d", i, n)
	}
	if i <= r.Boundary {
		return fmt.Sprintf("stage I %d/%d", i, r.Boundary)
	}
	return fmt.Sprintf("stage II %d/%d", i-r.Boundary, max(n-r.Boundary, 0))
}

// cutUpscaler takes "--upscaler DIR" off the end of a model field ("PATH
// --upscaler DIR": a DeepFloyd IF stage I folder and its stage II).
func cutUpscaler(v string) (rest, upscaler string, err error) {
	i := strings.Index(v, "--upscaler")
	if i < 0 {
		return v, "", nil
	}
	rest, upscaler = v[:i], strings.TrimSpace(strings.TrimPrefix(v[i:], "--upscaler"))
	upscaler = unquotePath(strings.TrimSpace(strings.TrimPrefix(upscaler, "=")))
	if upscaler == "" {
		return "", "", errors.New("load model: --upscaler needs a folder")
	}
	return rest, upscaler, nil
}

// ifStarted fills what a started IF run adds: the stage boundary and the
// prompt's T5 token count.
func ifStarted(msg *runStartedMsg, f *gen.Facts, run *gen.Run) {
	msg.Boundary = run.IFBoundary()
	if f != nil && f.T5Tokenizer != nil {
		msg.PromptT5Tokens = len(f.T5Tokenizer.Encode(msg.Settings.Prompt)) + 1
	}
}

// traceIF is the pipeline trace of a DeepFloyd IF run: T5 tokens, stage I
// in pixels, the noised upscale at the noise level, stage II, pixels.
func traceIF(m *Model, r *runRec, w int) string {
	var b strings.Builder
	p, s := m.model, r.Settings
	stage := func(name, shape, detail string) {
		line := "  " + styleSelected.Render(fmt.Sprintf("%-14s", name)) + " " + shape
		if detail != "" {
			line += styleDim.Render(" · " + oneLine(detail))
		}
		b.WriteString(truncate(line, w) + "\n")
	}
	opW := min(max(w-30, 20), 60)
	arrow := func(op, t string) {
		line := "     " + styleDim.Render("│ ") + fmt.Sprintf("%-*s", opW, op) + " " + styleOK.Render(t)
		b.WriteString(truncate(line, w) + "\n")
	}
	n1 := r.Boundary
	n2 := max(r.total()-n1, 0)
	took := func(from, to int) string {
		var d time.Duration
		for i := max(from, r.Inherited); i < min(to, len(r.Frames)); i++ {
			d += r.Frames[i].Took
		}
		if d == 0 {
			return "—"
		}
		return d.Round(time.Millisecond).String()
	}
	b.WriteString(styleTitle.Render("Pipeline trace") + styleDim.Render("  DeepFloyd IF: a pixel-space cascade, no VAE") + "\n")
	b.WriteString(styleDim.Render(truncate(fmt.Sprintf("run %d on %s · shapes [batch, …]", r.ID, p.Name), w)) + "\n\n")
	stage("prompt", fmt.Sprintf("%d chars", len(s.Prompt)), s.Prompt)
	t5 := fmt.Sprintf("%d tokens with </s>, padded to %d; the attention mask covers the tokens", r.PromptT5Tokens, p.MaxSequenceLength)
	stage("T5 tokens", fmt.Sprintf("[1, %d] ids", p.MaxSequenceLength), t5)
	arrow("T5 encoder (masked), prompt + negative prompt", "—")
	stage("text states", fmt.Sprintf("[2, %d, %d]", p.MaxSequenceLength, p.TextHidden), "every position (padding too) reaches both U-Nets")
	b.WriteString("\n")
	h1 := s.Width
	stage("noise x_T", fmt.Sprintf("[1, 3, %d, %d]", h1, h1), fmt.Sprintf("seed %d, torch CPU generator", s.Seed))
	arrow(fmt.Sprintf("stage I U-Net ×%d steps (DDPM, learned variance, thresholding), cfg %s", n1, formatFloat(s.CFGScale)), took(0, n1))
	stage("stage I pixels", fmt.Sprintf("[1, 3, %d, %d]", h1, h1), "un-clamped output, the input of stage II")
	if p.IF == nil || p.IF.Upscaler == "" {
		stage("image", fmt.Sprintf("[1, 3, %d, %d]", h1, h1), "clamp(x/2+0.5): no upscaler loaded (stage II runs with --upscaler)")
		return b.String()
	}
	up := p.IF.Upscale
	if r.IFUp != nil {
		up = *r.IFUp // the run's: the fields may have changed them
	}
	h2 := h1 * p.IF.Factor
	if p.IF.UpscalerSize > 0 && h1 == p.NativeSize {
		h2 = p.IF.UpscalerSize
	}
	arrow(fmt.Sprintf("bilinear ×%d upscale, then noised at noise level %d (cosine schedule)", p.IF.Factor, up.NoiseLevel), "")
	stage("noised upscale", fmt.Sprintf("[1, 3, %d, %d]", h2, h2), fmt.Sprintf("noise-level conditioning: concatenated after x_t, class label %d", up.NoiseLevel))
	stage("noise x_T", fmt.Sprintf("[1, 3, %d, %d]", h2, h2), "a fresh generator of the same seed")
	arrow(fmt.Sprintf("stage II U-Net ×%d steps on [2, 6, %d, %d] (%s), cfg %s", n2, h2, h2, p.IF.Upscaler, formatFloat(up.CFG)), took(n1, n1+n2))
	stage("pixels", fmt.Sprintf("[1, 3, %d, %d]", h2, h2), fmt.Sprintf("clamp(x/2+0.5); %s in %s", runStatusNames[r.Status], r.Elapsed.Round(time.Millisecond)))
	return b.String()
}

// ifShownLabel names what the pane shows for a DeepFloyd IF run: its
// frames are pixels, not latents decoded by a VAE or projected.
func ifShownLabel(r *runRec, what string) string {
	if r.Boundary <= 0 {
		return what
	}
	what = strings.NewReplacer(" (VAE)", " (pixels)", " (latent preview)", " (pixels)").Replace(what)
	if r.Status == runDone && strings.HasPrefix(what, "final image") && len(r.Frames) > r.Boundary {
		what = "final image, stage II (pixels)"
	}
	return what
}

// Stage II's fields. DeepFloyd IF's upscaler takes its own step count,
// guidance and noise level; the form shows fields for them only while a
// cascade with an upscaler is loaded (editor.visible). A run (Ctrl+G), a
// branch and the guidance sweep take their values; they are written to
// the PNG text (gen.IFInfotext) and read back when a PNG is opened.

// ifUpFields are the form's stage II fields.
type ifUpFields struct {
	steps, cfg, noise *textEdit
	// on: a cascade with an upscaler is loaded (the fields are shown and
	// read); levels is its number of noise levels (1000).
	on     bool
	levels int
}

func newIFUpFields() ifUpFields {
	f := ifUpFields{steps: newTextEdit("", false), cfg: newTextEdit("", false), noise: newTextEdit("", false), levels: 1000}
	for _, t := range f.texts() {
		t.Limit = 24
	}
	f.set(gen.DefaultIFUpscale)
	return f
}

// texts lists the fields in focus order, for undo.
func (f *ifUpFields) texts() []*textEdit { return []*textEdit{f.steps, f.cfg, f.noise} }

func (f *ifUpFields) field(ff focus) *textEdit {
	if !ff.isIFUp() {
		return nil
	}
	return f.texts()[ff-focusUpSteps]
}

// set shows stage II settings up.
func (f *ifUpFields) set(up gen.IFUpscale) {
	f.steps.SetValue(strconv.Itoa(up.Steps))
	f.cfg.SetValue(formatFloat(up.CFG))
	f.noise.SetValue(strconv.Itoa(up.NoiseLevel))
}

// upscale parses and checks the fields: steps 1..presets.MaxSteps, a
// finite guidance scale >= 0, a whole noise level 0..levels-1.
func (f *ifUpFields) upscale() (gen.IFUpscale, error) {
	var up gen.IFUpscale
	v := strings.TrimSpace(f.steps.Value())
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		return up, fmt.Errorf("upscaler steps: %q is not a whole number", f.steps.Value())
	case n < 1 || n > presets.MaxSteps:
		return up, fmt.Errorf("upscaler steps %d: want 1..%d", n, presets.MaxSteps)
	}
	up.Steps = n
	c, err := strconv.ParseFloat(strings.TrimSpace(f.cfg.Value()), 64)
	switch {
	case err != nil || math.IsNaN(c) || math.IsInf(c, 0):
		return up, fmt.Errorf("upscaler cfg scale: %q is not a finite number", f.cfg.Value())
	case c < 0:
		return up, fmt.Errorf("upscaler cfg scale %s: want a number >= 0", formatFloat(c))
	}
	up.CFG = c
	v = strings.TrimSpace(f.noise.Value())
	n, err = strconv.Atoi(v)
	switch {
	case err != nil:
		return up, fmt.Errorf("noise level: %q is not a whole number", f.noise.Value())
	case n < 0 || n >= f.levels:
		return up, fmt.Errorf("noise level %d: want 0..%d", n, f.levels-1)
	}
	up.NoiseLevel = n
	return up, nil
}

// nudge moves a stage II field by d steps.
func (f *ifUpFields) nudge(ff focus, d float64) bool {
	t := f.field(ff)
	if t == nil {
		return false
	}
	if ff == focusUpCFG {
		v, err := strconv.ParseFloat(strings.TrimSpace(t.Value()), 64)
		if err != nil || math.IsNaN(v) {
			v = 0
		}
		t.SetValue(formatFloat(math.Max(math.Round((v+d*0.5)*2)/2, 0)))
		return true
	}
	v, _ := strconv.Atoi(strings.TrimSpace(t.Value()))
	lo, hi := 1, presets.MaxSteps
	if ff == focusNoiseLevel {
		lo, hi = 0, f.levels-1
	}
	t.SetValue(strconv.Itoa(min(max(v+int(d), lo), hi)))
	return true
}

// hint is the line under the form for a stage II field.
func (f *ifUpFields) hint(ff focus) string {
	switch ff {
	case focusUpSteps:
		return "DeepFloyd IF stage II: the upscaler's DDPM steps (--upscaler-steps)"
	case focusUpCFG:
		return "DeepFloyd IF stage II: the upscaler's guidance scale (--upscaler-cfg-scale; ←/→)"
	case focusNoiseLevel:
		return "DeepFloyd IF stage II: the noise added to the x4 upscale of stage I, its class label (--noise-level)"
	}
	return ""
}

// isIFUp reports whether f is a stage II field.
func (f focus) isIFUp() bool { return f >= focusUpSteps && f <= focusNoiseLevel }

// visible reports whether field f is in the form: the stage II fields only
// while a DeepFloyd IF cascade with an upscaler is loaded.
func (e *editor) visible(f focus) bool { return !f.isIFUp() || e.ifUp.on }

// setModel shows or hides the fields of the loaded model f: with a
// cascade and its upscaler, the stage II fields, showing the cascade's
// settings (the command line's, or the last run's).
func (e *editor) setModel(f *gen.Facts) {
	on := f != nil && f.IF != nil && f.IF.Upscaler != ""
	e.ifUp.on = on
	if !on {
		return
	}
	if f.IF.NoisingTimesteps > 0 {
		e.ifUp.levels = f.IF.NoisingTimesteps
	}
	if f.IF.Upscale.Steps > 0 {
		e.ifUp.set(f.IF.Upscale)
	}
}

// stageII is the edited stage II settings when the form shows them (nil
// otherwise), or what is wrong with them.
func (m *Model) stageII() (*gen.IFUpscale, error) {
	if !m.ed.ifUp.on {
		return nil, nil
	}
	up, err := m.ed.ifUp.upscale()
	if err != nil {
		return nil, err
	}
	return &up, nil
}

// moveFocus moves the focus d fields on (wrapping, past the timeline),
// over the fields the form does not show.
func (m *Model) moveFocus(d int) {
	f := m.focus
	for i := 0; i < int(numFocus); i++ {
		f = focus(wrapIndex(int(f)+d, int(numFocus)))
		if m.ed.visible(f) {
			break
		}
	}
	m.focus = f
}

// ifParamKeys are the PNG text's stage II keys (gen.IFInfotext).
var ifParamKeys = []string{"Upscaler steps", "Upscaler CFG scale", "Noise level"}

// ifParams takes the stage II keys out of an opened PNG's unknown
// parameters (nil: none).
func ifParams(unknown map[string]string) map[string]string {
	var out map[string]string
	for _, k := range ifParamKeys {
		if v, ok := unknown[k]; ok {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// setParams fills the stage II fields from an opened PNG's keys; a value
// that is not a number is left out and named in the returned error.
func (f *ifUpFields) setParams(ps map[string]string) error {
	var bad []string
	for i, k := range ifParamKeys {
		v, ok := ps[k]
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if i == 1 {
			c, err := strconv.ParseFloat(v, 64)
			if err != nil || math.IsNaN(c) || math.IsInf(c, 0) {
				bad = append(bad, fmt.Sprintf("%s %q", k, v))
				continue
			}
			f.cfg.SetValue(formatFloat(c))
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s %q", k, v))
			continue
		}
		f.texts()[i].SetValue(strconv.Itoa(n))
	}
	if len(bad) > 0 {
		return fmt.Errorf("not numbers, left as they were: %s", strings.Join(bad, ", "))
	}
	return nil
}

// modelFields shows the fields of the model just loaded (the stage II
// fields with a cascade and its upscaler); a focused field it hides gives
// the focus to the prompt.
func (m *Model) modelFields() {
	m.ed.setModel(m.model)
	if !m.ed.visible(m.focus) {
		m.focus = focusPrompt
	}
}
