package sampler

import (
	"fmt"
	"sort"
	"strings"
)

// Info describes one sampler for --help listings: its canonical name
// (ComfyUI's id), the aliases it also answers to (AUTOMATIC1111's display
// name, stable-diffusion.cpp's name, diffusers' class) and one line on what it
// is.
type Info struct {
	Name        string
	Aliases     []string
	Description string
}

// spec is a sampler's registry entry.
type spec struct {
	Info
	fam        family
	step       stepFunc
	stochastic bool   // draws noise the trajectory uses (flow models refuse these)
	schedule   string // schedule implied by the name (sd.cpp "ddim_trailing")
}

var specs = []spec{
	{Info{"euler", []string{"Euler", "EulerDiscreteScheduler"}, "Euler, first order ODE (k-diffusion sample_euler)"}, famEuler, stepEuler, false, ""},
	{Info{"euler_ancestral", []string{"Euler a", "euler_a", "EulerAncestralDiscreteScheduler"}, "Euler ancestral: Euler to sigma_down plus fresh noise sigma_up"}, famEuler, stepEulerAncestral, true, ""},
	{Info{"heun", []string{"Heun", "HeunDiscreteScheduler"}, "Heun, second order ODE, 2 model calls a step"}, famEuler, stepHeun, false, ""},
	{Info{"dpm_2", []string{"DPM2", "dpm2", "KDPM2DiscreteScheduler"}, "DPM-Solver-2 (Karras' DPM2), midpoint in log sigma, 2 calls a step"}, famEuler, stepDPM2, false, ""},
	{Info{"dpm_2_ancestral", []string{"DPM2 a", "dpm2_a", "KDPM2AncestralDiscreteScheduler"}, "DPM2 ancestral: DPM2 to sigma_down plus noise"}, famEuler, stepDPM2Ancestral, true, ""},
	{Info{"lms", []string{"LMS", "LMSDiscreteScheduler"}, "linear multistep, order 4"}, famEuler, stepLMS, false, ""},
	{Info{"dpmpp_2m", []string{"DPM++ 2M", "dpm++2m", "DPMSolverMultistepScheduler"}, "DPM-Solver++(2M), second order multistep"}, famDPM, stepDPMPP2M, false, ""},
	{Info{"dpmpp_2m_sde", []string{"DPM++ 2M SDE", "dpm++2m_sde", "sde-dpmsolver++"}, "DPM-Solver++(2M) SDE, midpoint, eta 1"}, famDPM, stepDPMPP2MSDE, true, ""},
	{Info{"dpmpp_sde", []string{"DPM++ SDE", "dpm++sde", "DPMSolverSDEScheduler"}, "DPM-Solver++ SDE (stochastic 2S), 2 calls a step; noise from the run generator, not a Brownian tree"}, famEuler, stepDPMPPSDE, true, ""},
	{Info{"dpmpp_2s_ancestral", []string{"DPM++ 2S a", "dpm++2s_a", "dpmpp_2s_a"}, "DPM-Solver++(2S) ancestral, 2 calls a step"}, famEuler, stepDPMPP2SAncestral, true, ""},
	{Info{"dpmpp_2s", []string{"DPM++ 2S", "dpm++2s", "DPMSolverSinglestepScheduler"}, "DPM-Solver++ singlestep order 2 (diffusers), deterministic"}, famDPM, stepDPMPP2S, false, ""},
	{Info{"uni_pc", []string{"UniPC", "unipc", "uni_pc_bh2", "UniPCMultistepScheduler"}, "UniPC bh2 predictor-corrector, order 2"}, famDPM, stepUniPC, false, ""},
	{Info{"deis", []string{"DEIS", "DEISMultistepScheduler"}, "DEIS multistep, order 2 (logrho)"}, famDEIS, stepDEIS, false, ""},
	{Info{"ddim", []string{"DDIM", "DDIMScheduler"}, "DDIM (eta = Settings.Eta, default 0)"}, famDDIM, stepDDIM, false, ""},
	{Info{"ddim_trailing", nil, "DDIM with trailing timesteps (stable-diffusion.cpp)"}, famDDIM, stepDDIM, false, "trailing"},
	{Info{"ddpm", []string{"DDPM", "DDPMScheduler"}, "DDPM ancestral sampling (fixed_small variance)"}, famDDPM, stepDDPM, true, ""},
	{Info{"plms", []string{"PLMS", "pndm", "PNDMScheduler"}, "PLMS / PNDM pseudo linear multistep (N+1 calls)"}, famDDIM, stepPLMS, false, ""},
	{Info{"lcm", []string{"LCM", "LCMScheduler"}, "latent consistency model sampling (needs an LCM model)"}, famLCM, stepLCM, true, ""},
	{Info{"flow_euler", []string{"Euler (flow)", "flowmatch_euler", "FlowMatchEulerDiscreteScheduler"}, "flow-matching Euler (needs a flow/velocity model)"}, famFlow, stepEuler, false, ""},
}

// Samplers lists every sampler with its aliases and description.
func Samplers() []Info {
	out := make([]Info, len(specs))
	for i, s := range specs {
		out[i] = s.Info
		out[i].Aliases = append([]string(nil), s.Aliases...)
	}
	return out
}

var scheduleSuffixes = []struct{ suffix, schedule string }{
	{" karras", "karras"}, {" exponential", "exponential"},
}

// LookupSampler resolves a sampler name, case-insensitively: canonical ids
// ("dpmpp_2m"), AUTOMATIC1111 display names ("DPM++ 2M Karras", "Euler a";
// a " Karras" or " Exponential" suffix selects that schedule, returned as
// schedule), stable-diffusion.cpp names ("dpm++2m", "euler_a") and diffusers
// class names. The error for an unknown name lists the valid ones.
func LookupSampler(name string) (canonical, schedule string, err error) {
	s, sched, err := lookupSpec(name)
	if err != nil {
		return "", "", err
	}
	return s.Name, sched, nil
}

func lookupSpec(name string) (*spec, string, error) {
	k := strings.ToLower(strings.Join(strings.Fields(name), " "))
	sched := ""
	for _, suf := range scheduleSuffixes {
		if strings.HasSuffix(k, suf.suffix) {
			k, sched = strings.TrimSuffix(k, suf.suffix), suf.schedule
			break
		}
	}
	for i := range specs {
		s := &specs[i]
		match := k == s.Name
		for _, a := range s.Aliases {
			match = match || k == strings.ToLower(a)
		}
		if match {
			if sched == "" {
				sched = s.schedule
			}
			return s, sched, nil
		}
	}
	var names []string
	for _, s := range specs {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	return nil, "", fmt.Errorf("sampler: unknown sampler %q (valid: %s; A1111 names like \"DPM++ 2M Karras\" and \"Euler a\" work too)", name, strings.Join(names, ", "))
}
