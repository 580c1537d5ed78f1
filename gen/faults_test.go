package gen

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
)

// nanDevice poisons one read-back: the nth Download returns a NaN, as a
// kernel that overflowed would.
type nanDevice struct {
	gpu.Device
	n, calls int
}

func (d *nanDevice) Download(t *gpu.Tensor) ([]float32, error) {
	out, err := d.Device.Download(t)
	d.calls++
	if d.calls == d.n && len(out) > 0 {
		out[len(out)/2] = float32(math.NaN())
	}
	return out, err
}

// TestNaNStopsTheStepAndSaysWhere: a NaN in the U-Net's output at step 3
// fails that step with an error naming the step and the stage, leaves the
// run where it was, and the pipeline keeps working for the next run.
func TestNaNStopsTheStepAndSaysWhere(t *testing.T) {
	dir := golden.Dir(t)
	dev := &nanDevice{Device: ref.New()}
	p, err := models.Load(dev, filepath.Join(dir, "sd15-mini"), "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s := e2eSettings()
	s.Steps = 5
	j, err := Start(p, s)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for i := 0; i < 2; i++ {
		if _, err := j.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	before := append([]float32(nil), j.Run.X().Data...)
	dev.n = dev.calls + 1 // the next read-back: step 3's U-Net output
	_, err = j.Step(context.Background())
	if err == nil || !strings.Contains(err.Error(), "step 3/5") || !strings.Contains(err.Error(), "U-Net output") {
		t.Fatalf("err = %v, want one naming step 3/5 and the U-Net output", err)
	}
	if got := j.Run.X().Data; firstNonFinite(got) >= 0 || got[0] != before[0] || len(j.Frames) != 2 {
		t.Errorf("the failed step moved the run (frames %d)", len(j.Frames))
	}
	// The same run steps on once the fault is gone, and a new run works.
	if _, err := j.Step(context.Background()); err != nil {
		t.Errorf("step after the fault: %v", err)
	}
	j2, err := Start(p, s)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if _, err := j2.Step(context.Background()); err != nil {
		t.Errorf("a new run after the fault: %v", err)
	}
}
