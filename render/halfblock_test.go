package render

import (
	"flag"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/charmbracelet/lipgloss"

	"github.com/stepwise/stepwise/internal/golden"
)

var update = flag.Bool("update", false, "rewrite render/testdata/*.golden")

func img4x4() *image.RGBA {
	cols := [4][4]color.RGBA{
		{{255, 0, 0, 255}, {0, 255, 0, 255}, {0, 0, 255, 255}, {255, 255, 255, 255}},
		{{0, 0, 0, 255}, {128, 128, 128, 255}, {255, 255, 0, 255}, {0, 255, 255, 255}},
		{{10, 20, 30, 255}, {10, 20, 30, 255}, {200, 100, 50, 255}, {255, 0, 255, 255}},
		{{10, 20, 30, 255}, {10, 20, 31, 255}, {200, 100, 50, 255}, {0, 0, 0, 255}},
	}
	m := image.NewRGBA(image.Rect(0, 0, 4, 4))
	for y := range cols {
		for x, c := range cols[y] {
			m.SetRGBA(x, y, c)
		}
	}
	return m
}

// The exact escape codes for a known 4x4 image in a 4x2-cell box: no
// resampling, a colour is only re-sent when it changes along the line.
func TestHalfBlock4x4Exact(t *testing.T) {
	const E = "\x1b["
	want := E + "38;2;255;0;0m" + E + "48;2;0;0;0m▀" +
		E + "38;2;0;255;0m" + E + "48;2;128;128;128m▀" +
		E + "38;2;0;0;255m" + E + "48;2;255;255;0m▀" +
		E + "38;2;255;255;255m" + E + "48;2;0;255;255m▀" + E + "0m\n" +
		E + "38;2;10;20;30m" + E + "48;2;10;20;30m▀" +
		E + "48;2;10;20;31m▀" +
		E + "38;2;200;100;50m" + E + "48;2;200;100;50m▀" +
		E + "38;2;255;0;255m" + E + "48;2;0;0;0m▀" + E + "0m"
	if got := HalfBlock(img4x4(), 4, 2, TrueColor); got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	want256 := E + "38;5;196m" + E + "48;5;16m▀" + E + "38;5;46m" + E + "48;5;244m▀" +
		E + "38;5;21m" + E + "48;5;226m▀" + E + "38;5;231m" + E + "48;5;51m▀" + E + "0m\n" +
		E + "38;5;233m" + E + "48;5;233m▀▀" + E + "38;5;130m" + E + "48;5;130m▀" + E + "38;5;201m" + E + "48;5;16m▀" + E + "0m"
	if got := HalfBlock(img4x4(), 4, 2, ANSI256); got != want256 {
		t.Fatalf("256: got  %q\nwant %q", got, want256)
	}
}

// Shrinking averages in linear light: a 2x2 black/white checker becomes
// sRGB 188 (linear 0.5), not 128.
func TestHalfBlockAveragesInLinearLight(t *testing.T) {
	m := image.NewRGBA(image.Rect(0, 0, 8, 4))
	for y := 0; y < 4; y++ {
		for x := 0; x < 8; x++ {
			if (x+y)%2 == 0 {
				m.SetRGBA(x, y, color.RGBA{255, 255, 255, 255})
			} else {
				m.SetRGBA(x, y, color.RGBA{0, 0, 0, 255})
			}
		}
	}
	got := HalfBlock(m, 4, 1, TrueColor) // box 4x2 pixels: 8x4 fits as 4x2
	want := "\x1b[38;2;188;188;188m\x1b[48;2;188;188;188m▀▀▀▀\x1b[0m"
	if got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestFitSize(t *testing.T) {
	for _, c := range []struct{ sw, sh, bw, bh, w, h int }{
		{512, 512, 80, 48, 48, 48}, // square image in a wide box
		{768, 512, 80, 48, 72, 48},
		{512, 768, 80, 48, 32, 48},
		{64, 64, 200, 100, 100, 100}, // enlarged
		{1000, 1, 10, 10, 10, 1},     // never below 1
	} {
		if w, h := FitSize(c.sw, c.sh, c.bw, c.bh); w != c.w || h != c.h {
			t.Errorf("FitSize(%d,%d,%d,%d) = %d,%d want %d,%d", c.sw, c.sh, c.bw, c.bh, w, h, c.w, c.h)
		}
	}
}

// gradient is a test picture with hue along x and lightness along y.
func gradient(w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			hue := float64(x) / float64(w) * 2 * math.Pi
			l := float64(y) / float64(h-1)
			r := l * (0.5 + 0.5*math.Cos(hue))
			g := l * (0.5 + 0.5*math.Cos(hue-2*math.Pi/3))
			b := l * (0.5 + 0.5*math.Cos(hue+2*math.Pi/3))
			m.SetRGBA(x, y, color.RGBA{uint8(255 * r), uint8(255 * g), uint8(255 * b), 255})
		}
	}
	return m
}

func TestHalfBlockGolden(t *testing.T) {
	g := gradient(48, 30)
	cases := []struct {
		name string
		opt  Options
	}{
		{"gradient_truecolor", Options{Mode: TrueColor}},
		{"gradient_256", Options{Mode: ANSI256}},
		{"gradient_256_ordered", Options{Mode: ANSI256, Dither: DitherOrdered}},
		{"gradient_256_fs", Options{Mode: ANSI256, Dither: DitherFloydSteinberg}},
		{"gradient_nocolor", Options{Mode: NoColor}},
		{"gradient_nocolor_fs", Options{Mode: NoColor, Dither: DitherFloydSteinberg}},
	}
	for _, c := range cases {
		got := HalfBlockWith(g, 20, 6, c.opt)
		checkGolden(t, c.name, got)
		// 48x30 in a 20x12-pixel box -> 19x12 pixels -> 6 lines of 19 cells.
		lines := strings.Split(got, "\n")
		if len(lines) != 6 {
			t.Errorf("%s: %d lines", c.name, len(lines))
		}
		for i, l := range lines {
			if w := lipgloss.Width(l); w != 19 {
				t.Errorf("%s: line %d is %d cells wide, want 19", c.name, i, w)
			}
			if c.opt.Mode != NoColor && !strings.HasSuffix(l, "\x1b[0m") {
				t.Errorf("%s: line %d does not end with a reset", c.name, i)
			}
		}
		if c.opt.Mode == NoColor && strings.Contains(got, "\x1b") {
			t.Errorf("%s: escape codes in NoColor output", c.name)
		}
		if strings.ContainsAny(got, "\r\t") || strings.Contains(got, "\x1b[H") {
			t.Errorf("%s: cursor movement in output", c.name)
		}
	}
	// Placed beside other text by lipgloss, the block keeps its shape.
	joined := lipgloss.JoinHorizontal(lipgloss.Top, HalfBlock(g, 20, 6, TrueColor), " | side")
	if h := lipgloss.Height(joined); h != 6 {
		t.Errorf("joined height %d", h)
	}
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./render -run Golden -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s:\ngot\n%s\nwant\n%s", name, path, got, want)
	}
}

func TestHalfBlockOddHeightAndNoColor(t *testing.T) {
	m := image.NewRGBA(image.Rect(0, 0, 3, 3))
	for i := range m.Pix {
		m.Pix[i] = 255
	}
	m.SetRGBA(0, 0, color.RGBA{0, 0, 0, 255})
	got := HalfBlock(m, 3, 2, TrueColor)
	lines := strings.Split(got, "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "\x1b[49m") || strings.Contains(lines[1], "48;2") {
		t.Fatalf("odd height: %q", got)
	}
	nc := HalfBlock(m, 3, 2, NoColor)
	// Cell (0,0) averages black over white: luminance 0.5 -> sRGB 0.735 -> ramp 3 ("▓").
	if want := "▓██\n███"; nc != want {
		t.Fatalf("NoColor: got %q want %q", nc, want)
	}
	if HalfBlock(m, 0, 5, TrueColor) != "" || HalfBlock(image.NewRGBA(image.Rect(0, 0, 0, 0)), 5, 5, TrueColor) != "" {
		t.Fatal("empty box or image should render nothing")
	}
}

func TestNearest256(t *testing.T) {
	for _, c := range []struct {
		c    color.RGBA
		want int
	}{
		{color.RGBA{255, 0, 0, 255}, 196},
		{color.RGBA{0, 0, 0, 255}, 16},
		{color.RGBA{255, 255, 255, 255}, 231},
		{color.RGBA{128, 128, 128, 255}, 244},
		{color.RGBA{95, 135, 175, 255}, 67},
		{color.RGBA{240, 240, 240, 255}, 255}, // grey 238 beats cube 255
	} {
		if got := Nearest256(c.c); got != c.want {
			t.Errorf("Nearest256(%v) = %d (%v), want %d (%v)", c.c, got, Palette256(got), c.want, Palette256(c.want))
		}
	}
	if Palette256(16+36*5+6*2+1) != (color.RGBA{255, 135, 95, 255}) || Palette256(232) != (color.RGBA{8, 8, 8, 255}) {
		t.Error("palette layout")
	}
}

func TestDetectColorMode(t *testing.T) {
	for _, c := range []struct {
		noColor, colorterm, term string
		want                     ColorMode
	}{
		{"1", "truecolor", "xterm-256color", NoColor},
		{"", "truecolor", "xterm", TrueColor},
		{"", "24bit", "", TrueColor},
		{"", "", "xterm-256color", ANSI256},
		{"", "", "screen", ANSI256},
		{"", "", "dumb", NoColor},
	} {
		t.Setenv("NO_COLOR", c.noColor)
		t.Setenv("COLORTERM", c.colorterm)
		t.Setenv("TERM", c.term)
		if got := DetectColorMode(); got != c.want {
			t.Errorf("%+v: got %v", c, got)
		}
	}
}

// A real image from the reference pipeline renders without error at the
// studio's usual sizes, every line the same width.
func TestHalfBlockGoldenImage(t *testing.T) {
	f, err := os.Open(golden.Path(t, "e2e_euler_seed42.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, box := range [][2]int{{80, 24}, {40, 10}, {7, 3}} {
		out := HalfBlock(img, box[0], box[1], ANSI256)
		w, h := FitSize(64, 64, box[0], 2*box[1])
		lines := strings.Split(out, "\n")
		if len(lines) != (h+1)/2 {
			t.Errorf("box %v: %d lines, want %d", box, len(lines), (h+1)/2)
		}
		for _, l := range lines {
			if lipgloss.Width(l) != w {
				t.Fatalf("box %v: line width %d, want %d", box, lipgloss.Width(l), w)
			}
		}
	}
}
