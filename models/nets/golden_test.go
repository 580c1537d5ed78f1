package nets

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models/safetensors"
)

// goldenDir finds ../shared/golden beside the module root, or skips.
func goldenDir(t testing.TB) string {
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
	if _, err := os.Stat(filepath.Join(g, "sd15-mini")); err != nil {
		t.Skipf("golden reference data not found at %s (it lives beside the checkout): %v", g, err)
	}
	return g
}

// openST opens a safetensors file and closes it when the test ends.
func openST(t testing.TB, path string) *safetensors.File {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// loadWeights reads a diffusers-layout safetensors file as MapWeights.
func loadWeights(t testing.TB, path string) MapWeights {
	t.Helper()
	f := openST(t, path)
	w := MapWeights{}
	for _, ti := range f.Tensors() {
		dt, ok := ti.DType.GPU()
		if !ok {
			continue
		}
		raw, err := f.Data(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		w[ti.Name] = Param{DType: dt, Shape: ti.Shape, Raw: raw}
	}
	return w
}

// loadConfig decodes a diffusers/transformers config.json into c.
func loadConfig(t testing.TB, path string, c any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// golden is one golden .safetensors file.
type golden struct{ f *safetensors.File }

func openGolden(t testing.TB, name string) golden {
	return golden{openST(t, filepath.Join(goldenDir(t), name))}
}

func (g golden) info(t testing.TB, name string, dt safetensors.DType) safetensors.TensorInfo {
	t.Helper()
	ti, ok := g.f.Lookup(name)
	if !ok {
		t.Fatalf("%s: no tensor %q", g.f.Path(), name)
	}
	if ti.DType != dt {
		t.Fatalf("%s: %s is %s, want %s", g.f.Path(), name, ti.DType, dt)
	}
	return ti
}

// f32 returns an F32 tensor's values and shape.
func (g golden) f32(t testing.TB, name string) ([]float32, []int) {
	t.Helper()
	ti := g.info(t, name, safetensors.F32)
	raw, err := g.f.Data(name)
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float32, len(raw)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return v, ti.Shape
}

// upload puts an F32 golden tensor on d.
func (g golden) upload(t testing.TB, d gpu.Device, name string) *gpu.Tensor {
	v, shape := g.f32(t, name)
	return d.Upload(v, shape...)
}

// ids returns an I64 [B,L] tensor as token rows.
func (g golden) ids(t testing.TB, name string) [][]int32 {
	t.Helper()
	ti := g.info(t, name, safetensors.I64)
	raw, err := g.f.Data(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(ti.Shape) != 2 {
		t.Fatalf("%s: want [B,L], got %v", name, ti.Shape)
	}
	rows := make([][]int32, ti.Shape[0])
	for i := range rows {
		rows[i] = make([]int32, ti.Shape[1])
		for j := range rows[i] {
			rows[i][j] = int32(binary.LittleEndian.Uint64(raw[8*(i*ti.Shape[1]+j):]))
		}
	}
	return rows
}

// compare downloads got, checks its shape and that max|got-want| <= atol,
// and returns the max difference.
func compare(t testing.TB, d gpu.Device, what string, got *gpu.Tensor, want []float32, shape []int, atol float64) float64 {
	t.Helper()
	if !got.Shape.Equal(shape) {
		t.Errorf("%s: shape %v, want %v", what, got.Shape, gpu.Shape(shape))
		return math.Inf(1)
	}
	v, err := d.Download(got)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	worst, at := 0.0, 0
	for i := range v {
		diff := math.Abs(float64(v[i]) - float64(want[i]))
		if math.IsNaN(diff) {
			diff = math.Inf(1)
		}
		if diff > worst {
			worst, at = diff, i
		}
	}
	if worst > atol {
		t.Errorf("%s: max |diff| %.3g > %.g at flat index %d (got %g, want %g)", what, worst, atol, at, v[at], want[at])
	}
	return worst
}
