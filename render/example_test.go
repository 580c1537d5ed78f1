package render_test

import (
	"fmt"
	"image"
	"image/color"

	"github.com/stepwise/stepwise/render"
)

func ExampleHalfBlock() {
	img := image.NewRGBA(image.Rect(0, 0, 2, 2))
	img.Set(0, 0, color.RGBA{255, 0, 0, 255})
	img.Set(1, 0, color.RGBA{0, 0, 255, 255})
	img.Set(0, 1, color.RGBA{255, 255, 255, 255})
	img.Set(1, 1, color.RGBA{0, 0, 0, 255})
	fmt.Printf("%q\n", render.HalfBlock(img, 2, 1, render.TrueColor))
	fmt.Printf("%q\n", render.HalfBlock(img, 2, 1, render.ANSI256))
	// Output:
	// "\x1b[38;2;255;0;0m\x1b[48;2;255;255;255m▀\x1b[38;2;0;0;255m\x1b[48;2;0;0;0m▀\x1b[0m"
	// "\x1b[38;5;196m\x1b[48;5;231m▀\x1b[38;5;21m\x1b[48;5;16m▀\x1b[0m"
}
