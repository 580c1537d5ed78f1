package bundled

import (
	"context"
	"image"
	"math"
	"testing"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/presets"
)

// TestBundledGenerates loads the embedded model on every device and draws
// one emoji: the image must be the model's native size, mostly white
// background (emoji are composited on white) and not a flat colour.
func TestBundledGenerates(t *testing.T) {
	if Size() > 32<<20 {
		t.Errorf("bundled weights are %d bytes, over the 32 MiB budget", Size())
	}
	for name, open := range testdev.All(t) {
		t.Run(name, func(t *testing.T) {
			p, err := Load(open(t))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if p.Model.Family != "SD 1.x" {
				t.Errorf("family %q, want SD 1.x (%s)", p.Model.Family, p.Model.FamilyWhy)
			}
			s := presets.Default()
			s.Prompt, s.Seed, s.Steps, s.CFGScale = "red heart", 1, 20, 6
			s.Width, s.Height = p.NativeSize(), p.NativeSize()
			j, err := gen.Start(p, s)
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			imgs, err := j.Finish(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			im := imgs[0]
			checkPreview(t, gen.PreviewFor(p, j.Frames[len(j.Frames)-1].Denoised, 0), im)
			if im.Bounds().Dx() != s.Width || im.Bounds().Dy() != s.Height {
				t.Fatalf("image %v, want %dx%d", im.Bounds(), s.Width, s.Height)
			}
			border, inner := ringLuminance(im)
			t.Logf("%s: border luminance %.0f, centre %.0f (of 255)", name, border, inner)
			// Emoji were composited on white: whatever the model draws for a
			// prompt, its border is light and its centre is not blank.
			if border < 170 || inner > border-15 {
				t.Errorf("the image does not look like an emoji on white: border luminance %.0f, centre %.0f", border, inner)
			}
		})
	}
}

// checkPreview compares the free latent -> RGB preview with the VAE's image
// average-pooled to latent size: the model's own projection must track it.
func checkPreview(t *testing.T, pre, img *image.RGBA) {
	t.Helper()
	f := img.Bounds().Dx() / pre.Bounds().Dx()
	var sum float64
	n := 0
	for y := 0; y < pre.Bounds().Dy(); y++ {
		for x := 0; x < pre.Bounds().Dx(); x++ {
			for ch := 0; ch < 3; ch++ {
				var avg float64
				for dy := 0; dy < f; dy++ {
					for dx := 0; dx < f; dx++ {
						avg += float64(img.Pix[img.PixOffset(x*f+dx, y*f+dy)+ch])
					}
				}
				avg /= float64(f * f)
				sum += math.Abs(avg - float64(pre.Pix[pre.PixOffset(x, y)+ch]))
				n++
			}
		}
	}
	mae := sum / float64(n)
	t.Logf("latent preview vs pooled VAE image: mean |diff| %.1f of 255", mae)
	if mae > 40 {
		t.Errorf("the latent preview is far from the decoded image: mean |diff| %.1f of 255", mae)
	}
}

// ringLuminance returns the mean luminance of the outer eighth of the image
// and of its central half.
func ringLuminance(im *image.RGBA) (border, centre float64) {
	w, h := im.Bounds().Dx(), im.Bounds().Dy()
	m := max(w/8, 1)
	var bs, cs float64
	var bn, cn int
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			o := im.PixOffset(x, y)
			l := (float64(im.Pix[o]) + float64(im.Pix[o+1]) + float64(im.Pix[o+2])) / 3
			switch {
			case x < m || y < m || x >= w-m || y >= h-m:
				bs += l
				bn++
			case x >= w/4 && x < 3*w/4 && y >= h/4 && y < 3*h/4:
				cs += l
				cn++
			}
		}
	}
	return bs / float64(bn), cs / float64(cn)
}
