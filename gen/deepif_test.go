package gen

import (
	"context"
	"image"
	"image/draw"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
)

// ifSession loads if-mini with if-mini-sr as its upscaler into a session
// on the reference device, as the studio loads a DeepFloyd IF folder.
func ifSession(t *testing.T) (*Session, string) {
	t.Helper()
	dir := golden.Wave(t, "golden-wave4")
	s := NewSession(nil, func(func(string)) (gpu.Device, error) { return ref.New(), nil })
	s.IFUpscale = IFUpscale{Steps: 10, CFG: 4, NoiseLevel: 250}
	t.Cleanup(s.Close)
	f, _, err := s.SwitchModel(ModelSpec{Path: filepath.Join(dir, "if-mini"), Upscaler: filepath.Join(dir, "if-mini-sr")}, nil)
	require.NoError(t, err)
	require.NotNil(t, f.IF)
	assert.Equal(t, IFFamily, f.Family)
	assert.Equal(t, "if-mini-sr", f.IF.Upscaler)
	require.NotNil(t, s.IF())
	assert.Nil(t, s.Pipeline())
	return s, dir
}

func ifSettings(f *Facts) presets.Settings {
	st := presets.Default()
	st.Prompt, st.NegativePrompt = "a photograph of an astronaut riding a horse", ""
	st.Seed, st.Steps, st.CFGScale = 42, 10, 7
	st.Width, st.Height = f.NativeSize, f.NativeSize
	return st
}

// A session runs both IF stages as one run of 20 frames whose stage I
// output and final image equal models.IF's Stage1 and Stage2 chained,
// exactly, on the same device; frame 5 is stage I's 5th step; a branch
// from frame 12 with another seed equals stage II resumed from that frame
// with a fresh generator of the new seed; one with the same settings
// reproduces its parent bit for bit.
func TestSessionIF(t *testing.T) {
	s, _ := ifSession(t)
	ctx := context.Background()
	st := ifSettings(s.Facts())
	require.Equal(t, 16, st.Width)

	run, err := s.Start(1, st)
	require.NoError(t, err)
	assert.True(t, run.IsIF())
	assert.Equal(t, 10, run.IFBoundary())
	var steps []Step
	imgs, err := s.Finish(ctx, run, func(x Step) { steps = append(steps, x) })
	require.NoError(t, err)
	require.Len(t, imgs, 1)
	require.Len(t, steps, 20)
	assert.Equal(t, 20, run.Len())
	for i, x := range steps {
		wantStage := 1
		if i >= 10 {
			wantStage = 2
		}
		assert.Equal(t, wantStage, x.Stage, "frame %d", i+1)
		assert.Equal(t, i, x.Index)
		assert.Equal(t, 20, x.Total)
	}
	assert.Equal(t, [4]int{1, 3, 16, 16}, steps[9].X.Shape)
	assert.Equal(t, [4]int{1, 3, 64, 64}, steps[10].X.Shape)
	assert.Equal(t, 64, imgs[0].Bounds().Dx())

	// The same cascade called directly.
	p := s.IF()
	o := IFOptions(st, s.IFUpscale)
	var direct1, direct2 []models.IFStep
	low, err := p.Stage1(o, func(x models.IFStep) { direct1 = append(direct1, x) })
	require.NoError(t, err)
	got1, h, w := run.IFStageOutput()
	require.Equal(t, 16, h)
	require.Equal(t, 16, w)
	assert.Equal(t, low, got1, "stage I output: exact")
	x5, _, _ := run.IFFrame(4)
	assert.Equal(t, direct1[4].X, x5, "frame 5 is stage I's 5th step")
	high, H, W, err := p.Stage2(low, 16, 16, o, func(x models.IFStep) { direct2 = append(direct2, x) })
	require.NoError(t, err)
	last, _, _ := run.IFFrame(19)
	assert.Equal(t, high, last, "stage II output: exact")
	assert.Equal(t, models.IFImage(high, H, W).Pix, imgs[0].Pix)
	d5, err := s.Decode(1, 4, false)
	require.NoError(t, err)
	assert.Equal(t, models.IFImage(direct1[4].X, 16, 16).Pix, d5[0].Pix, "decoding a frame is its pixels")

	// Branch at frame 12 (stage II's 2nd step) with seed 43.
	bs := st
	bs.Seed = 43
	br, err := s.Branch(2, 1, 11, bs)
	require.NoError(t, err)
	assert.Equal(t, 10, br.IFBoundary())
	bimgs, err := s.Finish(ctx, br, nil)
	require.NoError(t, err)
	require.Equal(t, 20, br.Len())
	b12, _, _ := br.IFFrame(11)
	assert.Equal(t, direct2[1].X, b12, "the branch keeps frame 12")
	sr, err := p.NewStage2(low, 16, 16, o)
	require.NoError(t, err)
	sr.Release()
	o43 := o
	o43.Seed = 43
	rest, err := p.ResumeStage(models.IFResume{Stage: 2, X: direct2[1].X, H: 64, W: 64, T: direct2[1].T, Up: sr.Up, UpNoise: sr.UpNoise}, o43)
	require.NoError(t, err)
	require.NoError(t, rest.Run(nil))
	rest.Release()
	blast, _, _ := br.IFFrame(19)
	assert.Equal(t, rest.X, blast, "branch = stage II resumed at frame 12 with seed 43: exact")
	assert.NotEqual(t, high, blast, "another seed draws other variance noise")
	assert.Equal(t, models.IFImage(rest.X, 64, 64).Pix, bimgs[0].Pix)
	info := s.Infotext(2, 0)
	assert.Contains(t, info, "Seed: 43")
	assert.Contains(t, info, "Upscaler steps: 10, Upscaler CFG scale: 4, Noise level: 250")
	assert.Contains(t, info, BranchKey+": step 12 of Seed=42")

	// Same settings: the generator's state at the frame continues.
	same, err := s.Branch(3, 1, 11, st)
	require.NoError(t, err)
	_, err = s.Finish(ctx, same, nil)
	require.NoError(t, err)
	slast, _, _ := same.IFFrame(19)
	assert.Equal(t, high, slast, "a branch with the same settings reproduces its parent")

	// In stage I (frame 5), same settings: stage I's output again.
	same1, err := s.Branch(4, 1, 4, st)
	require.NoError(t, err)
	for same1.Len() < 10 {
		_, err = s.Step(ctx, same1)
		require.NoError(t, err)
	}
	s1out, _, _ := same1.IFStageOutput()
	assert.Equal(t, low, s1out, "a stage I branch with the same settings reproduces its parent")
	s.End(same1)

	// Branching after the last frame has nothing left to do.
	_, err = s.Branch(5, 1, 19, st)
	assert.ErrorContains(t, err, "no steps are left")
}

// The parameters of a session's IF image are what `stepwise generate`
// writes, and a cancelled context stops a run at once.
func TestSessionIFInfotextAndCancel(t *testing.T) {
	s, _ := ifSession(t)
	st := ifSettings(s.Facts())
	st.Steps = 3
	run, err := s.Start(1, st)
	require.NoError(t, err)
	want := IFInfotext(run.Job.Settings, &IFUpscale{Steps: 10, CFG: 4, NoiseLevel: 250})
	assert.Equal(t, "a photograph of an astronaut riding a horse\nSteps: 3, Sampler: DDPM, CFG scale: 7, Seed: 42, Size: 16x16, Model: DeepFloyd IF, Upscaler steps: 10, Upscaler CFG scale: 4, Noise level: 250", want)
	assert.Equal(t, want, s.Infotext(1, 0))
	parsed, _, err := presets.ParseInfotext(want)
	require.NoError(t, err)
	assert.Equal(t, 3, parsed.Steps)
	assert.Equal(t, int64(42), parsed.Seed)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.Step(ctx, run)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 0, run.Len())

	// Bad settings are refused before any work.
	bad := st
	bad.Width = 32
	bad.Height = 16
	_, err = s.Start(2, bad)
	assert.ErrorContains(t, err, "square")
	up := s.IFUpscale
	_, err = s.BranchIF(3, 1, 0, st, IFUpscale{Steps: up.Steps, CFG: up.CFG, NoiseLevel: 5000})
	assert.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "no frame") || strings.Contains(err.Error(), "noise level"), err.Error())
}

// The guidance sweep runs the whole cascade per scale, the forward view
// noises a frame's pixels, and an exported frame is its pixels with the
// run's parameters.
func TestSessionIFSweepForwardExport(t *testing.T) {
	s, _ := ifSession(t)
	s.IFUpscale = IFUpscale{Steps: 2, CFG: 4, NoiseLevel: 250}
	st := ifSettings(s.Facts())
	st.Steps = 2
	var got []SweepResult
	require.NoError(t, s.Sweep(context.Background(), st, []float64{1, 7}, func(r SweepResult) { got = append(got, r) }))
	require.Len(t, got, 2)
	run, err := s.Start(1, st)
	require.NoError(t, err)
	imgs, err := s.Finish(context.Background(), run, nil)
	require.NoError(t, err)
	require.Equal(t, 4, run.Len())
	assert.Equal(t, imgs[0].Pix, got[1].Image.Pix, "the sweep's cfg 7 image is the run's")
	assert.NotEqual(t, got[0].Image.Pix, got[1].Image.Pix)
	assert.Equal(t, 64, got[0].Image.Bounds().Dx())

	fw, err := s.Forward(1, 3, 3, false)
	require.NoError(t, err)
	require.Len(t, fw.Images, 3)
	last, _, _ := run.IFFrame(3)
	want := models.IFImage(last, 64, 64).Pix
	// t = 0 keeps the image (sigma ~0.006: a level or two of 255); the
	// last timestep is noise.
	assert.LessOrEqual(t, maxPixDiff(want, fw.Images[0].Pix), 4, "t = 0 is the image, barely noised")
	assert.Greater(t, maxPixDiff(want, fw.Images[2].Pix), 64, "t = T-1 is noise")
	assert.Equal(t, 64, fw.Images[2].Bounds().Dx())

	dir := t.TempDir()
	paths, err := s.Export(1, 1, false, nil, dir)
	require.NoError(t, err)
	require.Len(t, paths, 1)
	x2, _, _ := run.IFFrame(1)
	img, text, err := readPNGText(paths[0])
	require.NoError(t, err)
	assert.Equal(t, models.IFImage(x2, 16, 16).Pix, img.Pix)
	assert.Contains(t, text, "Stepwise frame: 2/4 x_t")
	assert.Contains(t, text, "Noise level: 250")
}

// readPNGText reads an exported PNG as RGBA and its parameters text.
func readPNGText(path string) (*image.RGBA, string, error) {
	m, err := render.ReadPNGTextFile(path)
	if err != nil {
		return nil, "", err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	im, err := png.Decode(f)
	if err != nil {
		return nil, "", err
	}
	b := im.Bounds()
	out := image.NewRGBA(b)
	draw.Draw(out, b, im, b.Min, draw.Src)
	return out, m["parameters"], nil
}

func maxPixDiff(a, b []uint8) int {
	d := 0
	for i := range a {
		d = max(d, abs(int(a[i])-int(b[i])))
	}
	return d
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// Cancelling an IF run in the middle of a stage II step returns within a
// second (the device's work is interrupted), and the run keeps its frames.
func TestSessionIFCancelMidStep(t *testing.T) {
	s, _ := ifSession(t)
	st := ifSettings(s.Facts())
	st.Steps = 2
	run, err := s.Start(1, st)
	require.NoError(t, err)
	for run.Len() < 2 {
		_, err := s.Step(context.Background(), run)
		require.NoError(t, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var cancelled time.Time
	go func() {
		time.Sleep(50 * time.Millisecond)
		cancelled = time.Now()
		cancel()
	}()
	go func() {
		_, err := s.Step(ctx, run) // stage II's first step: 64x64
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Skip("the step finished before the cancel; nothing to measure")
		}
		assert.ErrorIs(t, err, context.Canceled)
		assert.Less(t, time.Since(cancelled), time.Second, "the cancel took effect within a second")
	case <-time.After(30 * time.Second):
		require.FailNow(t, "the cancelled step did not return")
	}
	assert.Equal(t, 2, run.Len())
}

// A branch at a stage II frame through BranchIF with other upscaler
// steps, guidance and noise level continues stage II with them: it equals
// stage II resumed directly at that frame with those options (the same
// generator state, the same upscale noise re-noised at the new level);
// its frame count follows the new schedule, and its PNG text names the
// new settings. A stage I branch takes the new stage II settings for the
// stage II it runs.
func TestSessionIFBranchUpscaleSettings(t *testing.T) {
	s, _ := ifSession(t)
	ctx := context.Background()
	st := ifSettings(s.Facts())
	st.Steps = 2
	s.IFUpscale = IFUpscale{Steps: 3, CFG: 4, NoiseLevel: 250}
	run, err := s.Start(1, st)
	require.NoError(t, err)
	_, err = s.Finish(ctx, run, nil)
	require.NoError(t, err)
	require.Equal(t, 5, run.Len())

	// Stage II's 2nd frame (frame 4), then 5 steps, cfg 2, noise level 100.
	p := s.IF()
	o := IFOptions(st, IFUpscale{Steps: 3, CFG: 4, NoiseLevel: 250})
	low, _, _ := run.IFStageOutput()
	var direct []models.IFStep
	_, _, _, err = p.Stage2(low, 16, 16, o, func(x models.IFStep) { direct = append(direct, x) })
	require.NoError(t, err)
	x4, _, _ := run.IFFrame(3)
	require.Equal(t, direct[1].X, x4)
	up := IFUpscale{Steps: 5, CFG: 2, NoiseLevel: 100}
	br, err := s.BranchIF(2, 1, 3, st, up)
	require.NoError(t, err)
	_, err = s.Finish(ctx, br, nil)
	require.NoError(t, err)
	got, ok := br.IFUpscaleOf()
	require.True(t, ok)
	assert.Equal(t, up, got)

	// Directly: resume stage II from frame 4 with the parent's generator
	// state after that step, with the new options.
	parent := run.ifr.frames[3]
	o2 := IFOptions(st, up)
	rest, err := p.ResumeStage(models.IFResume{Stage: 2, X: direct[1].X, H: 64, W: 64, T: direct[1].T, Gen: parent.Gen,
		Up: parent.Up, UpNoise: parent.UpNoise}, o2)
	require.NoError(t, err)
	require.NoError(t, rest.Run(nil))
	rest.Release()
	// The frames after frame 4 are the 5-step schedule's timesteps
	// below frame 4's.
	assert.Equal(t, 2+2+len(rest.Timesteps), br.Len())
	assert.Greater(t, br.Len(), run.Len(), "more upscaler steps, more frames")
	last, _, _ := br.IFFrame(br.Len() - 1)
	assert.Equal(t, rest.X, last, "branch = stage II resumed with the new steps, cfg and noise level: exact")
	plast, _, _ := run.IFFrame(4)
	assert.NotEqual(t, plast, last)
	assert.Contains(t, s.Infotext(2, 0), "Upscaler steps: 5, Upscaler CFG scale: 2, Noise level: 100")

	// A stage I branch (frame 1) runs stage II with the new settings: the
	// same as a fresh run with them, as its stage I is the parent's.
	b1, err := s.BranchIF(3, 1, 0, st, up)
	require.NoError(t, err)
	_, err = s.Finish(ctx, b1, nil)
	require.NoError(t, err)
	require.Equal(t, 2+5, b1.Len())
	s.IFUpscale = up
	fresh, err := s.Start(4, st)
	require.NoError(t, err)
	_, err = s.Finish(ctx, fresh, nil)
	require.NoError(t, err)
	f1, _, _ := b1.IFFrame(6)
	f2, _, _ := fresh.IFFrame(6)
	assert.Equal(t, f2, f1)
}
