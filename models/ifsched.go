package models

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"

	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/sampler"
)

// IFScheduler is diffusers' DDPMScheduler as DeepFloyd IF configures it:
// learned-range variance, dynamic thresholding of x0, leading timestep
// spacing. Arithmetic follows torch's float32 scalars.
type IFScheduler struct {
	NumTrainTimesteps int     `json:"num_train_timesteps"`
	BetaStart         float64 `json:"beta_start"`
	BetaEnd           float64 `json:"beta_end"`
	BetaSchedule      string  `json:"beta_schedule"`
	VarianceType      string  `json:"variance_type"`
	PredictionType    string  `json:"prediction_type"`
	ClipSample        bool    `json:"clip_sample"`
	ClipSampleRange   float64 `json:"clip_sample_range"`
	Thresholding      bool    `json:"thresholding"`
	ThresholdRatio    float64 `json:"dynamic_thresholding_ratio"`
	SampleMaxValue    float64 `json:"sample_max_value"`
	TimestepSpacing   string  `json:"timestep_spacing"`
	StepsOffset       int     `json:"steps_offset"`

	ac []float32 // alphas_cumprod
}

// LoadIFScheduler reads a DDPMScheduler scheduler_config.json.
func LoadIFScheduler(path string) (*IFScheduler, error) {
	b, err := safefile.ReadFile(path, ifConfigLimit)
	if err != nil {
		return nil, fmt.Errorf("scheduler %s: %w", path, err)
	}
	s := &IFScheduler{NumTrainTimesteps: 1000, BetaStart: 0.0001, BetaEnd: 0.02, BetaSchedule: "linear",
		VarianceType: "fixed_small", PredictionType: "epsilon", ClipSampleRange: 1, ThresholdRatio: 0.995,
		SampleMaxValue: 1, TimestepSpacing: "leading"}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("scheduler %s: %w", path, err)
	}
	if err := s.init(); err != nil {
		return nil, fmt.Errorf("scheduler %s: %w", path, err)
	}
	return s, nil
}

func (s *IFScheduler) init() error {
	switch {
	case s.PredictionType != "epsilon":
		return fmt.Errorf("prediction_type %q is not supported (want epsilon)", s.PredictionType)
	case s.VarianceType != "learned_range" && s.VarianceType != "fixed_small":
		return fmt.Errorf("variance_type %q is not supported (want learned_range or fixed_small)", s.VarianceType)
	case s.TimestepSpacing != "leading":
		return fmt.Errorf("timestep_spacing %q is not supported (want leading)", s.TimestepSpacing)
	case s.NumTrainTimesteps < 1:
		return fmt.Errorf("num_train_timesteps %d must be positive", s.NumTrainTimesteps)
	}
	c := sampler.ScheduleConfig{NumTrainTimesteps: s.NumTrainTimesteps, BetaStart: s.BetaStart, BetaEnd: s.BetaEnd,
		BetaSchedule: s.BetaSchedule, PredictionType: "epsilon", TimestepSpacing: "leading", ClipSampleRange: 1, Shift: 1}
	ac, err := c.AlphasCumprod()
	if err != nil {
		return err
	}
	s.ac = ac
	return nil
}

// Timesteps is set_timesteps(n) with leading spacing: (n-1..0)*ratio +
// steps_offset, ratio = train // n.
func (s *IFScheduler) Timesteps(n int) ([]int, error) {
	if n < 1 || n > s.NumTrainTimesteps {
		return nil, fmt.Errorf("steps %d: want 1..%d", n, s.NumTrainTimesteps)
	}
	ratio := s.NumTrainTimesteps / n
	ts := make([]int, n)
	for i := range ts {
		ts[i] = (n-1-i)*ratio + s.StepsOffset
	}
	return ts, nil
}

// prev is the previous timestep of t for n steps (negative: none).
func (s *IFScheduler) prev(t, n int) int { return t - s.NumTrainTimesteps/n }

// alphas returns alpha_prod_t and alpha_prod_t_prev (1 before the start).
func (s *IFScheduler) alphas(t, n int) (float32, float32) {
	a := s.ac[t]
	ap := float32(1)
	if p := s.prev(t, n); p >= 0 {
		ap = s.ac[p]
	}
	return a, ap
}

// threshold is _threshold_sample: per row s = quantile(|x|, ratio)
// (torch.quantile's linear interpolation) clamped to [1, max], then
// x = clamp(x, -s, s)/s.
func (s *IFScheduler) threshold(x []float32, batch int) {
	per := len(x) / batch
	abs := make([]float32, per)
	for b := 0; b < batch; b++ {
		row := x[b*per : (b+1)*per]
		for i, v := range row {
			abs[i] = float32(math.Abs(float64(v)))
		}
		sort.Slice(abs, func(i, j int) bool { return abs[i] < abs[j] })
		rank := float32(s.ThresholdRatio) * float32(per-1)
		lo := int(math.Floor(float64(rank)))
		hi := int(math.Ceil(float64(rank)))
		w := rank - float32(lo)
		a, e := abs[lo], abs[hi]
		var q float32
		if w < 0.5 { // torch.lerp's two-sided form
			q = a + w*(e-a)
		} else {
			q = e - (e-a)*(1-w)
		}
		q = float32(math.Min(math.Max(float64(q), 1), float64(float32(s.SampleMaxValue))))
		for i, v := range row {
			v = float32(math.Min(math.Max(float64(v), float64(-q)), float64(q)))
			row[i] = v / q
		}
	}
}

// Step is DDPMScheduler.step for n inference steps at timestep t: out is
// the guided model output [B, C or 2C, ...] (with learned_range, the
// variance values in the second half of the channels), x the sample [B,C,...]
// (updated in place). noise draws the variance noise for t > 0 (called
// once with the sample's size).
func (s *IFScheduler) Step(out, x []float32, batch, channels, t, n int, noise func([]float32)) error {
	per := len(x) / batch
	spatial := per / channels
	learned := s.VarianceType == "learned_range"
	want := len(x)
	if learned {
		want *= 2
	}
	if len(out) != want {
		return fmt.Errorf("ddpm step: model output has %d values, want %d", len(out), want)
	}
	if t < 0 || t >= len(s.ac) {
		return fmt.Errorf("ddpm step: timestep %d outside 0..%d", t, len(s.ac)-1)
	}
	at := func(b int) ([]float32, []float32) { // eps, v of row b
		if !learned {
			return out[b*per : (b+1)*per], nil
		}
		r := out[b*2*per : (b+1)*2*per]
		return r[:per], r[per:]
	}
	a, ap := s.alphas(t, n)
	bt, btp := 1-a, 1-ap
	curA := a / ap
	curB := 1 - curA
	sqB := float32(math.Sqrt(float64(bt)))
	sqA := float32(math.Sqrt(float64(a)))
	x0 := make([]float32, len(x))
	for b := 0; b < batch; b++ {
		eps, _ := at(b)
		for i := 0; i < per; i++ {
			x0[b*per+i] = (x[b*per+i] - sqB*eps[i]) / sqA
		}
	}
	if s.Thresholding {
		s.threshold(x0, batch)
	} else if s.ClipSample {
		r := float32(s.ClipSampleRange)
		for i, v := range x0 {
			x0[i] = float32(math.Min(math.Max(float64(v), float64(-r)), float64(r)))
		}
	}
	c0 := float32(math.Sqrt(float64(ap))) * curB / bt
	ct := float32(math.Sqrt(float64(curA))) * btp / bt
	for i := range x {
		x[i] = c0*x0[i] + ct*x[i]
	}
	if t == 0 {
		return nil
	}
	z := make([]float32, len(x))
	noise(z)
	variance := btp / bt * curB
	if variance < 1e-20 {
		variance = 1e-20
	}
	minLog := float32(math.Log(float64(variance)))
	maxLog := float32(math.Log(float64(curB)))
	for b := 0; b < batch; b++ {
		_, v := at(b)
		for i := 0; i < per; i++ {
			var sd float32
			if learned {
				frac := (v[i] + 1) / 2
				lv := frac*maxLog + (1-frac)*minLog
				sd = float32(math.Exp(float64(0.5 * lv)))
			} else {
				sd = float32(math.Sqrt(float64(variance)))
			}
			x[b*per+i] += sd * z[b*per+i]
		}
	}
	_ = spatial
	return nil
}

// AddNoise is DDPMScheduler.add_noise: sqrt(acp_t) x + sqrt(1-acp_t) noise.
func (s *IFScheduler) AddNoise(x, noise []float32, t int) ([]float32, error) {
	if t < 0 || t >= len(s.ac) {
		return nil, fmt.Errorf("noise level %d outside 0..%d", t, len(s.ac)-1)
	}
	a := s.ac[t]
	sa := float32(math.Sqrt(float64(a)))
	sb := float32(math.Sqrt(float64(1 - a)))
	out := make([]float32, len(x))
	for i := range x {
		out[i] = sa*x[i] + sb*noise[i]
	}
	return out, nil
}
