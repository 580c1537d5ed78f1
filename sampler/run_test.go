package sampler

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/sampler/rng"
)

// recorded replays the e2e golden's U-Net: it checks what it is given
// (timestep, CFG rows, scaled input) and returns the recorded output.
type recorded struct {
	t       *testing.T
	in      []float64 // unet_input
	out     []float32 // unet_output
	ts      []float64 // unet_timestep
	call    int
	worstIn float64
}

func newRecorded(t *testing.T, f *golden.File) *recorded {
	r := &recorded{t: t}
	r.in, _ = f.F64("unet_input")
	r.out, _ = f.F32("unet_output")
	r.ts, _ = f.F64("unet_timestep")
	return r
}

func (r *recorded) Predict(_ context.Context, x Latent, ts float64, rows []Cond) (Latent, error) {
	k := r.call
	r.call++
	if k >= len(r.ts) {
		return Latent{}, fmt.Errorf("call %d beyond the recording", k)
	}
	assert.Equal(r.t, r.ts[k], ts, "call %d: timestep", k)
	assert.Equal(r.t, []Cond{Negative, Positive}, rows, "call %d: rows", k)
	per := len(x.Data)
	require.Equal(r.t, [4]int{2, 4, 8, 8}, x.Shape, "call %d: input shape", k)
	require.Equal(r.t, 512, per, "call %d: input shape %v", k, x.Shape)
	for i, v := range x.Data {
		r.worstIn = math.Max(r.worstIn, math.Abs(float64(v)-r.in[k*per+i]))
	}
	return Latent{Shape: x.Shape, Data: append([]float32(nil), r.out[k*per:(k+1)*per]...)}, nil
}

// recorder wraps a generator and keeps every draw.
type recorder struct {
	rng.Generator
	draws [][]float32
}

func (r *recorder) Randn(dst []float32) {
	r.Generator.Randn(dst)
	r.draws = append(r.draws, append([]float32(nil), dst...))
}
func (r *recorder) Clone() rng.Generator {
	return &recorder{Generator: r.Generator.Clone(), draws: append([][]float32(nil), r.draws...)}
}

func loadE2E(t *testing.T) *golden.File {
	t.Helper()
	return golden.Open(t, "e2e_euler_seed42.safetensors")
}

func e2eSettings() Settings {
	return Settings{Sampler: "Euler", Schedule: "leading", Steps: 20, CFG: 7.5, Seed: 42, RNG: "torch-cpu",
		Batch: 1, H: 8, W: 8, Model: SD15Config()}
}

// TestE2EEuler replays diffusers' whole SD1.5 pipeline run (Euler, leading,
// CFG 7.5, seed 42): initial noise and Euler's unused per-step draws come
// bit-exact from our torch generator, the U-Net sees the same inputs,
// timesteps and CFG rows, and the latents after every step match.
func TestE2EEuler(t *testing.T) {
	f := loadE2E(t)
	s := e2eSettings()
	gen, _ := rng.New("torch-cpu", 42)
	rec := &recorder{Generator: gen}
	s.Noise = rec
	net := newRecorded(t, f)
	run, err := NewRun(s, net)
	require.NoError(t, err)
	x := run.X()
	initial, _ := f.F32("initial_latents")
	for i, v := range initial {
		require.InDelta(t, float64(v), float64(x.Data[i]), 1e-6*math.Abs(float64(v)), "initial latent %d", i)
	}
	after, _ := f.F64("latents_after_step")
	worst := 0.0
	for !run.Done() {
		fr, err := run.Step(context.Background())
		require.NoError(t, err)
		for i, v := range fr.X.Data {
			worst = math.Max(worst, math.Abs(float64(v)-after[fr.Index*256+i]))
		}
	}
	// The U-Net is replayed, so these are tighter than the golden README's
	// whole-run 1e-3 x max|latent|.
	assert.LessOrEqual(t, worst, 1e-5*maxAbs(after), "latents after step: max diff")
	assert.LessOrEqual(t, net.worstIn, 1e-5*maxAbs(net.in), "unet input: max diff")
	require.Equal(t, 21, len(rec.draws), "draws (initial + one per Euler step)")
	noise, _ := f.F32("initial_noise")
	bitEqual(t, "initial_noise", rec.draws[0], noise)
	nd, _ := f.F32("scheduler_noise_draws")
	for k := 0; k < 20; k++ {
		bitEqual(t, fmt.Sprintf("scheduler draw %d", k), rec.draws[k+1], nd[k*256:(k+1)*256])
	}
	t.Logf("e2e: latent max diff %.3g (max |x| %.3g), unet input max diff %.3g", worst, maxAbs(after), net.worstIn)
}

func bitEqual(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "%s[%d] = %v, want %v (bit-exact)", what, i, got[i], want[i])
	}
}

// linearNet is a cheap deterministic network with distinct rows: out =
// a*x + b*t/1000 + (0.05 for Negative rows).
type linearNet struct {
	a, b  float64
	calls int
	rows  [][]Cond
	fail  error
}

func (n *linearNet) Predict(ctx context.Context, x Latent, t float64, rows []Cond) (Latent, error) {
	if err := ctx.Err(); err != nil {
		return Latent{}, err
	}
	if n.fail != nil {
		return Latent{}, n.fail
	}
	n.calls++
	n.rows = append(n.rows, append([]Cond(nil), rows...))
	per := len(x.Data) / len(rows)
	out := Latent{Shape: x.Shape, Data: make([]float32, len(x.Data))}
	for i, v := range x.Data {
		o := n.a*float64(v) + n.b*t/1000
		if rows[i/per] == Negative {
			o += 0.05
		}
		out.Data[i] = float32(o)
	}
	return out, nil
}

func smallSettings(sampler string) Settings {
	return Settings{Sampler: sampler, Steps: 8, CFG: 5, Seed: 7, Batch: 2, H: 4, W: 4, Model: SD15Config()}
}

func runAll(t *testing.T, r *Run) []Frame {
	t.Helper()
	var fs []Frame
	for !r.Done() {
		f, err := r.Step(context.Background())
		require.NoError(t, err)
		fs = append(fs, f)
	}
	return fs
}

func sameLatent(a, b Latent) bool {
	if a.Shape != b.Shape || len(a.Data) != len(b.Data) {
		return false
	}
	for i := range a.Data {
		if math.Float32bits(a.Data[i]) != math.Float32bits(b.Data[i]) {
			return false
		}
	}
	return true
}

// TestSnapshotRestoreEverySampler: for every sampler, restoring a mid-run
// snapshot and stepping again reproduces the rest of the run bit for bit
// (history, RNG state and step index are all captured).
func TestSnapshotRestoreEverySampler(t *testing.T) {
	for _, in := range Samplers() {
		if in.Name == "flow_euler" {
			continue
		}
		t.Run(in.Name, func(t *testing.T) {
			r, err := NewRun(smallSettings(in.Name), &linearNet{a: 0.1, b: 0.01})
			require.NoError(t, err)
			for i := 0; i < 3; i++ {
				_, err := r.Step(context.Background())
				require.NoError(t, err)
			}
			snap := r.Snapshot()
			first := runAll(t, r)
			require.NoError(t, r.Restore(snap))
			second := runAll(t, r)
			require.Equal(t, len(first), len(second), "frames before and after restore")
			require.NotEmpty(t, first, "frames")
			for i := range first {
				require.True(t, sameLatent(first[i].X, second[i].X), "frame %d differs after restore", first[i].Index)
				require.Equal(t, first[i].NFE, second[i].NFE, "frame %d differs after restore", first[i].Index)
				require.Equal(t, first[i].Index, second[i].Index, "frame %d differs after restore", first[i].Index)
			}
			last := first[len(first)-1]
			assert.Equal(t, last.Total-1, last.Index, "last frame index of %d", last.Total)
			for _, v := range last.X.Data {
				require.False(t, math.IsNaN(float64(v)), "final latent value %v", v)
				require.LessOrEqual(t, math.Abs(float64(v)), 100.0, "final latent value %v", v)
			}
			_, err = r.Step(context.Background())
			assert.ErrorIs(t, err, ErrFinished, "step after the end")
		})
	}
}

func TestCFGOneBatchedCall(t *testing.T) {
	net := &linearNet{a: 0.1, b: 0.01}
	s := smallSettings("euler")
	r, err := NewRun(s, net)
	require.NoError(t, err)
	runAll(t, r)
	require.Equal(t, s.Steps, net.calls, "network calls for %d Euler steps", s.Steps)
	want := []Cond{Negative, Negative, Positive, Positive}
	for _, rows := range net.rows {
		require.Equal(t, want, rows, "rows")
	}
	// w == 1 evaluates the positive rows only.
	net1 := &linearNet{a: 0.1, b: 0.01}
	s.CFG = 1
	r1, err := NewRun(s, net1)
	require.NoError(t, err)
	runAll(t, r1)
	require.NotEmpty(t, net1.rows, "w=1 calls")
	require.Equal(t, []Cond{Positive, Positive}, net1.rows[0], "w=1 rows")
}

// TestGuidanceAndRescale checks D against a hand computation: eps = u +
// w(c-u), then rescale_noise_cfg with torch's unbiased std.
func TestGuidanceAndRescale(t *testing.T) {
	s := Settings{Sampler: "euler", Steps: 4, CFG: 3, GuidanceRescale: 0.7, Batch: 1, H: 2, W: 2, Model: SD15Config()}
	net := &linearNet{a: 0.3, b: 0}
	r, err := NewRun(s, net)
	require.NoError(t, err)
	x := []float64{1, -2, 0.5, 3, 0, 1, -1, 2, 4, -3, 0.25, 1, 2, -2, 1, 0}
	sigma := 2.0
	got, err := r.denoise(context.Background(), x, sigma)
	require.NoError(t, err)
	cin := 1 / math.Sqrt(sigma*sigma+1)
	cond, g := make([]float64, 16), make([]float64, 16)
	for i, v := range x {
		c := float64(float32(0.3 * float64(float32(v*cin))))
		u := float64(float32(0.3*float64(float32(v*cin)) + 0.05))
		cond[i], g[i] = c, u+3*(c-u)
	}
	f := std(cond) / std(g)
	for i := range x {
		eps := 0.7*g[i]*f + 0.3*g[i]
		require.InDelta(t, x[i]-sigma*eps, got[i], 1e-9, "D[%d]", i)
	}
}

func TestNames(t *testing.T) {
	cases := []struct{ in, name, sched string }{
		{"DPM++ 2M Karras", "dpmpp_2m", "karras"},
		{"dpm++2m", "dpmpp_2m", ""},
		{"Euler a", "euler_ancestral", ""},
		{"EULER_A", "euler_ancestral", ""},
		{"euler_ancestral", "euler_ancestral", ""},
		{"DPM++ SDE Karras", "dpmpp_sde", "karras"},
		{"dpm++2s_a", "dpmpp_2s_ancestral", ""},
		{"UniPC", "uni_pc", ""},
		{"ddim_trailing", "ddim_trailing", "trailing"},
		{"  lms   karras ", "lms", "karras"},
		{"DPM++ 2M SDE Exponential", "dpmpp_2m_sde", "exponential"},
	}
	for _, c := range cases {
		n, s, err := LookupSampler(c.in)
		assert.NoError(t, err, "LookupSampler(%q)", c.in)
		assert.Equal(t, c.name, n, "LookupSampler(%q) name", c.in)
		assert.Equal(t, c.sched, s, "LookupSampler(%q) schedule", c.in)
	}
	_, _, err := LookupSampler("euler b")
	assert.ErrorContains(t, err, "dpmpp_2m", "unknown sampler error should list valid names")
	assert.ErrorContains(t, err, "euler_ancestral", "unknown sampler error should list valid names")
	_, err = LookupSchedule("karas")
	assert.ErrorContains(t, err, "karras", "unknown schedule error should list valid names")
	n, err := LookupSchedule("SGM")
	assert.NoError(t, err, "LookupSchedule(SGM)")
	assert.Equal(t, "sgm_uniform", n, "LookupSchedule(SGM)")
	for _, in := range Samplers() {
		assert.NotEmpty(t, in.Description, "%s has no description", in.Name)
		n, _, err := LookupSampler(in.Name)
		assert.NoError(t, err, "canonical %q does not resolve to itself", in.Name)
		assert.Equal(t, in.Name, n, "canonical %q does not resolve to itself", in.Name)
		for _, a := range in.Aliases {
			n, _, err := LookupSampler(a)
			assert.NoError(t, err, "alias %q of %s", a, in.Name)
			assert.Equal(t, in.Name, n, "alias %q of %s", a, in.Name)
		}
	}
}

// TestScheduleNames checks the ComfyUI names against what they equal.
func TestScheduleNames(t *testing.T) {
	tr, err := newTrain(SD15Config())
	require.NoError(t, err)
	get := func(fam family, name string, n int) *Schedule {
		s, err := tr.build(fam, name, n)
		require.NoError(t, err, name)
		return s
	}
	lead, ddimU := get(famEuler, "leading", 20), get(famEuler, "ddim_uniform", 20)
	for i := range lead.Sigmas {
		require.Equal(t, lead.Sigmas[i], ddimU.Sigmas[i], "ddim_uniform[%d] sigma, leading's", i)
		require.Equal(t, lead.Timesteps[i], ddimU.Timesteps[i], "ddim_uniform[%d] timestep, leading's", i)
	}
	k := get(famEuler, "karras", 10)
	assert.InDelta(t, tr.sigmas[999], k.Sigmas[0], 1e-12, "karras starts at sigma_max")
	assert.InDelta(t, tr.sigmas[0], k.Sigmas[9], 1e-12, "karras ends at sigma_min")
	assert.Zero(t, k.Next[9], "karras next after the end")
	e := get(famEuler, "exponential", 10)
	r0 := math.Log(e.Sigmas[0] / e.Sigmas[1])
	for i := 1; i+1 < 10; i++ {
		require.InDelta(t, r0, math.Log(e.Sigmas[i]/e.Sigmas[i+1]), 1e-9, "exponential not geometric at %d", i)
	}
	simple := get(famEuler, "simple", 20)
	trail := get(famEuler, "trailing", 20)
	for i := range simple.Sigmas { // equal when N divides T
		require.Equal(t, trail.Timesteps[i], simple.Timesteps[i], "simple[%d] timestep, trailing's", i)
		require.InDelta(t, trail.Sigmas[i], simple.Sigmas[i], 1e-12, "simple[%d] sigma, trailing's", i)
	}
	normal, sgm := get(famEuler, "normal", 10), get(famEuler, "sgm_uniform", 10)
	assert.Equal(t, 999.0, normal.Timesteps[0], "normal %v", normal.Timesteps)
	assert.Zero(t, normal.Timesteps[9], "normal %v", normal.Timesteps)
	assert.Equal(t, 999.0, sgm.Timesteps[0], "sgm_uniform %v", sgm.Timesteps)
	assert.InDelta(t, 99.9, sgm.Timesteps[9], 1e-9, "sgm_uniform %v", sgm.Timesteps)
	for i := 0; i+1 < 10; i++ {
		require.Greater(t, normal.Sigmas[i], normal.Sigmas[i+1], "normal sigmas not decreasing at %d", i)
		require.Greater(t, sgm.Sigmas[i], sgm.Sigmas[i+1], "sgm_uniform sigmas not decreasing at %d", i)
	}
}

func TestBetasGolden(t *testing.T) {
	for _, b := range []string{"scaled_linear", "linear", "squaredcos_cap_v2"} {
		f := golden.Open(t, "schedulers_"+b+".safetensors")
		c := SD15Config()
		c.BetaSchedule = b
		betas, err := c.Betas()
		require.NoError(t, err)
		ac, _ := c.AlphasCumprod()
		wantBetas, _ := f.F64("betas")
		for i, w := range wantBetas {
			require.Equal(t, w, float64(betas[i]), "%s beta[%d] (bit-exact)", b, i)
		}
		wantAC, _ := f.F64("alphas_cumprod")
		for i, w := range wantAC {
			require.Equal(t, w, float64(ac[i]), "%s alphas_cumprod[%d] (bit-exact)", b, i)
		}
	}
}

func TestCancellationAndFailureLeaveRunIntact(t *testing.T) {
	net := &linearNet{a: 0.1, b: 0.01}
	r, err := NewRun(smallSettings("dpmpp_2m_sde"), net)
	require.NoError(t, err)
	_, err = r.Step(context.Background())
	require.NoError(t, err)
	before := r.Snapshot()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = r.Step(ctx)
	require.ErrorIs(t, err, context.Canceled, "cancelled step")
	net.fail = errors.New("device lost")
	_, err = r.Step(context.Background())
	require.ErrorContains(t, err, "device lost", "failing network")
	net.fail = nil
	a, err := r.Step(context.Background())
	require.NoError(t, err)
	require.NoError(t, r.Restore(before))
	b, err := r.Step(context.Background())
	require.NoError(t, err)
	require.True(t, sameLatent(a.X, b.X), "a failed or cancelled step changed the run")
	require.Equal(t, 1, a.Index, "a failed or cancelled step changed the run")
}

// TestBranch: a branch with the same sampler and new guidance continues the
// history; a branch to another sampler starts at the current sigma and ends
// at the new schedule's end; the parent is unaffected.
func TestBranch(t *testing.T) {
	net := &linearNet{a: 0.1, b: 0.01}
	s := smallSettings("dpmpp_2m")
	r, err := NewRun(s, net)
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		_, err := r.Step(context.Background())
		require.NoError(t, err)
	}
	ref := r.Snapshot()
	rest := runAll(t, r)
	require.NotEmpty(t, rest, "frames of the parent")
	require.NoError(t, r.Restore(ref))
	same, err := r.Branch(s, net)
	require.NoError(t, err)
	got := runAll(t, same)
	require.NotEmpty(t, got, "frames of the branch")
	require.True(t, sameLatent(got[len(got)-1].X, rest[len(rest)-1].X), "branch with unchanged settings diverged")
	s2 := s
	s2.CFG = 9
	g, err := r.Branch(s2, net)
	require.NoError(t, err)
	got = runAll(t, g)
	require.NotEmpty(t, got, "frames of the branch")
	require.False(t, sameLatent(got[len(got)-1].X, rest[len(rest)-1].X), "branch with other guidance gave the same image")
	s3 := s
	s3.Sampler, s3.Schedule = "Euler a", "karras"
	cur := r.Schedule().Sigmas[3]
	e, err := r.Branch(s3, net)
	require.NoError(t, err)
	sc := e.Schedule()
	require.Equal(t, cur, sc.Sigmas[0], "branch schedule %v from sigma %v", sc.Sigmas, cur)
	require.Less(t, sc.Sigmas[1], cur, "branch schedule %v from sigma %v", sc.Sigmas, cur)
	require.Zero(t, sc.Next[len(sc.Next)-1], "branch schedule %v from sigma %v", sc.Sigmas, cur)
	// The VP latent of DPM++ and the VE latent of Euler a are the same point.
	xv, xe := r.X(), e.X()
	f := math.Sqrt(1 + cur*cur)
	for i := range xv.Data {
		require.InDelta(t, float64(xv.Data[i])*f, float64(xe.Data[i]), 1e-5*f, "branch latent %d (VP latent x sqrt(1+sigma^2))", i)
	}
	fr := runAll(t, e)
	require.Equal(t, len(sc.Sigmas), len(fr), "frames for the branch's sigmas")
	require.Equal(t, 3, r.st.I, "parent moved")
}

func TestSettingsErrors(t *testing.T) {
	net := &linearNet{}
	bad := []Settings{
		{Sampler: "nope", Steps: 4, CFG: 1, Batch: 1, H: 2, W: 2, Model: SD15Config()},
		{Sampler: "euler", Schedule: "sideways", Steps: 4, CFG: 1, Batch: 1, H: 2, W: 2, Model: SD15Config()},
		{Sampler: "euler", Steps: 0, CFG: 1, Batch: 1, H: 2, W: 2, Model: SD15Config()},
		{Sampler: "euler", Steps: 4, CFG: 1, Batch: 0, H: 2, W: 2, Model: SD15Config()},
		{Sampler: "euler", Steps: 4, CFG: 1, Batch: 1, H: 2, W: 2, RNG: "dice", Model: SD15Config()},
		{Sampler: "flow_euler", Steps: 4, CFG: 1, Batch: 1, H: 2, W: 2, Model: SD15Config()},
		{Sampler: "ddim_trailing", Schedule: "karras", Steps: 4, CFG: 1, Batch: 1, H: 2, W: 2, Model: SD15Config()},
	}
	for i, s := range bad {
		_, err := NewRun(s, net)
		assert.Error(t, err, "case %d (%s): no error", i, s.Sampler)
	}
	flow := SD15Config()
	flow.PredictionType = "flow"
	_, err := NewRun(Settings{Sampler: "euler_ancestral", Steps: 4, CFG: 1, Batch: 1, H: 2, W: 2, Model: flow}, net)
	assert.Error(t, err, "ancestral sampler accepted a flow model")
	_, err = NewRun(Settings{Sampler: "flow_euler", Steps: 4, CFG: 1, Batch: 1, H: 2, W: 2, Model: flow}, net)
	assert.NoError(t, err, "flow_euler on a flow model")
}

func TestPhiloxRun(t *testing.T) {
	s := smallSettings("euler_ancestral")
	s.RNG = "philox"
	a, err := NewRun(s, &linearNet{a: 0.1})
	require.NoError(t, err)
	s.RNG = "torch-cpu"
	b, err := NewRun(s, &linearNet{a: 0.1})
	require.NoError(t, err)
	require.False(t, sameLatent(a.X(), b.X()), "philox and torch-cpu gave the same noise")
}
