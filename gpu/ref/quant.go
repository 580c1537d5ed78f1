package ref

// Quantized weight formats: the reference (de)quantizers. The block layouts
// are ggml's (the formats GGUF files hold):
//
//	Q8_0 (34 bytes / 32 weights): fp16 d, 32 int8 q;        w = d*q
//	Q4_0 (18 bytes / 32 weights): fp16 d, 16 bytes;         w = d*(nibble-8)
//	      byte j's low nibble is weight j, its high nibble weight j+16.
//	Q4_K (144 bytes / 256 weights): fp16 d, fp16 dmin, 12 bytes of 6-bit
//	      scales sc[8] and mins m[8] (packing in scaleMin), 128 bytes of
//	      nibbles. Weights 64c..64c+31 are the low nibbles of bytes
//	      32c..32c+31 (sub-block 2c), weights 64c+32..64c+63 their high
//	      nibbles (sub-block 2c+1);  w = d*sc[s]*q - dmin*m[s].
//	Q5_K (176 bytes / 256 weights): as Q4_K with 32 bytes qh between the
//	      scales and the nibbles: bit 2c of qh[l] is the fifth bit of weight
//	      64c+l, bit 2c+1 that of weight 64c+32+l.
//
// F8E4M3 is float8 e4m3fn (no infinities, S.1111.111 is NaN, largest 448);
// F8E5M2 is the top byte of an IEEE half.

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/stepwise/stepwise/gpu"
)

// Dequantize widens n elements of type dt held in raw to float32. Every
// storage type is accepted; raw must hold exactly dt.Bytes(n) bytes.
func Dequantize(dt gpu.DType, raw []byte, n int) ([]float32, error) {
	if want := dt.Bytes(n); want < 0 || len(raw) != want {
		return nil, fmt.Errorf("dequantize %v: %d bytes for %d elements (want %d; %v needs a multiple of %d elements)", dt, len(raw), n, want, dt, dt.Block())
	}
	out := make([]float32, n)
	switch dt {
	case gpu.F32:
		DecodeF32(out, raw)
	case gpu.F16:
		for i := range out {
			out[i] = HalfToFloat(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case gpu.BF16:
		for i := range out {
			out[i] = BF16ToFloat(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case gpu.F8E4M3:
		for i, b := range raw {
			out[i] = E4M3ToFloat(b)
		}
	case gpu.F8E5M2:
		for i, b := range raw {
			out[i] = E5M2ToFloat(b)
		}
	case gpu.Q8_0:
		for bi := 0; bi < n/32; bi++ {
			blk := raw[bi*34:]
			d := HalfToFloat(binary.LittleEndian.Uint16(blk))
			for j := 0; j < 32; j++ {
				out[bi*32+j] = d * float32(int8(blk[2+j]))
			}
		}
	case gpu.Q4_0:
		for bi := 0; bi < n/32; bi++ {
			blk := raw[bi*18:]
			d := HalfToFloat(binary.LittleEndian.Uint16(blk))
			for j := 0; j < 16; j++ {
				q := blk[2+j]
				out[bi*32+j] = d * float32(int(q&15)-8)
				out[bi*32+j+16] = d * float32(int(q>>4)-8)
			}
		}
	case gpu.Q4_K, gpu.Q5_K:
		five := dt == gpu.Q5_K
		bb := dt.BlockBytes()
		for bi := 0; bi < n/256; bi++ {
			blk := raw[bi*bb : (bi+1)*bb]
			d := HalfToFloat(binary.LittleEndian.Uint16(blk))
			dmin := HalfToFloat(binary.LittleEndian.Uint16(blk[2:]))
			scales := blk[4:16]
			qs, qh := blk[16:], []byte(nil)
			if five {
				qh, qs = blk[16:48], blk[48:]
			}
			y := out[bi*256:]
			for c := 0; c < 4; c++ {
				for half := 0; half < 2; half++ {
					s := 2*c + half
					sc, m := scaleMin(scales, s)
					d1, m1 := d*float32(sc), dmin*float32(m)
					for l := 0; l < 32; l++ {
						q := int(qs[32*c+l]>>(4*half)) & 15
						if five && qh[l]>>s&1 != 0 {
							q += 16
						}
						y[64*c+32*half+l] = d1*float32(q) - m1
					}
				}
			}
		}
	default:
		return nil, fmt.Errorf("dequantize: unknown storage type %v", dt)
	}
	return out, nil
}

// scaleMin unpacks the 6-bit scale and min of sub-block j (0..7) from the
// 12 packed bytes of a Q4_K/Q5_K super-block: sub-blocks 0..3 keep theirs
// in the low 6 bits of bytes j and j+4; 4..7 keep their low 4 bits in the
// nibbles of byte j+4 and their top 2 bits in the top bits of bytes j-4
// (scale) and j (min).
func scaleMin(q []byte, j int) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&15 | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

// packScaleMin is scaleMin's inverse for 6-bit sc[8], m[8].
func packScaleMin(sc, m [8]uint8) [12]byte {
	var q [12]byte
	for i := 0; i < 4; i++ {
		q[i] = sc[i] | (sc[i+4]>>4)<<6
		q[i+4] = m[i] | (m[i+4]>>4)<<6
		q[i+8] = sc[i+4]&15 | (m[i+4]&15)<<4
	}
	return q
}

// Quantize encodes vals in type dt (len(vals) must be a whole number of
// blocks). The block quantizers are simple round-to-nearest ones (absmax
// scales, min/max per 32-weight sub-block for the K formats), not ggml's
// error-minimising searches: the bytes are valid ggml blocks, a little
// less accurate than llama.cpp's quantize would make them.
func Quantize(dt gpu.DType, vals []float32) ([]byte, error) {
	n := len(vals)
	size := dt.Bytes(n)
	if size < 0 {
		return nil, fmt.Errorf("quantize %v: %d elements is not a multiple of the %d-element block", dt, n, dt.Block())
	}
	out := make([]byte, size)
	switch dt {
	case gpu.F32:
		return EncodeF32(vals), nil
	case gpu.F16:
		return EncodeF16(vals), nil
	case gpu.BF16:
		return EncodeBF16(vals), nil
	case gpu.F8E4M3:
		for i, v := range vals {
			out[i] = FloatToE4M3(v)
		}
	case gpu.F8E5M2:
		for i, v := range vals {
			out[i] = FloatToE5M2(v)
		}
	case gpu.Q8_0:
		for bi := 0; bi < n/32; bi++ {
			x, blk := vals[bi*32:bi*32+32], out[bi*34:]
			amax := float32(0)
			for _, v := range x {
				amax = max(amax, abs32(v))
			}
			d := amax / 127
			binary.LittleEndian.PutUint16(blk, FloatToHalf(d))
			for j, v := range x {
				if d != 0 {
					blk[2+j] = byte(int8(clampRound(v/d, -127, 127)))
				}
			}
		}
	case gpu.Q4_0:
		for bi := 0; bi < n/32; bi++ {
			x, blk := vals[bi*32:bi*32+32], out[bi*18:]
			var amax, vmax float32 // the value of largest magnitude, signed
			for _, v := range x {
				if abs32(v) > amax {
					amax, vmax = abs32(v), v
				}
			}
			d := vmax / -8
			binary.LittleEndian.PutUint16(blk, FloatToHalf(d))
			for j := 0; j < 16; j++ {
				var lo, hi float32 = 8, 8
				if d != 0 {
					lo = clampRound(x[j]/d+8, 0, 15)
					hi = clampRound(x[j+16]/d+8, 0, 15)
				}
				blk[2+j] = byte(lo) | byte(hi)<<4
			}
		}
	case gpu.Q4_K, gpu.Q5_K:
		for bi := 0; bi < n/256; bi++ {
			quantizeK(dt, vals[bi*256:bi*256+256], out[bi*dt.BlockBytes():(bi+1)*dt.BlockBytes()])
		}
	default:
		return nil, fmt.Errorf("quantize: unknown storage type %v", dt)
	}
	return out, nil
}

// quantizeK encodes one 256-weight super-block: per 32-weight sub-block
// w ≈ scale*q - min with min = -min(0, lowest) and scale = range/qmax;
// scales and mins are then quantized to 6 bits against the super-block's
// d and dmin, and q recomputed against the quantized pair.
func quantizeK(dt gpu.DType, x []float32, blk []byte) {
	qmax := float32(15)
	if dt == gpu.Q5_K {
		qmax = 31
	}
	var scale, mins [8]float32
	var dMax, mMax float32
	for s := 0; s < 8; s++ {
		lo, hi := float32(0), float32(0)
		for _, v := range x[32*s : 32*s+32] {
			lo, hi = min(lo, v), max(hi, v)
		}
		scale[s], mins[s] = (hi-lo)/qmax, -lo
		dMax, mMax = max(dMax, scale[s]), max(mMax, mins[s])
	}
	d, dmin := HalfToFloat(FloatToHalf(dMax/63)), HalfToFloat(FloatToHalf(mMax/63))
	var sc, m [8]uint8
	for s := 0; s < 8; s++ {
		if d > 0 {
			sc[s] = uint8(clampRound(scale[s]/d, 0, 63))
			if sc[s] == 0 && scale[s] > 0 {
				sc[s] = 1
			}
		}
		if dmin > 0 {
			m[s] = uint8(math.Ceil(float64(min(mins[s]/dmin, 63))))
		}
	}
	binary.LittleEndian.PutUint16(blk, FloatToHalf(d))
	binary.LittleEndian.PutUint16(blk[2:], FloatToHalf(dmin))
	packed := packScaleMin(sc, m)
	copy(blk[4:16], packed[:])
	qs, qh := blk[16:], []byte(nil)
	if dt == gpu.Q5_K {
		qh, qs = blk[16:48], blk[48:]
	}
	for s := 0; s < 8; s++ {
		c, half := s/2, s%2
		step, off := d*float32(sc[s]), dmin*float32(m[s])
		for l := 0; l < 32; l++ {
			q := float32(0)
			if step > 0 {
				q = clampRound((x[32*s+l]+off)/step, 0, qmax)
			}
			qi := uint8(q)
			qs[32*c+l] |= (qi & 15) << (4 * half)
			if qi >= 16 {
				qh[l] |= 1 << s
			}
		}
	}
}

func abs32(v float32) float32 { return float32(math.Abs(float64(v))) }

// clampRound rounds v half away from zero (C's roundf) into [lo, hi]; NaN
// gives lo.
func clampRound(v, lo, hi float32) float32 {
	r := float32(math.Round(float64(v)))
	if !(r >= lo) {
		return lo
	}
	return min(r, hi)
}

// E4M3ToFloat widens a float8 e4m3fn value exactly.
func E4M3ToFloat(b uint8) float32 {
	sign := float32(1)
	if b&0x80 != 0 {
		sign = -1
	}
	e, m := int(b>>3)&15, float64(b&7)
	switch {
	case e == 15 && m == 7:
		return float32(math.NaN())
	case e == 0:
		return sign * float32(math.Ldexp(m, -9))
	}
	return sign * float32(math.Ldexp(8+m, e-10))
}

// FloatToE4M3 rounds f to the nearest e4m3fn value (ties to even),
// saturating at ±448; NaN stays NaN.
func FloatToE4M3(f float32) uint8 {
	if f != f {
		return 0x7f
	}
	var sign uint8
	if math.Signbit(float64(f)) {
		sign, f = 0x80, -f
	}
	x := float64(f)
	if x >= 448 {
		return sign | 0x7e
	}
	if x < math.Ldexp(1, -6) { // subnormal: multiples of 2^-9 (8 rounds up to the smallest normal)
		return sign | uint8(math.RoundToEven(math.Ldexp(x, 9)))
	}
	frac, exp := math.Frexp(x) // x = frac * 2^exp, frac in [0.5, 1)
	e := exp - 1               // x = (2*frac) * 2^e
	m := math.RoundToEven((2*frac - 1) * 8)
	if m == 8 {
		m, e = 0, e+1
	}
	if e+7 > 15 || (e+7 == 15 && m == 7) {
		return sign | 0x7e
	}
	return sign | uint8(e+7)<<3 | uint8(m)
}

// E5M2ToFloat widens a float8 e5m2 value: the top byte of a half.
func E5M2ToFloat(b uint8) float32 { return HalfToFloat(uint16(b) << 8) }

// FloatToE5M2 rounds f to the nearest e5m2 value (through the half, ties to
// even), saturating finite values at ±57344.
func FloatToE5M2(f float32) uint8 {
	if f != f {
		return 0x7e
	}
	h := FloatToHalf(f)
	if h&0x7c00 == 0x7c00 { // ±Inf from the half: saturate
		return uint8(h>>8)&0x80 | 0x7b
	}
	r := uint32(h) + 0x7f + uint32(h>>8&1)
	if r>>8&0x7c == 0x7c { // rounded up into Inf
		return uint8(h>>8)&0x80 | 0x7b
	}
	return uint8(r >> 8)
}
