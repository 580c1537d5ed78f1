// Package render turns pictures into things a terminal or a file can hold:
// an image into half-block ANSI text, an SD latent into a cheap RGB preview,
// and an image into a PNG that carries its generation parameters. It
// imports nothing else of Stepwise.
package render

import (
	"image"
	"math"
	"os"
	"strconv"
	"strings"
)

// ColorMode is how colours are written to the terminal.
type ColorMode int

const (
	// TrueColor writes 24-bit SGR colours (ESC[38;2;R;G;Bm).
	TrueColor ColorMode = iota
	// ANSI256 writes the nearest entry of the xterm 256-colour palette
	// (its 6x6x6 cube and 24 greys; the 16 themeable colours are not used).
	ANSI256
	// NoColor writes no escape codes: one character of the ramp " ░▒▓█" per
	// cell, from the mean luminance of its two pixels.
	NoColor
)

func (m ColorMode) String() string {
	switch m {
	case TrueColor:
		return "truecolor"
	case ANSI256:
		return "256"
	case NoColor:
		return "nocolor"
	}
	return "ColorMode(" + strconv.Itoa(int(m)) + ")"
}

// DetectColorMode picks a mode from the environment: NO_COLOR set and not
// empty gives NoColor (https://no-color.org); COLORTERM "truecolor" or
// "24bit" gives TrueColor; TERM "dumb" gives NoColor; anything else
// (including TERM=*-256color) gives ANSI256.
func DetectColorMode() ColorMode {
	if os.Getenv("NO_COLOR") != "" {
		return NoColor
	}
	switch strings.ToLower(os.Getenv("COLORTERM")) {
	case "truecolor", "24bit":
		return TrueColor
	}
	if os.Getenv("TERM") == "dumb" {
		return NoColor
	}
	return ANSI256
}

// Dither selects error diffusion or ordered dithering for the ANSI256 and
// NoColor modes (TrueColor needs none).
type Dither int

const (
	DitherNone           Dither = iota
	DitherOrdered               // 4x4 Bayer matrix: stable between frames, good for live previews
	DitherFloydSteinberg        // error diffusion in linear light: smoother, but crawls between frames
)

// Options are the settings of HalfBlockWith.
type Options struct {
	Mode   ColorMode
	Dither Dither
}

// HalfBlock renders img as half-block text: each cell is "▀" with the upper
// pixel as foreground and the lower as background. The image is resized with
// an area-averaging (box) filter in linear light to the largest size that
// fits cols x 2*rows pixels with its aspect ratio (the text may be narrower
// or shorter than the box). Lines are joined by "\n"; in the colour modes
// each line ends with a reset (ESC[0m); all lines have the same width and
// there is no cursor movement, so lipgloss can place the result.
func HalfBlock(img image.Image, cols, rows int, mode ColorMode) string {
	return HalfBlockWith(img, cols, rows, Options{Mode: mode})
}

// HalfBlockWith is HalfBlock with dithering options.
func HalfBlockWith(img image.Image, cols, rows int, opt Options) string {
	b := img.Bounds()
	if cols < 1 || rows < 1 || b.Dx() < 1 || b.Dy() < 1 {
		return ""
	}
	w, h := FitSize(b.Dx(), b.Dy(), cols, 2*rows)
	px := resampleLinear(img, w, h)
	var idx []int // palette indices, for ANSI256
	switch opt.Mode {
	case ANSI256:
		idx = quantize256(px, w, h, opt.Dither)
	case NoColor:
		return rampText(px, w, h, opt.Dither)
	}

	var sb strings.Builder
	sb.Grow(h / 2 * w * 40)
	for y := 0; y < h; y += 2 {
		if y > 0 {
			sb.WriteByte('\n')
		}
		lastFG, lastBG := "", ""
		for x := 0; x < w; x++ {
			top := y*w + x
			var fg, bg string
			if opt.Mode == ANSI256 {
				fg = "\x1b[38;5;" + strconv.Itoa(idx[top]) + "m"
				if y+1 < h {
					bg = "\x1b[48;5;" + strconv.Itoa(idx[top+w]) + "m"
				}
			} else {
				fg = trueSGR(38, px[top])
				if y+1 < h {
					bg = trueSGR(48, px[top+w])
				}
			}
			if bg == "" {
				bg = "\x1b[49m" // odd height: the last row has no lower pixel
			}
			if fg != lastFG {
				sb.WriteString(fg)
				lastFG = fg
			}
			if bg != lastBG {
				sb.WriteString(bg)
				lastBG = bg
			}
			sb.WriteString("▀")
		}
		sb.WriteString("\x1b[0m")
	}
	return sb.String()
}

// FitSize returns the largest w x h with the aspect ratio of srcW x srcH
// (rounded, at least 1x1) that fits in boxW x boxH.
func FitSize(srcW, srcH, boxW, boxH int) (int, int) {
	scale := math.Min(float64(boxW)/float64(srcW), float64(boxH)/float64(srcH))
	w := min(boxW, max(1, int(math.Round(float64(srcW)*scale))))
	h := min(boxH, max(1, int(math.Round(float64(srcH)*scale))))
	return w, h
}

func trueSGR(code int, c lin) string {
	r, g, b := c.srgb8()
	return "\x1b[" + strconv.Itoa(code) + ";2;" + strconv.Itoa(int(r)) + ";" + strconv.Itoa(int(g)) + ";" + strconv.Itoa(int(b)) + "m"
}

// rampText renders NoColor output: one ramp character per cell.
func rampText(px []lin, w, h int, d Dither) string {
	ramp := []rune(" ░▒▓█")
	n := len(ramp) - 1
	rowsOut := (h + 1) / 2
	lum := make([]float64, w*rowsOut)
	for y := 0; y < h; y += 2 {
		for x := 0; x < w; x++ {
			l := px[y*w+x].luma()
			if y+1 < h {
				l = (l + px[(y+1)*w+x].luma()) / 2
			}
			// Perceptual lightness, so the ramp steps look even.
			lum[y/2*w+x] = linearToSRGB(l)
		}
	}
	var sb strings.Builder
	for y := 0; y < rowsOut; y++ {
		if y > 0 {
			sb.WriteByte('\n')
		}
		for x := 0; x < w; x++ {
			v := lum[y*w+x] * float64(n)
			var k int
			switch d {
			case DitherOrdered:
				k = int(math.Floor(v + bayer4[y%4][x%4]))
			case DitherFloydSteinberg:
				k = int(math.Round(v))
				k = max(0, min(n, k))
				diffuse(lum, w, rowsOut, x, y, (v-float64(k))/float64(n))
			default:
				k = int(math.Round(v))
			}
			sb.WriteRune(ramp[max(0, min(n, k))])
		}
	}
	return sb.String()
}

// bayer4 holds the 4x4 Bayer thresholds in (0, 1).
var bayer4 = [4][4]float64{
	{0.5 / 16, 8.5 / 16, 2.5 / 16, 10.5 / 16},
	{12.5 / 16, 4.5 / 16, 14.5 / 16, 6.5 / 16},
	{3.5 / 16, 11.5 / 16, 1.5 / 16, 9.5 / 16},
	{15.5 / 16, 7.5 / 16, 13.5 / 16, 5.5 / 16},
}

// diffuse spreads a scalar error e from (x, y) with Floyd–Steinberg weights.
func diffuse(v []float64, w, h, x, y int, e float64) {
	add := func(dx, dy int, f float64) {
		if xx, yy := x+dx, y+dy; xx >= 0 && xx < w && yy < h {
			v[yy*w+xx] += e * f
		}
	}
	add(1, 0, 7.0/16)
	add(-1, 1, 3.0/16)
	add(0, 1, 5.0/16)
	add(1, 1, 1.0/16)
}
