// Package rng produces the random numbers a diffusion run draws (the initial
// noise and every ancestral/SDE draw) exactly as the reference programs do:
// "torch-cpu" is torch.Generator('cpu') bit for bit (diffusers and
// AUTOMATIC1111's default), "philox" is torch's CUDA randn as AUTOMATIC1111's
// "NV" noise source and stable-diffusion.cpp's cuda rng compute it on the CPU.
package rng

import (
	"fmt"
	"sort"
	"strings"
)

// Generator is a seeded stream of normal random numbers whose state can be
// copied, so a run can be snapshotted and resumed with identical draws.
type Generator interface {
	// Randn fills dst with standard normal float32 values, as one
	// torch.randn call of len(dst) elements.
	Randn(dst []float32)
	// Clone returns an independent copy of the generator in its current state.
	Clone() Generator
	// Name is the generator's registry name ("torch-cpu", "philox").
	Name() string
}

// Info describes one generator kind for --help listings.
type Info struct {
	Name        string
	Aliases     []string
	Description string
}

var kinds = []Info{
	{"torch-cpu", []string{"cpu", "torch"}, "torch.Generator('cpu') mt19937 randn, bit-exact (diffusers, A1111 \"CPU\")"},
	{"philox", []string{"cuda", "gpu", "nv"}, "torch CUDA philox4x32-10 randn as A1111 \"NV\" / sd.cpp cuda rng compute it"},
}

// Kinds lists the generator kinds.
func Kinds() []Info { return append([]Info(nil), kinds...) }

// New returns a generator of the named kind seeded with seed.
func New(kind string, seed uint64) (Generator, error) {
	k := strings.ToLower(strings.TrimSpace(kind))
	for _, in := range kinds {
		match := k == in.Name
		for _, a := range in.Aliases {
			match = match || k == a
		}
		if !match {
			continue
		}
		switch in.Name {
		case "torch-cpu":
			return NewTorchCPU(seed), nil
		case "philox":
			return NewPhilox(seed), nil
		}
	}
	var names []string
	for _, in := range kinds {
		names = append(names, in.Name)
	}
	sort.Strings(names)
	return nil, fmt.Errorf("rng: unknown generator %q (valid: %s)", kind, strings.Join(names, ", "))
}
