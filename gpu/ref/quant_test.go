package ref

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
)

// Hand-made blocks: known bytes give known floats (the layouts of ggml's
// dequantize_row_* functions).
func TestDequantizeHand(t *testing.T) {
	t.Run("Q8_0", func(t *testing.T) {
		blk := make([]byte, 34)
		blk[0], blk[1] = 0x00, 0x38 // fp16 0.5
		blk[2], blk[3], blk[4], blk[5] = 1, 0xfe, 127, 0x80
		got, err := Dequantize(gpu.Q8_0, blk, 32)
		require.NoError(t, err)
		assert.Equal(t, []float32{0.5, -1, 63.5, -64, 0}, got[:5])
	})
	t.Run("Q4_0", func(t *testing.T) {
		blk := make([]byte, 18)
		blk[0], blk[1] = 0x00, 0x40 // fp16 2
		for j := 2; j < 18; j++ {
			blk[j] = 0x88 // zero
		}
		blk[2], blk[3] = 0x9f, 0x08
		got, err := Dequantize(gpu.Q4_0, blk, 32)
		require.NoError(t, err)
		assert.Equal(t, float32(14), got[0])   // low nibble 15
		assert.Equal(t, float32(2), got[16])   // high nibble 9
		assert.Equal(t, float32(0), got[1])    // low nibble 8
		assert.Equal(t, float32(-16), got[17]) // high nibble 0
		assert.Equal(t, float32(0), got[31])
	})
	for _, dt := range []gpu.DType{gpu.Q4_K, gpu.Q5_K} {
		t.Run(dt.String(), func(t *testing.T) {
			blk := make([]byte, dt.BlockBytes())
			blk[0], blk[1] = 0x00, 0x3c // d = 1
			blk[2], blk[3] = 0x00, 0x38 // dmin = 0.5
			sc := blk[4:16]
			sc[0], sc[4] = 2, 4 // sub-block 0: scale 2, min 4
			// sub-block 5: scale 35 (0b100011), min 49 (0b110001): low
			// nibbles in byte 9, top bits in bytes 1 (scale) and 5 (min).
			sc[9] = 0x13
			sc[1] |= 2 << 6
			sc[5] |= 3 << 6
			qs := blk[16:]
			if dt == gpu.Q5_K {
				qh := blk[16:48]
				qs = blk[48:]
				qh[0] = 1 | 1<<5 // fifth bit of weights 0 (sub-block 0) and 160 (sub-block 5)
			}
			qs[0] = 0x07  // weight 0: 7
			qs[64] = 0xa0 // weight 160 (high nibble of byte 64): 10
			got, err := Dequantize(dt, blk, 256)
			require.NoError(t, err)
			w0, w160 := float32(2*7-0.5*4), float32(35*10-0.5*49)
			if dt == gpu.Q5_K {
				w0, w160 = 2*23-0.5*4, 35*26-0.5*49
			}
			assert.Equal(t, w0, got[0])
			assert.Equal(t, float32(-2), got[1])      // sub-block 0, q = 0
			assert.Equal(t, float32(0), got[128])     // sub-block 4: scale 0, min 0
			assert.Equal(t, w160, got[160])           // sub-block 5
			assert.Equal(t, float32(-24.5), got[161]) // sub-block 5, q = 0
		})
	}
	t.Run("F8", func(t *testing.T) {
		assert.Equal(t, float32(1), E4M3ToFloat(0x38))
		assert.Equal(t, float32(448), E4M3ToFloat(0x7e))
		assert.Equal(t, float32(math.Ldexp(1, -9)), E4M3ToFloat(0x01))
		assert.Equal(t, float32(-3), E4M3ToFloat(0xc4))
		assert.True(t, math.IsNaN(float64(E4M3ToFloat(0x7f))))
		assert.Equal(t, float32(1), E5M2ToFloat(0x3c))
		assert.Equal(t, float32(57344), E5M2ToFloat(0x7b))
		assert.Equal(t, float32(math.Ldexp(1, -16)), E5M2ToFloat(0x01))
	})
}

// Every finite fp8 value survives encode(decode(b)); rounding goes to the
// nearest value and saturates.
func TestFP8RoundTrip(t *testing.T) {
	for b := 0; b < 256; b++ {
		if b&0x7f != 0x7f {
			assert.Equal(t, uint8(b), FloatToE4M3(E4M3ToFloat(uint8(b))), "e4m3 %#x", b)
		}
		if b&0x7c != 0x7c {
			assert.Equal(t, uint8(b), FloatToE5M2(E5M2ToFloat(uint8(b))), "e5m2 %#x", b)
		}
	}
	assert.Equal(t, uint8(0x7e), FloatToE4M3(1e6))
	assert.Equal(t, uint8(0x38), FloatToE4M3(1.06)) // 1.0625 is the tie between 1 and 1.125: 1.06 rounds down
	assert.Equal(t, uint8(0x39), FloatToE4M3(1.07))
	assert.Equal(t, uint8(0xfb), FloatToE5M2(-1e9))
}

// Quantize then Dequantize stays within each format's step: the bound is
// what the formats give for N(0,1) weights (measured RMS: Q8_0 0.0053, Q4_0
// 0.087, Q4_K 0.081, Q5_K 0.039, F8_E4M3 0.027, F8_E5M2 0.054; the bounds
// are those plus about 15%).
func TestQuantizeRoundTrip(t *testing.T) {
	vals := randVals(3, 4096)
	for _, c := range []struct {
		dt  gpu.DType
		rms float64
	}{{gpu.Q8_0, 0.006}, {gpu.Q4_0, 0.1}, {gpu.Q4_K, 0.095}, {gpu.Q5_K, 0.045}, {gpu.F8E4M3, 0.031}, {gpu.F8E5M2, 0.062}} {
		raw, err := Quantize(c.dt, vals)
		require.NoError(t, err, "%v", c.dt)
		require.Len(t, raw, c.dt.Bytes(len(vals)))
		got, err := Dequantize(c.dt, raw, len(vals))
		require.NoError(t, err)
		var se float64
		for i := range vals {
			e := float64(got[i] - vals[i])
			se += e * e
		}
		rms := math.Sqrt(se / float64(len(vals)))
		t.Logf("%v: RMS error %.4f", c.dt, rms)
		assert.Less(t, rms, c.rms, "%v", c.dt)
	}
	_, err := Quantize(gpu.Q4_K, vals[:100])
	assert.ErrorContains(t, err, "not a multiple of the 256-element block")
	_, err = Dequantize(gpu.Q8_0, make([]byte, 33), 32)
	assert.ErrorContains(t, err, "33 bytes for 32 elements")
}

// MatMul with a quantized weight equals MatMul with its dequantized F32
// copy exactly on the reference device.
func TestMatMulQuantizedWeight(t *testing.T) {
	d := New()
	defer d.Close()
	const M, N, K = 5, 7, 256
	a := d.Upload(randVals(1, M*K), M, K)
	wv := randVals(2, N*K)
	for _, dt := range []gpu.DType{gpu.Q8_0, gpu.Q4_0, gpu.Q4_K, gpu.Q5_K, gpu.F8E4M3, gpu.F8E5M2} {
		raw, err := Quantize(dt, wv)
		require.NoError(t, err)
		deq, err := Dequantize(dt, raw, N*K)
		require.NoError(t, err)
		got := down(t, d, d.MatMul(a, d.UploadRaw(dt, raw, N, K), gpu.MatMulOpts{TransB: true}))
		want := down(t, d, d.MatMul(a, d.Upload(deq, N, K), gpu.MatMulOpts{TransB: true}))
		require.NoError(t, d.Err())
		assert.Equal(t, want, got, "%v", dt)
	}
	d.UploadRaw(gpu.Q8_0, make([]byte, 34), 3, 16) // 48 elements: not whole blocks
	assert.ErrorContains(t, d.Err(), "Q8_0 blocks hold 32")
}
