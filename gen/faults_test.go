package gen

import (
	"bytes"
	"context"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/faulty"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
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

// miniOn loads the single-file sd15-mini on dev.
func miniOn(t *testing.T, dev gpu.Device) *models.Pipeline {
	t.Helper()
	dir := golden.Dir(t)
	p, err := models.Load(dev, filepath.Join(dir, "sd15-mini.fp16.safetensors"), filepath.Join(dir, "sd15_mini_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// generateAll runs s to the end on p and returns the images' pixels.
func generateAll(t *testing.T, p *models.Pipeline, s presets.Settings) [][]byte {
	t.Helper()
	j, err := Start(p, s)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	imgs, err := j.Finish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, im := range imgs {
		out = append(out, im.Pix)
	}
	return out
}

// TestDeviceFaults injects each device fault at a stage of a 4-step run:
// the error is a *DeviceError naming the step and stage and carrying the
// device's message, the run has not moved past the failed step, and after
// the pipeline and device are reopened (as the studio and the CLI do) the
// same seed gives exactly the image of a fault-free run.
func TestDeviceFaults(t *testing.T) {
	s := e2eSettings()
	s.Steps, s.CFGScale = 4, 1 // one U-Net pass a step keeps the test quick
	ref0 := ref.New()
	p0 := miniOn(t, ref0)
	want := generateAll(t, p0, s)
	p0.Close()
	ref0.Close()

	type when int
	const (
		atStart  when = iota // armed before Start: the text encoder
		atStep3              // armed after two steps: step 3's U-Net
		atDecode             // armed after every step: the VAE decoder
	)
	for _, tc := range []struct {
		name  string
		kind  faulty.Kind
		trig  faulty.Trigger
		when  when
		stage string
		want  []string
	}{
		{"lost context on the U-Net read-back", faulty.LostContext, faulty.Trigger{Downloads: 1}, atStep3, "GPU error at step 3/4 (U-Net)", []string{"context was lost"}},
		{"lost context in the text encoder", faulty.LostContext, faulty.Trigger{Op: "Embedding", After: 1}, atStart, "GPU error in the text encoder", []string{"Embedding: gl: the OpenGL context was lost"}},
		{"shader compile failure in attention", faulty.CompileError, faulty.Trigger{Op: "Attention", After: 1}, atStep3, "GPU error at step 3/4 (U-Net)", []string{"shader attention.comp", "does not compile", "error: `acc' undeclared"}},
		{"out of memory on the latent upload", faulty.OOM, faulty.Trigger{Op: "Upload", After: 1}, atStep3, "GPU error at step 3/4 (U-Net)", []string{"out of memory allocating", "try a smaller size or batch"}},
		{"out of memory in the VAE decoder", faulty.OOM, faulty.Trigger{Op: "Conv2D", After: 3}, atDecode, "GPU error in the VAE decoder", []string{"out of memory allocating"}},
		{"lost context mid-U-Net", faulty.LostContext, faulty.Trigger{Op: "Conv2D", After: 7}, atStep3, "GPU error at step 3/4 (U-Net)", []string{"Conv2D: gl: the OpenGL context was lost"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := faulty.NewPlan(tc.kind, tc.trig)
			plan.Disarm()
			dev := faulty.Wrap(ref.New(), plan)
			p := miniOn(t, dev)
			var err error
			frames := -1
			if tc.when == atStart {
				plan.Arm(tc.trig)
				_, err = Start(p, s)
			} else {
				j, serr := Start(p, s)
				if serr != nil {
					t.Fatal(serr)
				}
				for i := 0; i < 2; i++ {
					if _, err := j.Step(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
				if tc.when == atDecode {
					for !j.Done() {
						if _, err := j.Step(context.Background()); err != nil {
							t.Fatal(err)
						}
					}
					plan.Arm(tc.trig)
					_, err = j.Images()
				} else {
					plan.Arm(tc.trig)
					_, err = j.Step(context.Background())
				}
				frames = len(j.Frames)
				j.Close()
			}
			var de *DeviceError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v (%T), want a *DeviceError", err, err)
			}
			t.Logf("reported: %v", err)
			for _, w := range append([]string{tc.stage}, tc.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if fired, _ := plan.Fired(); !fired {
				t.Error("the fault never fired")
			}
			if tc.when == atStep3 && frames != 2 {
				t.Errorf("%d frames after a fault at step 3, want 2", frames)
			}
			// The device stays failed: the pipeline cannot go on.
			if _, err := Start(p, s); err == nil {
				t.Error("a new run on the failed device started")
			}
			p.Close()
			dev.Close()

			dev2 := faulty.Wrap(ref.New(), plan)
			defer dev2.Close()
			p2 := miniOn(t, dev2)
			defer p2.Close()
			got := generateAll(t, p2, s)
			if len(got) != len(want) || !bytes.Equal(got[0], want[0]) {
				t.Errorf("the run after reopening differs from a fault-free run")
			}
		})
	}
}

// TestDeviceFaultOnGL: on the GL device, as the studio runs, a lost
// context at step 2 stays recorded (GL's errors are sticky), and a new GL
// device gives the image of a fault-free GL run.
func TestDeviceFaultOnGL(t *testing.T) {
	s := e2eSettings()
	s.Steps, s.CFGScale = 3, 1
	clean := testdev.GL(t)
	p0 := miniOn(t, clean)
	want := generateAll(t, p0, s)
	p0.Close()

	plan := faulty.NewPlan(faulty.LostContext, faulty.Trigger{Downloads: 2})
	dev := faulty.Wrap(testdev.GL(t), plan)
	p := miniOn(t, dev)
	j, err := Start(p, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = j.Step(context.Background())
	var de *DeviceError
	if !errors.As(err, &de) || de.Step != 2 || de.Stage != "U-Net" || !errors.Is(err, faulty.ErrContextLost) {
		t.Fatalf("err = %v, want a lost context at step 2 (U-Net)", err)
	}
	if _, err := dev.Download(dev.Upload([]float32{1}, 1)); !errors.Is(err, faulty.ErrContextLost) {
		t.Errorf("the GL device forgot the fault: %v", err)
	}
	j.Close()
	p.Close()

	p2 := miniOn(t, faulty.Wrap(testdev.GL(t), plan))
	defer p2.Close()
	if got := generateAll(t, p2, s); !equalPix(got, want) {
		t.Error("the run on a new GL device differs from the fault-free GL run")
	}
}
