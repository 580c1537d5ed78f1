package sampler

import (
	"fmt"
	"sort"
	"strings"

	"github.com/stepwise/stepwise/sampler/names"
)

// Info describes one sampler for --help listings: its canonical name
// (ComfyUI's id), the aliases it also answers to (AUTOMATIC1111's display
// name, stable-diffusion.cpp's name, diffusers' class) and one line on what it
// is. The names come from the registry in sampler/names.
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

// impl is how a sampler of the name registry is sampled.
type impl struct {
	fam        family
	step       stepFunc
	stochastic bool
}

var impls = map[string]impl{
	"euler":              {famEuler, stepEuler, false},
	"euler_ancestral":    {famEuler, stepEulerAncestral, true},
	"heun":               {famEuler, stepHeun, false},
	"dpm_2":              {famEuler, stepDPM2, false},
	"dpm_2_ancestral":    {famEuler, stepDPM2Ancestral, true},
	"lms":                {famEuler, stepLMS, false},
	"dpmpp_2m":           {famDPM, stepDPMPP2M, false},
	"dpmpp_2m_sde":       {famDPM, stepDPMPP2MSDE, true},
	"dpmpp_sde":          {famEuler, stepDPMPPSDE, true},
	"dpmpp_2s_ancestral": {famEuler, stepDPMPP2SAncestral, true},
	"dpmpp_2s":           {famDPM, stepDPMPP2S, false},
	"uni_pc":             {famDPM, stepUniPC, false},
	"deis":               {famDEIS, stepDEIS, false},
	"ddim":               {famDDIM, stepDDIM, false},
	"ddim_trailing":      {famDDIM, stepDDIM, false},
	"ddpm":               {famDDPM, stepDDPM, true},
	"plms":               {famDDIM, stepPLMS, false},
	"lcm":                {famLCM, stepLCM, true},
	"flow_euler":         {famFlow, stepEuler, false},
}

// specs are the implemented samplers of the name registry, in its order.
var specs = func() []spec {
	var out []spec
	for _, n := range names.Samplers() {
		im, ok := impls[n.ID]
		if !n.Implemented || !ok {
			continue
		}
		var aliases []string
		if n.Label != "" {
			aliases = append(aliases, n.Label)
		}
		aliases = append(aliases, n.Aliases...)
		out = append(out, spec{Info{n.ID, aliases, n.Description}, im.fam, im.step, im.stochastic, n.Schedule})
	}
	return out
}()

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
	var valid []string
	for _, s := range specs {
		valid = append(valid, s.Name)
	}
	sort.Strings(valid)
	if n, ok := names.LookupSampler(k); ok && !n.Implemented {
		return nil, "", fmt.Errorf("sampler: %q (%s) is an A1111 sampler Stepwise does not implement (valid: %s)", name, n.Name(), strings.Join(valid, ", "))
	}
	return nil, "", fmt.Errorf("sampler: unknown sampler %q (valid: %s; A1111 names like \"DPM++ 2M Karras\" and \"Euler a\" work too)", name, strings.Join(valid, ", "))
}
