package sampler

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

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
	if ts != r.ts[k] {
		r.t.Errorf("call %d: timestep %v, want %v", k, ts, r.ts[k])
	}
	if len(rows) != 2 || rows[0] != Negative || rows[1] != Positive {
		r.t.Errorf("call %d: rows %v, want [Negative Positive]", k, rows)
	}
	per := len(x.Data)
	if x.Shape != [4]int{2, 4, 8, 8} || per != 512 {
		r.t.Fatalf("call %d: input shape %v", k, x.Shape)
	}
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
	if err != nil {
		t.Fatal(err)
	}
	x := run.X()
	initial, _ := f.F32("initial_latents")
	for i, v := range initial {
		if math.Abs(float64(x.Data[i]-v)) > 1e-6*math.Abs(float64(v)) {
			t.Fatalf("initial latent %d: %v want %v", i, x.Data[i], v)
		}
	}
	after, _ := f.F64("latents_after_step")
	worst := 0.0
	for !run.Done() {
		fr, err := run.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range fr.X.Data {
			worst = math.Max(worst, math.Abs(float64(v)-after[fr.Index*256+i]))
		}
	}
	if tol := 1e-5 * maxAbs(after); worst > tol {
		t.Errorf("latents after step: max diff %.3g > %.3g", worst, tol)
	}
	if tol := 1e-5 * maxAbs(net.in); net.worstIn > tol {
		t.Errorf("unet input: max diff %.3g > %.3g", net.worstIn, tol)
	}
	if len(rec.draws) != 21 {
		t.Fatalf("%d draws, want 21 (initial + one per Euler step)", len(rec.draws))
	}
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
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s[%d] = %v, want %v (bit-exact)", what, i, got[i], want[i])
		}
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
		if err != nil {
			t.Fatal(err)
		}
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
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				if _, err := r.Step(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			snap := r.Snapshot()
			first := runAll(t, r)
			if err := r.Restore(snap); err != nil {
				t.Fatal(err)
			}
			second := runAll(t, r)
			if len(first) != len(second) || len(first) == 0 {
				t.Fatalf("%d frames then %d", len(first), len(second))
			}
			for i := range first {
				if !sameLatent(first[i].X, second[i].X) || first[i].NFE != second[i].NFE || first[i].Index != second[i].Index {
					t.Fatalf("frame %d differs after restore", first[i].Index)
				}
			}
			last := first[len(first)-1]
			if last.Index != last.Total-1 {
				t.Errorf("last frame index %d of %d", last.Index, last.Total)
			}
			for _, v := range last.X.Data {
				if math.IsNaN(float64(v)) || math.Abs(float64(v)) > 100 {
					t.Fatalf("final latent value %v", v)
				}
			}
			if _, err := r.Step(context.Background()); !errors.Is(err, ErrFinished) {
				t.Errorf("step after the end: %v, want ErrFinished", err)
			}
		})
	}
}

func TestCFGOneBatchedCall(t *testing.T) {
	net := &linearNet{a: 0.1, b: 0.01}
	s := smallSettings("euler")
	r, err := NewRun(s, net)
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, r)
	if net.calls != s.Steps {
		t.Fatalf("%d network calls for %d Euler steps", net.calls, s.Steps)
	}
	want := []Cond{Negative, Negative, Positive, Positive}
	for _, rows := range net.rows {
		if fmt.Sprint(rows) != fmt.Sprint(want) {
			t.Fatalf("rows %v, want %v", rows, want)
		}
	}
	// w == 1 evaluates the positive rows only.
	net1 := &linearNet{a: 0.1, b: 0.01}
	s.CFG = 1
	r1, err := NewRun(s, net1)
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, r1)
	if fmt.Sprint(net1.rows[0]) != fmt.Sprint([]Cond{Positive, Positive}) {
		t.Fatalf("w=1 rows %v", net1.rows[0])
	}
}

// TestGuidanceAndRescale checks D against a hand computation: eps = u +
// w(c-u), then rescale_noise_cfg with torch's unbiased std.
func TestGuidanceAndRescale(t *testing.T) {
	s := Settings{Sampler: "euler", Steps: 4, CFG: 3, GuidanceRescale: 0.7, Batch: 1, H: 2, W: 2, Model: SD15Config()}
	net := &linearNet{a: 0.3, b: 0}
	r, err := NewRun(s, net)
	if err != nil {
		t.Fatal(err)
	}
	x := []float64{1, -2, 0.5, 3, 0, 1, -1, 2, 4, -3, 0.25, 1, 2, -2, 1, 0}
	sigma := 2.0
	got, err := r.denoise(context.Background(), x, sigma)
	if err != nil {
		t.Fatal(err)
	}
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
		if want := x[i] - sigma*eps; math.Abs(got[i]-want) > 1e-9 {
			t.Fatalf("D[%d] = %v, want %v", i, got[i], want)
		}
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
		if err != nil || n != c.name || s != c.sched {
			t.Errorf("LookupSampler(%q) = %q, %q, %v; want %q, %q", c.in, n, s, err, c.name, c.sched)
		}
	}
	_, _, err := LookupSampler("euler b")
	if err == nil || !strings.Contains(err.Error(), "dpmpp_2m") || !strings.Contains(err.Error(), "euler_ancestral") {
		t.Errorf("unknown sampler error should list valid names: %v", err)
	}
	if _, err := LookupSchedule("karas"); err == nil || !strings.Contains(err.Error(), "karras") {
		t.Errorf("unknown schedule error should list valid names: %v", err)
	}
	if n, err := LookupSchedule("SGM"); err != nil || n != "sgm_uniform" {
		t.Errorf("LookupSchedule(SGM) = %q, %v", n, err)
	}
	for _, in := range Samplers() {
		if in.Description == "" {
			t.Errorf("%s has no description", in.Name)
		}
		if n, _, err := LookupSampler(in.Name); err != nil || n != in.Name {
			t.Errorf("canonical %q does not resolve to itself", in.Name)
		}
		for _, a := range in.Aliases {
			if n, _, err := LookupSampler(a); err != nil || n != in.Name {
				t.Errorf("alias %q of %s resolves to %q, %v", a, in.Name, n, err)
			}
		}
	}
}

// TestScheduleNames checks the ComfyUI names against what they equal.
func TestScheduleNames(t *testing.T) {
	tr, err := newTrain(SD15Config())
	if err != nil {
		t.Fatal(err)
	}
	get := func(fam family, name string, n int) *Schedule {
		s, err := tr.build(fam, name, n)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return s
	}
	lead, ddimU := get(famEuler, "leading", 20), get(famEuler, "ddim_uniform", 20)
	for i := range lead.Sigmas {
		if lead.Sigmas[i] != ddimU.Sigmas[i] || lead.Timesteps[i] != ddimU.Timesteps[i] {
			t.Fatalf("ddim_uniform[%d] = %v@%v, leading %v@%v", i, ddimU.Sigmas[i], ddimU.Timesteps[i], lead.Sigmas[i], lead.Timesteps[i])
		}
	}
	k := get(famEuler, "karras", 10)
	if math.Abs(k.Sigmas[0]-tr.sigmas[999]) > 1e-12 || math.Abs(k.Sigmas[9]-tr.sigmas[0]) > 1e-12 || k.Next[9] != 0 {
		t.Errorf("karras ends %v..%v next %v", k.Sigmas[0], k.Sigmas[9], k.Next[9])
	}
	e := get(famEuler, "exponential", 10)
	r0 := math.Log(e.Sigmas[0] / e.Sigmas[1])
	for i := 1; i+1 < 10; i++ {
		if math.Abs(math.Log(e.Sigmas[i]/e.Sigmas[i+1])-r0) > 1e-9 {
			t.Fatalf("exponential not geometric at %d", i)
		}
	}
	simple := get(famEuler, "simple", 20)
	trail := get(famEuler, "trailing", 20)
	for i := range simple.Sigmas { // equal when N divides T
		if simple.Timesteps[i] != trail.Timesteps[i] || math.Abs(simple.Sigmas[i]-trail.Sigmas[i]) > 1e-12 {
			t.Fatalf("simple[%d] = %v, trailing %v", i, simple.Timesteps[i], trail.Timesteps[i])
		}
	}
	normal, sgm := get(famEuler, "normal", 10), get(famEuler, "sgm_uniform", 10)
	if normal.Timesteps[0] != 999 || normal.Timesteps[9] != 0 || sgm.Timesteps[0] != 999 || math.Abs(sgm.Timesteps[9]-99.9) > 1e-9 {
		t.Errorf("normal %v, sgm_uniform %v", normal.Timesteps, sgm.Timesteps)
	}
	for i := 0; i+1 < 10; i++ {
		if !(normal.Sigmas[i] > normal.Sigmas[i+1]) || !(sgm.Sigmas[i] > sgm.Sigmas[i+1]) {
			t.Fatal("sigmas not decreasing")
		}
	}
}

func TestBetasGolden(t *testing.T) {
	for _, b := range []string{"scaled_linear", "linear", "squaredcos_cap_v2"} {
		f := golden.Open(t, "schedulers_"+b+".safetensors")
		c := SD15Config()
		c.BetaSchedule = b
		betas, err := c.Betas()
		if err != nil {
			t.Fatal(err)
		}
		ac, _ := c.AlphasCumprod()
		wantBetas, _ := f.F64("betas")
		for i, w := range wantBetas {
			if float64(betas[i]) != w { // bit-exact
				t.Fatalf("%s beta[%d] = %v want %v", b, i, betas[i], w)
			}
		}
		wantAC, _ := f.F64("alphas_cumprod")
		for i, w := range wantAC {
			if float64(ac[i]) != w { // bit-exact
				t.Fatalf("%s alphas_cumprod[%d] = %v want %v", b, i, ac[i], w)
			}
		}
	}
}

func TestCancellationAndFailureLeaveRunIntact(t *testing.T) {
	net := &linearNet{a: 0.1, b: 0.01}
	r, err := NewRun(smallSettings("dpmpp_2m_sde"), net)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := r.Snapshot()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Step(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled step: %v", err)
	}
	net.fail = errors.New("device lost")
	if _, err := r.Step(context.Background()); err == nil || !strings.Contains(err.Error(), "device lost") {
		t.Fatalf("failing network: %v", err)
	}
	net.fail = nil
	a, err := r.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Restore(before); err != nil {
		t.Fatal(err)
	}
	b, err := r.Step(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !sameLatent(a.X, b.X) || a.Index != 1 {
		t.Fatal("a failed or cancelled step changed the run")
	}
}

// TestBranch: a branch with the same sampler and new guidance continues the
// history; a branch to another sampler starts at the current sigma and ends
// at the new schedule's end; the parent is unaffected.
func TestBranch(t *testing.T) {
	net := &linearNet{a: 0.1, b: 0.01}
	s := smallSettings("dpmpp_2m")
	r, err := NewRun(s, net)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := r.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ref := r.Snapshot()
	rest := runAll(t, r)
	if err := r.Restore(ref); err != nil {
		t.Fatal(err)
	}
	same, err := r.Branch(s, net)
	if err != nil {
		t.Fatal(err)
	}
	if got := runAll(t, same); !sameLatent(got[len(got)-1].X, rest[len(rest)-1].X) {
		t.Fatal("branch with unchanged settings diverged")
	}
	s2 := s
	s2.CFG = 9
	g, err := r.Branch(s2, net)
	if err != nil {
		t.Fatal(err)
	}
	if got := runAll(t, g); sameLatent(got[len(got)-1].X, rest[len(rest)-1].X) {
		t.Fatal("branch with other guidance gave the same image")
	}
	s3 := s
	s3.Sampler, s3.Schedule = "Euler a", "karras"
	cur := r.Schedule().Sigmas[3]
	e, err := r.Branch(s3, net)
	if err != nil {
		t.Fatal(err)
	}
	sc := e.Schedule()
	if sc.Sigmas[0] != cur || sc.Sigmas[1] >= cur || sc.Next[len(sc.Next)-1] != 0 {
		t.Fatalf("branch schedule %v from sigma %v", sc.Sigmas, cur)
	}
	// The VP latent of DPM++ and the VE latent of Euler a are the same point.
	xv, xe := r.X(), e.X()
	f := math.Sqrt(1 + cur*cur)
	for i := range xv.Data {
		if math.Abs(float64(xv.Data[i])*f-float64(xe.Data[i])) > 1e-5*f {
			t.Fatalf("branch latent %d: %v vs %v", i, xv.Data[i]*float32(f), xe.Data[i])
		}
	}
	if fr := runAll(t, e); len(fr) != len(sc.Sigmas) {
		t.Fatalf("%d frames for %d sigmas", len(fr), len(sc.Sigmas))
	}
	if r.st.I != 3 {
		t.Fatalf("parent moved to step %d", r.st.I)
	}
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
		if _, err := NewRun(s, net); err == nil {
			t.Errorf("case %d (%s): no error", i, s.Sampler)
		}
	}
	flow := SD15Config()
	flow.PredictionType = "flow"
	if _, err := NewRun(Settings{Sampler: "euler_ancestral", Steps: 4, CFG: 1, Batch: 1, H: 2, W: 2, Model: flow}, net); err == nil {
		t.Error("ancestral sampler accepted a flow model")
	}
	if _, err := NewRun(Settings{Sampler: "flow_euler", Steps: 4, CFG: 1, Batch: 1, H: 2, W: 2, Model: flow}, net); err != nil {
		t.Errorf("flow_euler on a flow model: %v", err)
	}
}

func TestPhiloxRun(t *testing.T) {
	s := smallSettings("euler_ancestral")
	s.RNG = "philox"
	a, err := NewRun(s, &linearNet{a: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	s.RNG = "torch-cpu"
	b, err := NewRun(s, &linearNet{a: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	if sameLatent(a.X(), b.X()) {
		t.Fatal("philox and torch-cpu gave the same noise")
	}
}
