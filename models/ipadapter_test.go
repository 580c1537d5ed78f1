package models

import (
	"image"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
)

// randomIPAdapter is an IP-Adapter with random weights (and a random
// 32-wide vision encoder) for a U-Net with config unet.
func randomIPAdapter(t *testing.T, unet nets.UNetConfig) *checkpoint.IPAdapter {
	unet.Defaults()
	enc := nets.VisionConfig{HiddenSize: 32, IntermediateSize: 64, ProjectionDim: 40, NumHiddenLayers: 2,
		NumAttentionHeads: 2, ImageSize: 32, PatchSize: 8}
	enc.Defaults()
	cfg := nets.IPAdapterConfig{ImageEmbedDim: 40, NumTokens: 4, UNet: unet}
	shapes := func(ds []nets.Decl, err error) map[string][]int {
		require.NoError(t, err)
		m := map[string][]int{}
		for _, d := range ds {
			m[d.Name] = d.Shape
		}
		return m
	}
	r := rand.New(rand.NewPCG(7, 11))
	return &checkpoint.IPAdapter{
		Path: "random-ip-adapter", Layout: "h94", Config: cfg,
		Weights:        randomWeights(shapes(nets.IPAdapterDecls(cfg)), r),
		EncoderPath:    "random-image-encoder",
		Encoder:        enc,
		EncoderWeights: randomWeights(shapes(nets.VisionDecls(enc)), r),
		Processor:      checkpoint.DefaultImageProcessor(32),
	}
}

// TestIPAdapterSDXL: the same mechanism on SDXL (transformer depth > 1,
// added text/time conditioning beside the image embeddings): GL matches
// the reference device, scale 0 gives the plain U-Net's output exactly,
// and the image prompt changes it otherwise.
func TestIPAdapterSDXL(t *testing.T) {
	dir := golden.Wave(t, "golden-wave2")
	ref := image.NewNRGBA(image.Rect(0, 0, 48, 40))
	for i := range ref.Pix {
		ref.Pix[i] = uint8(i * 37)
	}
	outs := map[string][3][]float32{}
	var adapter *checkpoint.IPAdapter // one draw for every device (randomWeights walks a map)
	for devName, open := range testdev.All(t) {
		p, err := Load(open(t), filepath.Join(dir, "sdxl-mini"), "")
		require.NoError(t, err)
		layers, err := nets.CrossAttentionLayers(p.Model.UNet)
		require.NoError(t, err)
		require.Greater(t, len(layers), 0)
		c, err := p.EncodePrompt("a lighthouse", "fog", 1)
		require.NoError(t, err)
		p.SetSize(c, 64, 64, SizeCond{})
		x := make([]float32, 2*4*8*8)
		for i := range x {
			x[i] = float32((i*7)%13)/13 - 0.5
		}
		rows := []Row{Uncond, Cond}
		predict := func() []float32 {
			out, err := p.PredictNoise(x, [4]int{2, 4, 8, 8}, 500, c, rows)
			require.NoError(t, err, devName)
			return out
		}
		plain := predict()
		if adapter == nil {
			adapter = randomIPAdapter(t, p.Model.UNet)
		}
		require.NoError(t, p.SetIPAdapter(adapter, 0))
		require.NoError(t, p.SetImagePrompt(c, ref))
		zero := predict()
		p.SetIPAdapterScale(0.7)
		withImage := predict()
		outs[devName] = [3][]float32{plain, zero, withImage}
		assert.Equal(t, plain, zero, "%s: scale 0 is the plain U-Net", devName)
		diff, _, _ := golden.MaxAbsDiff(withImage, plain)
		assert.Greater(t, diff, 1e-3, "%s: the image prompt changes the output", devName)
		c.Release()
		require.NoError(t, p.Close())
	}
	if gl, ok := outs["gl"]; ok {
		for i, what := range []string{"plain", "scale 0", "scale 0.7"} {
			diff, _, scale := golden.MaxAbsDiff(gl[i], outs["ref"][i])
			// GL vs the reference: the golden bound for U-Net outputs, 1e-4.
			assert.LessOrEqual(t, diff, 1e-4*max(scale, 1), what)
		}
	}
}
