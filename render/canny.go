package render

import (
	"image"
	"image/draw"
)

// Canny is OpenCV's cv2.Canny(img, low, high) with its defaults (3x3
// Sobel, L1 gradient |dx|+|dy|), as A1111's canny ControlNet preprocessor
// calls it on the RGB image: per pixel the channel with the largest
// gradient, non-maximum suppression along the gradient's direction
// (OpenCV's fixed-point 22.5/67.5 degree test), then hysteresis: pixels
// above high start edges, which grow through 8-connected pixels above low.
// The result is 255 on edges, 0 elsewhere, the image's size.
func Canny(im image.Image, low, high int) *image.Gray {
	b := im.Bounds()
	w, h := b.Dx(), b.Dy()
	out := image.NewGray(image.Rect(0, 0, w, h))
	if w == 0 || h == 0 {
		return out
	}
	if low > high {
		low, high = high, low
	}
	rgba := image.NewNRGBA(image.Rect(0, 0, w, h))
	draw.Draw(rgba, rgba.Bounds(), im, b.Min, draw.Src)
	px := func(c, x, y int) int {
		x = min(max(x, 0), w-1) // BORDER_REPLICATE
		y = min(max(y, 0), h-1)
		return int(rgba.Pix[y*rgba.Stride+4*x+c])
	}
	// Gradients of the strongest channel, and the magnitude with a zero
	// border of one pixel around it.
	dx := make([]int, w*h)
	dy := make([]int, w*h)
	mw := w + 2
	mag := make([]int, mw*(h+2))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			best := -1
			for c := 0; c < 3; c++ {
				gx := px(c, x+1, y-1) + 2*px(c, x+1, y) + px(c, x+1, y+1) - px(c, x-1, y-1) - 2*px(c, x-1, y) - px(c, x-1, y+1)
				gy := px(c, x-1, y+1) + 2*px(c, x, y+1) + px(c, x+1, y+1) - px(c, x-1, y-1) - 2*px(c, x, y-1) - px(c, x+1, y-1)
				if m := abs(gx) + abs(gy); m > best {
					best = m
					dx[y*w+x], dy[y*w+x] = gx, gy
				}
			}
			mag[(y+1)*mw+x+1] = best
		}
	}
	// The map: 0 = may be an edge, 1 = not an edge, 2 = an edge; a border
	// of 1 around it.
	const shift = 15
	const tg22 = 13573 // (int)(tan(22.5 deg) * 2^15 + 0.5), as OpenCV computes it
	mp := make([]uint8, mw*(h+2))
	for i := range mp {
		mp[i] = 1
	}
	var stack []int
	for y := 0; y < h; y++ {
		prev := false
		for x := 0; x < w; x++ {
			j := (y+1)*mw + x + 1
			m := mag[j]
			push := false
			if m > low {
				xs, ys := dx[y*w+x], dy[y*w+x]
				ax := abs(xs)
				ay := abs(ys) << shift
				tg22x := ax * tg22
				if ay < tg22x {
					push = m > mag[j-1] && m >= mag[j+1]
				} else if tg67x := tg22x + ax<<(shift+1); ay > tg67x {
					push = m > mag[j-mw] && m >= mag[j+mw]
				} else {
					s := 1
					if (xs ^ ys) < 0 {
						s = -1
					}
					push = m > mag[j-mw-s] && m > mag[j+mw+s]
				}
			}
			if !push {
				prev = false
				mp[j] = 1
				continue
			}
			if !prev && m > high && mp[j-mw] != 2 {
				mp[j] = 2
				stack = append(stack, j)
				prev = true
			} else {
				mp[j] = 0
			}
		}
	}
	for len(stack) > 0 {
		j := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, o := range [8]int{-mw - 1, -mw, -mw + 1, -1, 1, mw - 1, mw, mw + 1} {
			if mp[j+o] == 0 {
				mp[j+o] = 2
				stack = append(stack, j+o)
			}
		}
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if mp[(y+1)*mw+x+1] == 2 {
				out.Pix[y*out.Stride+x] = 255
			}
		}
	}
	return out
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
