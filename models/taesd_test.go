package models

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
