package nets

import (
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
)

// The helpers below let the external tests (package nets_test, which may
// import models/checkpoint without an import cycle) reuse this package's
// golden checks. Each returns the worst max |diff| it saw and fails t above
// the golden README's 1e-4.

// DevicesForTest is testDevices for external tests.
func DevicesForTest(t *testing.T) map[string]gpu.Device { return testDevices(t) }

// CheckUNetGolden runs every case of unet.safetensors through u.
func CheckUNetGolden(t *testing.T, d gpu.Device, u *UNet) float64 {
	t.Helper()
	g := golden.Open(t, "unet.safetensors")
	worst := 0.0
	for _, cs := range unetCases {
		x := upload(d, g, cs+".sample")
		ctx := upload(d, g, cs+".encoder_hidden_states")
		ts, _ := g.F32(cs + ".timestep")
		out := u.Forward(x, ts, ctx)
		want, shape := g.F32(cs + ".out")
		worst = max(worst, compare(t, d, cs+".out", out, want, shape, 1e-4))
		d.Release(x)
		d.Release(ctx)
		d.Release(out)
	}
	return worst
}

// CheckTextGolden compares the last hidden state and the penultimate layer
// (with the final LayerNorm) for the six golden prompts.
func CheckTextGolden(t *testing.T, d gpu.Device, te *TextEncoder) float64 {
	t.Helper()
	g := golden.Open(t, "text_encoder.safetensors")
	ids := ids(t, g, "input_ids")
	worst := 0.0
	for skip, name := range map[int]string{1: "last_hidden_state", 2: "penultimate_final_ln"} {
		h, err := te.EncodeSkip(ids, skip)
		if err != nil {
			t.Fatal(err)
		}
		want, shape := g.F32(name)
		worst = max(worst, compare(t, d, name, h, want, shape, 1e-4))
		d.Release(h)
	}
	return worst
}

// CheckVAEGolden compares decode (batch 1 and 2) and encode moments.
func CheckVAEGolden(t *testing.T, d gpu.Device, v *VAE) float64 {
	t.Helper()
	g := golden.Open(t, "vae.safetensors")
	worst := 0.0
	for _, cs := range []string{"decode", "decode_b2"} {
		lat := upload(d, g, cs+".latent")
		z := d.Scale(lat, float32(1/v.Config.ScalingFactor), 0)
		img := v.Decode(z)
		want, shape := g.F32(cs + ".image")
		worst = max(worst, compare(t, d, cs+".image", img, want, shape, 1e-4))
		d.Release(lat)
		d.Release(z)
		d.Release(img)
	}
	x := upload(d, g, "encode.image")
	m := v.Encode(x)
	want, shape := g.F32("encode.moments")
	worst = max(worst, compare(t, d, "encode.moments", m, want, shape, 1e-4))
	d.Release(x)
	d.Release(m)
	return worst
}
