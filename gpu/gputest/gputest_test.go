package gputest

import (
	"os"
	"reflect"
	"strings"
	"testing"

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
		if name := it.Method(i).Name; !notOps[name] && !covered[name] {
			t.Errorf("no conformance case for %s", name)
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
		switch {
		case frag == "" && err != nil:
			t.Errorf("%s: unexpected failure: %v", c.Name, err)
		case frag != "" && err == nil:
			t.Errorf("%s: bug not detected", c.Name)
		case frag != "" && !strings.Contains(err.Error(), frag):
			t.Errorf("%s: error %q does not mention %q", c.Name, err, frag)
		case err != nil:
			t.Logf("caught: %v", err)
		}
	}
	for name := range want {
		t.Errorf("case %s no longer exists", name)
	}
}

func TestCompare(t *testing.T) {
	shape := gpu.Shape{2, 3}
	want := []float32{0.5, -1, 2, 0, 10, 3}
	if err := Compare(want, want, shape, 0); err != nil {
		t.Fatalf("identical: %v", err)
	}
	// Element-wise allclose: 2.9e-4 off a value of 2 passes at 1e-4 (limit 3e-4).
	got := append([]float32(nil), want...)
	got[2] = 2.00029
	if err := Compare(want, got, shape, 1e-4); err != nil {
		t.Fatalf("within tolerance: %v", err)
	}
	got[3] = 0.00011 // 1.1e-4 off 0: fails, but 1e-3 off -1 is worse
	got[1] = -1.001
	err := Compare(want, got, shape, 1e-4)
	if err == nil || !strings.Contains(err.Error(), "worst at [0 1]") || !strings.Contains(err.Error(), "2 of 6") {
		t.Fatalf("want a failure at [0 1], got %v", err)
	}
	got = append([]float32(nil), want...)
	got[5] = float32(nanValue())
	if err := Compare(want, got, shape, 1); err == nil || !strings.Contains(err.Error(), "[1 2]") {
		t.Fatalf("NaN not caught: %v", err)
	}
	if err := Compare(want, got[:5], shape, 1); err == nil {
		t.Fatal("length mismatch not caught")
	}
	if idx := Index(gpu.Shape{2, 3, 5}, 29); !reflect.DeepEqual(idx, []int{1, 2, 4}) {
		t.Fatalf("Index = %v", idx)
	}
}

func nanValue() float64 {
	zero := 0.0
	return zero / zero
}

func TestValuesAreDeterministicAndTyped(t *testing.T) {
	c := Case{Name: "X/y", Inputs: []Input{typed(gpu.F16, 4, 5), {Shape: []int{3}, Scale: 2, Offset: 100}}}
	a, b := c.Values(0), c.Values(0)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("values differ between calls")
	}
	for _, v := range a {
		if ref.HalfToFloat(ref.FloatToHalf(v)) != v {
			t.Fatalf("F16 input value %v is not representable in F16", v)
		}
	}
	for _, v := range c.Values(1) {
		if v < 80 || v > 120 {
			t.Fatalf("offset input value %v far from 100", v)
		}
	}
	if reflect.DeepEqual(c.Values(0)[:3], c.Values(1)) {
		t.Fatal("inputs share values")
	}
}

// The large cases are valid and deterministic on the reference device. They
// take several seconds, so they run only with STEPWISE_LARGE_TESTS=1.
func TestLargeRefAgainstRef(t *testing.T) {
	if os.Getenv("STEPWISE_LARGE_TESTS") != "1" {
		t.Skip("set STEPWISE_LARGE_TESTS=1 to run the large conformance cases")
	}
	RunLargeSuite(t, ref.New(), 0)
}
