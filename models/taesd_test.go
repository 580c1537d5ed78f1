package models

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
)

// TestTAESD runs golden-wave3's TAESD decode (saturated and unsaturated
// latents) and encode cases on every device from each layout: the
// diffusers folder (fp16), the diffusers-named fp32 single file, and
// madebyollin's original taesd_decoder/taesd_encoder pair (decoder indices
// shifted by the leading Clamp). Bound: max abs 1e-4.
func TestTAESD(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	tdir := filepath.Join(dir, "taesd-mini")
	dec := golden.Open(t, filepath.Join(dir, "taesd_decode.safetensors"))
	enc := golden.Open(t, filepath.Join(dir, "taesd_encode.safetensors"))
	for _, src := range []struct{ name, path, layout string }{
		{"folder", tdir, "diffusers folder"},
		{"single", filepath.Join(tdir, "diffusion_pytorch_model.safetensors"), "diffusers single file"},
		{"original", filepath.Join(tdir, "taesd_decoder.safetensors"), "original"},
		{"original-by-encoder", filepath.Join(tdir, "taesd_encoder.safetensors"), "original"},
	} {
		tm, err := checkpoint.LoadTiny(src.path)
		require.NoError(t, err, src.name)
		assert.Equal(t, src.layout, tm.Layout)
		assert.True(t, tm.HasEncoder, src.name)
		assert.Equal(t, []int{16, 16, 16, 16}, tm.Config.DecoderBlockOutChannels, src.name)
		for devName, open := range testdev.All(t) {
			d := open(t)
			net, err := nets.NewTiny(d, tm.Config, tm.Weights)
			require.NoError(t, err, src.name)
			worst := 0.0
			for _, cs := range []string{"e2e_final", "e2e_final_div8"} {
				z, zs := dec.F32(cs + ".input")
				d.PushScope()
				got := download(t, d, net.Decode(d.Upload(z, zs...)))
				d.PopScope()
				want, _ := dec.F32(cs + ".out")
				worst = max(worst, golden.Close(t, src.name+"/"+devName+" decode "+cs, got, want, 1e-4, 0))
			}
			x, xs := enc.F32("input")
			d.PushScope()
			got := download(t, d, net.Encode(d.Upload(x, xs...)))
			d.PopScope()
			want, _ := enc.F32("latents")
			worst = max(worst, golden.Close(t, src.name+"/"+devName+" encode", got, want, 1e-4, 0))
			t.Logf("%s on %s: worst max |diff| %.3g (bound 1e-4)", src.name, devName, worst)
			net.Release()
		}
		tm.Close()
	}
}

// TestPreviewTiny: a TAESD step preview larger than PreviewSide decodes the
// latent averaged over 2x2 cells (a 64x64 latent, 512x512 pixels, gives a
// 256x256 preview, a quarter of a full decode's work), exactly what
// DecodeTiny gives for the pooled latent; a small one is the full decode.
func TestPreviewTiny(t *testing.T) {
	d := ref.New()
	defer d.Close()
	p, err := Load(d, filepath.Join(golden.Dir(t), "sd15-mini"), "")
	require.NoError(t, err)
	defer p.Close()
	tm, err := checkpoint.LoadTiny(filepath.Join(golden.Wave(t, "golden-wave3"), "taesd-mini"))
	require.NoError(t, err)
	require.NoError(t, p.SetTAESD(tm))

	assert.Equal(t, []float32{2.5, 4.5, 10.5, 12.5}, poolLatent([]float32{
		0, 1, 2, 3,
		4, 5, 6, 7,
		8, 9, 10, 11,
		12, 13, 14, 15}, 1, 4, 4, 2))

	big := make([]float32, 4*64*64)
	for i := range big {
		big[i] = float32((i*7919)%201-100) / 50
	}
	img, err := p.PreviewTiny(big, [4]int{1, 4, 64, 64}, PreviewSide)
	require.NoError(t, err)
	assert.Equal(t, 256, img.Bounds().Dx())
	assert.Equal(t, 256, img.Bounds().Dy())
	want, err := p.DecodeTiny(poolLatent(big, 4, 64, 64, 2), [4]int{1, 4, 32, 32})
	require.NoError(t, err)
	assert.Equal(t, want[0].Pix, img.Pix, "the preview is the pooled latent's decode")

	small := big[:4*16*24]
	img, err = p.PreviewTiny(small, [4]int{1, 4, 16, 24}, PreviewSide)
	require.NoError(t, err)
	full, err := p.DecodeTiny(small, [4]int{1, 4, 16, 24})
	require.NoError(t, err)
	assert.Equal(t, full[0].Pix, img.Pix, "128x192 fits: no pooling")

	_, err = p.PreviewTiny(small, [4]int{2, 4, 16, 12}, PreviewSide)
	assert.ErrorContains(t, err, "one image")
}
