package render

import (
	"fmt"
	"image"
	"math"
)

// SD15LatentRGBFactors is the 4x3 linear map from an SD 1.x latent (as the
// sampler sees it, i.e. already multiplied by the VAE scale 0.18215) to RGB
// in [-1, 1]: rgb[k] = sum_c latent[c] * factors[c][k] + bias[k]. The numbers
// are the ones ComfyUI publishes (comfy/latent_formats.py, class SD15,
// latent_rgb_factors) and stable-diffusion.cpp uses for its SD 1.x previews.
var SD15LatentRGBFactors = [][]float32{
	//   R        G        B
	{0.3512, 0.2297, 0.3227},
	{0.3250, 0.4974, 0.2350},
	{-0.2829, 0.1762, 0.2721},
	{-0.2120, -0.2616, -0.7177},
}

// SD15LatentRGBBias is the bias for SD15LatentRGBFactors: ComfyUI gives SD
// 1.x none.
var SD15LatentRGBBias = [3]float32{0, 0, 0}

// LatentToRGB projects one latent image, laid out [c][h][w], to an h x w RGB
// image with factors ([c][3]) and bias, then maps [-1, 1] to [0, 255] as
// ComfyUI's preview_to_image does: (v+1)/2, clamped to [0, 1], times 255,
// truncated. NaN maps to 0. Pass the predicted x0 (denoised) of a step, as
// ComfyUI does: a noisy x_t at high sigma only saturates. It costs c*3 multiply-adds a pixel, so a preview
// is free next to a VAE decode (the picture is 1/8 of the final size).
// It panics if len(latent) < c*h*w or factors is not c rows of 3: a
// programming error, not bad input.
func LatentToRGB(latent []float32, c, h, w int, factors [][]float32, bias [3]float32) *image.RGBA {
	if c < 0 || h < 0 || w < 0 || len(latent) < c*h*w {
		panic(fmt.Sprintf("render.LatentToRGB: latent has %d values, want %d (c=%d h=%d w=%d)", len(latent), c*h*w, c, h, w))
	}
	if len(factors) != c {
		panic(fmt.Sprintf("render.LatentToRGB: %d factor rows for %d channels", len(factors), c))
	}
	for _, f := range factors {
		if len(f) != 3 {
			panic("render.LatentToRGB: a factor row does not have 3 values")
		}
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	plane := h * w
	for i := 0; i < plane; i++ {
		rgb := bias
		for ch := 0; ch < c; ch++ {
			v := latent[ch*plane+i]
			f := factors[ch]
			rgb[0] += v * f[0]
			rgb[1] += v * f[1]
			rgb[2] += v * f[2]
		}
		p := img.Pix[4*i : 4*i+4]
		for k := 0; k < 3; k++ {
			p[k] = unitToByte(rgb[k])
		}
		p[3] = 255
	}
	return img
}

func unitToByte(v float32) uint8 {
	u := (v + 1) / 2
	if math.IsNaN(float64(u)) || u <= 0 {
		return 0
	}
	if u >= 1 {
		return 255
	}
	return uint8(u * 255)
}
