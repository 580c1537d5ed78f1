package render

import (
	"image/color"
	"math"
	"testing"
)

func TestLatentToRGB(t *testing.T) {
	// c=4, h=1, w=4, laid out [c][h][w].
	nan := float32(math.NaN())
	latent := []float32{
		0, 1, 10, nan, // channel 0
		0, 0, 0, 0, // channel 1
		0, 0, 0, 0, // channel 2
		0, 0, 0, 0, // channel 3
	}
	img := LatentToRGB(latent, 4, 1, 4, SD15LatentRGBFactors, SD15LatentRGBBias)
	if b := img.Bounds(); b.Dx() != 4 || b.Dy() != 1 {
		t.Fatalf("bounds %v", b)
	}
	want := []color.RGBA{
		{127, 127, 127, 255}, // (0+1)/2*255 = 127.5, truncated like ComfyUI's uint8 cast
		{172, 156, 168, 255}, // (1+0.3512)/2*255 = 172.28, (1+0.2297)/2*255 = 156.79, (1+0.3227)/2*255 = 168.64
		{255, 255, 255, 255}, // clamped
		{0, 0, 0, 255},       // NaN
	}
	for x, w := range want {
		if got := img.RGBAAt(x, 0); got != w {
			t.Errorf("pixel %d: %v want %v", x, got, w)
		}
	}
	// Channel 3 alone pulls towards yellow-ish negative blue: rgb = -0.5 * row 3.
	l2 := []float32{0, 0, 0, -0.5}
	got := LatentToRGB(l2, 4, 1, 1, SD15LatentRGBFactors, [3]float32{0.1, 0, -0.1}).RGBAAt(0, 0)
	// r = 0.106+0.1 -> 153.76; g = 0.1308 -> 144.18; b = 0.35885-0.1 -> 160.5
	if want := (color.RGBA{153, 144, 160, 255}); got != want {
		t.Errorf("bias: %v want %v", got, want)
	}
}

func TestLatentToRGBPanicsOnMismatch(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a short latent")
		}
	}()
	LatentToRGB(make([]float32, 3), 4, 1, 1, SD15LatentRGBFactors, SD15LatentRGBBias)
}
