package tui

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/gl"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/bundled"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/sampler"
)

// bundledOn loads the bundled model on a new device from open (the
// session that loads it owns the device).
func bundledOn(open func() (gpu.Device, error)) LoadFunc {
	return func(func(string)) (gpu.Device, *models.Pipeline, error) {
		dev, err := open()
		if err != nil {
			return nil, nil, err
		}
		p, err := bundled.Load(dev)
		if err != nil {
			dev.Close()
		}
		return dev, p, err
	}
}

func openRef() (gpu.Device, error) { return ref.New(), nil }
func openGL() (gpu.Device, error)  { return gl.New() }

// liveDevices are the devices the live test runs on: the reference device,
// and GL where a context can be made.
func liveDevices(t testing.TB) map[string]func() (gpu.Device, error) {
	devs := map[string]func() (gpu.Device, error){"ref": openRef}
	if d, err := gl.New(); err == nil {
		d.Close()
		devs["gl"] = openGL
	} else {
		t.Logf("no GL device (%v): the live test runs on ref only", err)
	}
	return devs
}

// liveTestSettings: the bundled model at its native size, a fixed seed.
func liveTestSettings(t testing.TB, open func() (gpu.Device, error)) presets.Settings {
	dev, p, err := bundledOn(open)(nil)
	require.NoError(t, err)
	n := p.NativeSize()
	p.Close()
	dev.Close()
	s := presets.Default()
	s.Width, s.Height, s.Seed, s.Steps, s.CFGScale = n, n, 42, 6, 6
	return s
}

// waitStarted feeds messages until the worker started n runs.
func (h *harness) waitStarted(n int) {
	h.t.Helper()
	h.waitFor("a live run to start", func() bool { return len(h.started) >= n })
}

// Live mode: a prompt typed key by key gives images as it is typed; a
// burst of keys starts one run; an edit cancels the live run in flight;
// the timeline keeps one live run; the image on screen is, bit for bit,
// the image a session makes with the live profile (4 steps of ddim with
// the model's timestep spacing, the form's seed, guidance and size) for the final
// prompt; turned off, ctrl+g runs the form's own steps and sampler.
func TestLiveModeTypesAPrompt(t *testing.T) {
	for name, open := range liveDevices(t) {
		t.Run(name, func(t *testing.T) {
			s := liveTestSettings(t, open)
			h := newHarness(t, s, bundledOn(open))
			m := h.m
			require.NotNil(t, m.model, m.status)
			require.Equal(t, focusPrompt, m.focus)
			h.keys("ctrl+u")

			h.keys("ctrl+t")
			require.True(t, m.live.on)
			h.waitFor("the first tick", func() bool { return m.status == "live: type a prompt" })
			assert.Empty(t, h.started, "an empty prompt starts no run")

			// A burst of keys (no message handled between them) is one run.
			h.keys("r", "e", "d")
			h.waitFor("the first live image", func() bool { return m.live.done == 1 })
			require.Len(t, h.started, 1, "three keys within the debounce start one run")
			assert.Equal(t, "red", h.started[0].Settings.Prompt)
			r := m.runs[m.cur]
			assert.True(t, r.Live)
			assert.Equal(t, runDone, r.Status)
			require.NotEmpty(t, r.Images, "the first image arrived")
			assert.Contains(t, h.view(), "(live) · final image")
			assert.Contains(t, m.status, "ms key → image")
			assert.Positive(t, m.live.last)

			// Each key once the previous key's run has started: that run
			// is in flight and the key cancels it.
			for i, k := range []string{" ", "h", "e", "a", "r", "t"} {
				h.keys(k)
				h.waitStarted(2 + i)
			}
			h.waitFor("the last live image", func() bool { return m.live.done == 2 && m.active() == nil })
			require.Len(t, h.started, 7)
			var done, cancelled int
			for _, e := range h.ended {
				switch {
				case e.Cancelled:
					cancelled++
				case e.Err == nil:
					done++
				}
			}
			assert.Equal(t, 2, done, "images for the first and the last prompt")
			assert.Equal(t, 5, cancelled, "the runs of ' ', h, e, a and r were cancelled by the next key")
			assert.Equal(t, 5, m.live.cancelled)
			var live []*runRec
			for _, x := range m.runs {
				if x.Live {
					live = append(live, x)
				}
			}
			require.Len(t, live, 1, "a live run replaces the one before in the timeline")
			r = m.runs[m.cur]
			require.Same(t, live[0], r, "the live image is on screen")
			require.Equal(t, runDone, r.Status)
			pic, what := m.shown(r)
			assert.Equal(t, "final image (VAE)", what)
			require.Len(t, r.Images, 1)
			assert.Same(t, r.Images[0], pic)
			assert.Equal(t, "red heart", r.Settings.Prompt)
			assert.Len(t, r.Frames, liveSteps)

			// The same image from a session on the same kind of device.
			want := s
			want.Prompt, want.Steps, want.Sampler, want.Schedule = "red heart", 4, "ddim", ""
			sess := gen.NewSession(bundledOn(open), nil)
			defer sess.Close()
			_, _, err := sess.Load()
			require.NoError(t, err)
			run, err := sess.Start(1, want)
			require.NoError(t, err)
			imgs, err := sess.Finish(context.Background(), run, nil)
			require.NoError(t, err)
			require.Len(t, imgs, 1)
			assert.Equal(t, imgs[0].Rect, r.Images[0].Rect)
			assert.Equal(t, imgs[0].Pix, r.Images[0].Pix, "the live image differs from a direct run with the live profile")

			// Off: edits start nothing, ctrl+g runs the form's settings.
			h.keys("ctrl+t")
			assert.False(t, m.live.on)
			n := len(h.started)
			h.keys("s")
			h.keys("ctrl+g")
			h.waitStarted(n + 1)
			require.Len(t, h.started, n+1, "one run: ctrl+g's")
			got := h.started[n].Settings
			assert.Equal(t, "red hearts", got.Prompt)
			assert.Equal(t, s.Steps, got.Steps, "the form's steps")
			form, _, err := sampler.LookupSampler(s.Sampler)
			require.NoError(t, err)
			assert.Equal(t, form, got.Sampler, "the form's sampler")
			h.waitRun(h.last())
			assert.Equal(t, runDone, h.last().Status, m.status)
			assert.False(t, h.last().Live)
			assert.Len(t, live[0].Images, 1, "the last live run stays in the history")
			assert.Contains(t, m.runs, live[0])
		})
	}
}

// The live profile: 4 steps of ddim with the model's spacing, one image,
// the form's seed, guidance, size and prompts.
func TestLiveProfile(t *testing.T) {
	s := presets.Default()
	s.Prompt, s.NegativePrompt, s.Seed, s.CFGScale, s.Width, s.Height, s.Batch = "cat face", "blurry", 9, 5.5, 64, 32, 3
	eta := 0.7
	s.Eta = &eta
	got := liveProfile(&gen.Facts{}, s)
	assert.Equal(t, 4, got.Steps)
	assert.Equal(t, "ddim", got.Sampler)
	assert.Equal(t, "", got.Schedule, "the model's own timestep spacing")
	assert.Equal(t, 1, got.Batch)
	assert.Nil(t, got.Eta, "ddim's own eta (0)")
	assert.Equal(t, "cat face", got.Prompt)
	assert.Equal(t, "blurry", got.NegativePrompt)
	assert.Equal(t, int64(9), got.Seed)
	assert.InDelta(t, 5.5, got.CFGScale, 0) // exact: copied
	assert.Equal(t, 64, got.Width)
	assert.Equal(t, 32, got.Height)

	lcm := liveProfile(&gen.Facts{GuidanceDistilled: true}, s)
	assert.Equal(t, "lcm", lcm.Sampler)
	assert.Equal(t, "", lcm.Schedule)

	flow := &gen.Facts{}
	flow.Scheduler.ClassName = "FlowMatchEulerDiscreteScheduler"
	s.Sampler, s.Schedule = "flow_euler", "simple"
	fl := liveProfile(flow, s)
	assert.Equal(t, "flow_euler", fl.Sampler, "a flow model keeps its sampler")
	assert.Equal(t, "simple", fl.Schedule)
	assert.Equal(t, 4, fl.Steps)
}

// BenchmarkLiveKeyToImage measures live mode on the bundled model on GL
// (llvmpipe on a machine without a GPU), warm: each iteration types one
// key into the prompt and waits for its image. It reports key -> image
// (the debounce included; mean and best), the mean after the debounce and
// the run's stages (means). ns/op counts two runs (the key's, and the
// backspace's before it), so read the metrics.
func BenchmarkLiveKeyToImage(b *testing.B) {
	d, err := gl.New()
	if err != nil {
		b.Skipf("no GL device: %v", err)
	}
	d.Close()
	s := liveTestSettings(b, openGL)
	h := newHarness(b, s, bundledOn(openGL))
	m := h.m
	require.NotNil(b, m.model, m.status)
	h.keys("ctrl+u")
	h.typeText("red heart")
	h.keys("ctrl+t")
	h.waitFor("a warm-up image", func() bool { return m.live.done == 1 && m.active() == nil })
	letters := "abcdefghijklmnopqrstuvwxyz"
	var total, encode, sampling, decode time.Duration
	best := time.Hour
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 {
			h.keys("backspace")
			h.waitFor("the key's image", func() bool { return m.live.done == 2*i+1 && m.active() == nil })
		}
		want := m.live.done + 1
		h.keys(string(letters[i%len(letters)]))
		h.waitFor("the key's image", func() bool { return m.live.done == want && m.active() == nil })
		total += m.live.last
		best = min(best, m.live.last)
		for _, e := range h.ended[len(h.ended)-1:] {
			encode += e.Encode
			sampling += e.Sampling
			decode += e.Decode
		}
	}
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / n }
	b.ReportMetric(ms(total), "key-to-image-ms")
	b.ReportMetric(float64(best.Microseconds())/1000, "best-key-to-image-ms")
	b.ReportMetric(ms(total)-float64(m.live.debounce.Milliseconds()), "after-debounce-ms")
	b.ReportMetric(ms(encode), "prompt-ms")
	b.ReportMetric(ms(sampling), "steps-ms")
	b.ReportMetric(ms(decode), "vae-ms")
}
