package models

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
)

// randomLazy is a nets.Weights that synthesises each tensor when asked,
// the same bytes every time (seeded by the tensor's name), directly in its
// storage type: nothing is held between calls, so a 12 B-parameter model
// never exists on the host at once, and a quantized weight is made as
// random blocks (no fp32 copy). Linear weights (2-D ".weight" whose rows
// are whole blocks) take dt, other matrices F16, vectors F16 ones
// (".weight") or zeros. Values have variance 1/fan_in, as RandomModel's.
type randomLazy struct {
	shapes map[string][]int
	seed   uint64
	dt     gpu.DType
}

func newRandomLazy(shapes map[string][]int, seed uint64, dt gpu.DType) randomLazy {
	return randomLazy{shapes: shapes, seed: seed, dt: dt}
}

// Get implements nets.Weights.
func (w randomLazy) Get(name string) (nets.Param, bool) {
	shape, ok := w.shapes[name]
	if !ok {
		return nets.Param{}, false
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	r := rand.New(rand.NewPCG(w.seed, h.Sum64()))
	n := gpu.Shape(shape).Numel()
	p := nets.Param{DType: gpu.F16, Shape: shape}
	switch {
	case len(shape) == 1:
		v := uint16(0)
		if strings.HasSuffix(name, ".weight") {
			v = ref.FloatToHalf(1)
		}
		p.Raw = make([]byte, 2*n)
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint16(p.Raw[2*i:], v)
		}
	case w.dt.Quantized() && strings.HasSuffix(name, ".weight") && nets.QuantizableRow(w.dt, shape):
		p.DType, p.Raw = w.dt, RandomQuantized(w.dt, n, 1/math.Sqrt(float64(n/shape[0])), r)
	default:
		p.Raw = RandomQuantized(gpu.F16, n, 1/math.Sqrt(float64(n/shape[0])), r)
	}
	return p, true
}

// RandomQuantized returns n random values of standard deviation sigma and
// mean 0 in storage type dt (F16, fp8 or a block format; n whole blocks),
// made as random bytes: uniform quants under a fixed scale for the block
// formats, draws from a table of normal quantiles for F16 and fp8.
func RandomQuantized(dt gpu.DType, n int, sigma float64, r *rand.Rand) []byte {
	raw := make([]byte, max(dt.Bytes(n), 0))
	for i := 0; i+8 <= len(raw); i += 8 {
		binary.LittleEndian.PutUint64(raw[i:], r.Uint64())
	}
	for i := len(raw) / 8 * 8; i < len(raw); i++ {
		raw[i] = byte(r.Uint32())
	}
	half := func(v float64) [2]byte {
		var b [2]byte
		binary.LittleEndian.PutUint16(b[:], ref.FloatToHalf(float32(v)))
		return b
	}
	bb := dt.BlockBytes()
	// normal is the normal quantile at the middle of the i-th of n equal slices.
	normal := func(i, n int) float64 { return sigma * math.Sqrt2 * math.Erfinv(2*(float64(i)+0.5)/float64(n)-1) }
	switch dt {
	case gpu.F16: // 4096 normal quantiles, indexed by 12 random bits
		var table [4096]uint16
		for i := range table {
			table[i] = ref.FloatToHalf(float32(normal(i, len(table))))
		}
		for i := 0; i < n; i++ {
			j := binary.LittleEndian.Uint16(raw[2*i:]) & 4095
			binary.LittleEndian.PutUint16(raw[2*i:], table[j])
		}
	case gpu.F8E4M3, gpu.F8E5M2:
		var table [256]byte
		for i := range table {
			v := float32(normal(i, len(table)))
			if dt == gpu.F8E4M3 {
				table[i] = ref.FloatToE4M3(v)
			} else {
				table[i] = ref.FloatToE5M2(v)
			}
		}
		for i, b := range raw {
			raw[i] = table[b]
		}
	case gpu.Q8_0: // int8 uniform on [-128, 127]: variance ~ 128^2/3
		d := half(sigma * math.Sqrt(3) / 128)
		for b := 0; b < len(raw); b += bb {
			copy(raw[b:], d[:])
		}
	case gpu.Q4_0: // q - 8 uniform on [-8, 7]: variance 21.25, mean -1/2 (d's sign alternates by block to cancel it)
		d, nd := half(sigma/math.Sqrt(21.25)), half(-sigma/math.Sqrt(21.25))
		for b := 0; b < len(raw); b += bb {
			if b/bb%2 == 0 {
				copy(raw[b:], d[:])
			} else {
				copy(raw[b:], nd[:])
			}
		}
	case gpu.Q4_K, gpu.Q5_K:
		// Every sub-block scale 2 and min qmax: w = d*(2q - qmax),
		// centred, variance d^2 * 4 * ((qmax+1)^2 - 1) / 12.
		qmax := 15.0
		if dt == gpu.Q5_K {
			qmax = 31
		}
		d := half(sigma / math.Sqrt(4*((qmax+1)*(qmax+1)-1)/12))
		var scales [12]byte
		m := byte(qmax)
		for i := 0; i < 4; i++ { // the 6-bit packing of gpu/ref's scaleMin
			scales[i] = 2
			scales[i+4] = m&63 | (m>>4)<<6
			scales[i+8] = 2 | (m&15)<<4
		}
		for b := 0; b < len(raw); b += bb {
			copy(raw[b:], d[:])
			copy(raw[b+2:], d[:]) // dmin = d
			copy(raw[b+4:], scales[:])
		}
	}
	return raw
}

// randomFlux synthesises FLUX.1-dev (19 double- and 38 single-stream
// blocks, 12 B parameters) with CLIP-L, T5-XXL and the 16-channel VAE, its
// weights made on demand in dt (randomLazy). The T5 tokenizer is a small
// synthetic Unigram vocabulary written to the temporary folder.
func randomFlux(seed uint64, dt gpu.DType) (*checkpoint.Model, error) {
	fam := checkpoint.FamilyNamed("Flux")
	if fam == nil || fam.T5 == nil || len(fam.Texts) == 0 {
		return nil, fmt.Errorf("random flux: no Flux family")
	}
	fc := nets.FluxConfig{GuidanceEmbeds: true}
	fc.Defaults()
	shift, no := 0.1159, false
	m := &checkpoint.Model{Path: "random:flux", Layout: "random", Spec: fam, Family: fam.Name,
		FamilyWhy: "synthesised with FLUX.1-dev's shapes", Flux: &fc, Scheduler: fam.Scheduler,
		VAE: nets.VAEConfig{LatentChannels: 16, ScalingFactor: 0.3611, ShiftFactor: &shift, UseQuantConv: &no, UsePostQuantConv: &no}}
	m.VAE.Defaults()
	shapes := func(ds []nets.Decl, err error) (map[string][]int, error) {
		out := map[string][]int{}
		for _, d := range ds {
			out[d.Name] = d.Shape
		}
		return out, err
	}
	r := rand.New(rand.NewPCG(seed, 0xf1c5))
	ts, err := shapes(nets.FluxDecls(fc))
	if err != nil {
		return nil, err
	}
	m.TransformerWeights = newRandomLazy(ts, r.Uint64(), dt)
	m.VAEWeights = newRandomLazy(nets.ExpectedVAE(m.VAE), r.Uint64(), gpu.F16)
	tc := nets.TextConfig{}
	tc.Defaults()
	m.Texts = []checkpoint.TextModel{{Spec: fam.Texts[0], Config: tc, Pad: fam.Texts[0].Pad,
		Weights: newRandomLazy(nets.ExpectedText(tc), r.Uint64(), dt)}}
	t5 := &checkpoint.T5Model{Spec: *fam.T5}
	t5.Config.Defaults()
	t5s, err := shapes(nets.T5Decls(t5.Config))
	if err != nil {
		return nil, err
	}
	t5.Weights = newRandomLazy(t5s, r.Uint64(), dt)
	if t5.Tokenizer, err = randomT5Tokenizer(); err != nil {
		return nil, err
	}
	m.T5 = t5
	return m, nil
}

// randomT5Tokenizer writes a tokenizer.json with T5's special ids (0 pad,
// 1 end, 2 unknown) and the lowercase letters, enough for a benchmark
// prompt, and returns its path.
func randomT5Tokenizer() (string, error) {
	vocab := [][]any{{"<pad>", 0}, {"</s>", 0}, {"<unk>", 0}, {"\u2581", -2}}
	for c := 'a'; c <= 'z'; c++ {
		vocab = append(vocab, []any{string(c), -3}, []any{"\u2581" + string(c), -3})
	}
	js, err := json.Marshal(map[string]any{
		"added_tokens": []map[string]any{{"id": 0, "content": "<pad>", "special": true}, {"id": 1, "content": "</s>", "special": true}, {"id": 2, "content": "<unk>", "special": true}},
		"model":        map[string]any{"type": "Unigram", "unk_id": 2, "vocab": vocab},
	})
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "stepwise-random-t5-")
	if err != nil {
		return "", fmt.Errorf("random flux: %w", err)
	}
	p := filepath.Join(dir, "tokenizer.json")
	return p, os.WriteFile(p, js, 0o644)
}
