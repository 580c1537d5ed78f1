package tui

import (
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/render"
)

// writeTestImage writes a w x h RGB gradient PNG (an init image).
func writeTestImage(t *testing.T, dir, name string, w, h int) string {
	t.Helper()
	im := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			im.SetNRGBA(x, y, color.NRGBA{uint8(x * 255 / w), uint8(y * 255 / h), 128, 255})
		}
	}
	p := filepath.Join(dir, name)
	require.NoError(t, render.WritePNG(p, im, nil, false))
	return p
}

// white lists the mask's pixels at 255, row by row.
func white(g *image.Gray) []image.Point {
	var out []image.Point
	for y := 0; y < g.Bounds().Dy(); y++ {
		for x := 0; x < g.Bounds().Dx(); x++ {
			if g.Pix[y*g.Stride+x] == 255 {
				out = append(out, image.Pt(x, y))
			}
		}
	}
	return out
}

// rect lists the points of [x0,x1) x [y0,y1), row by row.
func rect(x0, y0, x1, y1 int) []image.Point {
	var out []image.Point
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			out = append(out, image.Pt(x, y))
		}
	}
	return out
}

// paintHarness is the bundled model's studio at 100x25 with a 64x64
// init image, in mask-painting mode: the picture is drawn 32 cells wide
// and 16 high (32x32 half-block pixels), so a cell is 2x4 image pixels.
func paintHarness(t *testing.T) (*harness, string, image.Point) {
	h := newHarness(t, testSettings(), bundledLoad)
	require.NotNil(t, h.m.model, h.m.status)
	init := writeTestImage(t, t.TempDir(), "cat.png", 64, 64)
	h.update(teaSize(100, 25))
	h.setField(focusInit, init)
	h.waitFor("the init image", func() bool { return h.m.fieldImage(focusInit) != nil })
	h.keys("alt+m")
	require.True(t, h.m.mp.on, h.m.status)
	g, at := h.m.paintArea()
	require.Equal(t, image.Pt(64, 64), g.src)
	require.Equal(t, [2]int{32, 32}, [2]int{g.cols, g.pixH}, "the picture's half-block pixels")
	return h, init, at
}

func mouse(at image.Point, cx, cy int, b tea.MouseButton, a tea.MouseAction) tea.MouseMsg {
	return tea.MouseMsg{X: at.X + cx, Y: at.Y + cy, Button: b, Action: a}
}

// TestMaskPaintPixels: a click paints the cell's 2x4 pixels, a drag every
// cell between, the right button erases, a bigger brush adds the pixels
// within its radius; invert and clear; the feather is the mask blur the
// run applies; the saved PNG reads back equal and fills the mask field;
// painting again starts from it.
func TestMaskPaintPixels(t *testing.T) {
	h, _, at := paintHarness(t)
	m := h.m
	h.update(mouse(at, 3, 2, tea.MouseButtonLeft, tea.MouseActionPress))
	h.update(mouse(at, 3, 2, tea.MouseButtonLeft, tea.MouseActionRelease))
	assert.Equal(t, rect(6, 8, 8, 12), white(m.mp.mask), "one cell: pixel columns 6-7, rows 8-11")

	// A drag from cell 3 to cell 6 of row 2 (the motion skips cells).
	h.update(mouse(at, 3, 2, tea.MouseButtonLeft, tea.MouseActionPress))
	h.update(mouse(at, 6, 2, tea.MouseButtonLeft, tea.MouseActionMotion))
	h.update(mouse(at, 6, 2, tea.MouseButtonLeft, tea.MouseActionRelease))
	assert.Equal(t, rect(6, 8, 14, 12), white(m.mp.mask), "cells 3-6")

	// The right button erases cell 4.
	h.update(mouse(at, 4, 2, tea.MouseButtonRight, tea.MouseActionPress))
	h.update(mouse(at, 4, 2, tea.MouseButtonRight, tea.MouseActionRelease))
	var want []image.Point
	for y := 8; y < 12; y++ {
		for _, x := range []int{6, 7, 10, 11, 12, 13} {
			want = append(want, image.Pt(x, y))
		}
	}
	assert.Equal(t, want, white(m.mp.mask), "cell 4 erased")

	// Clear, then a brush of radius 2 at cell (10, 5): the cell (pixels
	// 20-21 x 20-23) and the pixels whose centres lie within 2 of its
	// centre (21, 22): columns 19 and 22 at rows 21-22.
	h.keys("c")
	assert.Empty(t, white(m.mp.mask), "cleared")
	h.keys("+", "+", "+", "-")
	require.Equal(t, 2, m.mp.radius())
	h.update(mouse(at, 10, 5, tea.MouseButtonLeft, tea.MouseActionPress))
	h.update(mouse(at, 10, 5, tea.MouseButtonLeft, tea.MouseActionRelease))
	want = []image.Point{{20, 20}, {21, 20}, {19, 21}, {20, 21}, {21, 21}, {22, 21}, {19, 22}, {20, 22}, {21, 22}, {22, 22}, {20, 23}, {21, 23}}
	assert.Equal(t, want, white(m.mp.mask), "brush radius 2")
	h.mustView("✎ mask: paint, brush 2px")

	// Invert: every other pixel.
	h.keys("i")
	assert.Len(t, white(m.mp.mask), 64*64-len(want))
	assert.Equal(t, uint8(0), m.mp.mask.GrayAt(20, 20).Y)
	h.keys("i")
	assert.Equal(t, want, white(m.mp.mask), "inverted twice")

	// Feather: f raises the mask blur; the overlay is the mask blurred as
	// the run blurs it, soft at the edges.
	h.keys("f", "f", "f")
	assert.Equal(t, "3", m.ed.img.maskBlur.Value())
	soft := m.shownMask()
	assert.Equal(t, gen.BlurMask(m.mp.mask, 3).Pix, soft.Pix)
	assert.Greater(t, soft.GrayAt(18, 21).Y, uint8(0), "outside the brush, feathered")
	assert.Less(t, soft.GrayAt(18, 21).Y, uint8(255))
	h.keys("F")
	assert.Equal(t, "2", m.ed.img.maskBlur.Value())

	// Esc saves the mask next to the exports and fills the mask field.
	painted := append([]uint8(nil), m.mp.mask.Pix...)
	h.keys("esc")
	require.False(t, m.mp.on, m.status)
	saved := filepath.Join(h.out, "cat_mask_0001.png")
	assert.Equal(t, saved, m.ed.img.mask.Value())
	back, err := gen.ReadMask(saved)
	require.NoError(t, err)
	assert.Equal(t, painted, back.Pix, "the PNG reads back as painted")
	s, err := m.ed.settings()
	require.NoError(t, err)
	assert.Equal(t, saved, s.Mask, "runs use the saved mask")
	assert.Equal(t, 2, s.MaskBlur)
	h.mustView("· mask")

	// Painting again starts from the saved mask, and saving again
	// replaces the same file.
	h.keys("alt+m")
	require.True(t, m.mp.on)
	assert.Equal(t, painted, m.mp.mask.Pix, "reloaded from the mask field")
	h.update(mouse(at, 0, 0, tea.MouseButtonLeft, tea.MouseActionPress))
	h.keys("esc")
	assert.Equal(t, saved, m.ed.img.mask.Value())
	back, err = gen.ReadMask(saved)
	require.NoError(t, err)
	assert.Equal(t, uint8(255), back.GrayAt(0, 0).Y)
	entries, err := os.ReadDir(h.out)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "one mask file, no temporaries")
}

// TestMaskPaintOwnFileNeverReplaced: a mask field naming the user's own
// file is a starting point; saving writes a new file beside the exports.
func TestMaskPaintOwnFileNeverReplaced(t *testing.T) {
	h, _, at := paintHarness(t)
	h.keys("esc")
	own := filepath.Join(t.TempDir(), "mine.png")
	mine := image.NewGray(image.Rect(0, 0, 64, 64))
	mine.Pix[0] = 255
	require.NoError(t, render.WritePNG(own, mine, nil, false))
	h.setField(focusMask, own)
	h.waitFor("the mask", func() bool { return h.m.fieldImage(focusMask) != nil })
	h.keys("alt+m")
	assert.Equal(t, mine.Pix, h.m.mp.mask.Pix)
	h.update(mouse(at, 31, 15, tea.MouseButtonLeft, tea.MouseActionPress))
	h.keys("esc")
	back, err := gen.ReadMask(own)
	require.NoError(t, err)
	assert.Equal(t, mine.Pix, back.Pix, "the user's mask is untouched")
	assert.True(t, strings.HasPrefix(h.m.ed.img.mask.Value(), h.out), h.m.ed.img.mask.Value())
}

// TestMaskPaintNeedsAnInitImage: without one the mode does not start and
// the status says why.
func TestMaskPaintNeedsAnInitImage(t *testing.T) {
	h := newHarness(t, testSettings(), bundledLoad)
	h.keys("alt+m")
	assert.False(t, h.m.mp.on)
	assert.True(t, h.m.statusErr)
	assert.Contains(t, h.m.status, "set the init image first")
}
