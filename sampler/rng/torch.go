package rng

import "math"

// TorchCPU reproduces torch.Generator('cpu') bit for bit: the mt19937 engine
// and ATen's randn / rand / randn(float64) kernels as built for AVX2 (the
// build the goldens come from). Its zero value is not usable; use NewTorchCPU.
//
// randn takes one of two paths, as ATen does:
//   - n < 16: a scalar Box-Muller in float64 per element that returns r·cos θ
//     and caches r·sin θ for the next scalar-path element (the cache lives in
//     the generator and survives other calls);
//   - n >= 16: n float32 uniforms first, then 16-wide blocks transformed with
//     float32 Cephes ln/sin/cos; a ragged tail redraws 16 fresh uniforms into
//     the last 16 slots and transforms that block again.
type TorchCPU struct {
	state     [624]uint32
	next      int
	hasCached bool
	cached    float64
}

// NewTorchCPU returns a generator in the state of
// torch.Generator('cpu').manual_seed(seed) (only the low 32 bits of the seed
// matter, as in torch).
func NewTorchCPU(seed uint64) *TorchCPU {
	g := &TorchCPU{}
	g.state[0] = uint32(seed)
	for j := 1; j < 624; j++ {
		p := g.state[j-1]
		g.state[j] = 1812433253*(p^(p>>30)) + uint32(j)
	}
	g.next = 624
	return g
}

// Name implements Generator.
func (g *TorchCPU) Name() string { return "torch-cpu" }

// Clone implements Generator: the copy continues the same stream.
func (g *TorchCPU) Clone() Generator {
	c := *g
	return &c
}

func (g *TorchCPU) twist() {
	const upper, lower, matrixA = 0x80000000, 0x7fffffff, 0x9908b0df
	for i := 0; i < 624; i++ {
		y := g.state[i]&upper | g.state[(i+1)%624]&lower
		v := g.state[(i+397)%624] ^ y>>1
		if y&1 != 0 {
			v ^= matrixA
		}
		g.state[i] = v
	}
	g.next = 0
}

// Uint32 returns the engine's next 32-bit output.
func (g *TorchCPU) Uint32() uint32 {
	if g.next >= 624 {
		g.twist()
	}
	y := g.state[g.next]
	g.next++
	y ^= y >> 11
	y ^= (y << 7) & 0x9d2c5680
	y ^= (y << 15) & 0xefc60000
	y ^= y >> 18
	return y
}

func (g *TorchCPU) uint64() uint64 {
	hi := uint64(g.Uint32())
	lo := uint64(g.Uint32())
	return hi<<32 | lo
}

// uniform53 is at::uniform_real_distribution<double>(0, 1).
func (g *TorchCPU) uniform53() float64 {
	return float64(g.uint64()&(1<<53-1)) * 0x1p-53
}

// uniform24 is at::uniform_real_distribution<float>(0, 1).
func (g *TorchCPU) uniform24() float32 {
	return float32(g.Uint32()&(1<<24-1)) * 0x1p-24
}

// normal64 is at::normal_distribution<double>(0, 1) with the generator's
// cached second value.
func (g *TorchCPU) normal64() float64 {
	if g.hasCached {
		g.hasCached = false
		return g.cached
	}
	u1 := g.uniform53()
	u2 := g.uniform53()
	r := math.Sqrt(-2 * math.Log(1-u2))
	theta := 2 * math.Pi * u1
	g.cached, g.hasCached = r*math.Sin(theta), true
	return r * math.Cos(theta)
}

// Randn fills dst like torch.randn(len(dst), generator=g) in float32.
func (g *TorchCPU) Randn(dst []float32) {
	fillNormal(dst, func() float32 { return float32(g.normal64()) }, g.uniform24, normal16)
}

// RandnF64 fills dst like torch.randn(..., dtype=torch.float64): the scalar
// path below 16 elements, else ATen's generic (non-vectorised) 16-wide
// Box-Muller in float64 over 53-bit uniforms with libm ln/sin/cos.
func (g *TorchCPU) RandnF64(dst []float64) {
	fillNormal(dst, g.normal64, g.uniform53, normal16f64)
}

// fillNormal is ATen's order of draws for randn: below 16 elements one
// scalar normal each; else a uniform for every element, Box-Muller over each
// whole block of 16, and when 16 does not divide the length, fresh uniforms
// and Box-Muller again over the last 16 elements.
func fillNormal[T float32 | float64](dst []T, scalar, uniform func() T, normal16 func([]T)) {
	n := len(dst)
	if n < 16 {
		for i := range dst {
			dst[i] = scalar()
		}
		return
	}
	for i := range dst {
		dst[i] = uniform()
	}
	for i := 0; i+16 <= n; i += 16 {
		normal16(dst[i : i+16])
	}
	if n%16 != 0 {
		tail := dst[n-16:]
		for i := range tail {
			tail[i] = uniform()
		}
		normal16(tail)
	}
}

func normal16f64(d []float64) {
	for j := 0; j < 8; j++ {
		u1 := 1 - d[j]
		u2 := d[j+8]
		radius := math.Sqrt(-2 * math.Log(u1))
		theta := 2 * math.Pi * u2
		d[j] = radius * math.Cos(theta)
		d[j+8] = radius * math.Sin(theta)
	}
}

// Rand fills dst like torch.rand(len(dst), generator=g) in float32.
func (g *TorchCPU) Rand(dst []float32) {
	for i := range dst {
		dst[i] = g.uniform24()
	}
}

// normal16 is ATen's normal_fill_16_AVX2 with mean 0 and std 1.
func normal16(d []float32) {
	const twoPi = float32(2 * math.Pi)
	for j := 0; j < 8; j++ {
		u1 := 1 - d[j]
		u2 := d[j+8]
		radius := float32(math.Sqrt(float64(-2 * log256(u1))))
		theta := twoPi * u2
		s, c := sincos256(theta)
		d[j] = radius * c
		d[j+8] = radius * s
	}
}
