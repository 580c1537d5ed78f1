package sampler

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/sampler/rng"
)

// analytic is the goldens' model: out = 0.1*xin + 0.01*t/1000; it records
// every (xin, t) it is called with.
type analytic struct {
	ins [][]float32
	ts  []float64
}

func (a *analytic) Predict(_ context.Context, x Latent, t float64, rows []Cond) (Latent, error) {
	if len(rows) != x.Shape[0] {
		return Latent{}, fmt.Errorf("%d rows for batch %d", len(rows), x.Shape[0])
	}
	a.ins = append(a.ins, append([]float32(nil), x.Data...))
	a.ts = append(a.ts, t)
	out := Latent{Shape: x.Shape, Data: make([]float32, len(x.Data))}
	for i, v := range x.Data {
		out.Data[i] = float32(0.1*float64(v) + 0.01*t/1000)
	}
	return out, nil
}

// replay is a generator whose first draw is torch's seed-0 noise (noise0 of
// the protocol) and whose later draws are the recorded scheduler draws.
type replay struct {
	first bool
	draws [][]float32
	used  int
	err   error
}

func (r *replay) Name() string { return "replay" }
func (r *replay) Clone() rng.Generator {
	c := *r
	return &c
}
func (r *replay) Randn(dst []float32) {
	if !r.first {
		r.first = true
		rng.NewTorchCPU(0).Randn(dst)
		return
	}
	if r.used >= len(r.draws) {
		if r.err == nil {
			r.err = fmt.Errorf("draw %d requested, only %d recorded", r.used+1, len(r.draws))
		}
		for i := range dst {
			dst[i] = 0
		}
		r.used++
		return
	}
	copy(dst, r.draws[r.used])
	r.used++
}

type goldenCase struct {
	Class          string                 `json:"class"`
	Steps          int                    `json:"num_inference_steps"`
	StepKwargs     map[string]float64     `json:"step_kwargs"`
	TimestepsDType string                 `json:"timesteps_dtype_in_diffusers"`
	Config         map[string]interface{} `json:"config"`
	Error          string                 `json:"error_in_diffusers"`
	Fields         []string               `json:"fields"`
}

// caseSettings maps a golden case name to our sampler and schedule names.
func caseSettings(name string, c goldenCase) (Settings, error) {
	base := name[:strings.LastIndex(name, ".n")]
	cfg := SD15Config()
	get := func(k string) (interface{}, bool) { v, ok := c.Config[k]; return v, ok }
	if v, ok := get("beta_schedule"); ok {
		cfg.BetaSchedule = v.(string)
	}
	if v, ok := get("prediction_type"); ok {
		cfg.PredictionType = v.(string)
	}
	if v, ok := get("set_alpha_to_one"); ok {
		cfg.SetAlphaToOne = v.(bool)
	}
	s := Settings{Steps: c.Steps, CFG: 1, Batch: 1, Channels: 4, H: 8, W: 8}
	spacing, _ := get("timestep_spacing")
	karras, _ := get("use_karras_sigmas")
	sched := ""
	if karras == true {
		sched = "karras"
	} else if sp, ok := spacing.(string); ok {
		sched = sp
	}
	names := map[string]string{
		"ddpm": "ddpm", "ddim": "ddim", "ddim_vpred": "ddim", "ddim_eta1": "ddim", "ddim_trailing": "ddim", "ddim_linspace": "ddim",
		"pndm": "plms", "lms": "lms", "lms_karras": "lms", "euler": "euler", "euler_vpred": "euler", "euler_karras": "euler",
		"euler_leading": "euler", "euler_trailing": "euler", "euler_ancestral": "euler_ancestral", "heun": "heun",
		"dpmpp_2m": "dpmpp_2m", "dpmpp_2m_karras": "dpmpp_2m", "dpmpp_2m_sde_karras": "dpmpp_2m_sde", "dpm_sde_karras": "dpmpp_sde",
		"dpmpp_2s": "dpmpp_2s", "unipc": "uni_pc", "deis": "deis", "lcm": "lcm", "kdpm2": "dpm_2", "kdpm2_ancestral": "dpm_2_ancestral",
		"flowmatch_euler_shift1": "flow_euler", "flowmatch_euler_shift3": "flow_euler",
	}
	s.Sampler = names[base]
	if s.Sampler == "" {
		return s, fmt.Errorf("no sampler for case %s", name)
	}
	if strings.HasPrefix(base, "flowmatch") {
		cfg.PredictionType = "flow"
		cfg.Shift = c.Config["shift"].(float64)
		sched = ""
	}
	if base == "lcm" || base == "dpmpp_2s" {
		sched = ""
	}
	if eta, ok := c.StepKwargs["eta"]; ok {
		s.Eta = &eta
	}
	s.Schedule = sched
	s.Model = cfg
	return s, nil
}

// diffusersSigmas lays our grid out as the scheduler's .sigmas tensor.
func diffusersSigmas(sampler string, sc Schedule) []float64 {
	n := len(sc.Sigmas)
	final := sc.Next[n-1]
	switch sampler {
	case "heun", "dpmpp_sde", "dpm_2", "dpm_2_ancestral":
		out := []float64{sc.Sigmas[0]}
		for i := 1; i < n; i++ {
			out = append(out, sc.Sigmas[i], sc.Sigmas[i])
		}
		if sampler == "heun" || sampler == "dpmpp_sde" {
			out = append(out, final)
		}
		if sampler == "dpm_2" || sampler == "dpm_2_ancestral" {
			out = append(out, final, final, final)
		}
		return out
	}
	return append(append([]float64(nil), sc.Sigmas...), final)
}

func maxAbs(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, math.Abs(x))
	}
	return m
}

var nonFinite = regexp.MustCompile(`([:\[,]\s*)-?(Infinity|NaN)`)

type result struct{ status, why string }

func runGoldenFile(t *testing.T, file string, table map[string]result) {
	short := strings.TrimPrefix(file, "schedulers_")
	f := golden.Open(t, file+".safetensors")
	raw, err := os.ReadFile(golden.Path(t, file+".json"))
	require.NoError(t, err)
	var meta struct {
		Cases map[string]goldenCase `json:"cases"`
	}
	// Python's json writes NaN and Infinity bare; they only occur as values.
	raw = nonFinite.ReplaceAll(raw, []byte("${1}null"))
	require.NoError(t, json.Unmarshal(raw, &meta), "%s.json", file)
	var names []string
	for k := range meta.Cases {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		c := meta.Cases[name]
		t.Run(name, func(t *testing.T) {
			s, err := caseSettings(name, c)
			require.NoError(t, err)
			f := f.For(t)
			// f64 returns the case's tensor k widened to float64, nil if absent.
			f64 := func(k string) []float64 {
				if _, ok := f.Lookup(name + "." + k); !ok {
					return nil
				}
				v, _ := f.F64(name + "." + k)
				return v
			}
			rp := &replay{}
			if _, ok := f.Lookup(name + ".noise_draws"); ok {
				d, shape := f.F32(name + ".noise_draws")
				per := len(d) / shape[0]
				for k := 0; k < shape[0]; k++ {
					rp.draws = append(rp.draws, d[k*per:(k+1)*per])
				}
			}
			s.Noise = rp
			net := &analytic{}
			run, err := NewRun(s, net)
			if c.Error != "" {
				checkDiffusersFailure(t, short+"/"+name, c, run, err, table)
				return
			}
			require.NoError(t, err)
			sc := run.Schedule()
			// Tolerances from the golden README (schedulers): timesteps exact
			// where integral, else abs <= 1e-3; sigmas and init_noise_sigma
			// rel <= 1e-6; trajectories max abs diff <= 1e-5 x max|x|.
			if want := f64("sigmas"); want != nil {
				got := diffusersSigmas(run.Sampler(), sc)
				require.Equal(t, len(want), len(got), "sigmas: values")
				fails := 0 // report the first 3 bad sigmas, not every one
				for i := 0; i < len(got) && fails < 3; i++ {
					if !assert.InDelta(t, want[i], got[i], 1e-6*math.Abs(want[i]), "sigma[%d] = %.9g, want %.9g", i, got[i], want[i]) {
						fails++
					}
				}
			}
			if want := f64("init_noise_sigma"); want != nil {
				assert.InDelta(t, want[0], sc.InitNoiseSigma, 1e-6*want[0], "init_noise_sigma = %.9g, want %.9g", sc.InitNoiseSigma, want[0])
			}
			if want := f64("x_init"); want != nil {
				x := run.X()
				tol := 1e-6 * maxAbs(want)
				for i, w := range want {
					require.InDelta(t, w, float64(x.Data[i]), tol, "x_init[%d]", i)
				}
			}
			wantTs := f64("timesteps")
			traj := f64("prev_sample")
			if traj == nil {
				// Schedule-only case: check the timesteps of a dry run
				// through the schedule (Heun-style repeats included).
				checkScheduleTimesteps(t, run, wantTs, c.TimestepsDType)
				table[short+"/"+name] = result{"schedule", "timesteps, sigmas, init sigma"}
				return
			}
			per := 256
			tol := 1e-5 * maxAbs(traj)
			var frames []Frame
			for !run.Done() {
				fr, err := run.Step(context.Background())
				require.NoError(t, err, "step %d", len(frames))
				frames = append(frames, fr)
			}
			require.NoError(t, rp.err)
			assert.Equal(t, len(rp.draws), rp.used, "noise draws used (want diffusers' count)")
			checkTimesteps(t, net.ts, wantTs, c.TimestepsDType)
			worst, worstAt := 0.0, ""
			for _, fr := range frames {
				k := fr.NFE - 1
				for i := 0; i < per; i++ {
					d := math.Abs(float64(fr.X.Data[i]) - traj[k*per+i])
					if d > worst {
						worst, worstAt = d, fmt.Sprintf("call %d elem %d", k, i)
					}
				}
			}
			assert.LessOrEqual(t, worst, tol, "trajectory: max abs diff at %s", worstAt)
			if mi := f64("model_input"); mi != nil {
				mtol := 1e-5 * maxAbs(mi)
				for k, in := range net.ins {
					for i := 0; i < per; i++ {
						require.InDelta(t, mi[k*per+i], float64(in[i]), mtol, "model_input call %d elem %d", k, i)
					}
				}
			}
			if dn := f64("denoised"); dn != nil {
				dtol := 1e-5 * maxAbs(dn)
				for k, fr := range frames {
					for i := 0; i < per; i++ {
						require.InDelta(t, dn[k*per+i], float64(fr.Denoised.Data[i]), dtol, "denoised step %d elem %d", k, i)
					}
				}
			}
			if !t.Failed() {
				table[short+"/"+name] = result{"matches", fmt.Sprintf("max diff %.2g of %.3g", worst, maxAbs(traj))}
			} else {
				table[short+"/"+name] = result{"DIFFERS", fmt.Sprintf("max diff %.2g", worst)}
			}
		})
	}
}

func checkTimesteps(t *testing.T, got, want []float64, dtype string) {
	t.Helper()
	if !assert.Equal(t, len(want), len(got), "model calls (got t=%v want %v)", got, want) {
		return
	}
	exact := strings.Contains(dtype, "int")
	fails := 0 // report the first 3 bad timesteps, not every one
	for i := 0; i < len(got) && fails < 3; i++ {
		var ok bool
		if exact {
			ok = assert.Equal(t, want[i], got[i], "timestep[%d] (exact)", i)
		} else {
			ok = assert.InDelta(t, want[i], got[i], 1e-3, "timestep[%d]", i)
		}
		if !ok {
			fails++
		}
	}
}

// checkScheduleTimesteps runs the schedule with a model that costs nothing
// and compares the timesteps of every call.
func checkScheduleTimesteps(t *testing.T, run *Run, want []float64, dtype string) {
	t.Helper()
	net := &analytic{}
	require.NoError(t, run.SetNetwork(net))
	for !run.Done() {
		_, err := run.Step(context.Background())
		require.NoError(t, err, "dry run")
	}
	checkTimesteps(t, net.ts, want, dtype)
}

// checkDiffusersFailure: where diffusers itself fails we must return a clear
// error or a finite result; we return a finite result.
func checkDiffusersFailure(t *testing.T, name string, c goldenCase, run *Run, err error, table map[string]result) {
	if err != nil {
		t.Logf("%s: diffusers failed (%s); we return an error: %v", name, c.Error, err)
		table[name] = result{"diffusers fails", "we return an error: " + err.Error()}
		return
	}
	for !run.Done() {
		fr, err := run.Step(context.Background())
		if err != nil {
			t.Logf("%s: diffusers failed (%s); we return an error: %v", name, c.Error, err)
			table[name] = result{"diffusers fails", "we return an error"}
			return
		}
		for _, v := range fr.X.Data {
			require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0), "non-finite latent %v at step %d", v, fr.Index)
		}
	}
	table[name] = result{"diffusers fails", "we return a finite result"}
}

func TestGoldenSchedulers(t *testing.T) {
	golden.Dir(t) // skips the whole test (not only its subtests) without the reference data
	table := map[string]result{}
	for _, file := range []string{"schedulers_scaled_linear", "schedulers_linear", "schedulers_squaredcos_cap_v2", "schedulers_flowmatch"} {
		file := file
		t.Run(file, func(t *testing.T) { runGoldenFile(t, file, table) })
	}
	// diffusers' own failures, as recorded in the JSON files.
	for _, k := range []string{"squaredcos_cap_v2/dpmpp_2m_karras.n20", "squaredcos_cap_v2/dpmpp_2m_karras.n50",
		"squaredcos_cap_v2/dpmpp_2m_sde_karras.n20", "squaredcos_cap_v2/dpmpp_2m_sde_karras.n50",
		"squaredcos_cap_v2/euler_ancestral.n4", "squaredcos_cap_v2/kdpm2_ancestral.n4"} {
		assert.Equal(t, "diffusers fails", table[k].status, "%s: expected a recorded diffusers failure", k)
	}
	if testing.Verbose() {
		var keys []string
		for k := range table {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t.Logf("%-40s %-16s %s", k, table[k].status, table[k].why)
		}
	}
}
