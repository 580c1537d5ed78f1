package tui

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stepwise/stepwise/gen"
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
