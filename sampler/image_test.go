package sampler

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
)

// replayTol bounds the difference from diffusers of a run whose network
// answers with diffusers' recordedUNet U-Net outputs: only float32 rounding of
// the sampler's own arithmetic is left (relative to max |value|).
const replayTol = 1e-5

// recordedUNet is a network that answers call i with a golden's recorded
// U-Net output i, and checks that it was given the recordedUNet input.
type recordedUNet struct {
	t        *testing.T
	ins      []float32 // [calls, 2, Cin, h, w]
	outs     []float32 // [calls, 2, C, h, w]
	ts       []float32
	call     int
	worstIn  float64
	inShape  [4]int
	outShape [4]int
}

func (r *recordedUNet) Predict(_ context.Context, x Latent, t float64, rows []Cond) (Latent, error) {
	if x.Shape != r.inShape {
		return Latent{}, fmt.Errorf("network input %v, want %v", x.Shape, r.inShape)
	}
	n := len(x.Data)
	want := r.ins[r.call*n : (r.call+1)*n]
	d, at, scale := golden.MaxAbsDiff(x.Data, want)
	if d > replayTol*scale {
		return Latent{}, fmt.Errorf("call %d: U-Net input differs by %.3g at %d (got %v, want %v)", r.call, d, at, x.Data[at], want[at])
	}
	r.worstIn = max(r.worstIn, d/scale)
	if float32(t) != r.ts[r.call] {
		return Latent{}, fmt.Errorf("call %d: timestep %v, want %v", r.call, t, r.ts[r.call])
	}
	m := r.outShape[0] * r.outShape[1] * r.outShape[2] * r.outShape[3]
	out := Latent{Shape: r.outShape, Data: append([]float32(nil), r.outs[r.call*m:(r.call+1)*m]...)}
	r.call++
	return out, nil
}

// TestImageRunsReplay runs img2img, legacy (4-channel) and 9-channel
// inpainting of golden-wave3 with diffusers' recordedUNet U-Net outputs in
// place of the network and the real torch generator: the VAE samples,
// the start noise, the strength slicing, the blending and the extra
// channels must reproduce every recordedUNet U-Net input and every step's
// latents. A draw out of order would change them all.
func TestImageRunsReplay(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	cases := []struct {
		name     string
		kind     ImageKind
		strength float64
		steps    int
		next     string // the first draw after the start
	}{
		{"img2img_euler_s0.6_seed42", Img2Img, 0.6, 12, "draw.2"},
		{"inpaint4_euler_s1.0_seed42", InpaintBlend, 1, 20, "draw.3"},
		{"inpaint9_euler_s1.0_seed42", InpaintConcat, 1, 20, "draw.2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := golden.Open(t, filepath.Join(dir, c.name+".safetensors"))
			ins, inShape := g.F32("unet.sample.per_call")
			outs, _ := g.F32("unet.out.per_call")
			ts, _ := g.F32("unet.timestep.per_call")
			wantSteps, _ := g.F32("latents_after_step")
			im := &Image{Kind: c.kind, Scale: 0.18215}
			switch c.kind {
			case Img2Img, InpaintBlend:
				im.Init, _ = g.F32("vae_encode.0.moments")
			case InpaintConcat:
				im.Masked, _ = g.F32("vae_encode.0.moments") // at strength 1 the only encode
			}
			if c.kind != Img2Img {
				mask, _ := g.F32("callback.mask")
				im.Mask = mask[:64]
			}
			net := &recordedUNet{t: t, ins: ins, outs: outs, ts: ts,
				inShape: [4]int{2, inShape[2], 8, 8}, outShape: [4]int{2, 4, 8, 8}}
			s := Settings{Sampler: "euler", Schedule: "leading", Steps: 20, CFG: 7.5, Seed: 42, RNG: "torch-cpu",
				Batch: 1, Channels: 4, H: 8, W: 8, Model: SD15Config(), Strength: c.strength, Image: im}
			r, err := NewRun(s, net)
			require.NoError(t, err)
			require.Equal(t, c.steps, r.Total())
			assert.Equal(t, c.kind, r.ImageKind())
			// The start made exactly diffusers' draws (Euler ignores its
			// per-step draws, an ancestral sampler would not).
			next := make([]float32, 256)
			r.gen.Clone().Randn(next)
			wantNext, _ := g.F32(c.next)
			assert.Equal(t, wantNext, next, "the generator after the start is not at %s", c.next)
			worst := 0.0
			for i := 0; !r.Done(); i++ {
				f, err := r.Step(context.Background())
				require.NoError(t, err)
				want := wantSteps[i*256 : (i+1)*256]
				d, at, scale := golden.MaxAbsDiff(f.X.Data, want)
				require.LessOrEqualf(t, d, replayTol*scale, "step %d: latent differs by %.3g at %d", i, d, at)
				worst = max(worst, d/scale)
			}
			assert.Equal(t, c.steps, net.call)
			t.Logf("%s: worst U-Net input %.2g, worst step latent %.2g (x max|value|)", c.name, net.worstIn, worst)
		})
	}
}

// halfNet answers 0.1*x on the first C channels of any input, and records
// the channel counts it was given.
type halfNet struct {
	c        int
	channels []int
}

func (h *halfNet) Predict(_ context.Context, x Latent, t float64, rows []Cond) (Latent, error) {
	h.channels = append(h.channels, x.Shape[1])
	plane := x.Shape[2] * x.Shape[3]
	out := Latent{Shape: [4]int{x.Shape[0], h.c, x.Shape[2], x.Shape[3]}}
	for b := 0; b < x.Shape[0]; b++ {
		for i := 0; i < h.c*plane; i++ {
			out.Data = append(out.Data, 0.1*x.Data[b*x.Shape[1]*plane+i]+float32(t/1e4))
		}
	}
	return out, nil
}

// testImage is an inpainting image of a 2x4x4x4 run: moments with small
// log-variances, the left half kept.
func testImage(kind ImageKind) *Image {
	im := &Image{Kind: kind, Scale: 0.5, Init: make([]float32, 2*4*16), Masked: make([]float32, 2*4*16), Mask: make([]float32, 16)}
	for i := range im.Init[:64] {
		im.Init[i] = float32(i%7) - 3
		im.Init[64+i] = -4
		im.Masked[i] = float32(i%5) - 2
		im.Masked[64+i] = -3
	}
	for i := range im.Mask {
		if i%4 >= 2 {
			im.Mask[i] = 1
		}
	}
	return im
}

// TestImageRunSnapshotBranch: an image-conditioned run steps, rewinds and
// branches like any other (the image conditioning is shared, never
// changed), legacy inpainting ends with the kept region exactly the init
// latent, and a 9-channel run gives the network the mask and the masked
// latents.
func TestImageRunSnapshotBranch(t *testing.T) {
	set := func(kind ImageKind, sampler string) Settings {
		return Settings{Sampler: sampler, Steps: 10, CFG: 5, Seed: 7, Batch: 2, Channels: 4, H: 4, W: 4,
			Model: SD15Config(), Strength: 0.55, Image: testImage(kind)}
	}
	ctx := context.Background()
	for _, kind := range []ImageKind{Img2Img, InpaintBlend, InpaintConcat} {
		t.Run(kind.String(), func(t *testing.T) {
			net := &halfNet{c: 4}
			r, err := NewRun(set(kind, "euler_a"), net)
			require.NoError(t, err)
			require.Equal(t, 5, r.Total(), "int(10*0.55) = 5 steps")
			for i := 0; i < 2; i++ {
				_, err := r.Step(ctx)
				require.NoError(t, err)
			}
			snap := r.Snapshot()
			rest := func(r *Run) []float32 {
				for !r.Done() {
					_, err := r.Step(ctx)
					require.NoError(t, err)
				}
				return r.X().Data
			}
			b, err := r.Branch(set(kind, "euler_a"), net)
			require.NoError(t, err)
			a := rest(r)
			require.NoError(t, r.Restore(snap))
			assert.Equal(t, a, rest(r), "restore and replay")
			assert.Equal(t, a, rest(b), "a branch with the same settings continues the same")
			require.NoError(t, r.Restore(snap))
			other, err := r.Branch(set(kind, "dpmpp_2m"), net)
			require.NoError(t, err)
			assert.Equal(t, kind, other.ImageKind())
			assert.NotEqual(t, a, rest(other))

			switch kind {
			case InpaintBlend:
				for i, v := range a {
					if i%4 < 2 { // kept columns
						require.Equalf(t, float32(r.img.x0[i]), v, "kept latent %d", i)
					}
				}
			case InpaintConcat:
				for _, c := range net.channels {
					require.Equal(t, 9, c)
				}
				plane := 16
				require.Len(t, r.img.concat, 5*plane)
				assert.Equal(t, float32(1), r.img.concat[3], "mask channel")
				assert.Equal(t, float32(0), r.img.concat[0], "mask channel")
			default:
				for _, c := range net.channels {
					require.Equal(t, 4, c)
				}
			}
		})
	}

	s := set(Img2Img, "euler")
	s.Steps, s.Strength = 20, 0.04
	_, err := NewRun(s, &halfNet{c: 4})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "int(20*0.04) = 0 steps")
	s.Strength, s.Image.Init = 0.5, s.Image.Init[:10]
	_, err = NewRun(s, &halfNet{c: 4})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "moments")
}
