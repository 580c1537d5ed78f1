package gen

import (
	"bytes"
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
	require.NoError(t, err)
	defer p.Close()
	s := e2eSettings()
	s.Steps = 5
	j, err := Start(p, s)
	require.NoError(t, err)
	defer j.Close()
	for i := 0; i < 2; i++ {
		_, err := j.Step(context.Background())
		require.NoError(t, err)
	}
	before := append([]float32(nil), j.Run.X().Data...)
	dev.n = dev.calls + 1 // the next read-back: step 3's U-Net output
	_, err = j.Step(context.Background())
	require.ErrorContains(t, err, "step 3/5", "want an error naming step 3/5 and the U-Net output")
	require.ErrorContains(t, err, "U-Net output", "want an error naming step 3/5 and the U-Net output")
	got := j.Run.X().Data
	assert.Negative(t, firstNonFinite(got), "the failed step moved the run: non-finite latent")
	assert.Equal(t, before[0], got[0], "the failed step moved the run")
	assert.Equal(t, 2, len(j.Frames), "the failed step moved the run: frames")
	// The same run steps on once the fault is gone, and a new run works.
	_, err = j.Step(context.Background())
	assert.NoError(t, err, "step after the fault")
	j2, err := Start(p, s)
	require.NoError(t, err)
	defer j2.Close()
	_, err = j2.Step(context.Background())
	assert.NoError(t, err, "a new run after the fault")
}

// miniOn loads the single-file sd15-mini on dev.
func miniOn(t *testing.T, dev gpu.Device) *models.Pipeline {
	t.Helper()
	dir := golden.Dir(t)
	p, err := models.Load(dev, filepath.Join(dir, "sd15-mini.fp16.safetensors"), filepath.Join(dir, "sd15_mini_config.json"))
	require.NoError(t, err)
	return p
}

// generateAll runs s to the end on p and returns the images' pixels.
func generateAll(t *testing.T, p *models.Pipeline, s presets.Settings) [][]byte {
	t.Helper()
	j, err := Start(p, s)
	require.NoError(t, err)
	defer j.Close()
	imgs, err := j.Finish(context.Background())
	require.NoError(t, err)
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
				require.NoError(t, serr)
				for i := 0; i < 2; i++ {
					_, err := j.Step(context.Background())
					require.NoError(t, err)
				}
				if tc.when == atDecode {
					for !j.Done() {
						_, err := j.Step(context.Background())
						require.NoError(t, err)
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
			require.ErrorAs(t, err, &de, "err = %v (%T), want a *DeviceError", err, err)
			t.Logf("reported: %v", err)
			for _, w := range append([]string{tc.stage}, tc.want...) {
				assert.ErrorContains(t, err, w)
			}
			fired, _ := plan.Fired()
			assert.True(t, fired, "the fault never fired")
			if tc.when == atStep3 {
				assert.Equal(t, 2, frames, "frames after a fault at step 3")
			}
			// The device stays failed: the pipeline cannot go on.
			_, err = Start(p, s)
			assert.Error(t, err, "a new run on the failed device started")
			p.Close()
			dev.Close()

			dev2 := faulty.Wrap(ref.New(), plan)
			defer dev2.Close()
			p2 := miniOn(t, dev2)
			defer p2.Close()
			got := generateAll(t, p2, s)
			// bytes.Equal, not assert.Equal: a diff of the pixels would be thousands of lines.
			if assert.Equal(t, len(want), len(got), "images after reopening") {
				assert.True(t, bytes.Equal(got[0], want[0]), "the run after reopening differs from a fault-free run")
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
	require.NoError(t, err)
	_, err = j.Step(context.Background())
	require.NoError(t, err)
	_, err = j.Step(context.Background())
	var de *DeviceError
	require.ErrorAs(t, err, &de, "want a lost context at step 2 (U-Net)")
	require.Equal(t, 2, de.Step, "err = %v, want a lost context at step 2 (U-Net)", err)
	require.Equal(t, "U-Net", de.Stage, "err = %v, want a lost context at step 2 (U-Net)", err)
	require.ErrorIs(t, err, faulty.ErrContextLost, "want a lost context at step 2 (U-Net)")
	_, err = dev.Download(dev.Upload([]float32{1}, 1))
	assert.ErrorIs(t, err, faulty.ErrContextLost, "the GL device forgot the fault")
	j.Close()
	p.Close()

	p2 := miniOn(t, faulty.Wrap(testdev.GL(t), plan))
	defer p2.Close()
	assert.True(t, equalPix(generateAll(t, p2, s), want), "the run on a new GL device differs from the fault-free GL run")
}
