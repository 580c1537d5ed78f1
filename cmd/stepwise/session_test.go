package main

import (
	"image"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/render"
)

func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	fh, err := os.Open(path)
	require.NoError(t, err)
	defer fh.Close()
	im, err := png.Decode(fh)
	require.NoError(t, err)
	return im
}

func pixelsOf(im image.Image) []uint32 {
	var out []uint32
	b := im.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bb, a := im.At(x, y).RGBA()
			out = append(out, r, g, bb, a)
		}
	}
	return out
}

// --branch-at K without changes gives the unbranched image; with changes
// another one, whose parameters say where it branched and from what.
func TestGenerateBranchAt(t *testing.T) {
	dir := t.TempDir()
	base := []string{"-p", "red heart", "--steps", "6", "--seed", "3", "--sampler", "DPM++ 2M", "--device", "ref"}
	out := filepath.Join(dir, "base.png")
	_, err := runGen(t, append(base, "-o", out))
	require.NoError(t, err)
	same := filepath.Join(dir, "same.png")
	log, err := runGen(t, append(base, "--branch-at", "2", "-o", same))
	require.NoError(t, err)
	assert.Contains(t, log, "branched after step 2: no changes")
	assert.Equal(t, pixelsOf(decodePNG(t, out)), pixelsOf(decodePNG(t, same)), "a branch without changes continues the run exactly")

	other := filepath.Join(dir, "other.png")
	log, err = runGen(t, append(base, "--branch-at", "2", "--branch", "cfg=1", "--branch", "sampler=Euler", "-o", other))
	require.NoError(t, err)
	assert.Contains(t, log, "cfg 7 -> 1")
	assert.NotEqual(t, pixelsOf(decodePNG(t, out)), pixelsOf(decodePNG(t, other)))
	text, err := render.ReadPNGTextFile(other)
	require.NoError(t, err)
	assert.Contains(t, text["parameters"], "Sampler: Euler, Schedule type: Automatic, CFG scale: 1,")
	assert.Contains(t, text["parameters"], `Stepwise branch: "step 2 of Sampler=\"DPM++ 2M\"; CFG scale=7"`)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--branch", "cfg=1"}, "--branch needs --branch-at"},
		{[]string{"--branch-at", "2", "--branch", "seed=4"}, "a branch keeps the seed"},
		{[]string{"--branch-at", "2", "--branch", "cfg=x"}, `CFG Scale "x"`},
		{[]string{"--branch-at", "6"}, "--branch-at 6: the run has 6 steps"},
	} {
		_, err := runGen(t, append(append(base, c.args...), "-o", filepath.Join(dir, "bad.png")))
		assert.ErrorContains(t, err, c.want, c.args)
		assert.NoFileExists(t, filepath.Join(dir, "bad.png"))
	}
}

// --xy "cfg=1,7" "steps=2,4" writes one grid: the cells in place, each
// the image that generate writes for its settings, labels in the margin,
// and every cell's parameters in the PNG.
func TestGenerateXY(t *testing.T) {
	dir := t.TempDir()
	base := []string{"-p", "red heart", "--seed", "5", "--device", "ref"}
	grid := filepath.Join(dir, "grid.png")
	log, err := runGen(t, append(base, "--xy", "cfg=1,7", "steps=2,4", "-o", grid))
	require.NoError(t, err)
	assert.Contains(t, log, "cell 4/4: CFG Scale 7, Steps 4")
	text, err := render.ReadPNGTextFile(grid)
	require.NoError(t, err)
	assert.Contains(t, text["parameters"], "Script: X/Y/Z plot, X Type: CFG Scale, X Values: \"1,7\", Y Type: Steps, Y Values: \"2,4\"")
	assert.Contains(t, text["parameters 1,0"], "Steps: 2, Sampler: Euler, Schedule type: Automatic, CFG scale: 7,")
	assert.Contains(t, text["parameters 0,1"], "Steps: 4, Sampler: Euler, Schedule type: Automatic, CFG scale: 1,")
	g := decodePNG(t, grid)

	// The cell at column 1, row 1 is the image of cfg 7, steps 4.
	one := filepath.Join(dir, "one.png")
	_, err = runGen(t, append(base, "--cfg-scale", "7", "--steps", "4", "-o", one))
	require.NoError(t, err)
	want := decodePNG(t, one)
	w := want.Bounds().Dx()
	found := false
	for y := 0; y+w <= g.Bounds().Dy() && !found; y++ {
		for x := g.Bounds().Dx() / 2; x+w <= g.Bounds().Dx() && !found; x++ {
			sub := image.NewRGBA(image.Rect(0, 0, w, w))
			for yy := 0; yy < w; yy++ {
				for xx := 0; xx < w; xx++ {
					sub.Set(xx, yy, g.At(x+xx, y+yy))
				}
			}
			found = y > g.Bounds().Dy()/2 && assert.ObjectsAreEqual(pixelsOf(want), pixelsOf(sub))
		}
	}
	assert.True(t, found, "the grid holds the cfg 7 / steps 4 image in its lower right quarter")
	// The margins carry labels: dark pixels left of the first column and
	// above the first row.
	dark := 0
	for y := 0; y < g.Bounds().Dy(); y++ {
		for x := 0; x < 20; x++ {
			if r, _, _, _ := g.At(x, y).RGBA(); r < 0x4000 {
				dark++
			}
		}
	}
	assert.Greater(t, dark, 20, "the Y labels are drawn")

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--xy", "color=1,2"}, `unknown axis "color"`},
		{[]string{"--xy", "cfg=1,x"}, `CFG Scale "x"`},
		{[]string{"--xy", "sampler=Euler,Nope"}, `unknown sampler "Nope"`},
		{[]string{"--xy", "prompt=star,moon"}, "which the prompt \"red heart\" does not contain"},
		{[]string{"--xy", "cfg=1", "--xy", "cfg=2"}, "both axes set CFG Scale"},
		{[]string{"--xy", "cfg=1", "--batch", "2"}, "leave --batch at 1"},
	} {
		_, err := runGen(t, append(append(base, c.args...), "-o", filepath.Join(dir, "bad.png")))
		assert.ErrorContains(t, err, c.want, c.args)
	}
}

// --from of a branched export reproduces it: the same pixels.
func TestFromReproducesABranch(t *testing.T) {
	dir := t.TempDir()
	base := []string{"-p", "red heart", "--steps", "6", "--seed", "3", "--device", "ref"}
	b := filepath.Join(dir, "b.png")
	_, err := runGen(t, append(base, "--branch-at", "3", "--branch", "cfg=2", "--branch", "prompt=blue heart", "-o", b))
	require.NoError(t, err)
	again := filepath.Join(dir, "again.png")
	log, err := runGen(t, []string{"--from", b, "--device", "ref", "-o", again})
	require.NoError(t, err)
	assert.Contains(t, log, "branched after step 3: cfg 7 -> 2, prompt red heart -> blue heart")
	assert.True(t, assert.ObjectsAreEqual(pixelsOf(decodePNG(t, b)), pixelsOf(decodePNG(t, again))), "--from reproduces the branched image")
}

// --from warns about every field it does not apply and about another
// model, never copies the foreign model hash, and of one image of a batch
// writes that image only.
func TestFromWarnsAndKeepsItsModelHash(t *testing.T) {
	dir := t.TempDir()
	a1111 := filepath.Join(dir, "a1111.png")
	img := image.NewRGBA(image.Rect(0, 0, 32, 32))
	params := "red heart\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 32x32, Model hash: 6ce0161689, Model: v1-5-pruned, Hires upscale: 2, Hires steps: 10, Batch size: 2, Batch pos: 1, Version: v1.10"
	require.NoError(t, render.WritePNG(a1111, img, map[string]string{"parameters": params}, false))
	out := filepath.Join(dir, "out.png")
	log, err := runGen(t, []string{"--from", a1111, "--device", "ref", "-o", out})
	require.NoError(t, err)
	assert.Contains(t, log, "not applied (Stepwise has no such setting): Hires steps: 10, Hires upscale: 2")
	assert.Contains(t, log, "was made with the model v1-5-pruned (hash 6ce0161689); generating with stepwise-emoji")
	assert.Contains(t, log, "image 2 of a batch of 2")
	text, err := render.ReadPNGTextFile(out)
	require.NoError(t, err)
	assert.NotContains(t, text["parameters"], "6ce0161689")
	assert.Contains(t, text["parameters"], "Batch pos: 1")
	assert.NoFileExists(t, filepath.Join(dir, "out_0.png"))
	// The written image is the batch's second.
	both := filepath.Join(dir, "both.png")
	_, err = runGen(t, []string{"-p", "red heart", "--steps", "3", "--sampler", "Euler a", "--seed", "5", "--batch", "2", "--rng", "philox", "-W", "32", "-H", "32", "--device", "ref", "-o", both})
	require.NoError(t, err)
	assert.True(t, assert.ObjectsAreEqual(pixelsOf(decodePNG(t, filepath.Join(dir, "both_1.png"))), pixelsOf(decodePNG(t, out))), "the batch's second image")
	assert.False(t, assert.ObjectsAreEqual(pixelsOf(decodePNG(t, filepath.Join(dir, "both_0.png"))), pixelsOf(decodePNG(t, out))))
}

// A side that is not a multiple of 8 is named by its flag, not as a size
// with the other side 0.
func TestSizeErrorNamesTheSide(t *testing.T) {
	_, err := parseGenerate([]string{"-p", "x", "-W", "33"}, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-W 33: width and height must be multiples of 8")
	assert.NotContains(t, err.Error(), "33x0")
	_, err = parseGenerate([]string{"-p", "x", "-H", "70"}, io.Discard)
	assert.ErrorContains(t, err, "-H 70:")
}
