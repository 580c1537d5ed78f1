package nets

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
)

var unetCases = []string{"b1_t999", "b1_t500", "b1_t1", "b1_t937.25", "b2cfg_t999", "b2cfg_t500", "b2cfg_t1", "b2_mixed"}

func TestUNetGolden(t *testing.T) {
	dir := golden.Dir(t)
	var c UNetConfig
	loadConfig(t, filepath.Join(dir, "sd15-mini/unet/config.json"), &c)
	w := loadWeights(t, filepath.Join(dir, "sd15-mini/unet/diffusion_pytorch_model.fp16.safetensors"))
	g := golden.Open(t, "unet.safetensors")

	for name, d := range testDevices(t) {
		t.Run(name, func(t *testing.T) {
			g := g.For(t)
			u, err := NewUNet(d, c, w)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Release()
			worstOut, worstAt, worstMid := 0.0, "", 0.0
			for _, cs := range unetCases {
				x := upload(d, g, cs+".sample")
				ctx := upload(d, g, cs+".encoder_hidden_states")
				ts, _ := g.F32(cs + ".timestep")
				traced := 0
				if cs == "b1_t500" {
					// Bisecting aid: every stage diffusers recorded.
					u.Trace = func(stage string, got *gpu.Tensor) {
						key := cs + ".intermediate." + stage
						if _, ok := g.Lookup(key); !ok {
							t.Errorf("trace stage %q has no golden %s", stage, key)
							return
						}
						want, shape := g.F32(key)
						worstMid = max(worstMid, compare(t, d, key, got, want, shape, 1e-4))
						traced++
					}
				}
				live := d.Stats().Buffers
				out := u.Forward(x, ts, ctx)
				u.Trace = nil
				if got := d.Stats().Buffers; got != live+1 {
					t.Errorf("%s: %d buffers live after Forward, want %d (inputs and weights + the output)", cs, got, live+1)
				}
				if err := d.Err(); err != nil {
					t.Fatalf("%s: %v", cs, err)
				}
				want, shape := g.F32(cs + ".out")
				diff := compare(t, d, cs+".out", out, want, shape, 1e-4)
				if diff > worstOut {
					worstOut, worstAt = diff, cs
				}
				if cs == "b1_t500" {
					n := 0
					for _, ti := range g.Tensors() {
						if strings.HasPrefix(ti.Name, "b1_t500.intermediate.") {
							n++
						}
					}
					if traced != n {
						t.Errorf("traced %d stages, golden has %d intermediates", traced, n)
					}
				}
				d.Release(x)
				d.Release(ctx)
				d.Release(out)
			}
			t.Logf("%s: U-Net max |diff|: out %.3g (worst case %s), b1_t500 intermediates %.3g", name, worstOut, worstAt, worstMid)
		})
	}
}

// SD 2.x's linear proj_in/proj_out compute what 1x1 convs with the same
// numbers do: the mini U-Net rebuilt with linear projections must still
// match diffusers.
func TestUNetLinearProjection(t *testing.T) {
	dir := golden.Dir(t)
	var c UNetConfig
	loadConfig(t, filepath.Join(dir, "sd15-mini/unet/config.json"), &c)
	src := loadWeights(t, filepath.Join(dir, "sd15-mini/unet/diffusion_pytorch_model.fp16.safetensors"))
	w := MapWeights{}
	converted := 0
	for k, p := range src {
		if (strings.HasSuffix(k, ".proj_in.weight") || strings.HasSuffix(k, ".proj_out.weight")) && len(p.Shape) == 4 {
			p.Shape = p.Shape[:2]
			converted++
		}
		w[k] = p
	}
	if converted == 0 {
		t.Fatal("no proj_in/proj_out weights found")
	}
	c.UseLinearProjection = true
	g := golden.Open(t, "unet.safetensors")
	for name, d := range testDevices(t) {
		u, err := NewUNet(d, c, w)
		if err != nil {
			t.Fatal(err)
		}
		const cs = "b2cfg_t500"
		out := u.Forward(upload(d, g, cs+".sample"), []float32{500, 500}, upload(d, g, cs+".encoder_hidden_states"))
		want, shape := g.F32(cs + ".out")
		t.Logf("%s: linear projections, %s.out max |diff| %.3g", name, cs, compare(t, d, cs+".out", out, want, shape, 1e-4))
		u.Release()
	}
}
