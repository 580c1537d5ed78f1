package gen

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/bundled"
	"github.com/stepwise/stepwise/presets"
)

// TestPrepareBuildsTheFirstStep: compiling ahead for the bundled model's
// default run counts its progress up to the total, and the run's first
// step, its preview and its decode then build no program; the images are
// those of a run without compiling ahead.
func TestPrepareBuildsTheFirstStep(t *testing.T) {
	t.Setenv("STEPWISE_GL_CACHE", t.TempDir())
	dev := testdev.GL(t)
	built := dev.(interface{ Built() int })
	s := NewSession(func(func(string)) (gpu.Device, *models.Pipeline, error) {
		p, err := bundled.Load(dev)
		return dev, p, err
	}, nil)
	_, _, err := s.Load()
	require.NoError(t, err)
	st := bundledSettings(s.Pipeline(), 42)

	var calls [][2]int
	require.NoError(t, s.Prepare(context.Background(), st, nil, func(done, total int) { calls = append(calls, [2]int{done, total}) }))
	require.NotEmpty(t, calls)
	total := calls[len(calls)-1][1]
	assert.Greater(t, total, 10, "the bundled model needs more than ten programs")
	require.Len(t, calls, total+1)
	for i, c := range calls {
		assert.Equal(t, [2]int{i, total}, c)
	}
	n := built.Built()
	assert.Equal(t, total, n, "programs built ahead")

	ctx := context.Background()
	r, err := s.Start(1, st)
	require.NoError(t, err)
	step, err := s.Step(ctx, r)
	require.NoError(t, err)
	PreviewFor(s.Pipeline(), step.Frame.Denoised, 0)
	got, err := s.Finish(ctx, r, nil)
	require.NoError(t, err)
	assert.Equal(t, n, built.Built(), "the run built no program after compiling ahead")

	// The same run on a device that did not compile ahead.
	dev2 := testdev.GL(t)
	p2, err := bundled.Load(dev2)
	require.NoError(t, err)
	s2, err := SessionOn(p2)
	require.NoError(t, err)
	r2, err := s2.Start(1, st)
	require.NoError(t, err)
	want, err := s2.Finish(ctx, r2, nil)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, want[0].Pix, got[0].Pix, "same image with and without compiling ahead")
}

func TestCompileNote(t *testing.T) {
	assert.Equal(t, "compiling GL programs for llvmpipe, first run only: 12/41",
		CompileNote("gl: llvmpipe (LLVM 15.0.6, 256 bits), 4.5 (Core Profile) Mesa 22.3.6", 12, 41))
	assert.Equal(t, "compiling GL programs for NVIDIA GeForce RTX 3060/PCIe/SSE2, first run only: 0/3",
		CompileNote("gl: NVIDIA GeForce RTX 3060/PCIe/SSE2, 4.6.0 NVIDIA 535", 0, 3))
}

// TestPrepareSkipsAdapters: a dry run would leave a LoRA recorded as merged
// (or a ControlNet or IP-Adapter without uploaded weights), so runs with
// adapters are not compiled ahead: nothing is built, progress is not called.
func TestPrepareSkipsAdapters(t *testing.T) {
	dev := testdev.GL(t)
	p, err := bundled.Load(dev)
	require.NoError(t, err)
	s, err := SessionOn(p)
	require.NoError(t, err)
	before := dev.(interface{ Built() int }).Built()
	for name, change := range map[string]func(*presets.Settings){
		"lora tag":         func(st *presets.Settings) { st.Prompt += " <lora:style:0.8>" },
		"lora in negative": func(st *presets.Settings) { st.NegativePrompt = "<lora:blur:1>" },
		"controlnet":       func(st *presets.Settings) { st.ControlNet = "canny.safetensors" },
		"ip-adapter":       func(st *presets.Settings) { st.IPAdapter = "ip-adapter_sd15.safetensors" },
	} {
		st := bundledSettings(p, 1)
		change(&st)
		called := false
		require.NoError(t, s.Prepare(context.Background(), st, nil, func(int, int) { called = true }), name)
		assert.False(t, called, "%s: progress called", name)
	}
	assert.Equal(t, before, dev.(interface{ Built() int }).Built(), "nothing built")
}
