package models

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
)

// RandomKinds lists the architectures RandomModel can synthesise.
var RandomKinds = []string{"sd15", "sd15-mini", "sd2", "sdxl", "flux"}

// RandomModel synthesises a checkpoint with random fp16 weights and the
// exact shapes of a known architecture: "sd15" (Stable Diffusion 1.5, 1.07 B
// parameters, 2.1 GB), "sd15-mini" (the golden test model's topology), "sd2"
// (SD 2.1 768-v) or "sdxl" (SDXL base 1.0, 3.5 B parameters, 6.9 GB).
// Weights are N(0, 1/fan_in) so activations stay finite; 1-D parameters
// (biases, norm scales) are zero and one, so norms are
// identity. For benchmarks: the numbers mean nothing, the work is real.
func RandomModel(kind string, seed uint64) (*checkpoint.Model, error) {
	return RandomModelAs(kind, seed, gpu.F16)
}

// RandomModelAs is RandomModel with the linear weights in storage type dt
// (see randomLazy); F16 is RandomModel's eager fp16 weights. "flux" (FLUX.1-dev's
// shapes, with T5-XXL) is synthesised only this way.
func RandomModelAs(kind string, seed uint64, dt gpu.DType) (*checkpoint.Model, error) {
	if kind == "flux" {
		return randomFlux(seed, dt)
	}
	randomWeights := func(shapes map[string][]int, r *rand.Rand) nets.Weights { return randomWeights(shapes, r) }
	if dt != gpu.F16 {
		randomWeights = func(shapes map[string][]int, r *rand.Rand) nets.Weights { return newRandomLazy(shapes, r.Uint64(), dt) }
	}
	m := &checkpoint.Model{Path: "random:" + kind, Layout: "random", Scheduler: checkpoint.DefaultScheduler()}
	fam := checkpoint.FamilyNamed("SD 1.x")
	texts := []nets.TextConfig{{}}
	switch kind {
	case "sd15":
		m.FamilyWhy = "synthesised with SD 1.5's shapes"
	case "sd15-mini":
		m.FamilyWhy = "synthesised with sd15-mini's shapes (SD 1.5 topology, narrow)"
		m.UNet = nets.UNetConfig{SampleSize: 8, BlockOutChannels: []int{32, 64, 128, 128}, CrossAttentionDim: 64}
		m.VAE = nets.VAEConfig{BlockOutChannels: []int{16, 32, 64, 64}, NormNumGroups: 8, SampleSize: 64}
		texts[0] = nets.TextConfig{HiddenSize: 64, IntermediateSize: 256, ProjectionDim: 64, NumHiddenLayers: 3, NumAttentionHeads: 4}
	case "sd2":
		fam = checkpoint.FamilyNamed("SD 2.x")
		m.FamilyWhy = "synthesised with SD 2.1 768-v's shapes"
		m.UNet = nets.UNetConfig{SampleSize: 96, AttentionHeadDim: nets.IntOrList{5, 10, 20, 20}, UseLinearProjection: true, CrossAttentionDim: 1024}
		texts[0] = nets.TextConfig{HiddenSize: 1024, IntermediateSize: 4096, ProjectionDim: 1024, NumHiddenLayers: 23, NumAttentionHeads: 16, HiddenAct: "gelu"}
		m.Scheduler.PredictionType = "v_prediction"
	case "sdxl":
		fam = checkpoint.FamilyNamed("SDXL")
		m.FamilyWhy = "synthesised with SDXL base 1.0's shapes"
		m.UNet = nets.UNetConfig{SampleSize: 128, BlockOutChannels: []int{320, 640, 1280},
			DownBlockTypes:    []string{"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"},
			UpBlockTypes:      []string{"CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"},
			TransformerLayers: nets.IntOrList{1, 2, 10}, AttentionHeadDim: nets.IntOrList{5, 10, 20},
			UseLinearProjection: true, CrossAttentionDim: 2048, AdditionEmbedType: "text_time",
			AdditionTimeEmbedDim: 256, ProjectionClassEmbeddingsInputDim: 2816}
		m.VAE = nets.VAEConfig{ScalingFactor: 0.13025}
		texts = []nets.TextConfig{{}, {HiddenSize: 1280, IntermediateSize: 5120, ProjectionDim: 1280, NumHiddenLayers: 32,
			NumAttentionHeads: 20, HiddenAct: "gelu", Architectures: []string{"CLIPTextModelWithProjection"}}}
		m.Scheduler = fam.Scheduler
	default:
		return nil, fmt.Errorf("unknown random model %q (want one of %v)", kind, RandomKinds)
	}
	m.Family, m.Spec = fam.Name, fam
	m.UNet.Defaults()
	m.VAE.Defaults()
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	m.UNetWeights = randomWeights(nets.ExpectedUNet(m.UNet), r)
	m.VAEWeights = randomWeights(nets.ExpectedVAE(m.VAE), r)
	for i, spec := range fam.Texts {
		tc := texts[i]
		tc.Defaults()
		m.Texts = append(m.Texts, checkpoint.TextModel{Spec: spec, Config: tc, Pad: spec.Pad,
			Weights: randomWeights(nets.ExpectedText(tc), r)})
	}
	return m, nil
}

// RandomTiny synthesises a TAESD with the published shapes (64 channels,
// 4 latent channels) and random fp16 weights, for benchmarks.
func RandomTiny(seed uint64) (*checkpoint.Tiny, error) {
	t := &checkpoint.Tiny{Path: "random:taesd", Layout: "random", HasEncoder: true}
	t.Config.Defaults()
	decls, err := nets.TinyDecls(t.Config)
	if err != nil {
		return nil, err
	}
	shapes := map[string][]int{}
	for _, d := range decls {
		shapes[d.Name] = d.Shape
	}
	t.Weights = randomWeights(shapes, rand.New(rand.NewPCG(seed, 0x7ae5d)))
	return t, nil
}

func randomWeights(shapes map[string][]int, r *rand.Rand) nets.MapWeights {
	w := nets.MapWeights{}
	for name, shape := range shapes {
		n := 1
		for _, d := range shape {
			n *= d
		}
		fanIn := 1
		if len(shape) > 1 {
			fanIn = n / shape[0]
		}
		raw := make([]byte, 2*n)
		vector := len(shape) == 1
		for i := 0; i < n; i++ {
			var v float32
			switch {
			case vector && hasSuffix(name, ".weight"):
				v = 1
			case vector:
				v = 0
			default:
				v = float32(r.NormFloat64() / math.Sqrt(float64(fanIn)))
			}
			binary.LittleEndian.PutUint16(raw[2*i:], ref.FloatToHalf(v))
		}
		w[name] = nets.Param{DType: gpu.F16, Shape: shape, Raw: raw}
	}
	return w
}

func hasSuffix(s, suf string) bool { return len(s) >= len(suf) && s[len(s)-len(suf):] == suf }
