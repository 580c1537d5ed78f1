package faulty

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
)

// ops runs a small chain of ops: Upload, Add, Scale, Add, and downloads the
// result.
func ops(d gpu.Device) ([]float32, error) {
	a := d.Upload([]float32{1, 2, 3, 4}, 4)
	b := d.Add(a, a)
	c := d.Scale(b, 2, 1)
	e := d.Add(c, a)
	return d.Download(e)
}

// TestDeviceFaultsAreSticky: each device fault fires on the chosen op, is
// recorded on the wrapped device, fails that Download and every later one,
// and fires once: a second device on the same plan runs clean.
func TestDeviceFaultsAreSticky(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		want []string
	}{
		{LostContext, []string{"Scale:", "context was lost"}},
		{CompileError, []string{"shader unary.comp", "does not compile", "error:"}},
		{OOM, []string{"out of memory allocating 3072.0 MiB"}},
	} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			plan := NewPlan(tc.kind, Trigger{Op: "Scale", After: 1})
			d := Wrap(ref.New(), plan)
			defer d.Close()
			out, err := ops(d)
			if err == nil || out != nil {
				t.Fatalf("Download after the fault: %v, %v", out, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if d.Err() == nil || d.Err().Error() != err.Error() {
				t.Errorf("Err() = %v, want the fault", d.Err())
			}
			var oom *gpu.OOMError
			if (tc.kind == OOM) != errors.As(err, &oom) {
				t.Errorf("errors.As OOMError = %v for %v", !(tc.kind == OOM), tc.kind)
			}
			if tc.kind == LostContext && !errors.Is(err, ErrContextLost) {
				t.Errorf("not ErrContextLost: %v", err)
			}
			// Sticky: later ops and read-backs fail with the same error.
			if _, err2 := d.Download(d.Upload([]float32{1}, 1)); err2 == nil || err2.Error() != err.Error() {
				t.Errorf("a later Download: %v", err2)
			}
			if fired, at := plan.Fired(); !fired || at != "Scale" {
				t.Errorf("Fired() = %v, %q", fired, at)
			}
			// A device reopened on the same plan runs clean.
			d2 := Wrap(ref.New(), plan)
			defer d2.Close()
			out, err = ops(d2)
			if err != nil || len(out) != 4 || out[0] != 6 || out[3] != 21 {
				t.Errorf("reopened device: %v, %v; want [6 11 16 21]", out, err)
			}
		})
	}
}

// TestTriggerCounts: After counts only ops of the named kind; a Download
// trigger fires on that read-back; Arm starts the counts again.
func TestTriggerCounts(t *testing.T) {
	plan := NewPlan(LostContext, Trigger{Op: "Add", After: 2})
	d := Wrap(ref.New(), plan)
	a := d.Upload([]float32{1, 2}, 2)
	b := d.Add(a, a)
	d.Scale(b, 1, 0)
	if d.Err() != nil {
		t.Fatalf("fired before the second Add: %v", d.Err())
	}
	d.Add(b, a)
	if d.Err() == nil {
		t.Fatal("did not fire on the second Add")
	}
	if n, _ := plan.Counts(); n != 2 {
		t.Errorf("counted %d Adds, want 2", n)
	}

	plan.Arm(Trigger{Downloads: 2})
	d2 := Wrap(ref.New(), plan)
	x := d2.Upload([]float32{5}, 1)
	if v, err := d2.Download(x); err != nil || v[0] != 5 {
		t.Fatalf("first Download: %v %v", v, err)
	}
	if _, err := d2.Download(x); err == nil || !strings.Contains(err.Error(), "Download:") {
		t.Fatalf("second Download: %v, want the lost context", err)
	}
	plan.Disarm()
	plan.Arm(Trigger{After: 1})
	plan.Disarm()
	d3 := Wrap(ref.New(), plan)
	if _, err := d3.Download(d3.Upload([]float32{1}, 1)); err != nil {
		t.Errorf("a disarmed plan fired: %v", err)
	}
}

// TestNaN: the chosen read-back carries a NaN in its middle element; the
// device records no error and the next read-back is clean.
func TestNaN(t *testing.T) {
	plan := NewPlan(NaN, Trigger{Downloads: 1})
	d := Wrap(ref.New(), plan)
	x := d.Upload([]float32{1, 2, 3, 4}, 4)
	v, err := d.Download(x)
	if err != nil || !math.IsNaN(float64(v[2])) || v[0] != 1 || v[3] != 4 {
		t.Fatalf("poisoned read-back: %v %v", v, err)
	}
	if d.Err() != nil {
		t.Errorf("a NaN recorded a device error: %v", d.Err())
	}
	v, err = d.Download(x)
	if err != nil || v[2] != 3 {
		t.Errorf("the next read-back: %v %v", v, err)
	}
}
