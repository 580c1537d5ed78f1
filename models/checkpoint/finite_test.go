package checkpoint

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models/nets"
)

// slowNonFinite is the oracle: one value at a time, decoded the obvious way.
func slowNonFinite(dt gpu.DType, raw []byte) int64 {
	var n int64
	switch dt {
	case gpu.F16:
		for i := 0; i+2 <= len(raw); i += 2 {
			if h := binary.LittleEndian.Uint16(raw[i:]); h&0x7C00 == 0x7C00 {
				n++
			}
		}
	case gpu.BF16:
		for i := 0; i+2 <= len(raw); i += 2 {
			f := math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[i:])) << 16)
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				n++
			}
		}
	case gpu.F32:
		for i := 0; i+4 <= len(raw); i += 4 {
			f := math.Float32frombits(binary.LittleEndian.Uint32(raw[i:]))
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				n++
			}
		}
	}
	return n
}

func TestCountNonFiniteEvery16BitPattern(t *testing.T) {
	raw := make([]byte, 2*65536)
	for v := range 65536 {
		binary.LittleEndian.PutUint16(raw[2*v:], uint16(v))
	}
	// F16: exponent 0x1F with any sign and mantissa: 2 * 1024 patterns.
	got := CountNonFinite(gpu.F16, raw)
	assert.Equal(t, int64(2048), got, "F16: %d non-finite patterns, want 2048", got)
	// BF16: exponent 0xFF with any sign and 7-bit mantissa: 2 * 128.
	got = CountNonFinite(gpu.BF16, raw)
	assert.Equal(t, int64(256), got, "BF16: %d non-finite patterns, want 256", got)
	for _, dt := range []gpu.DType{gpu.F16, gpu.BF16} {
		got, want := CountNonFinite(dt, raw), slowNonFinite(dt, raw)
		assert.Equal(t, want, got, "%v: %d, oracle %d", dt, got, want)
	}
}

func TestCountNonFiniteMatchesOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	specials32 := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), math.MaxFloat32, -0, 1e-45}
	for trial := range 300 {
		n := r.IntN(200) * 4 // every length up to 800 bytes, tails of all sizes
		raw := make([]byte, n)
		for i := range raw {
			raw[i] = byte(r.Uint32())
		}
		// Sprinkle exact specials so the F32 case sees some.
		for k := 0; k+4 <= n && k < 40; k += 4 {
			if r.IntN(3) == 0 {
				binary.LittleEndian.PutUint32(raw[4*r.IntN(n/4):], math.Float32bits(specials32[r.IntN(len(specials32))]))
			}
		}
		for _, dt := range []gpu.DType{gpu.F16, gpu.BF16, gpu.F32} {
			got, want := CountNonFinite(dt, raw), slowNonFinite(dt, raw)
			require.Equal(t, want, got, "trial %d, %v, %d bytes: %d, oracle %d", trial, dt, n, got, want)
		}
	}
	// A lone NaN in the last value of an odd-length F16 tensor (tail path).
	raw := make([]byte, 2*37)
	binary.LittleEndian.PutUint16(raw[2*36:], 0x7E00)
	got := CountNonFinite(gpu.F16, raw)
	assert.Equal(t, int64(1), got, "tail NaN: %d", got)
	got = CountNonFinite(gpu.DType(99), raw)
	assert.Equal(t, int64(0), got, "unknown dtype counted %d", got)
}

func TestCheckFiniteNamesTensors(t *testing.T) {
	f16 := func(vals ...uint16) []byte {
		b := make([]byte, 2*len(vals))
		for i, v := range vals {
			binary.LittleEndian.PutUint16(b[2*i:], v)
		}
		return b
	}
	m := &Model{Path: "x.safetensors",
		UNetWeights: nets.MapWeights{
			"conv_in.weight": {DType: gpu.F16, Shape: []int{4}, Raw: f16(0x3C00, 0x7E00, 0xFC00, 0)},
			"conv_in.bias":   {DType: gpu.F16, Shape: []int{2}, Raw: f16(0x3C00, 0x3C00)},
		},
		VAEWeights: nets.MapWeights{
			"decoder.conv_out.bias": {DType: gpu.F32, Shape: []int{2}, Raw: binary.LittleEndian.AppendUint32(
				binary.LittleEndian.AppendUint32(nil, math.Float32bits(1)), math.Float32bits(float32(math.Inf(1))))},
		},
		Texts:   []TextModel{{Spec: TextSpec{Role: "text_encoder"}, Weights: nets.MapWeights{}}},
		origins: map[string]origin{"unet/conv_in.weight": {file: "x.safetensors", key: "model.diffusion_model.input_blocks.0.0.weight"}},
	}
	err := m.CheckFinite("text_encoder")
	require.NoError(t, err, "empty text encoder: %v", err)
	err = m.CheckFinite("unet")
	var ne *NonFiniteError
	require.ErrorAs(t, err, &ne, "unet: %v", err)
	require.Len(t, ne.Tensors, 1, "unet: %v", err)
	got := ne.Tensors[0]
	assert.Equal(t, int64(2), got.Count, "unet: %+v", got)
	assert.Equal(t, int64(4), got.Total, "unet: %+v", got)
	assert.Equal(t, "model.diffusion_model.input_blocks.0.0.weight", got.Key, "unet: %+v", got)
	assert.Equal(t, "conv_in.weight", got.Param, "unet: %+v", got)
	for _, want := range []string{"x.safetensors", `"model.diffusion_model.input_blocks.0.0.weight" (unet conv_in.weight)`, "2 of 4 values are NaN or Inf"} {
		assert.ErrorContains(t, err, want, "message lacks %q:\n%v", want, err)
	}
	err = m.CheckFinite()
	if assert.ErrorAs(t, err, &ne, "all components: %v", err) {
		assert.Len(t, ne.Tensors, 2, "all components: %v", err)
	}
	assert.ErrorContains(t, err, `"decoder.conv_out.bias": 1 of 2 values`, "all components: %v", err)
	err = m.CheckFinite("transformer")
	assert.ErrorContains(t, err, `"transformer"`, "unknown component: %v", err)
}

// BenchmarkCountNonFinite measures the scan over 64 MiB of finite F16
// weights (the common case: nothing found), in bytes per second.
func BenchmarkCountNonFinite(b *testing.B) {
	raw := make([]byte, 64<<20)
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < len(raw); i += 2 {
		binary.LittleEndian.PutUint16(raw[i:], uint16(r.Uint32())&0xBBFF) // never an all-ones exponent
	}
	for _, dt := range []gpu.DType{gpu.F16, gpu.BF16, gpu.F32} {
		b.Run(dt.String(), func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			for range b.N {
				if n := CountNonFinite(dt, raw); dt == gpu.F16 && n != 0 {
					b.Fatal(n)
				}
			}
		})
	}
}

// BenchmarkCheckFinite scans a model-sized set of tensors (SD 1.5's U-Net
// shapes at fp16 would be 1.7 GB; 256 tensors of 1 MiB here) with the
// parallel workers.
func BenchmarkCheckFinite(b *testing.B) {
	w := nets.MapWeights{}
	for i := range 256 {
		w[strings.Repeat("x", i+1)] = nets.Param{DType: gpu.F16, Shape: []int{1 << 19}, Raw: make([]byte, 1<<20)}
	}
	m := &Model{UNetWeights: w}
	b.SetBytes(256 << 20)
	for range b.N {
		if err := m.CheckFinite("unet"); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzCountNonFinite compares the eight-bytes-at-a-time scan with the
// one-value-at-a-time oracle on arbitrary bytes, for every storage type.
func FuzzCountNonFinite(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, dt := range []gpu.DType{gpu.F16, gpu.BF16, gpu.F32} {
			n := len(raw) / dt.Size() * dt.Size()
			got, want := CountNonFinite(dt, raw[:n]), slowNonFinite(dt, raw[:n])
			require.Equal(t, want, got, "%v over %d bytes: %d, oracle %d", dt, n, got, want)
		}
	})
}
