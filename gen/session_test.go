package gen

import (
	"context"
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/bundled"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
	"github.com/stepwise/stepwise/sampler"
	"github.com/stepwise/stepwise/sampler/rng"
)

// bundledSession is a loaded session on the bundled model, on the
// reference device (deterministic), closed when the test ends.
func bundledSession(t *testing.T) *Session {
	t.Helper()
	s := NewSession(func(func(string)) (gpu.Device, *models.Pipeline, error) {
		dev := ref.New()
		p, err := bundled.Load(dev)
		return dev, p, err
	}, nil)
	f, _, err := s.Load()
	require.NoError(t, err)
	require.NotNil(t, f)
	t.Cleanup(s.Close)
	return s
}

func sessionSettings(f *Facts) presets.Settings {
	s := presets.Default()
	s.Prompt, s.Steps, s.Seed, s.CFGScale = "red heart", 6, 7, 6
	s.Width, s.Height = f.NativeSize, f.NativeSize
	return s
}

// A branch with unchanged settings continues the parent exactly: the
// same final image, bit for bit, for a history-keeping sampler; a branch
// with another guidance scale gives another image and says where it
// branched in its infotext.
func TestSessionBranch(t *testing.T) {
	s := bundledSession(t)
	ctx := context.Background()
	st := sessionSettings(s.Facts())
	st.Sampler = "DPM++ 2M"
	parent, err := s.Start(1, st)
	require.NoError(t, err)
	want, err := s.Finish(ctx, parent, nil)
	require.NoError(t, err)
	require.Len(t, parent.Job.Frames, 6)

	same, err := s.Branch(2, 1, 2, st)
	require.NoError(t, err)
	assert.Len(t, same.Job.Frames, 3, "a branch starts with the parent's frames up to the branch point")
	got, err := s.Finish(ctx, same, nil)
	require.NoError(t, err)
	assert.Equal(t, want[0].Pix, got[0].Pix, "a branch with the same settings reproduces the parent")

	other := st
	other.CFGScale = 1
	b, err := s.Branch(3, 1, 2, other)
	require.NoError(t, err)
	got2, err := s.Finish(ctx, b, nil)
	require.NoError(t, err)
	assert.NotEqual(t, want[0].Pix, got2[0].Pix)
	text := s.Infotext(3, 0)
	assert.Contains(t, text, "Stepwise branch: step 3 of CFG scale=6")
	steps, err := ParseBranch(strings.TrimPrefix(text[strings.Index(text, "Stepwise branch: ")+len("Stepwise branch: "):], ""), b.Job.Settings)
	require.NoError(t, err)
	require.Len(t, steps, 1)
	assert.Equal(t, 3, steps[0].At)
	assert.Equal(t, 6.0, steps[0].Parent.CFGScale)
	assert.Equal(t, st.Sampler, steps[0].Parent.Sampler)
	assert.Contains(t, text, "CFG scale: 1,")

	_, err = s.Branch(4, 1, 5, st)
	assert.ErrorContains(t, err, "no steps are left")
	_, err = s.Branch(4, 9, 0, st)
	assert.ErrorContains(t, err, "run 9 has no frame 1")
}

// The space of a run's latents comes from the sampler: Euler's are VE
// (x = x0 + sigma eps, std about sigma_max at the start), DDIM's VP; on
// the VP scale both start at unit variance.
func TestSessionSpace(t *testing.T) {
	s := bundledSession(t)
	for _, c := range []struct {
		sampler string
		space   sampler.Space
	}{{"Euler", sampler.SpaceVE}, {"DDIM", sampler.SpaceVP}, {"DPM++ 2M", sampler.SpaceVP}, {"Heun", sampler.SpaceVE}} {
		st := sessionSettings(s.Facts())
		st.Sampler = c.sampler
		r, err := s.Start(1, st)
		require.NoError(t, err, c.sampler)
		assert.Equal(t, c.space, r.Space, c.sampler)
		// Unit noise on the VP scale: the std of a few thousand draws is
		// within 0.1 of 1.
		assert.InDelta(t, 1, stdOf(r.InitialXT().Data), 0.1, c.sampler)
		s.End(r)
	}
}

func stdOf(v []float32) float64 {
	var m, q float64
	for _, x := range v {
		m += float64(x)
	}
	m /= float64(len(v))
	for _, x := range v {
		q += (float64(x) - m) * (float64(x) - m)
	}
	return math.Sqrt(q / float64(len(v)))
}

// The forward process noises the run's image with the run's own generator
// and seed: x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps, eps torch.randn.
func TestSessionForward(t *testing.T) {
	s := bundledSession(t)
	st := sessionSettings(s.Facts())
	r, err := s.Start(1, st)
	require.NoError(t, err)
	_, err = s.Finish(context.Background(), r, nil)
	require.NoError(t, err)
	last := len(r.Job.Frames) - 1
	fw, err := s.Forward(1, last, 3, false)
	require.NoError(t, err)
	require.Len(t, fw.X, 3)
	require.Len(t, fw.Images, 3)
	assert.Equal(t, []int{0, 499, 999}, fw.T)
	x0 := r.Job.Frames[last].X
	g, err := rng.New(presets.RNGTorchCPU, uint64(st.Seed))
	require.NoError(t, err)
	eps := make([]float32, len(x0.Data))
	g.Randn(eps)
	ab, err := ScheduleConfig(s.Pipeline().Model.Scheduler).AlphasCumprod()
	require.NoError(t, err)
	for k, tt := range fw.T {
		a, b := math.Sqrt(float64(ab[tt])), math.Sqrt(1-float64(ab[tt]))
		assert.InDelta(t, float64(ab[tt]), fw.AlphaBar[k], 1e-9)
		for i := 0; i < len(x0.Data); i += 97 {
			// float32 arithmetic: 1e-5 of values of order 1.
			assert.InDelta(t, a*float64(x0.Data[i])+b*float64(eps[i]), float64(fw.X[k].Data[i]), 1e-5)
		}
	}
	_, err = s.Forward(1, last, 1, false)
	assert.ErrorContains(t, err, "at least 2 timesteps")
	vae, err := s.Forward(1, last, 3, true)
	require.NoError(t, err)
	native := s.Pipeline().NativeSize()
	assert.Equal(t, native, vae.Images[0].Bounds().Dx(), "VAE-decoded: the image's size")
	assert.Less(t, fw.Images[0].Bounds().Dx(), native, "the latent projection: the latent's size")
}

// Export writes the final images with their infotext, and a frame decoded
// with the VAE marked "Stepwise frame"; Sweep gives one image per scale.
func TestSessionExportAndSweep(t *testing.T) {
	s := bundledSession(t)
	ctx := context.Background()
	st := sessionSettings(s.Facts())
	st.Steps = 3
	r, err := s.Start(1, st)
	require.NoError(t, err)
	imgs, err := s.Finish(ctx, r, nil)
	require.NoError(t, err)
	dir := t.TempDir()
	paths, err := s.Export(1, 0, false, imgs, dir)
	require.NoError(t, err)
	require.Len(t, paths, 1)
	text := pngParameters(t, paths[0])
	assert.True(t, strings.HasPrefix(text, "red heart\n"), text)
	assert.Contains(t, text, "Steps: 3,")
	paths, err = s.Export(1, 1, true, nil, dir)
	require.NoError(t, err)
	assert.Contains(t, pngParameters(t, paths[0]), "Stepwise frame: 2/3 predicted x0")
	_, err = s.Export(7, 0, false, nil, dir)
	assert.ErrorContains(t, err, "run 7 is not known")

	var got []SweepResult
	err = s.Sweep(ctx, st, []float64{1, 4}, func(r SweepResult) { got = append(got, r) })
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, 4.0, got[1].Scale)
	assert.NotEqual(t, got[0].Image.Pix, got[1].Image.Pix)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err = s.Sweep(cctx, st, []float64{1}, func(SweepResult) { assert.Fail(t, "a cancelled sweep produced an image") })
	assert.True(t, errors.Is(err, context.Canceled), "err = %v", err)
}

func pngParameters(t *testing.T, path string) string {
	t.Helper()
	text, err := render.ReadPNGTextFile(path)
	require.NoError(t, err)
	return text["parameters"]
}

// The branch record reads back: nested branches root first, quoted text
// with "; " and " of " inside, and bad records name the problem.
func TestParseBranch(t *testing.T) {
	leaf := presets.Default()
	leaf.Prompt, leaf.CFGScale, leaf.Sampler = "a; b of c", 3, "DDIM"
	v := `step 5 of Prompt="x; y"; CFG scale=7 < step 2 of Sampler="Euler a"`
	got, err := ParseBranch(v, leaf)
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, 2, got[0].At)
	assert.Equal(t, "Euler a", got[0].Parent.Sampler)
	assert.Equal(t, "x; y", got[0].Parent.Prompt, "the root has the middle run's changes too")
	assert.Equal(t, 5, got[1].At)
	assert.Equal(t, "x; y", got[1].Parent.Prompt)
	assert.Equal(t, 7.0, got[1].Parent.CFGScale)
	assert.Equal(t, "DDIM", got[1].Parent.Sampler)
	// Round trip through settingsDiff.
	parent := leaf
	parent.Prompt, parent.Steps = `say "hi"; then`, 9
	back, err := ParseBranch("step 1 of "+strings.Join(settingsDiff(parent, leaf), "; "), leaf)
	require.NoError(t, err)
	assert.Equal(t, parent, back[0].Parent)
	for _, bad := range []string{"after 3", "step x of Steps=2", "step 2 of Color=red", "step 2 of Steps=two"} {
		_, err := ParseBranch(bad, leaf)
		assert.Error(t, err, bad)
	}
}

// ModelHash is A1111's AutoV2: the first 10 hex digits of the file's
// SHA-256, kept in a cache by path, size and time.
func TestModelHash(t *testing.T) {
	dir := t.TempDir()
	old := hashCache
	hashCache = func() string { return dir + "/hashes.json" }
	t.Cleanup(func() { hashCache = old })
	f := dir + "/m.safetensors"
	require.NoError(t, os.WriteFile(f, []byte("abc"), 0o644))
	h, err := ModelHash(f)
	require.NoError(t, err)
	assert.Equal(t, "ba7816bf8f", h) // sha256("abc")
	require.FileExists(t, dir+"/hashes.json")
	data, err := os.ReadFile(dir + "/hashes.json")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dir+"/hashes.json", []byte(strings.Replace(string(data), "ba7816bf8f", "0123456789", 1)), 0o644))
	h, err = ModelHash(f)
	require.NoError(t, err)
	assert.Equal(t, "0123456789", h, "the cached hash is used for an unchanged file")
	h, err = ModelHash(dir)
	require.NoError(t, err)
	assert.Equal(t, "", h, "a folder has no A1111 hash")
}

// A size the model cannot take is refused before any device work: a plain
// error naming the rule, not a GPU fault, and the device is not reopened.
func TestSessionRefusesABadSizeBeforeTheDevice(t *testing.T) {
	s := bundledSession(t)
	dev := s.Device()
	st := sessionSettings(s.Facts())
	st.Width = 40
	_, err := s.Start(1, st)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "multiples of 16")
	var de *DeviceError
	var re *RecoveryError
	assert.False(t, errors.As(err, &de) || errors.As(err, &re), "%v", err)
	assert.Same(t, dev, s.Device(), "the device was not reopened")
	assert.NoError(t, s.CheckDevice())
	r, err := s.Start(2, sessionSettings(s.Facts()))
	require.NoError(t, err)
	s.End(r)
}

// Forget drops a run: it is no longer known (its frames cannot be decoded
// or branched), the other runs stay, and an unknown id is a no-op.
func TestSessionForget(t *testing.T) {
	s := bundledSession(t)
	ctx := context.Background()
	st := sessionSettings(s.Facts())
	st.Steps = 2
	a, err := s.Start(1, st)
	require.NoError(t, err)
	_, err = s.Finish(ctx, a, nil)
	require.NoError(t, err)
	b, err := s.Start(2, st)
	require.NoError(t, err)
	_, err = s.Step(ctx, b) // forgotten mid-run, as the studio drops a cancelled live run
	require.NoError(t, err)

	s.Forget(2)
	assert.Nil(t, s.Run(2))
	assert.Nil(t, b.Job.Cond, "its prompt embeddings are released")
	_, err = s.Decode(2, 0, true)
	assert.ErrorContains(t, err, "run 2")
	_, err = s.Branch(3, 2, 0, st)
	assert.ErrorContains(t, err, "run 2 has no frame 1")

	require.NotNil(t, s.Run(1), "the other run stays")
	imgs, err := s.Decode(1, 1, true)
	require.NoError(t, err)
	assert.Len(t, imgs, 1)
	s.Forget(99)
	assert.NotNil(t, s.Run(1))
}
