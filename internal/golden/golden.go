// Package golden finds and reads the reference data from diffusers that
// tests compare against (../shared/golden beside the checkout), and compares
// tensors the way its README prescribes.
package golden

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stepwise/stepwise/models/safetensors"
)

// Dir returns the golden folder, or skips the test with a message saying
// where it was looked for.
func Dir(t testing.TB) string {
	t.Helper()
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
			t.Skip("module root (go.mod) not found; cannot locate ../shared/golden")
		}
		dir = parent
	}
	g := filepath.Join(dir, "..", "shared", "golden")
	if _, err := os.Stat(filepath.Join(g, "README.md")); err != nil {
		t.Skipf("golden reference data not found at %s (it lives beside the checkout)", g)
	}
	return g
}

// File is an open golden safetensors file.
type File struct {
	f *safetensors.File
	t testing.TB
}

// Open opens dir/name and closes it when the test ends.
func Open(t testing.TB, name string) *File {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(Dir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &File{f: f, t: t}
}

// F32 returns an F32 tensor's values and shape; the test fails if it is
// missing or of another type.
func (g *File) F32(name string) ([]float32, []int) {
	g.t.Helper()
	info, ok := g.f.Lookup(name)
	if !ok || info.DType != "F32" {
		g.t.Fatalf("golden %s: no F32 tensor %q", g.f.Path(), name)
	}
	raw, err := g.f.Data(name)
	if err != nil {
		g.t.Fatal(err)
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out, info.Shape
}

// I64 returns an I64 tensor's values.
func (g *File) I64(name string) []int64 {
	g.t.Helper()
	info, ok := g.f.Lookup(name)
	if !ok || info.DType != "I64" {
		g.t.Fatalf("golden %s: no I64 tensor %q", g.f.Path(), name)
	}
	raw, err := g.f.Data(name)
	if err != nil {
		g.t.Fatal(err)
	}
	out := make([]int64, len(raw)/8)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
	}
	return out
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
