package gen

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/bundled"
	"github.com/stepwise/stepwise/presets"
)

var soak = flag.Bool("soak", false, "run the full 200-generation soak test (also STEPWISE_SOAK=1)")

// soakDevice is the GL device where a context can be made (its buffer
// pool is what a long session stresses), else the reference device.
func soakDevice(t *testing.T) (gpu.Device, string) {
	if d := testdev.MaybeGL(t); d != nil {
		return d, "gl"
	}
	d := ref.New()
	t.Cleanup(func() { d.Close() })
	return d, "ref"
}

func bundledSettings(p *models.Pipeline, seed int64) presets.Settings {
	s := presets.Default()
	s.Prompt, s.Steps, s.Seed = "a red apple", 2, seed
	s.Width, s.Height = p.NativeSize(), p.NativeSize()
	return s
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestSoak runs many generations (200 with -soak or STEPWISE_SOAK=1, 40
// otherwise) in one process on the bundled model: the device memory held
// by tensors (resident bytes and live buffers) after generation 20 is
// exactly what it is after the last, and the Go heap grows by less than
// 1 MiB over the same stretch.
func TestSoak(t *testing.T) {
	n := 40
	if *soak || os.Getenv("STEPWISE_SOAK") == "1" {
		n = 200
	}
	dev, name := soakDevice(t)
	p, err := bundled.Load(dev)
	require.NoError(t, err)
	defer p.Close()
	var at20 gpu.MemStats
	var heap20 uint64
	t0 := time.Now()
	for i := 1; i <= n; i++ {
		s := bundledSettings(p, int64(i))
		j, err := Start(p, s)
		require.NoError(t, err, "generation %d", i)
		imgs, err := j.Finish(context.Background())
		j.Close()
		require.NoError(t, err, "generation %d", i)
		require.Equal(t, 1, len(imgs), "generation %d: images", i)
		if i == 20 {
			at20, heap20 = dev.Stats(), heapAlloc()
		}
	}
	took := time.Since(t0)
	end, heapEnd := dev.Stats(), heapAlloc()
	t.Logf("%d generations on %s (%s) in %s (%s each); device after 20: %d B in %d buffers, after %d: %d B in %d buffers (peak %d B); Go heap %d -> %d B",
		n, name, dev.Name(), took.Round(time.Millisecond), (took / time.Duration(n)).Round(time.Millisecond),
		at20.Resident, at20.Buffers, n, end.Resident, end.Buffers, end.Peak, heap20, heapEnd)
	assert.Equal(t, at20.Resident, end.Resident, "device memory grew: bytes resident after 20 generations and after %d", n)
	assert.Equal(t, at20.Buffers, end.Buffers, "device memory grew: live buffers after 20 generations and after %d", n)
	assert.LessOrEqual(t, heapEnd, heap20+1<<20, "Go heap grew from %d to %d bytes between generation 20 and %d", heap20, heapEnd, n)
}

// TestCancelAtEveryStep cancels a run at each step index in turn: the
// step that sees the cancelled context returns context.Canceled without
// moving the run (frames == i), and the next run on the same pipeline
// gives the fault-free image.
func TestCancelAtEveryStep(t *testing.T) {
	dev := ref.New()
	defer dev.Close()
	p, err := bundled.Load(dev)
	require.NoError(t, err)
	defer p.Close()
	s := bundledSettings(p, 7)
	s.Steps, s.CFGScale = 4, 1
	want := generateAll(t, p, s)
	for i := 0; i < s.Steps; i++ {
		t.Run(fmt.Sprint("step", i), func(t *testing.T) {
			j, err := Start(p, s)
			require.NoError(t, err)
			defer j.Close()
			ctx, cancel := context.WithCancel(context.Background())
			for k := 0; k < i; k++ {
				_, err := j.Step(ctx)
				require.NoError(t, err)
			}
			before := append([]float32(nil), j.Run.X().Data...)
			cancel()
			_, err = j.Step(ctx)
			require.ErrorIs(t, err, context.Canceled, "step after cancel")
			assert.Equal(t, i, len(j.Frames), "cancelled at step %d: frames", i)
			assert.False(t, j.Done(), "cancelled at step %d: done", i)
			for k, v := range j.Run.X().Data {
				require.Equal(t, before[k], v, "the cancelled step moved the latent at %d", k)
			}
			assert.True(t, equalPix(generateAll(t, p, s), want), "the run after the cancel differs from the first")
		})
	}
}

func equalPix(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if string(a[i]) != string(b[i]) {
			return false
		}
	}
	return true
}
