package tui

import (
	"errors"
	"fmt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/faulty"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
)

// faultyLoad loads sd15-mini on a reference device wrapped with plan; a
// device reopened after a fault shares the plan (which fires once). opens
// counts the devices made.
func faultyLoad(t *testing.T, plan *faulty.Plan, opens *int) LoadFunc {
	g := golden.Dir(t)
	return func(func(string)) (gpu.Device, *models.Pipeline, error) {
		*opens++
		dev := faulty.Wrap(ref.New(), plan)
		p, err := models.Load(dev, filepath.Join(g, "sd15-mini.fp16.safetensors"), filepath.Join(g, "sd15_mini_config.json"))
		return dev, p, err
	}
}

// finishRun generates with the edited settings and waits for the end.
func (h *harness) finishRun() *runRec {
	h.t.Helper()
	h.keys("ctrl+g")
	r := h.last()
	h.waitRun(r)
	return r
}

// pausedAt starts a run paused and steps it to n frames.
func (h *harness) pausedAt(n int) *runRec {
	h.t.Helper()
	h.keys("ctrl+g", "space")
	r := h.last()
	h.waitFor("run start", func() bool { return r.Status == runRunning })
	h.drain(100 * time.Millisecond)
	if len(r.Frames) > n {
		h.t.Fatalf("a paused run took %d steps, want at most %d", len(r.Frames), n)
	}
	for len(r.Frames) < n {
		k := len(r.Frames)
		h.keys(".")
		h.waitFor("one step", func() bool { return len(r.Frames) == k+1 })
	}
	return r
}

// TestStudioFaults injects each fault at step 2 of a paused 3-step run (and
// one in a VAE decode): the run is marked failed, the status says where
// and what, a device fault reopens the device and reloads the model, and
// the next run with the same seed gives the fault-free image.
func TestStudioFaults(t *testing.T) {
	plan := faulty.NewPlan(faulty.LostContext, faulty.Trigger{})
	plan.Disarm()
	opens := 0
	s := testSettings()
	s.CFGScale = 1 // one U-Net pass a step: faster, and the faults are the same
	h := newHarness(t, s, faultyLoad(t, plan, &opens))
	m := h.m
	want := h.finishRun()
	require.Equal(t, runDone, want.Status, "fault-free run: %s (%s)", runStatusNames[want.Status], m.status)
	for _, tc := range []struct {
		name   string
		kind   faulty.Kind
		trig   faulty.Trigger
		want   []string
		reopen bool
	}{
		{"lost context", faulty.LostContext, faulty.Trigger{Downloads: 1}, []string{"GPU error at step 2/3 (U-Net)", "context was lost"}, true},
		{"compile failure", faulty.CompileError, faulty.Trigger{Op: "Attention", After: 2}, []string{"GPU error at step 2/3 (U-Net)", "shader attention.comp", "does not compile"}, true},
		{"out of memory", faulty.OOM, faulty.Trigger{Op: "Upload", After: 1}, []string{"GPU error at step 2/3 (U-Net)", "out of memory", "try a smaller size or batch"}, true},
		{"NaN", faulty.NaN, faulty.Trigger{Downloads: 1}, []string{"step 2/3", "U-Net output", "non-finite"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, pipe := opens, m.model
			r := h.pausedAt(1)
			plan.ArmKind(tc.kind, tc.trig)
			h.keys(".")
			h.waitRun(r)
			t.Logf("status: %s", m.status)
			require.Equal(t, runFailed, r.Status, "%s, want failed (%s)", runStatusNames[r.Status], m.status)
			require.Equal(t, 1, len(r.Frames), "frames of the failed run (%s)", m.status)
			for _, w := range tc.want {
				assert.Contains(t, m.status, w, "status")
				assert.ErrorContains(t, r.Err, w, "the run's error")
			}
			reopened := strings.Contains(m.status, "device reopened, model reloaded in")
			assert.Equal(t, tc.reopen, reopened, "reopened: status says so (%s)", m.status)
			assert.Equal(t, tc.reopen, opens > before, "reopened: %d devices opened", opens-before)
			assert.Equal(t, tc.reopen, m.model != pipe, "reopened: new model")
			assert.False(t, m.paused, "after the fault: paused")
			assert.True(t, m.active() == nil, "after the fault: a run is still active")
			h.mustView("✗")
			next := h.finishRun()
			if assert.Equal(t, runDone, next.Status, "the run after the fault: %s (%s)", runStatusNames[next.Status], m.status) {
				assert.True(t, samePixels(next.Images[0].Pix, want.Images[0].Pix), "the run after the fault: not the same image as the fault-free run")
			}
		})
	}

	t.Run("OOM while switching models", func(t *testing.T) {
		// The new model's weights do not fit: the device is left failed,
		// so it is reopened with the model that was loaded, which stays.
		pipe := m.model
		plan.ArmKind(faulty.OOM, faulty.Trigger{Op: "UploadFill", After: 5})
		h.typeText(filepath.Join(golden.Dir(t), "sd15-mini"))
		h.waitFor("the switch", func() bool { return !m.switching })
		t.Logf("status: %s", m.status)
		for _, w := range []string{"load model", "out of memory", "device reopened, model reloaded in", "sd15-mini.fp16 stays loaded"} {
			assert.Contains(t, m.status, w, "status")
		}
		require.NotNil(t, m.model, "after the failed switch: no model")
		require.True(t, m.model != pipe, "after the failed switch: the model was not reloaded")
		require.Equal(t, "sd15-mini.fp16", m.model.Name, "after the failed switch")
		r := h.finishRun()
		if assert.Equal(t, runDone, r.Status, "a run after the failed switch: %s (%s)", runStatusNames[r.Status], m.status) {
			assert.True(t, samePixels(r.Images[0].Pix, want.Images[0].Pix), "a run after the failed switch: not the same image as the fault-free run")
		}
	})

	t.Run("OOM in a VAE decode", func(t *testing.T) {
		// Scrub to frame 1 of the last run and decode it: the decode
		// fails, the device is reopened, and the same decode then works
		// on the new device (the run's frames are host-side).
		h.keys("home", ".")
		plan.ArmKind(faulty.OOM, faulty.Trigger{Op: "Conv2D", After: 2})
		h.keys("v")
		h.waitFor("the decode error", func() bool { return m.statusErr })
		assert.Contains(t, m.status, "out of memory", "status")
		assert.Contains(t, m.status, "device reopened", "status")
		r := m.runs[m.cur]
		h.keys("v")
		h.waitFor("the decode", func() bool { return r.decoded[decodeKey{m.frame, true}].img != nil })
		// A branch of a run made before the reopen works too.
		h.keys("b")
		b := h.last()
		h.waitRun(b)
		assert.Equal(t, runDone, b.Status, "branch after the reopen: %s (%s)", runStatusNames[b.Status], m.status)
	})
}

// TestModelSwitch: a truncated checkpoint is refused with a message naming
// the file while the previous model stays loaded and usable; then a
// diffusers folder dropped onto the terminal replaces it, and runs of the
// old model keep their images but can no longer be decoded.
func TestModelSwitch(t *testing.T) {
	g := golden.Dir(t)
	h := newMini(t)
	m := h.m
	h.setField(focusSteps, "2")
	first := h.finishRun()
	require.Equal(t, runDone, first.Status, "first run: %s", m.status)
	h.keys("?")
	h.mustView("ctrl+n", "load another model")
	h.keys("esc")

	data, err := os.ReadFile(filepath.Join(g, "sd15-mini.fp16.safetensors"))
	require.NoError(t, err)
	bad := filepath.Join(t.TempDir(), "broken.safetensors")
	require.NoError(t, os.WriteFile(bad, data[:len(data)/2], 0o644))
	old := m.model
	h.keys("ctrl+n")
	require.NotNil(t, m.modal, "ctrl+n did not open the model field")
	require.Equal(t, modalModel, m.modal.kind, "ctrl+n did not open the model field")
	h.mustView("Load a model")
	h.typeText(bad + " --config " + filepath.Join(g, "sd15_mini_config.json"))
	h.keys("enter")
	require.True(t, m.switching, "no switch started: %s", m.status)
	h.keys("ctrl+g")
	assert.Contains(t, m.status, "a model is loading", "ctrl+g while loading")
	h.waitFor("the load to fail", func() bool { return !m.switching })
	t.Logf("status: %s", m.status)
	for _, w := range []string{"broken.safetensors", "sd15-mini.fp16 stays loaded"} {
		assert.Contains(t, m.status, w, "status")
		assert.True(t, m.statusErr, "status %q is not an error", m.status)
	}
	require.True(t, m.model == old, "the failed load replaced the model")
	again := h.finishRun()
	require.Equal(t, runDone, again.Status, "a run after the failed load: %s (%s)", runStatusNames[again.Status], m.status)
	require.True(t, samePixels(again.Images[0].Pix, first.Images[0].Pix), "a run after the failed load: not the same image (%s)", m.status)

	// Drop the diffusers folder (quoted, as terminals paste it).
	h.typeText("'" + filepath.Join(g, "sd15-mini") + "'")
	require.True(t, m.switching, "dropping a diffusers folder did not load it: %s", m.status)
	h.waitFor("the new model", func() bool { return !m.switching })
	require.True(t, m.model != old, "model after the switch: still the old one (%s)", m.status)
	require.NotNil(t, m.model, "model after the switch (%s)", m.status)
	require.Equal(t, "sd15-mini", m.model.Name, "model after the switch (%s)", m.status)
	h.mustView("loaded sd15-mini in", "stepwise · sd15-mini ·")
	h.setField(focusSteps, "2")
	r := h.finishRun()
	require.Equal(t, runDone, r.Status, "a run on the new model: %s (%s)", runStatusNames[r.Status], m.status)
	require.Equal(t, 1, len(r.Images), "a run on the new model: images")
	require.Equal(t, "sd15-mini", r.Settings.Model, "a run on the new model")
	// The old runs keep their images; decoding one of their frames says why
	// it cannot be done.
	h.keys("[")
	require.True(t, m.runs[m.cur] == again, "run on screen %d", m.runs[m.cur].ID)
	require.NotNil(t, again.Images, "run on screen %d has no images", m.runs[m.cur].ID)
	h.keys("home", ".", "v")
	h.waitFor("the decode error", func() bool { return m.statusErr })
	assert.Contains(t, m.status, "sd15-mini.fp16, which is no longer loaded", "decode of an old run")
	// A path that does not exist is refused in the UI.
	h.keys("ctrl+n")
	h.typeText("/no/such/model.safetensors")
	h.keys("enter")
	assert.False(t, m.switching, "missing path: switching")
	assert.Contains(t, m.status, "no such file", "missing path")
}

// TestCancelAtEveryStepStudio cancels a 3-step run with esc at each step
// index: the run ends cancelled with exactly the frames taken, the worker
// is idle, and the next run gives the image of an uncancelled one.
func TestCancelAtEveryStepStudio(t *testing.T) {
	s := testSettings()
	h := newHarness(t, s, miniLoad(t))
	m := h.m
	want := h.finishRun()
	for i := 0; i < s.Steps; i++ {
		r := h.pausedAt(i)
		h.keys("esc")
		h.waitRun(r)
		assert.Equal(t, runCancelled, r.Status, "esc at step %d: %s (%s)", i, runStatusNames[r.Status], m.status)
		assert.Equal(t, i, len(r.Frames), "esc at step %d: frames", i)
		assert.True(t, m.active() == nil, "esc at step %d: a run is still active", i)
		assert.False(t, m.paused, "esc at step %d: still paused", i)
		h.mustView(fmt.Sprintf("run %d cancelled after %d steps", r.ID, i))
	}
	next := h.finishRun()
	if assert.Equal(t, runDone, next.Status, "the run after the cancels: %s (%s)", runStatusNames[next.Status], m.status) {
		assert.True(t, samePixels(next.Images[0].Pix, want.Images[0].Pix), "the run after the cancels: not the same image (%s)", m.status)
	}
}

// TestResizeDuringRun resizes the terminal (tiny, odd and huge sizes)
// while a run steps: the screen always fits exactly and the run ends well.
func TestResizeDuringRun(t *testing.T) {
	h := newMini(t)
	m := h.m
	h.setField(focusSteps, "8")
	h.keys("ctrl+g")
	r := h.last()
	sizes := [][2]int{{20, 5}, {1, 1}, {400, 120}, {80, 24}, {23, 7}, {24, 8}, {37, 11}, {250, 9}, {9, 250}, {120, 40}}
	seen := map[int]bool{}
	for i := 0; r.Status <= runRunning; i++ {
		sz := sizes[i%len(sizes)]
		h.update(teaSize(sz[0], sz[1]))
		v := m.View()
		lines := strings.Split(v, "\n")
		require.Equal(t, sz[1], len(lines), "%dx%d at frame %d: lines", sz[0], sz[1], len(r.Frames))
		for j, l := range lines {
			require.LessOrEqual(t, lipgloss.Width(l), sz[0], "%dx%d: line %d is too wide: %q", sz[0], sz[1], j, ansi.Strip(l))
		}
		seen[len(r.Frames)] = true
		select {
		case msg := <-h.msgs:
			h.update(msg)
		case <-time.After(20 * time.Millisecond):
		}
	}
	require.Equal(t, runDone, r.Status, "run resized throughout: %s (%s)", runStatusNames[r.Status], m.status)
	require.Equal(t, 8, len(r.Frames), "run resized throughout: frames")
	assert.GreaterOrEqual(t, len(seen), 4, "the resizes met too few distinct frame counts; the run was not stepping")
}

// TestCrashes: a panic in Update, View or the worker is caught; the
// studio quits and keeps the panic and its stack for Run to return.
func TestCrashes(t *testing.T) {
	for _, where := range []struct{ test, where, file string }{
		{"update", "the studio's update", "ui.go"},
		{"view", "the studio's view", "ui.go"},
		{"worker", "the worker (a step)", "worker.go"},
	} {
		t.Run(where.test, func(t *testing.T) {
			h := newHarness(t, testSettings(), miniLoad(t))
			h.m.opts.CrashTest = where.test
			h.m.w.crash = where.test // the worker read it at load time
			h.keys("ctrl+g")
			if where.test == "view" {
				assert.Empty(t, h.m.View(), "a crashed view drew something")
			}
			h.waitFor("the crash", func() bool { return h.m.crash != nil })
			c := h.m.crash
			assert.Equal(t, where.where, c.Where, "crash %+v", c)
			assert.Contains(t, c.Value, "STEPWISE_TEST_PANIC="+where.test, "crash value")
			assert.Contains(t, c.Stack, where.file, "crash stack")
			_, cmd := h.m.Update(teaSize(80, 24))
			assert.NotNil(t, cmd, "a crashed studio did not quit on the next message")
		})
	}
}

// TestStudioMemoryFlat: many runs in one studio session (each ending,
// cancelled, or stopped by the next) leave the device holding exactly what
// it held after the first few: ended runs keep no device memory.
func TestStudioMemoryFlat(t *testing.T) {
	h := newMini(t)
	m := h.m
	h.setField(focusSteps, "1")
	var at3 gpu.MemStats
	const n = 8
	for i := 1; i <= n; i++ {
		r := h.finishRun()
		require.Equal(t, runStatusNames[runDone], runStatusNames[r.Status], "run %d (%s)", i, m.status)
		if i == 3 {
			at3 = m.w.sess.Device().Stats() // the worker is idle between runs
		}
	}
	end := m.w.sess.Device().Stats()
	t.Logf("device after 3 runs: %d B in %d buffers; after %d: %d B in %d buffers", at3.Resident, at3.Buffers, n, end.Resident, end.Buffers)
	// Exact: the buffer pool must give back every run's tensors.
	assert.Equal(t, at3.Resident, end.Resident, "device bytes after 3 runs and after %d", n)
	assert.Equal(t, at3.Buffers, end.Buffers, "device buffers after 3 runs and after %d", n)
}

// TestSwitchAfterFailedLoad: when the first model fails to load (the
// device opened), ctrl+n loads another onto that device and runs work.
func TestSwitchAfterFailedLoad(t *testing.T) {
	g := golden.Dir(t)
	h := newHarness(t, testSettings(), func(func(string)) (gpu.Device, *models.Pipeline, error) {
		return ref.New(), nil, fmt.Errorf("checkpoint /models/missing.safetensors: no such file")
	})
	m := h.m
	h.mustView("missing.safetensors")
	h.keys("ctrl+n")
	h.typeText(filepath.Join(g, "sd15-mini"))
	h.keys("enter")
	h.waitFor("the model", func() bool { return !m.switching })
	require.NotNil(t, m.model, "no model after ctrl+n: %s", m.status)
	require.Equal(t, "sd15-mini", m.model.Name, "no model after ctrl+n: %s", m.status)
	m.ed.steps.SetValue("1")
	r := h.finishRun()
	require.Equal(t, runDone, r.Status, "run: %s (%s)", runStatusNames[r.Status], m.status)
}

// TestLongErrorWraps: an error longer than the terminal is wide wraps onto
// up to three footer lines, so its end (what was kept) stays readable, and
// the screen still fits the terminal.
func TestLongErrorWraps(t *testing.T) {
	h := newMini(t)
	h.update(teaSize(80, 24))
	h.m.setError(errors.New("load model /tmp/some/long/path/broken.safetensors: checkpoint: safetensors: header length 128480 exceeds the data; sd15-mini.fp16 stays loaded"))
	v := h.view()
	assert.Contains(t, strings.ReplaceAll(v, "\n", " "), "stays loaded", "the end of the error is cut")
	lines := strings.Split(h.m.View(), "\n")
	assert.Equal(t, 24, len(lines), "lines on a 24-line terminal")
	for i, l := range lines {
		assert.LessOrEqual(t, lipgloss.Width(l), 80, "line %d is too wide", i)
	}
}
