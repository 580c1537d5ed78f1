package models

import (
	"fmt"
	"time"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/tokenizer"
)

// DefaultFluxGuidance is FLUX.1-dev's distilled guidance by default
// (diffusers' guidance_scale, stable-diffusion.cpp's --guidance).
const DefaultFluxGuidance = 3.5

// fluxNets holds a Flux pipeline's own networks: the transformer and T5
// (CLIP-L is p.texts[0]).
type fluxNets struct {
	tr    *nets.Flux
	t5    *nets.T5Encoder
	t5tok *tokenizer.Unigram
	// rgb and rgbBias are the previews' latent -> RGB map (fitLatentRGB).
	rgb     [][]float32
	rgbBias [3]float32
}

// newFlux reads the T5 tokenizer and uploads Flux's networks.
func (p *Pipeline) newFlux(upload func(comp string, build func(d gpu.Device, w nets.Weights) error) error) error {
	m := p.Model
	tok, err := tokenizer.LoadUnigram(m.T5.Tokenizer)
	if err != nil {
		return err
	}
	if tok.VocabSize() > m.T5.Config.VocabSize {
		return fmt.Errorf("%s: the T5 tokenizer has %d ids, more than the encoder's vocab_size %d", m.T5.Tokenizer, tok.VocabSize(), m.T5.Config.VocabSize)
	}
	p.flux = &fluxNets{t5tok: tok}
	p.MaxSequenceLength = m.Spec.MaxSequenceLength
	if !m.Flux.GuidanceEmbeds {
		p.MaxSequenceLength = 256 // schnell's default
	}
	p.FluxGuidance = DefaultFluxGuidance
	t := m.Texts[0]
	err = upload(t.Spec.Role, func(d gpu.Device, w nets.Weights) error {
		te, err := nets.NewTextEncoder(d, t.Config, w)
		if err == nil {
			p.texts = append(p.texts, te)
		}
		return err
	})
	if err != nil {
		return err
	}
	p.toks = append(p.toks, p.tok)
	if err := upload(m.T5.Spec.Role, func(d gpu.Device, w nets.Weights) (err error) {
		p.flux.t5, err = nets.NewT5Encoder(d, m.T5.Config, w)
		return err
	}); err != nil {
		return err
	}
	if err := upload("transformer", func(d gpu.Device, w nets.Weights) (err error) {
		p.flux.tr, err = nets.NewFlux(d, *m.Flux, w)
		return err
	}); err != nil {
		return err
	}
	return upload("vae", func(d gpu.Device, w nets.Weights) (err error) {
		p.vae, err = nets.NewVAE(d, m.VAE, w)
		return err
	})
}

func (p *Pipeline) closeFlux() {
	if p.flux == nil {
		return
	}
	if p.flux.tr != nil {
		p.flux.tr.Release()
	}
	if p.flux.t5 != nil {
		p.flux.t5.Release()
	}
	p.flux = nil
}

// encodeFlux is diffusers' FluxPipeline.encode_prompt for a prompt pair:
// the context is T5's MaxSequenceLength tokens, the pooled vector CLIP-L's
// final-norm state at the end token, unprojected. The negative prompt is
// encoded too, for real CFG (--cfg-scale above 1).
func (p *Pipeline) encodeFlux(prompt, negative string) (*Conditioning, error) {
	for _, text := range []string{prompt, negative} {
		if _, tags := tokenizer.ExtraNetworks(text); len(tags) > 0 {
			return nil, fmt.Errorf("prompt: %q: LoRAs and other extra networks are not supported for %s models yet", tags[0].Text(), p.Model.Family)
		}
	}
	msl := p.MaxSequenceLength
	if msl < 1 || msl > 4096 {
		return nil, fmt.Errorf("max sequence length %d: want 1..4096 T5 tokens", msl)
	}
	c := &Conditioning{Chunks: 1, dev: p.dev}
	var err error
	if c.Cond, c.CondPooled, c.PromptTokens, c.PromptT5Tokens, err = p.encodeFluxOne(prompt, msl); err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	if c.Uncond, c.UncondPooled, c.NegativeTokens, c.NegativeT5Tokens, err = p.encodeFluxOne(negative, msl); err != nil {
		c.Release()
		return nil, fmt.Errorf("negative prompt: %w", err)
	}
	return c, nil
}

func (p *Pipeline) encodeFluxOne(text string, msl int) (ctx, pooled *gpu.Tensor, clipTokens, t5Tokens int, err error) {
	d := p.dev
	t0 := time.Now()
	ids := p.tok.Encode(text)
	clipTokens = len(ids)
	clipIDs := withPad([][]int32{tokenizer.Pad77(ids)}, p.Model.Texts[0].Pad)
	t5ids, _ := p.flux.t5tok.EncodePadded(text, msl)
	t5Tokens = len(p.flux.t5tok.Encode(text)) + 1
	p.Timings["tokenize"] = time.Since(t0)
	t1 := time.Now()
	d.PushScope()
	_, pooled, err = p.texts[0].EncodeWith(clipIDs, nets.EncodeOpts{Skip: 1, FinalNorm: true, Pooled: true, Unprojected: true})
	if err == nil {
		ctx, err = p.flux.t5.Encode([][]int32{t5ids})
	}
	if err == nil {
		err = d.Err()
	}
	if err != nil {
		d.PopScope()
		return nil, nil, 0, 0, fmt.Errorf("text encoders: %w", err)
	}
	d.PopScope(ctx, pooled)
	p.Timings["text_encoder"] = time.Since(t1)
	return ctx, pooled, clipTokens, t5Tokens, nil
}

// PackLatents is FluxPipeline._pack_latents: [B,C,H,W] -> [B,(H/2)(W/2),4C],
// token (i,j) holding x[c, 2i+dy, 2j+dx] at c*4 + dy*2 + dx.
func PackLatents(x []float32, shape [4]int) []float32 {
	B, C, H, W := shape[0], shape[1], shape[2], shape[3]
	out := make([]float32, len(x))
	h, w := H/2, W/2
	for b := 0; b < B; b++ {
		for c := 0; c < C; c++ {
			for y := 0; y < 2*h; y++ {
				for xx := 0; xx < 2*w; xx++ {
					tok := (y/2)*w + xx/2
					out[(b*h*w+tok)*4*C+c*4+(y%2)*2+xx%2] = x[((b*C+c)*H+y)*W+xx]
				}
			}
		}
	}
	return out
}

// UnpackLatents inverts PackLatents.
func UnpackLatents(x []float32, shape [4]int) []float32 {
	B, C, H, W := shape[0], shape[1], shape[2], shape[3]
	out := make([]float32, len(x))
	h, w := H/2, W/2
	for b := 0; b < B; b++ {
		for c := 0; c < C; c++ {
			for y := 0; y < 2*h; y++ {
				for xx := 0; xx < 2*w; xx++ {
					tok := (y/2)*w + xx/2
					out[((b*C+c)*H+y)*W+xx] = x[(b*h*w+tok)*4*C+c*4+(y%2)*2+xx%2]
				}
			}
		}
	}
	return out
}

// FluxImageIDs are the position ids (0, row, column) of an h x w grid of
// packed tokens.
func FluxImageIDs(h, w int) [][3]float64 {
	ids := make([][3]float64, 0, h*w)
	for i := 0; i < h; i++ {
		for j := 0; j < w; j++ {
			ids = append(ids, [3]float64{0, float64(i), float64(j)})
		}
	}
	return ids
}

// predictFlux runs the Flux transformer on the host latent x [B,16,h,w]
// at timestep t (sigma x 1000; the transformer gets t/1000 as diffusers
// passes it) and returns the velocity, unpacked, on the host.
func (p *Pipeline) predictFlux(x []float32, shape [4]int, t float64, c *Conditioning, rows []Row) ([]float32, error) {
	if len(rows) != shape[0] {
		return nil, fmt.Errorf("predict: %d rows for a batch of %d", len(rows), shape[0])
	}
	if shape[2]%2 != 0 || shape[3]%2 != 0 {
		return nil, fmt.Errorf("predict: latent %dx%d does not pack 2x2", shape[3], shape[2])
	}
	t0 := time.Now()
	ctx := c.context(rows)
	pooled := c.cached("pooled:"+rowsKey(rows), rows, c.CondPooled, c.UncondPooled)
	B := shape[0]
	ts := make([]float32, B)
	var guidance []float32
	if p.Model.Flux.GuidanceEmbeds {
		guidance = make([]float32, B)
	}
	for i := range ts {
		ts[i] = float32(t) / 1000
		if guidance != nil {
			guidance[i] = float32(p.FluxGuidance)
		}
	}
	txt := make([][3]float64, ctx.Dim(1))
	img := FluxImageIDs(shape[2]/2, shape[3]/2)
	d := p.dev
	d.PushScope()
	defer d.PopScope()
	packed := d.Upload(PackLatents(x, shape), B, len(img), 4*shape[1])
	out, err := p.flux.tr.Forward(packed, ts, guidance, ctx, pooled, txt, img)
	if err != nil {
		return nil, err
	}
	res, err := d.Download(out)
	p.Timings["unet"] = time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("transformer: %w", err)
	}
	return UnpackLatents(res, shape), nil
}
