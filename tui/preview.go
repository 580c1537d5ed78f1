package tui

import (
	"fmt"
	"image"
	"image/draw"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/render"
	"github.com/stepwise/stepwise/sampler"
)

// renderCache keeps the half-block text of recently drawn images, so that
// redrawing the screen (every key, every frame) does not resample them.
type renderCache struct {
	m    map[cacheKey]string
	conv map[image.Image]*image.RGBA // see halfBlockRGBA
}

type cacheKey struct {
	img        *image.RGBA
	cols, rows int
}

func (c *renderCache) halfBlock(img *image.RGBA, cols, rows int, mode render.ColorMode) string {
	if img == nil || cols < 1 || rows < 1 {
		return ""
	}
	k := cacheKey{img, cols, rows}
	if s, ok := c.m[k]; ok {
		return s
	}
	if c.m == nil || len(c.m) > 256 {
		c.m = map[cacheKey]string{}
	}
	opt := render.Options{Mode: mode}
	if mode != render.TrueColor {
		opt.Dither = render.DitherOrdered // stable between frames
	}
	s := render.HalfBlockWith(img, cols, rows, opt)
	c.m[k] = s
	return s
}

// previewAll projects every image of a latent batch to RGB (no VAE, the
// model's own latent projection) and
// lays them side by side.
func previewAll(f *gen.Facts, l sampler.Latent) *image.RGBA {
	imgs := make([]*image.RGBA, l.Shape[0])
	for i := range imgs {
		imgs[i] = f.Preview(l, i)
	}
	return tile(imgs)
}

// tile lays images side by side with a one-pixel gap (the first image
// itself when there is one).
func tile(imgs []*image.RGBA) *image.RGBA {
	if len(imgs) == 1 {
		return imgs[0]
	}
	w, h := 0, 0
	for _, im := range imgs {
		w += im.Bounds().Dx() + 1
		h = max(h, im.Bounds().Dy())
	}
	out := image.NewRGBA(image.Rect(0, 0, max(w-1, 1), max(h, 1)))
	x := 0
	for _, im := range imgs {
		b := im.Bounds()
		draw.Draw(out, image.Rect(x, 0, x+b.Dx(), b.Dy()), im, b.Min, draw.Src)
		x += b.Dx() + 1
	}
	return out
}

// shown returns the picture on screen for run r at the cursor and what it
// is.
func (m *Model) shown(r *runRec) (*image.RGBA, string) {
	if m.frame < 0 || len(r.Frames) == 0 {
		if r.Noise == nil {
			switch r.Status {
			case runFailed:
				return nil, "failed before its first step"
			case runCancelled, runStopped:
				return nil, runStatusNames[r.Status] + " before its first step"
			}
			return nil, "encoding the prompt…"
		}
		return r.Noise, "initial noise x_T (latent preview)"
	}
	i := min(m.frame, len(r.Frames)-1)
	if r.Status == runDone && i == len(r.Frames)-1 && len(r.Images) > 0 {
		if r.final == nil {
			r.final = tile(r.Images)
		}
		if r.Frames[i].Tiny {
			return r.final, "final image (TAESD)"
		}
		return r.final, "final image (VAE)"
	}
	if d := r.decoded[decodeKey{i, m.showX0}]; d.img != nil {
		if m.showX0 {
			return d.img, "predicted x0 (" + decoderName(d.tiny) + ")"
		}
		return d.img, "x_t (" + decoderName(d.tiny) + ")"
	}
	f := r.Frames[i]
	if f.Tiny && m.showX0 {
		return f.X0, "predicted x0 (TAESD)"
	}
	if m.showX0 {
		if f.X0VAE {
			return f.X0, "predicted x0 (VAE)"
		}
		return f.X0, "predicted x0 (latent preview)"
	}
	if f.XTVAE {
		return f.XT, "x_t (VAE)"
	}
	return f.XT, "x_t (latent preview)"
}

// previewPane draws the run on screen: a title, the picture sized to the
// pane, the progress line, the timeline and the history.
func (m *Model) previewPane(w, h int) string {
	st := stylePane
	if m.focus == focusTimeline {
		st = stylePaneOn
	}
	iw, ih := max(w-2, 1), max(h-2, 1)
	imgRows := max(ih-4, 1)
	var title, img, progress, bar, hist string
	if len(m.runs) == 0 {
		title = styleDim.Render("no run yet")
		msg := "Type a prompt, then press ctrl+g to generate.\nEvery step appears here; tab to the timeline to pause, step, scrub and branch."
		if m.loading {
			msg = "loading the model…"
		} else if m.model == nil {
			msg = styleErr.Render(m.status)
		}
		img = lipgloss.Place(iw, imgRows, lipgloss.Center, lipgloss.Center, lipgloss.NewStyle().Width(min(iw, 60)).Render(msg))
	} else {
		r := m.runs[m.cur]
		pic, what := m.shown(r)
		what = ifShownLabel(r, what)
		title = fmt.Sprintf("run %d", r.ID)
		if r.Live {
			title += " (live)"
		}
		if r.Parent >= 0 {
			title += fmt.Sprintf(" (branch of %d at step %d)", r.Parent, r.At+1)
		}
		title += " · " + what
		if r.Settings.Batch > 1 {
			title += fmt.Sprintf(" · batch of %d", r.Settings.Batch)
		}
		img = lipgloss.Place(iw, imgRows, lipgloss.Center, lipgloss.Center, m.cache.halfBlock(pic, iw, imgRows, m.opts.Color))
		progress = m.progressLine(r, iw)
		bar = m.timelineBar(r, iw)
		hist = m.historyLine(iw)
	}
	if m.showInputs() {
		title, img = m.inputPane(iw, imgRows)
		if m.mp.on {
			title = m.mp.label() + " · " + title
		}
	}
	inner := strings.Join([]string{truncate(styleLabelOn.Render(title), iw), img, truncate(progress, iw), bar, hist}, "\n")
	return st.Width(iw).Height(ih).Render(fitBlock(inner, iw, ih))
}

// progressLine: step i/N, sigma, it/s, ETA and the run's state, in w
// cells (shorter words when the pane is narrow).
//
// Once the long form has not fitted a run at a width, the run keeps the
// short one at that width: the line does not flip between the two as its
// numbers change length.
func (m *Model) progressLine(r *runRec, w int) string {
	if r.shortAt != w {
		if s := m.progressText(r, false); lipgloss.Width(s) <= w {
			return s
		}
		r.shortAt = w
	}
	return m.progressText(r, true)
}

func (m *Model) progressText(r *runRec, short bool) string {
	n := r.total()
	i := m.frame + 1
	parts := []string{stepLabel(r, i, n)}
	if m.frame >= 0 && m.frame < len(r.Frames) {
		f := r.Frames[m.frame]
		if short {
			parts = append(parts, fmt.Sprintf("σ %.3g", f.Sigma))
		} else {
			parts = append(parts, fmt.Sprintf("σ %.3f→%.3f", f.Sigma, f.Next), fmt.Sprintf("t %.0f", f.Timestep))
		}
	}
	var took time.Duration
	for _, f := range r.Frames[r.Inherited:] {
		took += f.Took
	}
	done := len(r.Frames) - r.Inherited
	if done > 0 && took > 0 {
		per := took / time.Duration(done)
		parts = append(parts, fmt.Sprintf("%.2f it/s", float64(time.Second)/float64(per)))
		if r.Status == runRunning {
			eta := per * time.Duration(max(n-len(r.Frames), 0))
			parts = append(parts, "ETA "+eta.Round(100*time.Millisecond).String())
		}
	}
	state := runStatusNames[r.Status]
	if r.Status == runRunning && m.paused {
		state = "paused"
	}
	if r.Status == runDone {
		state = "done in " + r.Elapsed.Round(10*time.Millisecond).String()
		if short {
			state = "done " + r.Elapsed.Round(100*time.Millisecond).String()
		}
	}
	if r.Status == runFailed && r.Err != nil {
		state = "failed: " + r.Err.Error()
	}
	parts = append(parts, state)
	if short {
		return strings.Join(parts, " ")
	}
	return strings.Join(parts, " · ")
}

// decodedImage is a frame decoded on request (the v key) and whether the
// pipeline's TAESD decoded it rather than its VAE.
type decodedImage struct {
	img  *image.RGBA
	tiny bool
}

// decoderName names what decoded a picture for titles and the status line.
func decoderName(tiny bool) string {
	if tiny {
		return "TAESD"
	}
	return "VAE"
}
