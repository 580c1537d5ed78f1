package sampler

import (
	"fmt"
	"math"
)

// This file holds image-conditioned runs: img2img and inpainting, in the
// order diffusers' pipelines draw their random numbers (see
// ../shared/golden-wave3/README.md). The samplers themselves do not change:
// the run starts from the noised init latent part-way down the schedule,
// and inpainting either blends the kept region back after every step
// (a U-Net that takes the latents only) or gives the U-Net the mask and
// the masked image's latents as extra input channels (a 9-channel
// inpainting U-Net).

// ImageKind says how a run is conditioned on an image.
type ImageKind int

const (
	// Img2Img is diffusers' StableDiffusionImg2ImgPipeline: the init image
	// is encoded (one draw), then noised to the first timestep run (one
	// draw), also at strength 1.
	Img2Img ImageKind = iota + 1
	// InpaintBlend is StableDiffusionInpaintPipeline with a U-Net that takes
	// the latents only (diffusers' "legacy" inpainting): the init image is
	// encoded (one draw), the noise drawn, the masked image encoded (one
	// draw, unused); after every step the kept region is the init latent
	// re-noised to the level the latent is now at (un-noised after the
	// last step).
	InpaintBlend
	// InpaintConcat is StableDiffusionInpaintPipeline with a 9-channel
	// inpainting U-Net: the init image is encoded only at strength < 1,
	// then the noise and the masked image's latents are drawn; the U-Net
	// gets [scaled latents, mask, masked-image latents].
	InpaintConcat
)

func (k ImageKind) String() string {
	switch k {
	case Img2Img:
		return "img2img"
	case InpaintBlend:
		return "inpainting (latent blending)"
	case InpaintConcat:
		return "inpainting (mask and masked image as U-Net channels)"
	}
	return fmt.Sprintf("ImageKind(%d)", int(k))
}

// Image is what an image-conditioned run starts from. Moments are the VAE
// encoder's output for one image, [1, 2C, h, w]: the means in the first C
// channels, the log-variances in the rest (diffusers' latent_dist
// parameters); a latent is sampled from them with the run's generator.
type Image struct {
	Kind ImageKind
	// Init holds the init image's moments. InpaintConcat at strength 1
	// does not use them (nil is fine there).
	Init []float32
	// Masked holds the masked image's moments (InpaintConcat; the
	// repainted region is 0, mid-grey, before encoding). InpaintBlend only
	// draws for it, so nil is fine there.
	Masked []float32
	// Mask is the latent-resolution mask [h*w], 1 = repaint, 0 = keep
	// (inpainting).
	Mask []float32
	// Scale and Shift map a VAE sample z to the denoiser's latent:
	// (z - Shift) * Scale (SD: Scale 0.18215, Shift 0). Where Mean and Std
	// are set (one per channel) it is (z - Mean) * Scale / Std instead.
	Scale, Shift float64
	Mean, Std    []float64
}

// imageCond is what a run keeps of its Image once the start latent is
// drawn. It never changes after NewRun, so snapshots and branches share it.
type imageCond struct {
	kind  ImageKind
	x0    []float64 // the init latent [B,C,h,w] (InpaintBlend)
	noise []float64 // the start noise [B,C,h,w] (InpaintBlend)
	mask  []float64 // [h*w], 1 = repaint
	// concat holds the extra U-Net channels of one batch row, [1+C, h, w]:
	// the mask, then the masked image's latents (InpaintConcat).
	concat []float32
}

// sliceStrength drops the first N - int(N*strength) steps of a schedule,
// as diffusers' img2img and inpainting get_timesteps (with set_begin_index):
// strength 1 (or 0, unset) keeps them all.
func sliceStrength(sc *Schedule, steps int, strength float64) (*Schedule, error) {
	if strength <= 0 || strength >= 1 {
		return sc, nil
	}
	run := min(int(float64(steps)*strength), steps)
	if run < 1 {
		return nil, fmt.Errorf("sampler: strength %g of %d steps runs int(%d*%g) = 0 steps; raise the strength or the steps", strength, steps, steps, strength)
	}
	start := steps - run
	if start >= len(sc.Sigmas) {
		return nil, fmt.Errorf("sampler: strength %g starts at step %d of a %d-step schedule", strength, start, len(sc.Sigmas))
	}
	return &Schedule{
		Sigmas: cloneVec(sc.Sigmas[start:]), Next: cloneVec(sc.Next[start:]),
		Timesteps: cloneVec(sc.Timesteps[start:]), InitNoiseSigma: sc.InitNoiseSigma,
	}, nil
}

// check validates an Image against the run's latent shape.
func (im *Image) check(s Settings) error {
	plane := s.H * s.W
	mom := 2 * s.Channels * plane
	partial := s.Strength > 0 && s.Strength < 1
	switch im.Kind {
	case Img2Img, InpaintBlend, InpaintConcat:
	default:
		return fmt.Errorf("sampler: unknown image kind %d", int(im.Kind))
	}
	if (im.Kind != InpaintConcat || partial) && len(im.Init) != mom {
		return fmt.Errorf("sampler: %s needs the init image's moments [1,%d,%d,%d], got %d values", im.Kind, 2*s.Channels, s.H, s.W, len(im.Init))
	}
	if im.Kind != Img2Img && len(im.Mask) != plane {
		return fmt.Errorf("sampler: %s needs a %dx%d latent mask, got %d values", im.Kind, s.W, s.H, len(im.Mask))
	}
	if im.Kind == InpaintConcat && len(im.Masked) != mom {
		return fmt.Errorf("sampler: %s needs the masked image's moments [1,%d,%d,%d], got %d values", im.Kind, 2*s.Channels, s.H, s.W, len(im.Masked))
	}
	if im.Mean != nil && (len(im.Mean) != s.Channels || len(im.Std) != s.Channels) {
		return fmt.Errorf("sampler: %d latent means and %d deviations for %d channels", len(im.Mean), len(im.Std), s.Channels)
	}
	if im.Scale == 0 || math.IsNaN(im.Scale) || math.IsInf(im.Scale, 0) || math.IsNaN(im.Shift) {
		return fmt.Errorf("sampler: VAE scaling %v / shift %v", im.Scale, im.Shift)
	}
	return nil
}

// sample draws one latent from moments with the run's generator, as
// diffusers' DiagonalGaussianDistribution.sample (log-variance clamped to
// [-30, 20]) followed by the VAE scaling, in float32; the result is
// repeated over the batch ([B,C,h,w]).
func (r *Run) sample(im *Image, moments []float32) []float64 {
	c, plane := r.shape[1], r.shape[2]*r.shape[3]
	n := c * plane
	eps := make([]float32, n)
	r.gen.Randn(eps)
	if moments == nil {
		return nil // the draw is made (diffusers makes it), its latent unused
	}
	one := make([]float64, n)
	for i := range one {
		mean, logvar := moments[i], moments[n+i]
		logvar = min(max(logvar, -30), 20)
		std := float32(math.Exp(float64(0.5 * logvar)))
		z := mean + std*eps[i]
		if im.Mean != nil {
			k := i / plane
			z = (z - float32(im.Mean[k])) * float32(im.Scale) / float32(im.Std[k])
		} else if im.Shift != 0 {
			z = (z - float32(im.Shift)) * float32(im.Scale)
		} else {
			z = float32(im.Scale) * z
		}
		one[i] = float64(z)
	}
	out := make([]float64, 0, r.shape[0]*n)
	for b := 0; b < r.shape[0]; b++ {
		out = append(out, one...)
	}
	return out
}

// start draws the start latent of an image-conditioned run, in diffusers'
// order, and keeps what the steps need.
func (r *Run) start(im *Image) error {
	if err := im.check(r.set); err != nil {
		return err
	}
	partial := r.set.Strength > 0 && r.set.Strength < 1
	sig0 := r.sched.Sigmas[0]
	var x0 []float64
	if im.Kind != InpaintConcat || partial {
		x0 = r.sample(im, im.Init)
	}
	noise := r.draw()
	x := make([]float64, len(noise))
	if im.Kind == Img2Img || partial {
		// scheduler.add_noise(x0, noise, first timestep run).
		for i, v := range noise {
			x[i] = r.addNoise(x0[i], v, sig0)
		}
	} else {
		for i, v := range noise {
			x[i] = r.toVE1(float64(float32(v)*float32(r.sched.InitNoiseSigma)), sig0)
		}
	}
	ic := &imageCond{kind: im.Kind}
	if im.Kind != Img2Img {
		ic.mask = make([]float64, len(im.Mask))
		for i, m := range im.Mask {
			ic.mask[i] = float64(m)
		}
		masked := r.sample(im, im.Masked) // drawn by both kinds
		if im.Kind == InpaintBlend {
			ic.x0, ic.noise = x0, noise
		} else {
			plane := r.shape[2] * r.shape[3]
			ic.concat = make([]float32, (1+r.shape[1])*plane)
			copy(ic.concat, im.Mask)
			for i := 0; i < r.shape[1]*plane; i++ {
				ic.concat[plane+i] = float32(masked[i])
			}
		}
	}
	r.img = ic
	r.st = &state{X: x, XSigma: sig0}
	return nil
}

// addNoise is the scheduler's add_noise of one value in the run's own
// space: x0 + sigma*noise in VE terms, in Euler's float32 arithmetic (the
// VP samplers' sqrt(acp)*x0 + sqrt(1-acp)*noise is the same latent); flow
// matching's scale_noise sigma*noise + (1-sigma)*x0.
func (r *Run) addNoise(x0, noise, sigma float64) float64 {
	s := float32(sigma)
	if r.tr.cfg.isFlow() {
		return float64(s*float32(noise) + (1-s)*float32(x0))
	}
	return float64(float32(x0) + float32(noise)*s)
}

// toVE1 is toVE for one value.
func (r *Run) toVE1(v, sigma float64) float64 {
	if r.vp() {
		return v * math.Sqrt(1+sigma*sigma)
	}
	return v
}

// blend is diffusers' legacy inpainting after a step: the kept region
// (mask 0) becomes the init latent noised to the level x is at now (the
// same noise the run started from), un-noised after the last step. The
// frame's prediction of x0 is blended the same way, so previews show the
// kept region as it will end.
func (r *Run) blend(ic *imageCond, st *state, sigma float64, last bool) {
	plane := r.shape[2] * r.shape[3]
	for i := range st.X {
		m := ic.mask[i%plane]
		if m == 1 {
			continue
		}
		proper := ic.x0[i]
		if !last {
			proper = r.addNoise(ic.x0[i], ic.noise[i], sigma)
		}
		st.X[i] = float64(float32((1-m)*proper + m*st.X[i]))
		if i < len(st.Denoised) {
			st.Denoised[i] = (1-m)*ic.x0[i] + m*st.Denoised[i]
		}
	}
}

// withConcat appends the image channels to every row of a U-Net input
// [N,C,h,w], giving [N,C+1+C,h,w].
func (ic *imageCond) withConcat(in Latent) Latent {
	n, c, plane := in.Shape[0], in.Shape[1], in.Shape[2]*in.Shape[3]
	extra := len(ic.concat) / plane
	out := Latent{Shape: [4]int{n, c + extra, in.Shape[2], in.Shape[3]}}
	out.Data = make([]float32, 0, n*(c+extra)*plane)
	for b := 0; b < n; b++ {
		out.Data = append(out.Data, in.Data[b*c*plane:(b+1)*c*plane]...)
		out.Data = append(out.Data, ic.concat...)
	}
	return out
}

// ImageKind reports how the run is conditioned on an image (0: it is not).
func (r *Run) ImageKind() ImageKind {
	if r.img == nil {
		return 0
	}
	return r.img.kind
}
