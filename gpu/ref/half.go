package ref

import (
	"encoding/binary"
	"math"
	"sync"
)

// HalfToFloat widens an IEEE 754 binary16 bit pattern to float32 exactly,
// including subnormals, infinities and NaNs (the payload is kept).
func HalfToFloat(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0 && mant == 0: // signed zero
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: mant * 2^-24, exact in float32
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	case exp == 0x1f: // infinity or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// halfTable returns HalfToFloat of every bit pattern (256 KiB, built on
// first use): widening F16 weights on every op is then one lookup each.
var halfTable = sync.OnceValue(func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for h := range t {
		t[h] = HalfToFloat(uint16(h))
	}
	return &t
})

// FloatToHalf rounds f to the nearest binary16 value (ties to even), the
// rounding of PyTorch's .half(). Values beyond the largest half (65504, after
// rounding) become infinities; NaNs stay NaNs.
func FloatToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>13) // quiet NaN, top payload bits
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15 // biased half exponent
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Half subnormal n * 2^-24. The float32 value is m * 2^(exp-150)
		// with the implicit bit in m, so n = m / 2^(14-e).
		if e < -10 {
			return sign // below half the smallest subnormal: rounds to zero
		}
		m := mant | 0x800000
		shift := uint(14 - e)
		return sign | uint16(roundShift(m, shift))
	}
	// Normal: keep 10 mantissa bits; a carry out of the mantissa correctly
	// bumps the exponent (and turns 65520.. into infinity).
	return sign | uint16(uint32(e)<<10+roundShift(mant, 13))
}

// roundShift returns m >> shift rounded to nearest, ties to even.
func roundShift(m uint32, shift uint) uint32 {
	n := m >> shift
	rem := m & (1<<shift - 1)
	half := uint32(1) << (shift - 1)
	if rem > half || rem == half && n&1 == 1 {
		n++
	}
	return n
}

// BF16ToFloat widens a bfloat16 bit pattern to float32 (exact: bfloat16 is
// the top half of a float32).
func BF16ToFloat(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// FloatToBF16 rounds f to the nearest bfloat16 (ties to even), as PyTorch's
// .bfloat16() does; NaNs stay quiet NaNs.
func FloatToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// DecodeF32 fills dst from little-endian float32 bytes; len(raw) must be
// 4*len(dst).
func DecodeF32(dst []float32, raw []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
}

// EncodeF16 packs values as little-endian binary16 bytes (round to nearest
// even), ready for UploadRaw(gpu.F16, ...).
func EncodeF16(vals []float32) []byte {
	raw := make([]byte, 2*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint16(raw[2*i:], FloatToHalf(v))
	}
	return raw
}

// EncodeBF16 packs values as little-endian bfloat16 bytes (round to nearest
// even), ready for UploadRaw(gpu.BF16, ...).
func EncodeBF16(vals []float32) []byte {
	raw := make([]byte, 2*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint16(raw[2*i:], FloatToBF16(v))
	}
	return raw
}

// EncodeF32 packs values as little-endian float32 bytes.
func EncodeF32(vals []float32) []byte {
	raw := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return raw
}
