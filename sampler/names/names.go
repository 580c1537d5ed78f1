// Package names is the one registry of sampler and schedule names: each
// sampler's canonical id (ComfyUI's), its AUTOMATIC1111 label and every
// alias it answers to, and each schedule's name, A1111 label and aliases.
// The sampler package, presets (the infotext) and the studio all read it;
// it imports nothing, so presets may depend on it.
package names

import (
	"strings"
)

// Sampler is one sampler name entry.
type Sampler struct {
	// ID is the canonical name (ComfyUI's / k-diffusion's id).
	ID string
	// Label is AUTOMATIC1111's display name ("" when A1111 has none).
	Label string
	// Aliases are the other names it answers to: A1111's old "k_" ids,
	// stable-diffusion.cpp's, diffusers' class names.
	Aliases []string
	// Description is one line on what it is.
	Description string
	// Schedule is the schedule the name implies ("" = none).
	Schedule string
	// Implemented says Stepwise can sample with it; the others are known
	// so that infotexts from A1111 keep their label.
	Implemented bool
}

// Name is the name to show: the A1111 label, else the id.
func (s Sampler) Name() string {
	if s.Label != "" {
		return s.Label
	}
	return s.ID
}

var samplers = []Sampler{
	{"euler", "Euler", []string{"k_euler", "EulerDiscreteScheduler"}, "Euler, first order ODE (k-diffusion sample_euler)", "", true},
	{"euler_ancestral", "Euler a", []string{"k_euler_a", "euler_a", "euler-a", "EulerAncestralDiscreteScheduler"}, "Euler ancestral: Euler to sigma_down plus fresh noise sigma_up", "", true},
	{"heun", "Heun", []string{"k_heun", "HeunDiscreteScheduler"}, "Heun, second order ODE, 2 model calls a step", "", true},
	{"dpm_2", "DPM2", []string{"k_dpm_2", "dpm2", "KDPM2DiscreteScheduler"}, "DPM-Solver-2 (Karras' DPM2), midpoint in log sigma, 2 calls a step", "", true},
	{"dpm_2_ancestral", "DPM2 a", []string{"k_dpm_2_a", "dpm2_a", "KDPM2AncestralDiscreteScheduler"}, "DPM2 ancestral: DPM2 to sigma_down plus noise", "", true},
	{"lms", "LMS", []string{"k_lms", "LMSDiscreteScheduler"}, "linear multistep, order 4", "", true},
	{"dpmpp_2m", "DPM++ 2M", []string{"k_dpmpp_2m", "dpm++2m", "DPMSolverMultistepScheduler"}, "DPM-Solver++(2M), second order multistep", "", true},
	{"dpmpp_2m_sde", "DPM++ 2M SDE", []string{"k_dpmpp_2m_sde", "dpm++2m_sde", "sde-dpmsolver++"}, "DPM-Solver++(2M) SDE, midpoint, eta 1", "", true},
	{"dpmpp_sde", "DPM++ SDE", []string{"k_dpmpp_sde", "dpm++sde", "DPMSolverSDEScheduler"}, "DPM-Solver++ SDE (stochastic 2S), 2 calls a step; noise from the run generator, not a Brownian tree", "", true},
	{"dpmpp_2s_ancestral", "DPM++ 2S a", []string{"k_dpmpp_2s_a", "dpm++2s_a", "dpmpp_2s_a"}, "DPM-Solver++(2S) ancestral, 2 calls a step", "", true},
	{"dpmpp_2s", "DPM++ 2S", []string{"dpm++2s", "DPMSolverSinglestepScheduler"}, "DPM-Solver++ singlestep order 2 (diffusers), deterministic", "", true},
	{"uni_pc", "UniPC", []string{"unipc", "uni_pc_bh2", "UniPCMultistepScheduler"}, "UniPC bh2 predictor-corrector, order 2", "", true},
	{"deis", "DEIS", []string{"DEISMultistepScheduler"}, "DEIS multistep, order 2 (logrho)", "", true},
	{"ddim", "DDIM", []string{"DDIMScheduler"}, "DDIM (eta = Settings.Eta, default 0)", "", true},
	{"ddim_trailing", "", nil, "DDIM with trailing timesteps (stable-diffusion.cpp)", "trailing", true},
	{"ddpm", "DDPM", []string{"DDPMScheduler"}, "DDPM ancestral sampling (fixed_small variance)", "", true},
	{"plms", "PLMS", []string{"pndm", "PNDMScheduler"}, "PLMS / PNDM pseudo linear multistep (N+1 calls)", "", true},
	{"lcm", "LCM", []string{"LCMScheduler"}, "latent consistency model sampling (needs an LCM model)", "", true},
	{"flow_euler", "Euler (flow)", []string{"flowmatch_euler", "FlowMatchEulerDiscreteScheduler"}, "flow-matching Euler (needs a flow/velocity model)", "", true},
	// A1111's others: known by name, not sampled by Stepwise.
	{"dpmpp_2m_sde_heun", "DPM++ 2M SDE Heun", []string{"k_dpmpp_2m_sde_heun"}, "DPM-Solver++(2M) SDE with Heun steps", "", false},
	{"dpmpp_3m_sde", "DPM++ 3M SDE", []string{"k_dpmpp_3m_sde"}, "DPM-Solver++(3M) SDE", "", false},
	{"dpm_fast", "DPM fast", []string{"k_dpm_fast"}, "DPM-Solver fast (k-diffusion)", "", false},
	{"dpm_adaptive", "DPM adaptive", []string{"k_dpm_ad"}, "DPM-Solver adaptive step size (k-diffusion)", "", false},
	{"restart", "Restart", nil, "Restart sampling", "", false},
	{"ddim_cfgpp", "DDIM CFG++", nil, "DDIM with CFG++ guidance", "", false},
}

// Samplers lists every sampler entry: the implemented ones first, in the
// order the studio offers them.
func Samplers() []Sampler {
	out := make([]Sampler, len(samplers))
	for i, s := range samplers {
		out[i] = s
		out[i].Aliases = append([]string(nil), s.Aliases...)
	}
	return out
}

// key normalises a name for lookups: lower case, runs of white space as
// one space.
func key(name string) string { return strings.ToLower(strings.Join(strings.Fields(name), " ")) }

// LookupSampler finds a sampler by id, label or alias, case-insensitively.
func LookupSampler(name string) (Sampler, bool) {
	k := key(name)
	for _, s := range samplers {
		if k == s.ID || (s.Label != "" && k == key(s.Label)) {
			return s, true
		}
		for _, a := range s.Aliases {
			if k == key(a) {
				return s, true
			}
		}
	}
	return Sampler{}, false
}

// Schedule is one schedule (noise grid) name entry.
type Schedule struct {
	// Name is Stepwise's name ("" = the sampler's default).
	Name string
	// Label is what A1111 writes as "Schedule type".
	Label string
	// Aliases are other spellings it answers to.
	Aliases []string
	// Description is one line on what it is.
	Description string
}

var schedules = []Schedule{
	{"", "Automatic", []string{"default", "auto"}, "the sampler's diffusers default (leading for DDIM/DDPM/PNDM/LCM, linspace otherwise)"},
	{"karras", "Karras", []string{"k"}, "Karras et al. sigmas, rho 7, between the model's sigma_min and sigma_max"},
	{"exponential", "Exponential", []string{"exp"}, "sigmas evenly spaced in log sigma"},
	// A1111's "Uniform" is k-diffusion's get_sigmas: timesteps evenly
	// spaced from T-1 to 0 with log-sigma interpolation, i.e. "normal".
	{"normal", "Normal", []string{"uniform"}, "ComfyUI normal: timesteps evenly spaced T-1..0, log-sigma interpolation"},
	{"simple", "Simple", nil, "ComfyUI simple: every (T/N)-th training sigma from the top"},
	{"sgm_uniform", "SGM Uniform", []string{"sgm", "sgmuniform"}, "ComfyUI sgm_uniform: N+1 evenly spaced timesteps, the last dropped"},
	// A1111's "DDIM" scheduler is ComfyUI's ddim_uniform.
	{"ddim_uniform", "DDIM", []string{"ddim"}, "ComfyUI ddim_uniform: training sigmas 1, 1+T/N, ... (= leading with offset 1)"},
	{"leading", "Leading", nil, "timesteps k*(T/N) + steps_offset (diffusers leading; SD1.5's own)"},
	// diffusers' spacing; A1111 has no equivalent.
	{"linspace", "Linspace", nil, "timesteps evenly spaced from T-1 to 0 (diffusers linspace)"},
	{"trailing", "Trailing", nil, "timesteps T - k*T/N - 1 (diffusers trailing)"},
}

// Schedules lists every schedule entry, the sampler's default first.
func Schedules() []Schedule {
	out := make([]Schedule, len(schedules))
	for i, s := range schedules {
		out[i] = s
		out[i].Aliases = append([]string(nil), s.Aliases...)
	}
	return out
}

// ScheduleNames lists the schedule names ("" first).
func ScheduleNames() []string {
	out := make([]string, len(schedules))
	for i, s := range schedules {
		out[i] = s.Name
	}
	return out
}

// LookupSchedule finds a schedule by name, label or alias; case, spaces,
// dashes and underscores are not told apart ("SGM Uniform" = sgm_uniform).
func LookupSchedule(name string) (Schedule, bool) {
	norm := func(s string) string {
		return strings.NewReplacer(" ", "_", "-", "_").Replace(key(s))
	}
	k := norm(name)
	for _, s := range schedules {
		if k == s.Name || k == norm(s.Label) {
			return s, true
		}
		for _, a := range s.Aliases {
			if k == norm(a) {
				return s, true
			}
		}
	}
	return Schedule{}, false
}
