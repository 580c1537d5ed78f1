package models

import (
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/checkpoint"
)

// TestPreprocessCLIPImageGolden: golden-wave4's pixel_values (the 64 px
// CLIPImageProcessor on init_64.png).
func TestPreprocessCLIPImageGolden(t *testing.T) {
	fh, err := os.Open(filepath.Join(golden.Wave(t, "golden-wave3"), "inputs", "init_64.png"))
	require.NoError(t, err)
	defer fh.Close()
	im, err := png.Decode(fh)
	require.NoError(t, err)
	g := golden.Open(t, filepath.Join(golden.Wave(t, "golden-wave4"), "ipadapter_image.safetensors"))
	want, shape := g.F32("pixel_values")
	require.Equal(t, []int{1, 3, 64, 64}, shape)
	got, err := PreprocessCLIPImage(im, checkpoint.DefaultImageProcessor(64))
	require.NoError(t, err)
	diff, _, _ := golden.MaxAbsDiff(got, want)
	// float32 arithmetic in numpy's order: within an ulp of the values (~2).
	assert.LessOrEqual(t, diff, 1e-6)
}

// TestPreprocessCLIPImageShapes: the shortest side is resized (the long
// one to int(size*long/short)), the centre cropped at floor offsets, a
// crop larger than the image is zero-padded, and flat colours stay flat
// through the bicubic filter.
func TestPreprocessCLIPImageShapes(t *testing.T) {
	w, h := shortestEdge(128, 96, 64)
	assert.Equal(t, [2]int{85, 64}, [2]int{w, h}, "int(64*128/96) = 85")
	w, h = shortestEdge(50, 300, 224)
	assert.Equal(t, [2]int{224, 1344}, [2]int{w, h})

	// Columns numbered 0..w-1: the crop keeps columns 10..73 of 85.
	pix := make([]uint8, 3*85*2)
	for y := 0; y < 2; y++ {
		for x := 0; x < 85; x++ {
			pix[3*(y*85+x)] = uint8(x)
		}
	}
	out, cw, ch := centerCrop(pix, 85, 2, 64, 2)
	require.Equal(t, [2]int{64, 2}, [2]int{cw, ch})
	assert.Equal(t, uint8(10), out[0])
	assert.Equal(t, uint8(73), out[3*63])
	// A 3x3 image in a 4x4 crop: offset floor(-1/2) = -1, so one row and
	// column of zeros come first.
	small := []uint8{1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8, 9, 9, 9}
	out, _, _ = centerCrop(small, 3, 3, 4, 4)
	assert.Equal(t, uint8(0), out[0])
	assert.Equal(t, uint8(1), out[3*(1*4+1)])
	assert.Equal(t, uint8(9), out[3*(3*4+3)])

	flat := image.NewNRGBA(image.Rect(0, 0, 131, 77))
	for i := 0; i < len(flat.Pix); i += 4 {
		flat.Pix[i], flat.Pix[i+1], flat.Pix[i+2], flat.Pix[i+3] = 200, 17, 255, 255
	}
	pc := checkpoint.DefaultImageProcessor(32)
	got, err := PreprocessCLIPImage(flat, pc)
	require.NoError(t, err)
	require.Len(t, got, 3*32*32)
	for c, v := range []uint8{200, 17, 255} {
		want := (float32(float64(v)/255) - float32(pc.Mean[c])) / float32(pc.Std[c])
		for i := 0; i < 32*32; i++ {
			require.InDelta(t, want, got[c*32*32+i], 0, "channel %d pixel %d: a flat colour stays exact", c, i)
		}
	}

	// Shrinking is antialiased (PIL's filter is stretched): a one-pixel
	// checkerboard becomes mid-grey, not aliased stripes.
	checker := image.NewGray(image.Rect(0, 0, 64, 64))
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			if (x+y)%2 == 0 {
				checker.SetGray(x, y, color.Gray{Y: 255})
			}
		}
	}
	pc = checkpoint.DefaultImageProcessor(16)
	pc.DoNormalize, pc.DoRescale = false, false
	got, err = PreprocessCLIPImage(checker, pc)
	require.NoError(t, err)
	for i, v := range got {
		require.InDelta(t, 127.5, v, 1.5, "value %d", i)
	}
}
