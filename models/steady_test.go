package models

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
)

// TestStepsReuseBuffers: after the first sampler step, U-Net steps and
// decodes on the GL device take every buffer from its pool: no GL buffer is
// created, and the device holds the same memory after each step.
func TestStepsReuseBuffers(t *testing.T) {
	dir := golden.Dir(t)
	dev := testdev.GL(t)
	counter, ok := dev.(interface{ BuffersCreated() int })
	if !ok {
		t.Fatalf("%T does not count its buffers", dev)
	}
	p, err := Load(dev, filepath.Join(dir, "sd15-mini"), "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := p.EncodePrompt("a red apple", "blurry", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	shape := [4]int{2, 4, 8, 8}
	r := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 2*4*8*8)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	step := func(t0 float64) {
		if _, err := p.PredictNoise(x, shape, t0, c, []Row{Uncond, Cond}); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Decode(x[:4*8*8], [4]int{1, 4, 8, 8}); err != nil {
			t.Fatal(err)
		}
	}
	step(999)
	created, resident := counter.BuffersCreated(), dev.Stats().Resident
	for i, ts := range []float64{800, 500, 100} {
		step(ts)
		if n := counter.BuffersCreated(); n != created {
			t.Errorf("by step %d, %d GL buffers were created after the first step (want 0: all from the pool)", i+2, n-created)
		}
		if r := dev.Stats().Resident; r != resident {
			t.Errorf("step %d: %d bytes resident, %d after the first", i+2, r, resident)
		}
	}
}
