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
	if want.Status != runDone {
		t.Fatalf("fault-free run: %s (%s)", runStatusNames[want.Status], m.status)
	}
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
			if r.Status != runFailed || len(r.Frames) != 1 {
				t.Fatalf("%s with %d frames, want failed with 1 (%s)", runStatusNames[r.Status], len(r.Frames), m.status)
			}
			for _, w := range tc.want {
				if !strings.Contains(m.status, w) || !strings.Contains(r.Err.Error(), w) {
					t.Errorf("status %q lacks %q", m.status, w)
				}
			}
			reopened := strings.Contains(m.status, "device reopened, model reloaded in")
			if reopened != tc.reopen || (opens > before) != tc.reopen || (m.model != pipe) != tc.reopen {
				t.Errorf("reopened: status says %v, %d devices opened, new model %v; want %v", reopened, opens-before, m.model != pipe, tc.reopen)
			}
			if m.paused || m.active() != nil {
				t.Errorf("after the fault: paused %v, active run %v", m.paused, m.active() != nil)
			}
			h.mustView("✗")
			next := h.finishRun()
			if next.Status != runDone || !samePixels(next.Images[0].Pix, want.Images[0].Pix) {
				t.Errorf("the run after the fault: %s, same image as the fault-free run: %v (%s)",
					runStatusNames[next.Status], next.Status == runDone && samePixels(next.Images[0].Pix, want.Images[0].Pix), m.status)
			}
		})
	}

	t.Run("OOM while switching models", func(t *testing.T) {
		// The new model's weights do not fit: the device is left failed,
		// so it is reopened with the model that was loaded, which stays.
		pipe := m.model
		plan.ArmKind(faulty.OOM, faulty.Trigger{Op: "UploadRaw", After: 5})
		h.typeText(filepath.Join(golden.Dir(t), "sd15-mini"))
		h.waitFor("the switch", func() bool { return !m.switching })
		t.Logf("status: %s", m.status)
		for _, w := range []string{"load model", "out of memory", "device reopened, model reloaded in", "sd15-mini.fp16 stays loaded"} {
			if !strings.Contains(m.status, w) {
				t.Errorf("status %q lacks %q", m.status, w)
			}
		}
		if m.model == nil || m.model == pipe || m.model.Name != "sd15-mini.fp16" {
			t.Fatalf("after the failed switch: %v", m.model)
		}
		if r := h.finishRun(); r.Status != runDone || !samePixels(r.Images[0].Pix, want.Images[0].Pix) {
			t.Errorf("a run after the failed switch: %s (%s)", runStatusNames[r.Status], m.status)
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
		if !strings.Contains(m.status, "out of memory") || !strings.Contains(m.status, "device reopened") {
			t.Errorf("status %q", m.status)
		}
		r := m.runs[m.cur]
		h.keys("v")
		h.waitFor("the decode", func() bool { return r.decoded[decodeKey{m.frame, true}].img != nil })
		// A branch of a run made before the reopen works too.
		h.keys("b")
		b := h.last()
		h.waitRun(b)
		if b.Status != runDone {
			t.Errorf("branch after the reopen: %s (%s)", runStatusNames[b.Status], m.status)
		}
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
	if first.Status != runDone {
		t.Fatalf("first run: %s", m.status)
	}
	h.keys("?")
	h.mustView("ctrl+n", "load another model")
	h.keys("esc")

	data, err := os.ReadFile(filepath.Join(g, "sd15-mini.fp16.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "broken.safetensors")
	if err := os.WriteFile(bad, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	old := m.model
	h.keys("ctrl+n")
	if m.modal == nil || m.modal.kind != modalModel {
		t.Fatal("ctrl+n did not open the model field")
	}
	h.mustView("Load a model")
	h.typeText(bad + " --config " + filepath.Join(g, "sd15_mini_config.json"))
	h.keys("enter")
	if !m.switching {
		t.Fatalf("no switch started: %s", m.status)
	}
	h.keys("ctrl+g")
	if !strings.Contains(m.status, "a model is loading") {
		t.Errorf("ctrl+g while loading: %q", m.status)
	}
	h.waitFor("the load to fail", func() bool { return !m.switching })
	t.Logf("status: %s", m.status)
	for _, w := range []string{"broken.safetensors", "sd15-mini.fp16 stays loaded"} {
		if !strings.Contains(m.status, w) || !m.statusErr {
			t.Errorf("status %q lacks %q", m.status, w)
		}
	}
	if m.model != old {
		t.Fatal("the failed load replaced the model")
	}
	again := h.finishRun()
	if again.Status != runDone || !samePixels(again.Images[0].Pix, first.Images[0].Pix) {
		t.Fatalf("a run after the failed load: %s (%s)", runStatusNames[again.Status], m.status)
	}

	// Drop the diffusers folder (quoted, as terminals paste it).
	h.typeText("'" + filepath.Join(g, "sd15-mini") + "'")
	if !m.switching {
		t.Fatalf("dropping a diffusers folder did not load it: %s", m.status)
	}
	h.waitFor("the new model", func() bool { return !m.switching })
	if m.model == old || m.model == nil || m.model.Name != "sd15-mini" {
		t.Fatalf("model after the switch: %v (%s)", m.model, m.status)
	}
	h.mustView("loaded sd15-mini in", "stepwise · sd15-mini ·")
	h.setField(focusSteps, "2")
	r := h.finishRun()
	if r.Status != runDone || len(r.Images) != 1 || r.Settings.Model != "sd15-mini" {
		t.Fatalf("a run on the new model: %s, model %q (%s)", runStatusNames[r.Status], r.Settings.Model, m.status)
	}
	// The old runs keep their images; decoding one of their frames says why
	// it cannot be done.
	h.keys("[")
	if m.runs[m.cur] != again || again.Images == nil {
		t.Fatalf("run on screen %d", m.runs[m.cur].ID)
	}
	h.keys("home", ".", "v")
	h.waitFor("the decode error", func() bool { return m.statusErr })
	if !strings.Contains(m.status, "sd15-mini.fp16, which is no longer loaded") {
		t.Errorf("decode of an old run: %q", m.status)
	}
	// A path that does not exist is refused in the UI.
	h.keys("ctrl+n")
	h.typeText("/no/such/model.safetensors")
	h.keys("enter")
	if m.switching || !strings.Contains(m.status, "no such file") {
		t.Errorf("missing path: switching %v, %q", m.switching, m.status)
	}
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
		if r.Status != runCancelled || len(r.Frames) != i {
			t.Errorf("esc at step %d: %s with %d frames (%s)", i, runStatusNames[r.Status], len(r.Frames), m.status)
		}
		if m.active() != nil || m.paused {
			t.Errorf("esc at step %d: a run is still active (paused %v)", i, m.paused)
		}
		h.mustView(fmt.Sprintf("run %d cancelled after %d steps", r.ID, i))
	}
	next := h.finishRun()
	if next.Status != runDone || !samePixels(next.Images[0].Pix, want.Images[0].Pix) {
		t.Errorf("the run after the cancels: %s (%s)", runStatusNames[next.Status], m.status)
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
		if len(lines) != sz[1] {
			t.Fatalf("%dx%d at frame %d: %d lines", sz[0], sz[1], len(r.Frames), len(lines))
		}
		for j, l := range lines {
			if w := lipgloss.Width(l); w > sz[0] {
				t.Fatalf("%dx%d: line %d is %d wide: %q", sz[0], sz[1], j, w, ansi.Strip(l))
			}
		}
		seen[len(r.Frames)] = true
		select {
		case msg := <-h.msgs:
			h.update(msg)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if r.Status != runDone || len(r.Frames) != 8 {
		t.Fatalf("run resized throughout: %s with %d frames (%s)", runStatusNames[r.Status], len(r.Frames), m.status)
	}
	if len(seen) < 4 {
		t.Errorf("the resizes met only %d distinct frame counts; the run was not stepping", len(seen))
	}
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
				if v := h.m.View(); v != "" {
					t.Errorf("a crashed view drew %q", v)
				}
			}
			h.waitFor("the crash", func() bool { return h.m.crash != nil })
			c := h.m.crash
			if c.Where != where.where || !strings.Contains(c.Value, "STEPWISE_TEST_PANIC="+where.test) || !strings.Contains(c.Stack, where.file) {
				t.Errorf("crash %+v", c)
			}
			if _, cmd := h.m.Update(teaSize(80, 24)); cmd == nil {
				t.Error("a crashed studio did not quit on the next message")
			}
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
	if m.model == nil || m.model.Name != "sd15-mini" {
		t.Fatalf("no model after ctrl+n: %s", m.status)
	}
	m.ed.steps.SetValue("1")
	if r := h.finishRun(); r.Status != runDone {
		t.Fatalf("run: %s (%s)", runStatusNames[r.Status], m.status)
	}
}

// TestLongErrorWraps: an error longer than the terminal is wide wraps onto
// up to three footer lines, so its end (what was kept) stays readable, and
// the screen still fits the terminal.
func TestLongErrorWraps(t *testing.T) {
	h := newMini(t)
	h.update(teaSize(80, 24))
	h.m.setError(errors.New("load model /tmp/some/long/path/broken.safetensors: checkpoint: safetensors: header length 128480 exceeds the data; sd15-mini.fp16 stays loaded"))
	v := h.view()
	if !strings.Contains(strings.ReplaceAll(v, "\n", " "), "stays loaded") {
		t.Errorf("the end of the error is cut:\n%s", v)
	}
	lines := strings.Split(h.m.View(), "\n")
	if len(lines) != 24 {
		t.Errorf("%d lines on a 24-line terminal", len(lines))
	}
	for i, l := range lines {
		if w := lipgloss.Width(l); w > 80 {
			t.Errorf("line %d is %d wide", i, w)
		}
	}
}
