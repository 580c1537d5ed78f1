package render

import (
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCannyMatchesOpenCV compares Canny with cv2.Canny (OpenCV 4.6.0,
// Debian's python3-opencv) on testdata/canny/in.png, a 128x96 RGB image
// of smooth ramps, a disc and Gaussian noise, passed to OpenCV as the RGB
// array (as A1111's canny preprocessor does), at three threshold pairs,
// and on its greyscale version: every pixel equal. The references were
// made by
//
//	e = cv2.Canny(rgb, lo, hi); cv2.imwrite(f"out_{lo}_{hi}.png", e)
func TestCannyMatchesOpenCV(t *testing.T) {
	load := func(name string) image.Image {
		f, err := os.Open(filepath.Join("testdata", "canny", name))
		require.NoError(t, err)
		defer f.Close()
		im, err := png.Decode(f)
		require.NoError(t, err)
		return im
	}
	cases := []struct {
		in, want string
		lo, hi   int
	}{
		{"in.png", "out_100_200.png", 100, 200},
		{"in.png", "out_50_150.png", 50, 150},
		{"in.png", "out_20_60.png", 20, 60},
		{"gray.png", "gray_out_100_200.png", 100, 200},
	}
	for _, c := range cases {
		want := load(c.want).(*image.Gray)
		got := Canny(load(c.in), c.lo, c.hi)
		require.Equal(t, want.Bounds(), got.Bounds())
		diff, edges := 0, 0
		for i := range got.Pix {
			if got.Pix[i] != want.Pix[i] {
				diff++
			}
			if want.Pix[i] != 0 {
				edges++
			}
		}
		assert.Zerof(t, diff, "%s %d/%d: %d of %d pixels differ from OpenCV", c.in, c.lo, c.hi, diff, len(got.Pix))
		assert.NotZero(t, edges, fmt.Sprint(c))
	}
	// Swapped thresholds are swapped back, as OpenCV does; an empty image
	// gives an empty map.
	assert.Equal(t, Canny(load("in.png"), 100, 200).Pix, Canny(load("in.png"), 200, 100).Pix)
	assert.Empty(t, Canny(image.NewRGBA(image.Rect(0, 0, 0, 0)), 1, 2).Pix)
}
