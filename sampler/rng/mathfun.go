package rng

import "math"

// This file evaluates, one lane at a time, the float32 Cephes polynomials
// that PyTorch's AVX2 normal kernel uses for ln, sin and cos (ATen's
// avx_mathfun.h, after Julien Pommier's sse_mathfun). The multiply-adds that
// the compiler contracts into FMA instructions in that build are written as
// fma32 here; every other operation is one correctly rounded float32 step.

// fma32 returns a*b+c rounded once to float32.
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b) // exact: 24+24 bits
	cd := float64(c)
	s := p + cd
	// TwoSum: the exact error of s.
	bv := s - p
	e := (p - (s - bv)) + (cd - bv)
	if e != 0 {
		// If s sits exactly halfway between two float32 values, the rounding
		// of s to float32 would tie; the exact sum lies on e's side of it.
		f := float32(s)
		lo, hi := float64(f), float64(f)
		if float64(f) < s {
			hi = float64(math.Nextafter32(f, float32(math.Inf(1))))
		} else if float64(f) > s {
			lo = float64(math.Nextafter32(f, float32(math.Inf(-1))))
		}
		if lo != hi && s-lo == hi-s {
			if e > 0 {
				return float32(hi)
			}
			return float32(lo)
		}
	}
	return float32(s)
}

// Cephes constants exactly as avx_mathfun.h spells them (rounded to float32).
const (
	cephesSQRTHF = float32(0.707106781186547524)
	logP0        = float32(7.0376836292e-2)
	logP1        = float32(-1.1514610310e-1)
	logP2        = float32(1.1676998740e-1)
	logP3        = float32(-1.2420140846e-1)
	logP4        = float32(+1.4249322787e-1)
	logP5        = float32(-1.6668057665e-1)
	logP6        = float32(+2.0000714765e-1)
	logP7        = float32(-2.4999993993e-1)
	logP8        = float32(+3.3333331174e-1)
	logQ1        = float32(-2.12194440e-4)
	logQ2        = float32(0.693359375)

	minusDP1   = float32(-0.78515625)
	minusDP2   = float32(-2.4187564849853515625e-4)
	minusDP3   = float32(-3.77489497744594108e-8)
	sinP0      = float32(-1.9515295891e-4)
	sinP1      = float32(8.3321608736e-3)
	sinP2      = float32(-1.6666654611e-1)
	cosP0      = float32(2.443315711809948e-005)
	cosP1      = float32(-1.388731625493765e-003)
	cosP2      = float32(4.166664568298827e-002)
	cephesFOPI = float32(1.27323954473516)
)

// log256 is avx_mathfun's log256_ps for one positive, normal lane (the
// uniforms fed to it are in (0, 1]).
func log256(x float32) float32 {
	if x <= 0 {
		return float32(math.NaN())
	}
	if x < 0x1p-126 {
		x = 0x1p-126
	}
	bits := math.Float32bits(x)
	e := float32(int32(bits>>23) - 0x7f)
	x = math.Float32frombits(bits&^0x7f800000 | math.Float32bits(0.5))
	e = e + 1
	var tmp float32
	mask := x < cephesSQRTHF
	if mask {
		tmp = x
	}
	x = x - 1
	if mask {
		e = e - 1
	}
	x = x + tmp

	z := x * x
	y := fma32(logP0, x, logP1)
	y = fma32(y, x, logP2)
	y = fma32(y, x, logP3)
	y = fma32(y, x, logP4)
	y = fma32(y, x, logP5)
	y = fma32(y, x, logP6)
	y = fma32(y, x, logP7)
	y = fma32(y, x, logP8)
	y = y * x
	// The compiler fuses y*z into the following add of e*q1 (not the other
	// way round); found by matching torch's output bit for bit.
	y = fma32(y, z, e*logQ1)
	y = fma32(z, -0.5, y)
	x = x + y
	x = fma32(e, logQ2, x)
	return x
}

// sincos256 is avx_mathfun's sincos256_ps for one lane.
func sincos256(x float32) (s, c float32) {
	signSin := math.Float32bits(x) & 0x80000000
	x = math.Float32frombits(math.Float32bits(x) &^ 0x80000000)
	y := x * cephesFOPI
	j := int32(y)
	j = (j + 1) &^ 1
	y = float32(j)
	swapSin := uint32(j&4) << 29
	polyMask := j&2 == 0

	x = fma32(y, minusDP1, x)
	x = fma32(y, minusDP2, x)
	x = fma32(y, minusDP3, x)

	signCos := uint32(^(j-2)&4) << 29
	signSin ^= swapSin

	z := x * x
	yc := fma32(cosP0, z, cosP1)
	yc = fma32(yc, z, cosP2)
	yc = yc * z
	yc = fma32(yc, z, -(z * 0.5)) // likewise fused: (yc*z) - z*0.5
	yc = yc + 1

	ys := fma32(sinP0, z, sinP1)
	ys = fma32(ys, z, sinP2)
	ys = ys * z
	ys = fma32(ys, x, x)

	var sv, cv float32
	if polyMask {
		sv, cv = ys, yc
	} else {
		sv, cv = yc, ys
	}
	s = math.Float32frombits(math.Float32bits(sv) ^ signSin)
	c = math.Float32frombits(math.Float32bits(cv) ^ signCos)
	return s, c
}
