package rng

import "math"

// Philox reproduces torch.randn(..., device='cuda') on the CPU the way
// AUTOMATIC1111's rng_philox.py ("NV" noise) and stable-diffusion.cpp's cuda
// rng do: element i of the k-th randn call is one Box-Muller value from
// philox4x32-10 with counter {k, 0, i, 0} and key = the 64-bit seed.
// Intermediates are float64 (numpy promotes them in rng_philox.py).
type Philox struct {
	Seed   uint64
	Offset uint32 // number of randn calls made so far
}

// NewPhilox returns a philox generator for seed.
func NewPhilox(seed uint64) *Philox { return &Philox{Seed: seed} }

// Name implements Generator.
func (p *Philox) Name() string { return "philox" }

// Clone implements Generator.
func (p *Philox) Clone() Generator { c := *p; return &c }

const (
	philoxM0 = 0xD2511F53
	philoxM1 = 0xCD9E8D57
	philoxW0 = 0x9E3779B9
	philoxW1 = 0xBB67AE85
)

// Philox4x32 is the philox4x32-10 block function (Random123).
func Philox4x32(ctr [4]uint32, key [2]uint32) [4]uint32 {
	for r := 0; r < 10; r++ {
		if r > 0 {
			key[0] += philoxW0
			key[1] += philoxW1
		}
		p0 := uint64(ctr[0]) * philoxM0
		p1 := uint64(ctr[2]) * philoxM1
		ctr = [4]uint32{
			uint32(p1>>32) ^ ctr[1] ^ key[0], uint32(p1),
			uint32(p0>>32) ^ ctr[3] ^ key[1], uint32(p0),
		}
	}
	return ctr
}

// Randn implements Generator.
func (p *Philox) Randn(dst []float32) {
	key := [2]uint32{uint32(p.Seed), uint32(p.Seed >> 32)}
	const inv = float64(float32(2.3283064e-10))
	const inv2pi = float64(float32(2.3283064e-10 * 6.2831855))
	for i := range dst {
		g := Philox4x32([4]uint32{p.Offset, 0, uint32(i), 0}, key)
		u := float64(g[0])*inv + inv/2
		v := float64(g[1])*inv2pi + inv2pi/2
		dst[i] = float32(math.Sqrt(-2*math.Log(u)) * math.Sin(v))
	}
	p.Offset++
}
