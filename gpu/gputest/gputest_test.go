package gputest

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
)

// The reference device run twice must agree exactly: the suite is
// deterministic and every case is valid.
func TestRefAgainstRef(t *testing.T) {
	RunOpSuite(t, ref.New(), 0)
}

func TestRefErrorsAndMemory(t *testing.T) {
	RunErrorSuite(t, func() gpu.Device { return ref.New() })
	RunMemorySuite(t, ref.New())
}

// Every op of gpu.Device has at least one case.
func TestCasesCoverEveryOp(t *testing.T) {
	notOps := map[string]bool{"Name": true, "UploadRaw": true, "UploadFill": true, "Release": true, "Finish": true,
		"Err": true, "Fail": true, "Stats": true, "PushScope": true, "PopScope": true, "Close": true}
	covered := map[string]bool{}
	for _, c := range Cases() {
		covered[strings.SplitN(c.Name, "/", 2)[0]] = true
	}
	it := reflect.TypeOf((*gpu.Device)(nil)).Elem()
	for i := 0; i < it.NumMethod(); i++ {
		if name := it.Method(i).Name; !notOps[name] {
			assert.True(t, covered[name], "no conformance case for %s", name)
		}
	}
}

// faulty is a reference device with deliberate bugs, to show the suite
// catches them.
type faulty struct {
	*ref.Device
}

// GELU uses the tanh approximation instead of erf (a plausible shader bug).
func (f *faulty) GELU(x *gpu.Tensor) *gpu.Tensor { return f.Device.GELUTanh(x) }

// Upsample2x forgets to duplicate rows: it returns the wrong shape.
func (f *faulty) Upsample2x(x *gpu.Tensor) *gpu.Tensor { return f.Device.Scale(x, 1, 0) }

// Softmax lets buffers escape the caller's scope.
func (f *faulty) Softmax(x *gpu.Tensor) *gpu.Tensor {
	leak := f.Device.Upload([]float32{1}, 1)
	f.Device.PopScope(x, leak) // ends the caller's scope keeping x and leak, which escape it
	f.Device.PushScope()       // a new scope for the caller to pop
	return f.Device.Softmax(x)
}

// Attention ignores the causal mask.
func (f *faulty) Attention(q, k, v *gpu.Tensor, o gpu.AttentionOpts) *gpu.Tensor {
	o.Causal = false
	return f.Device.Attention(q, k, v, o)
}

func TestSuiteCatchesBugs(t *testing.T) {
	oracle := ref.New()
	want := map[string]string{
		"GELU/3x5x7":                          "elements differ",
		"Upsample2x/2x3x5x7":                  "output shape",
		"Softmax/3x7x13":                      "buffers live",
		"Attention/clip_b2_l77_h4_d16_causal": "worst at [",
		"Attention/b2_lq13_lk7_h3_d5":         "", // not causal: must pass
		"SiLU/3x5x7":                          "",
	}
	for _, c := range Cases() {
		frag, ok := want[c.Name]
		if !ok {
			continue
		}
		delete(want, c.Name)
		err := CheckCase(oracle, &faulty{Device: ref.New()}, c, 1e-4)
		if frag == "" {
			assert.NoError(t, err, "%s: a correct op", c.Name)
			continue
		}
		if assert.Error(t, err, "%s: bug not detected", c.Name) {
			assert.Contains(t, err.Error(), frag, c.Name)
			t.Logf("caught: %v", err)
		}
	}
	assert.Empty(t, want, "cases that no longer exist")
}

func TestCompare(t *testing.T) {
	shape := gpu.Shape{2, 3}
	want := []float32{0.5, -1, 2, 0, 10, 3}
	require.NoError(t, Compare(want, want, shape, 0), "identical")
	// Element-wise allclose: 2.9e-4 off a value of 2 passes at 1e-4 (limit 3e-4).
	got := append([]float32(nil), want...)
	got[2] = 2.00029
	require.NoError(t, Compare(want, got, shape, 1e-4), "within tolerance")
	got[3] = 0.00011 // 1.1e-4 off 0: fails, but 1e-3 off -1 is worse
	got[1] = -1.001
	err := Compare(want, got, shape, 1e-4)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "worst at [0 1]")
	assert.Contains(t, err.Error(), "2 of 6")
	got = append([]float32(nil), want...)
	got[5] = float32(nanValue())
	err = Compare(want, got, shape, 1)
	require.Error(t, err, "NaN not caught")
	assert.Contains(t, err.Error(), "[1 2]")
	assert.Error(t, Compare(want, got[:5], shape, 1), "length mismatch not caught")
	assert.Equal(t, []int{1, 2, 4}, Index(gpu.Shape{2, 3, 5}, 29))
}

func nanValue() float64 {
	zero := 0.0
	return zero / zero
}

func TestValuesAreDeterministicAndTyped(t *testing.T) {
	c := Case{Name: "X/y", Inputs: []Input{typed(gpu.F16, 4, 5), {Shape: []int{3}, Scale: 2, Offset: 100}}}
	a, b := c.Values(0), c.Values(0)
	require.Equal(t, a, b, "values are the same between calls")
	for _, v := range a {
		assert.Equal(t, v, ref.HalfToFloat(ref.FloatToHalf(v)), "F16 input value representable in F16")
	}
	for _, v := range c.Values(1) {
		assert.InDelta(t, 100, v, 20, "offset input value near 100 (offset 100, scale 2)")
	}
	assert.NotEqual(t, c.Values(0)[:3], c.Values(1), "inputs share values")
}

// The large cases are valid and deterministic on the reference device. They
// take several seconds, so they run only with STEPWISE_LARGE_TESTS=1.
func TestLargeRefAgainstRef(t *testing.T) {
	if os.Getenv("STEPWISE_LARGE_TESTS") != "1" {
		t.Skip("set STEPWISE_LARGE_TESTS=1 to run the large conformance cases")
	}
	RunLargeSuite(t, ref.New(), 0)
}
