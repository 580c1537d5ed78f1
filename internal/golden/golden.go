// Package golden finds and reads the reference data from diffusers that
// tests compare against (../shared/golden beside the checkout), and compares
// tensors the way its README prescribes.
package golden

import (
	"encoding/binary"
	"image"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stepwise/stepwise/models/safetensors"
)

// Dir returns the golden folder (SD 1.x), or skips the test with a message
// saying where it was looked for; see Wave.
func Dir(t testing.TB) string {
	t.Helper()
	return Wave(t, "golden")
}

// Wave returns the reference folder ../shared/<name> ("golden",
// "golden-wave2", ...) beside the checkout. Where it is absent the test
// skips, or fails when STEPWISE_REQUIRE_GOLDEN=1 (as ./scripts/test sets
// it: CI has the data, so a missing folder is an error there).
func Wave(t testing.TB, name string) string {
	t.Helper()
	missing := t.Skipf
	if os.Getenv("STEPWISE_REQUIRE_GOLDEN") == "1" {
		missing = t.Fatalf
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			missing("module root (go.mod) not found; cannot locate ../shared/%s", name)
		}
		dir = parent
	}
	g := filepath.Join(dir, "..", "shared", name)
	if _, err := os.Stat(filepath.Join(g, "README.md")); err != nil {
		missing("reference data not found at %s (it lives beside the checkout)", g)
	}
	return g
}

// Path returns the golden file or folder name (a path inside Dir), or
// skips the test when it is absent.
func Path(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(Dir(t), name)
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("STEPWISE_REQUIRE_GOLDEN") == "1" {
			t.Fatalf("golden data %s absent: %v", p, err)
		}
		t.Skipf("golden data %s absent: %v", p, err)
	}
	return p
}

// File is an open golden safetensors file. The embedded reader gives raw
// access (Tensors, Lookup, Data) to what F32, I64 and F64 do not cover.
type File struct {
	*safetensors.File
	t testing.TB
}

// Open opens the safetensors file name, a path inside Dir or an absolute
// path, and closes it when the test ends. A file that cannot be opened
// fails the test.
func Open(t testing.TB, name string) *File {
	t.Helper()
	path := name
	if !filepath.IsAbs(name) {
		path = filepath.Join(Dir(t), name)
	}
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &File{File: f, t: t}
}

// For returns g reporting its failures to t, a subtest of the test that
// opened it: a test may only be failed from its own goroutine.
func (g *File) For(t testing.TB) *File { return &File{File: g.File, t: t} }

// raw returns a tensor's info and bytes; the test fails if it is missing
// or of another type.
func (g *File) raw(name string, dt safetensors.DType) (safetensors.TensorInfo, []byte) {
	g.t.Helper()
	info, ok := g.Lookup(name)
	if !ok || info.DType != dt {
		g.t.Fatalf("golden %s: no %s tensor %q", g.Path(), dt, name)
	}
	raw, err := g.Data(name)
	if err != nil {
		g.t.Fatal(err)
	}
	return info, raw
}

// F32 returns an F32 tensor's values and shape; the test fails if it is
// missing or of another type.
func (g *File) F32(name string) ([]float32, []int) {
	g.t.Helper()
	info, raw := g.raw(name, safetensors.F32)
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out, info.Shape
}

// I64 returns an I64 tensor's values.
func (g *File) I64(name string) []int64 {
	g.t.Helper()
	_, raw := g.raw(name, safetensors.I64)
	out := make([]int64, len(raw)/8)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
	}
	return out
}

// F64 returns an F32 or I64 tensor's values widened to float64, and its
// shape; the test fails if it is missing or of another type.
func (g *File) F64(name string) ([]float64, []int) {
	g.t.Helper()
	info, ok := g.Lookup(name)
	if ok && info.DType == safetensors.I64 {
		v := g.I64(name)
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out, info.Shape
	}
	v, shape := g.F32(name)
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out, shape
}

// MaxAbsDiff returns max|got-want|, the index where it occurs and
// max|want|. Lengths must agree.
func MaxAbsDiff(got, want []float32) (diff float64, at int, scale float64) {
	at = -1
	for i := range want {
		if a := math.Abs(float64(want[i])); a > scale {
			scale = a
		}
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if d > diff || math.IsNaN(d) {
			diff, at = d, i
			if math.IsNaN(d) {
				diff = math.Inf(1)
			}
		}
	}
	return diff, at, scale
}

// Close checks max|got-want| <= atol + rtol*max|want| and reports the worst
// element otherwise. It returns the worst difference.
func Close(t testing.TB, what string, got, want []float32, atol, rtol float64) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", what, len(got), len(want))
		return math.Inf(1)
	}
	d, at, scale := MaxAbsDiff(got, want)
	if lim := atol + rtol*scale; d > lim {
		t.Errorf("%s: max |diff| %.3g at %d (got %v, want %v) > %.3g", what, d, at, got[at], want[at], lim)
	}
	return d
}

// PixelsOff compares an image with a golden uint8 HWC image (I64 values,
// as image_uint8 is stored): how many channel values differ at all, how
// many by more than 1, and the largest difference.
func PixelsOff(im *image.RGBA, want []int64) (off, big, most int) {
	b := im.Bounds()
	w := b.Dx()
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < w; x++ {
			px := im.RGBAAt(b.Min.X+x, b.Min.Y+y)
			for ch, v := range []uint8{px.R, px.G, px.B} {
				i := (y*w+x)*3 + ch
				if i >= len(want) {
					return off, big + 1, max(most, 255)
				}
				if dv := int(int64(v) - want[i]); dv != 0 {
					off++
					most = max(most, dv, -dv)
					if dv > 1 || dv < -1 {
						big++
					}
				}
			}
		}
	}
	return off, big, most
}
