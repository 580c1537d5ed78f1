package nets

import (
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
)

// loadWeights reads a diffusers-layout safetensors file as MapWeights.
func loadWeights(t testing.TB, path string) MapWeights {
	t.Helper()
	f := golden.Open(t, path)
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

// upload puts an F32 golden tensor on d.
func upload(d gpu.Device, g *golden.File, name string) *gpu.Tensor {
	v, shape := g.F32(name)
	return d.Upload(v, shape...)
}

// ids returns an I64 [B,L] golden tensor as token rows.
func ids(t testing.TB, g *golden.File, name string) [][]int32 {
	t.Helper()
	v := g.I64(name)
	ti, _ := g.Lookup(name)
	if len(ti.Shape) != 2 {
		t.Fatalf("%s: want [B,L], got %v", name, ti.Shape)
	}
	rows := make([][]int32, ti.Shape[0])
	for i := range rows {
		rows[i] = make([]int32, ti.Shape[1])
		for j := range rows[i] {
			rows[i][j] = int32(v[i*ti.Shape[1]+j])
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
