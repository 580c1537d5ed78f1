package render

import (
	"image"
	"image/color"
	"math"
)

// lin is a colour in linear-light RGB, components in [0, 1].
type lin struct{ r, g, b float64 }

// srgbToLinearLUT maps an 8-bit sRGB value to linear light.
var srgbToLinearLUT = func() (t [256]float64) {
	for i := range t {
		t[i] = srgbToLinear(float64(i) / 255)
	}
	return
}()

func srgbToLinear(v float64) float64 {
	if v <= 0.04045 {
		return v / 12.92
	}
	return math.Pow((v+0.055)/1.055, 2.4)
}

func linearToSRGB(v float64) float64 {
	if v <= 0 {
		return 0
	}
	if v >= 1 {
		return 1
	}
	if v <= 0.0031308 {
		return v * 12.92
	}
	return 1.055*math.Pow(v, 1/2.4) - 0.055
}

func to8(v float64) uint8 { return uint8(math.Round(linearToSRGB(v) * 255)) }

func (c lin) srgb8() (uint8, uint8, uint8) { return to8(c.r), to8(c.g), to8(c.b) }

// luma is the relative luminance (Rec. 709 weights, linear light).
func (c lin) luma() float64 { return 0.2126*c.r + 0.7152*c.g + 0.0722*c.b }

// pixelsLinear reads img into linear-light pixels, row-major. Transparent
// pixels are composited over black (their premultiplied values).
func pixelsLinear(img image.Image) ([]lin, int, int) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	out := make([]lin, w*h)
	switch m := img.(type) {
	case *image.RGBA:
		for y := 0; y < h; y++ {
			row := m.Pix[(y)*m.Stride:]
			for x := 0; x < w; x++ {
				p := row[4*x : 4*x+3]
				out[y*w+x] = lin{srgbToLinearLUT[p[0]], srgbToLinearLUT[p[1]], srgbToLinearLUT[p[2]]}
			}
		}
		return out, w, h
	case *image.NRGBA:
		if isOpaque(m.Pix, m.Stride, w, h) {
			for y := 0; y < h; y++ {
				row := m.Pix[y*m.Stride:]
				for x := 0; x < w; x++ {
					p := row[4*x : 4*x+3]
					out[y*w+x] = lin{srgbToLinearLUT[p[0]], srgbToLinearLUT[p[1]], srgbToLinearLUT[p[2]]}
				}
			}
			return out, w, h
		}
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBA64Model.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.RGBA64)
			out[y*w+x] = lin{srgbToLinear(float64(c.R) / 65535), srgbToLinear(float64(c.G) / 65535), srgbToLinear(float64(c.B) / 65535)}
		}
	}
	return out, w, h
}

func isOpaque(pix []uint8, stride, w, h int) bool {
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if pix[y*stride+4*x+3] != 0xff {
				return false
			}
		}
	}
	return true
}

// tap is one source sample of a resampled coordinate.
type tap struct {
	i int
	w float64
}

// boxTaps returns, for each of dst output samples, the source samples that
// the output's footprint [i*src/dst, (i+1)*src/dst) covers, weighted by the
// covered length (weights sum to 1). This is area averaging when shrinking
// and nearest-neighbour with blended edges when enlarging.
func boxTaps(src, dst int) [][]tap {
	out := make([][]tap, dst)
	scale := float64(src) / float64(dst)
	for i := range out {
		x0, x1 := float64(i)*scale, float64(i+1)*scale
		for j := int(math.Floor(x0)); j < src && float64(j) < x1; j++ {
			cov := math.Min(x1, float64(j+1)) - math.Max(x0, float64(j))
			if cov > 1e-12 {
				out[i] = append(out[i], tap{j, cov / scale})
			}
		}
	}
	return out
}

// resampleLinear resizes img to w x h with a box filter in linear light.
func resampleLinear(img image.Image, w, h int) []lin {
	src, sw, sh := pixelsLinear(img)
	if sw == w && sh == h {
		return src
	}
	xt, yt := boxTaps(sw, w), boxTaps(sh, h)
	tmp := make([]lin, w*sh)
	for y := 0; y < sh; y++ {
		for x := 0; x < w; x++ {
			var c lin
			for _, t := range xt[x] {
				p := src[y*sw+t.i]
				c.r += p.r * t.w
				c.g += p.g * t.w
				c.b += p.b * t.w
			}
			tmp[y*w+x] = c
		}
	}
	out := make([]lin, w*h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var c lin
			for _, t := range yt[y] {
				p := tmp[t.i*w+x]
				c.r += p.r * t.w
				c.g += p.g * t.w
				c.b += p.b * t.w
			}
			out[y*w+x] = c
		}
	}
	return out
}

// The xterm 256-colour palette: 16 themeable colours (not used here), a
// 6x6x6 cube with levels 0, 95, 135, 175, 215, 255, and 24 greys 8..238.
var cubeLevels = [6]uint8{0, 95, 135, 175, 215, 255}

// Palette256 returns the sRGB value of xterm palette entry i (16 <= i < 256).
func Palette256(i int) color.RGBA {
	switch {
	case i >= 16 && i < 232:
		i -= 16
		return color.RGBA{cubeLevels[i/36], cubeLevels[i/6%6], cubeLevels[i%6], 255}
	case i >= 232 && i < 256:
		v := uint8(8 + 10*(i-232))
		return color.RGBA{v, v, v, 255}
	}
	return color.RGBA{}
}

// lab is a CIELAB colour (D65).
type lab struct{ l, a, b float64 }

func (c lin) lab() lab {
	x := (0.4124564*c.r + 0.3575761*c.g + 0.1804375*c.b) / 0.95047
	y := 0.2126729*c.r + 0.7151522*c.g + 0.0721750*c.b
	z := (0.0193339*c.r + 0.1191920*c.g + 0.9503041*c.b) / 1.08883
	f := func(t float64) float64 {
		if t > 216.0/24389 {
			return math.Cbrt(t)
		}
		return (24389.0/27*t + 16) / 116
	}
	fx, fy, fz := f(x), f(y), f(z)
	return lab{116*fy - 16, 500 * (fx - fy), 200 * (fy - fz)}
}

type palEntry struct {
	index int
	lin   lin
	lab   lab
}

var palette256 = func() []palEntry {
	out := make([]palEntry, 0, 240)
	for i := 16; i < 256; i++ {
		c := Palette256(i)
		l := lin{srgbToLinearLUT[c.R], srgbToLinearLUT[c.G], srgbToLinearLUT[c.B]}
		out = append(out, palEntry{i, l, l.lab()})
	}
	return out
}()

// Nearest256 returns the xterm palette index (16..255) nearest to the sRGB
// colour c by CIELAB distance (CIE76).
func Nearest256(c color.RGBA) int {
	return nearest(lin{srgbToLinearLUT[c.R], srgbToLinearLUT[c.G], srgbToLinearLUT[c.B]}).index
}

func nearest(c lin) *palEntry {
	q := c.lab()
	best, bestD := &palette256[0], math.Inf(1)
	for i := range palette256 {
		p := &palette256[i]
		dl, da, db := q.l-p.lab.l, q.a-p.lab.a, q.b-p.lab.b
		if d := dl*dl + da*da + db*db; d < bestD {
			best, bestD = p, d
		}
	}
	return best
}

// quantize256 maps pixels to palette indices, optionally dithered.
func quantize256(px []lin, w, h int, d Dither) []int {
	idx := make([]int, len(px))
	switch d {
	case DitherFloydSteinberg:
		work := append([]lin(nil), px...)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				c := work[y*w+x]
				c = lin{clamp01(c.r), clamp01(c.g), clamp01(c.b)}
				p := nearest(c)
				idx[y*w+x] = p.index
				er, eg, eb := c.r-p.lin.r, c.g-p.lin.g, c.b-p.lin.b
				for _, t := range [4]struct {
					dx, dy int
					f      float64
				}{{1, 0, 7.0 / 16}, {-1, 1, 3.0 / 16}, {0, 1, 5.0 / 16}, {1, 1, 1.0 / 16}} {
					if xx, yy := x+t.dx, y+t.dy; xx >= 0 && xx < w && yy < h {
						q := &work[yy*w+xx]
						q.r += er * t.f
						q.g += eg * t.f
						q.b += eb * t.f
					}
				}
			}
		}
	case DitherOrdered:
		// Offset each pixel in sRGB by up to about half a cube step (the
		// cube's levels are ~40 apart) before taking the nearest entry.
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				o := (bayer4[y%4][x%4] - 0.5) * 40.0 / 255
				c := px[y*w+x]
				c = lin{
					srgbToLinear(clamp01(linearToSRGB(c.r) + o)),
					srgbToLinear(clamp01(linearToSRGB(c.g) + o)),
					srgbToLinear(clamp01(linearToSRGB(c.b) + o)),
				}
				idx[y*w+x] = nearest(c).index
			}
		}
	default:
		cache := map[[3]uint8]int{}
		for i, c := range px {
			r, g, b := c.srgb8()
			k := [3]uint8{r, g, b}
			v, ok := cache[k]
			if !ok {
				v = nearest(lin{srgbToLinearLUT[r], srgbToLinearLUT[g], srgbToLinearLUT[b]}).index
				cache[k] = v
			}
			idx[i] = v
		}
	}
	return idx
}

func clamp01(v float64) float64 { return math.Max(0, math.Min(1, v)) }
