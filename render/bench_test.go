package render

import (
	"math/rand"
	"testing"
)

// A 512x512 final image into an 80x24-cell pane (the studio's usual case).
func BenchmarkHalfBlock512TrueColor(b *testing.B) {
	img := gradient(512, 512)
	for b.Loop() {
		HalfBlock(img, 80, 24, TrueColor)
	}
}

func BenchmarkHalfBlock512ANSI256(b *testing.B) {
	img := gradient(512, 512)
	for b.Loop() {
		HalfBlock(img, 80, 24, ANSI256)
	}
}

func BenchmarkHalfBlock512ANSI256Ordered(b *testing.B) {
	img := gradient(512, 512)
	for b.Loop() {
		HalfBlockWith(img, 80, 24, Options{Mode: ANSI256, Dither: DitherOrdered})
	}
}

// A per-step preview: 64x64 latent -> RGB -> 80x24 cells.
func BenchmarkLatentPreview64(b *testing.B) {
	r := rand.New(rand.NewSource(1))
	lat := make([]float32, 4*64*64)
	for i := range lat {
		lat[i] = float32(r.NormFloat64())
	}
	for b.Loop() {
		img := LatentToRGB(lat, 4, 64, 64, SD15LatentRGBFactors, SD15LatentRGBBias)
		HalfBlock(img, 80, 24, TrueColor)
	}
}
