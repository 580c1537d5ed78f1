package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/faulty"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/tui"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGenerateFaults runs `stepwise generate` with each fault injected
// through the device hook: it exits 1 with a message saying what failed
// and where, writes no PNG, and the next run in the same process writes
// the same bytes as a fault-free one.
func TestGenerateFaults(t *testing.T) {
	dir := golden.Dir(t)
	tmp := t.TempDir()
	plan := faulty.NewPlan(faulty.LostContext, faulty.Trigger{})
	plan.Disarm()
	saved := openDevice
	openDevice = func(string, func(string)) (gpu.Device, error) { return faulty.Wrap(ref.New(), plan), nil }
	t.Cleanup(func() { openDevice = saved })
	args := func(out string) []string {
		return []string{"--model", filepath.Join(dir, "sd15-mini.fp16.safetensors"), "--config", filepath.Join(dir, "sd15_mini_config.json"),
			"-p", "a red fox", "--steps", "3", "--seed", "9", "-W", "64", "-H", "64", "-o", out}
	}
	clean := filepath.Join(tmp, "clean.png")
	log, err := runGen(t, args(clean))
	require.NoError(t, err, log)
	want, _ := os.ReadFile(clean)

	for _, tc := range []struct {
		name string
		kind faulty.Kind
		trig faulty.Trigger
		want []string
	}{
		// One U-Net read-back a step (the prompt has no weights).
		{"lost context", faulty.LostContext, faulty.Trigger{Downloads: 2}, []string{"GPU error at step 2/3 (U-Net)", "context was lost", "nothing written"}},
		{"compile failure", faulty.CompileError, faulty.Trigger{Op: "Attention", After: 1}, []string{"GPU error in the text encoder", "shader attention.comp", "does not compile", "nothing written"}},
		{"out of memory while loading", faulty.OOM, faulty.Trigger{Op: "UploadFill", After: 10}, []string{"sd15-mini.fp16.safetensors", "out of memory allocating"}},
		{"out of memory in the VAE", faulty.OOM, faulty.Trigger{Downloads: 4}, []string{"GPU error in the VAE decoder", "out of memory", "nothing written"}},
		{"NaN", faulty.NaN, faulty.Trigger{Downloads: 2}, []string{"step 2/3", "U-Net output", "non-finite", "nothing written"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(tmp, strings.ReplaceAll(tc.name, " ", "_")+".png")
			plan.ArmKind(tc.kind, tc.trig)
			log, err := runGen(t, args(out))
			require.Error(t, err, "no error\n%s", log)
			t.Logf("stepwise generate: %v", err)
			for _, w := range tc.want {
				assert.ErrorContains(t, err, w)
			}
			fired, _ := plan.Fired()
			assert.True(t, fired, "the fault never fired")
			_, serr := os.Stat(out)
			assert.True(t, os.IsNotExist(serr), "%s was written (stat: %v)", out, serr)
			// The exit status, through run as main calls it (once: it
			// costs a run).
			if tc.kind == faulty.LostContext {
				plan.Arm(tc.trig)
				assert.Equal(t, 1, run(append([]string{"generate"}, args(out)...)), "exit status")
			}
			// The next run works and matches the fault-free one.
			log, err = runGen(t, args(out))
			require.NoError(t, err, "the run after the fault:\n%s", log)
			got, _ := os.ReadFile(out)
			assert.True(t, bytes.Equal(got, want), "the run after the fault wrote other bytes than the fault-free run")
		})
	}
}

// TestCrashReport: a panic in a command is caught by run, which prints
// where to report it with the trace and returns exit status 2; a
// *tui.CrashError from the studio is reported the same way.
func TestCrashReport(t *testing.T) {
	register(command{name: "crash-test", summary: "test only", run: func([]string) error { panic("boom in a command") }})
	register(command{name: "crash-studio-test", summary: "test only", run: func([]string) error {
		return &tui.CrashError{Where: "the worker (a step)", Value: "boom in the worker", Stack: "goroutine 7 [running]:\nworker.go:42"}
	}})
	t.Cleanup(func() {
		delete(commands, "crash-test")
		delete(commands, "crash-studio-test")
	})
	for _, tc := range []struct{ cmd, want string }{
		{"crash-test", "stepwise crashed: boom in a command"},
		{"crash-studio-test", "stepwise crashed: a panic in the worker (a step): boom in the worker"},
	} {
		r, w, err := os.Pipe()
		require.NoError(t, err)
		saved := os.Stderr
		os.Stderr = w
		code := run([]string{tc.cmd})
		os.Stderr = saved
		w.Close()
		out, _ := io.ReadAll(r)
		r.Close()
		assert.Equal(t, 2, code, "%s: exit status", tc.cmd)
		for _, want := range []string{tc.want, "Please report it at " + reportURL, "with this trace", "goroutine "} {
			assert.Contains(t, string(out), want, "%s: stderr", tc.cmd)
		}
	}
}
