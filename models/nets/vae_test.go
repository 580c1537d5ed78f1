package nets

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
)

func TestVAEGolden(t *testing.T) {
	dir := golden.Dir(t)
	var c VAEConfig
	loadConfig(t, filepath.Join(dir, "sd15-mini/vae/config.json"), &c)
	w := loadWeights(t, filepath.Join(dir, "sd15-mini/vae/diffusion_pytorch_model.fp16.safetensors"))
	g := golden.Open(t, "vae.safetensors")

	for name, d := range testDevices(t) {
		t.Run(name, func(t *testing.T) {
			g := g.For(t)
			v, err := NewVAE(d, c, w)
			if err != nil {
				t.Fatal(err)
			}
			defer v.Release()
			worst := map[string]float64{}
			traced := map[string]int{}
			trace := func(prefix string) func(string, *gpu.Tensor) {
				return func(stage string, got *gpu.Tensor) {
					key := prefix + ".intermediate." + stage
					if _, ok := g.Lookup(key); !ok {
						t.Errorf("trace stage %q has no golden %s", stage, key)
						return
					}
					want, shape := g.F32(key)
					worst["intermediates"] = max(worst["intermediates"], compare(t, d, key, got, want, shape, 1e-4))
					traced[prefix]++
				}
			}

			// Decode: the caller divides by the scaling factor.
			for _, cs := range []string{"decode", "decode_b2"} {
				lat := upload(d, g, cs+".latent")
				z := d.Scale(lat, float32(1/v.Config.ScalingFactor), 0)
				if cs == "decode" {
					scaled, shape := g.F32("decode.latent_scaled")
					compare(t, d, "latent / scaling_factor", z, scaled, shape, 1e-6)
					v.Trace = trace(cs)
				}
				live := d.Stats().Buffers
				img := v.Decode(z)
				v.Trace = nil
				if got := d.Stats().Buffers; got != live+1 {
					t.Errorf("%s: %d buffers live after Decode, want %d", cs, got, live+1)
				}
				if err := d.Err(); err != nil {
					t.Fatalf("%s: %v", cs, err)
				}
				want, shape := g.F32(cs + ".image")
				worst[cs] = compare(t, d, cs+".image", img, want, shape, 1e-4)
				d.Release(lat)
				d.Release(z)
				d.Release(img)
			}

			x := upload(d, g, "encode.image")
			v.Trace = trace("encode")
			live := d.Stats().Buffers
			moments := v.Encode(x)
			v.Trace = nil
			if got := d.Stats().Buffers; got != live+1 {
				t.Errorf("encode: %d buffers live after Encode, want %d", got, live+1)
			}
			if err := d.Err(); err != nil {
				t.Fatalf("encode: %v", err)
			}
			want, shape := g.F32("encode.moments")
			worst["encode"] = compare(t, d, "encode.moments", moments, want, shape, 1e-4)
			d.Release(x)
			d.Release(moments)

			for _, prefix := range []string{"decode", "encode"} {
				n := 0
				for _, ti := range g.Tensors() {
					if strings.HasPrefix(ti.Name, prefix+".intermediate.") {
						n++
					}
				}
				if traced[prefix] != n {
					t.Errorf("%s: traced %d stages, golden has %d intermediates", prefix, traced[prefix], n)
				}
			}
			t.Logf("%s: VAE max |diff|: decode image %.3g, decode_b2 image %.3g, encode moments %.3g, worst intermediate %.3g",
				name, worst["decode"], worst["decode_b2"], worst["encode"], worst["intermediates"])
		})
	}
}
