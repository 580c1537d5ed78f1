package models

import (
	"fmt"
	"image"
	"image/draw"
	"math"

	"github.com/stepwise/stepwise/models/checkpoint"
)

// PreprocessCLIPImage turns an image into a CLIP vision encoder's input
// [3, CropH, CropW] as transformers' CLIPImageProcessor does: RGB (alpha
// dropped), the shortest side resized to ShortestEdge with PIL's 8-bit
// resampling (bicubic or bilinear, antialiased when shrinking), a centre
// crop (zero padding where the image is smaller), x*rescale_factor, then
// (x-mean)/std in float32.
func PreprocessCLIPImage(img image.Image, pc checkpoint.ImageProcessorConfig) ([]float32, error) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w < 1 || h < 1 {
		return nil, fmt.Errorf("image processor: the image has no pixels (%dx%d)", w, h)
	}
	rgba := image.NewNRGBA(image.Rect(0, 0, w, h))
	draw.Draw(rgba, rgba.Bounds(), img, b.Min, draw.Src)
	pix := make([]uint8, 3*w*h) // packed RGB
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			copy(pix[3*(y*w+x):], rgba.Pix[y*rgba.Stride+4*x:][:3])
		}
	}
	if pc.DoResize {
		nw, nh := shortestEdge(w, h, pc.ShortestEdge)
		filter, support := pilBicubic, 2.0
		if pc.Resample == 2 {
			filter, support = pilBilinear, 1.0
		}
		pix = pilResample(pix, w, h, nw, nh, filter, support)
		w, h = nw, nh
	}
	if pc.DoCenterCrop {
		pix, w, h = centerCrop(pix, w, h, pc.CropW, pc.CropH)
	}
	plane := w * h
	out := make([]float32, 3*plane)
	for c := 0; c < 3; c++ {
		mean, std := float32(pc.Mean[c]), float32(pc.Std[c])
		for i := 0; i < plane; i++ {
			v := float32(pix[3*i+c])
			if pc.DoRescale {
				v = float32(float64(pix[3*i+c]) * pc.RescaleFactor) // numpy: float64 product, then float32
			}
			if pc.DoNormalize {
				v = (v - mean) / std
			}
			out[c*plane+i] = v
		}
	}
	return out, nil
}

// shortestEdge is transformers' get_resize_output_image_size with
// default_to_square=False: the short side becomes size, the long one
// int(size * long / short).
func shortestEdge(w, h, size int) (nw, nh int) {
	if w <= h {
		return size, int(float64(size) * float64(h) / float64(w))
	}
	return int(float64(size) * float64(w) / float64(h)), size
}

// centerCrop is transformers' center_crop on packed RGB: offsets
// floor((orig-crop)/2); where the image is smaller than the crop, the
// rest is zeros (its padding, centred and rounded up, lands the image at
// exactly those offsets).
func centerCrop(pix []uint8, w, h, cw, ch int) ([]uint8, int, int) {
	if cw == w && ch == h {
		return pix, w, h
	}
	floorHalf := func(v int) int { return int(math.Floor(float64(v) / 2)) }
	top, left := floorHalf(h-ch), floorHalf(w-cw)
	out := make([]uint8, 3*cw*ch)
	for y := 0; y < ch; y++ {
		sy := y + top
		if sy < 0 || sy >= h {
			continue
		}
		for x := 0; x < cw; x++ {
			if sx := x + left; sx >= 0 && sx < w {
				copy(out[3*(y*cw+x):3*(y*cw+x)+3], pix[3*(sy*w+sx):])
			}
		}
	}
	return out, cw, ch
}

// pilBicubic is Pillow's bicubic filter (a = -0.5, support 2).
func pilBicubic(x float64) float64 {
	const a = -0.5
	x = math.Abs(x)
	switch {
	case x < 1:
		return ((a+2)*x-(a+3))*x*x + 1
	case x < 2:
		return (((x-5)*x+8)*x - 4) * a
	}
	return 0
}

// pilBilinear is Pillow's triangle filter (support 1).
func pilBilinear(x float64) float64 {
	x = math.Abs(x)
	if x < 1 {
		return 1 - x
	}
	return 0
}

// pilPrecision is Pillow's PRECISION_BITS for 8-bit resampling.
const pilPrecision = 32 - 8 - 2

// pilCoeffs are Pillow's precompute_coeffs + normalize_coeffs_8bpc: for
// each output index the first input index and the fixed-point weights.
func pilCoeffs(inSize, outSize int, filter func(float64) float64, support float64) (lo []int, ks [][]int64) {
	scale := float64(inSize) / float64(outSize)
	fs := max(scale, 1)
	support *= fs
	for o := 0; o < outSize; o++ {
		center := (float64(o) + 0.5) * scale
		xmin := max(int(center-support+0.5), 0)
		xmax := min(int(center+support+0.5), inSize)
		w := make([]float64, max(xmax-xmin, 0))
		sum := 0.0
		for i := range w {
			w[i] = filter((float64(i+xmin) - center + 0.5) / fs)
			sum += w[i]
		}
		k := make([]int64, len(w))
		for i := range w {
			v := w[i]
			if sum != 0 {
				v /= sum
			}
			if v < 0 {
				k[i] = int64(-0.5 + v*(1<<pilPrecision))
			} else {
				k[i] = int64(0.5 + v*(1<<pilPrecision))
			}
		}
		lo, ks = append(lo, xmin), append(ks, k)
	}
	return lo, ks
}

// pilResample resizes packed 8-bit RGB from w x h to nw x nh as Pillow's
// ImagingResample: horizontally, then vertically, each pass in fixed point
// rounded and clipped to 8 bits.
func pilResample(pix []uint8, w, h, nw, nh int, filter func(float64) float64, support float64) []uint8 {
	clip8 := func(ss int64) uint8 { return uint8(min(max(ss>>pilPrecision, 0), 255)) }
	if nw != w {
		lo, ks := pilCoeffs(w, nw, filter, support)
		out := make([]uint8, 3*nw*h)
		for y := 0; y < h; y++ {
			for x := 0; x < nw; x++ {
				for c := 0; c < 3; c++ {
					ss := int64(1) << (pilPrecision - 1)
					for i, k := range ks[x] {
						ss += int64(pix[3*(y*w+lo[x]+i)+c]) * k
					}
					out[3*(y*nw+x)+c] = clip8(ss)
				}
			}
		}
		pix, w = out, nw
	}
	if nh != h {
		lo, ks := pilCoeffs(h, nh, filter, support)
		out := make([]uint8, 3*w*nh)
		for y := 0; y < nh; y++ {
			for x := 0; x < w; x++ {
				for c := 0; c < 3; c++ {
					ss := int64(1) << (pilPrecision - 1)
					for i, k := range ks[y] {
						ss += int64(pix[3*((lo[y]+i)*w+x)+c]) * k
					}
					out[3*(y*w+x)+c] = clip8(ss)
				}
			}
		}
		pix = out
	}
	return pix
}
