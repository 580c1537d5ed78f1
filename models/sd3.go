package models

import (
	"fmt"
	"time"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/tokenizer"
)

// LoadExtra is Load for a single file with separate component files (an
// SD3 file without its text encoders or VAE; see checkpoint.Extra).
func LoadExtra(dev gpu.Device, path, configPath string, ex checkpoint.Extra) (*Pipeline, error) {
	start := time.Now()
	m, err := checkpoint.LoadExtra(path, configPath, ex)
	if err != nil {
		return nil, err
	}
	p, err := New(dev, m, displayName(path))
	if err != nil {
		m.Close()
		return nil, err
	}
	p.LoadTime = time.Since(start)
	return p, nil
}

// sd3 holds the networks and settings an SD3 pipeline has beyond a U-Net
// pipeline's: the T5 encoder and its tokenizer and the MM-DiT.
type sd3 struct {
	mmdit *nets.MMDiT
	t5    *nets.T5Encoder
	t5tok *tokenizer.Unigram
	// rgb and rgbBias are the previews' latent -> RGB map (fitLatentRGB).
	rgb     [][]float32
	rgbBias [3]float32
}

// newSD3 reads the T5 tokenizer and uploads SD3's networks: the two CLIP
// encoders, T5, the transformer and the VAE (upload scans and guards each
// component's weights).
func (p *Pipeline) newSD3(upload func(comp string, build func(d gpu.Device, w nets.Weights) error) error) error {
	m := p.Model
	tok, err := tokenizer.LoadUnigram(m.T5.Tokenizer)
	if err != nil {
		return err
	}
	if tok.VocabSize() > m.T5.Config.VocabSize {
		return fmt.Errorf("%s: the T5 tokenizer has %d ids, more than the encoder's vocab_size %d", m.T5.Tokenizer, tok.VocabSize(), m.T5.Config.VocabSize)
	}
	p.sd3 = &sd3{t5tok: tok}
	p.MaxSequenceLength = m.Spec.MaxSequenceLength
	for _, t := range m.Texts {
		err := upload(t.Spec.Role, func(d gpu.Device, w nets.Weights) error {
			te, err := nets.NewTextEncoder(d, t.Config, w)
			if err == nil {
				p.texts = append(p.texts, te)
			}
			return err
		})
		if err != nil {
			return err
		}
		tk := p.tok
		if t.Pad != tokenizer.EOS && t.Pad != tokenizer.BOS {
			tk = tk.WithSpecial(tk.Token(t.Pad), t.Pad)
		}
		p.toks = append(p.toks, tk)
	}
	err = upload(m.T5.Spec.Role, func(d gpu.Device, w nets.Weights) (err error) {
		p.sd3.t5, err = nets.NewT5Encoder(d, m.T5.Config, w)
		return err
	})
	if err != nil {
		return err
	}
	err = upload("transformer", func(d gpu.Device, w nets.Weights) (err error) {
		p.sd3.mmdit, err = nets.NewMMDiT(d, *m.Transformer, w)
		return err
	})
	if err != nil {
		return err
	}
	return upload("vae", func(d gpu.Device, w nets.Weights) (err error) {
		p.vae, err = nets.NewVAE(d, m.VAE, w)
		return err
	})
}

// closeSD3 releases SD3's own networks.
func (p *Pipeline) closeSD3() {
	if p.sd3 == nil {
		return
	}
	if p.sd3.mmdit != nil {
		p.sd3.mmdit.Release()
	}
	if p.sd3.t5 != nil {
		p.sd3.t5.Release()
	}
	p.sd3 = nil
}

// IsFlow reports a rectified-flow model (SD3): the denoiser predicts a
// velocity and timesteps are sigma x 1000.
func (p *Pipeline) IsFlow() bool { return p.sd3 != nil || p.flux != nil }

// T5Tokenizer is the pipeline's T5 tokenizer, nil for a model without T5.
func (p *Pipeline) T5Tokenizer() *tokenizer.Unigram {
	switch {
	case p.sd3 != nil:
		return p.sd3.t5tok
	case p.flux != nil:
		return p.flux.t5tok
	}
	return nil
}

// encodeSD3 is diffusers' StableDiffusion3Pipeline.encode_prompt for a
// prompt pair: per prompt, CLIP-L's and CLIP-G's penultimate hidden states
// (no final norm; clip skip moves further back) side by side, zero-padded
// to T5's width, followed along the sequence by T5's MaxSequenceLength
// tokens; the pooled vector is both projections side by side. The empty
// negative prompt is encoded like any other (SD3 does not zero it).
// Prompts are tokenized plainly, as diffusers does: A1111's weighting
// syntax is not applied, and CLIP takes the first 75 tokens.
func (p *Pipeline) encodeSD3(prompt, negative string, clipSkip int) (*Conditioning, error) {
	for _, text := range []string{prompt, negative} {
		if _, tags := tokenizer.ExtraNetworks(text); len(tags) > 0 {
			return nil, fmt.Errorf("prompt: %q: LoRAs and other extra networks are not supported for %s models yet", tags[0].Text(), p.Model.Family)
		}
	}
	msl := p.MaxSequenceLength
	if msl < 1 || msl > 4096 {
		return nil, fmt.Errorf("max sequence length %d: want 1..4096 T5 tokens", msl)
	}
	if clipSkip < 1 {
		clipSkip = 1
	}
	c := &Conditioning{Chunks: 1, dev: p.dev}
	var err error
	if c.Cond, c.CondPooled, c.PromptTokens, c.PromptT5Tokens, err = p.encodeSD3One(prompt, msl, clipSkip); err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	if c.Uncond, c.UncondPooled, c.NegativeTokens, c.NegativeT5Tokens, err = p.encodeSD3One(negative, msl, clipSkip); err != nil {
		c.Release()
		return nil, fmt.Errorf("negative prompt: %w", err)
	}
	return c, nil
}

// encodeSD3One encodes one prompt: context [1, 77+msl, T5 width] and
// pooled [1, P], and the CLIP and T5 token counts (before truncation).
func (p *Pipeline) encodeSD3One(text string, msl, clipSkip int) (ctx, pooled *gpu.Tensor, clipTokens, t5Tokens int, err error) {
	d := p.dev
	t0 := time.Now()
	var clipIDs [][]int32
	for i, tok := range p.toks {
		ids := tok.Encode(text)
		if i == 0 {
			clipTokens = len(ids)
		}
		clipIDs = append(clipIDs, withPad([][]int32{tokenizer.Pad77(ids)}, p.Model.Texts[i].Pad)[0])
	}
	t5ids, _ := p.sd3.t5tok.EncodePadded(text, msl)
	t5Tokens = len(p.sd3.t5tok.Encode(text)) + 1
	p.Timings["tokenize"] = time.Since(t0)
	t1 := time.Now()
	d.PushScope()
	defer func() {
		if err != nil {
			d.PopScope()
			ctx, pooled = nil, nil
			return
		}
		d.PopScope(ctx, pooled)
		p.Timings["text_encoder"] = time.Since(t1)
	}()
	var hs, pools []*gpu.Tensor
	width := 0
	for i, t := range p.Model.Texts {
		te := p.texts[i]
		skip := t.Spec.Skip + clipSkip - 1
		if skip > te.Config.NumHiddenLayers {
			return nil, nil, 0, 0, fmt.Errorf("clip skip %d: the %s has only %d layers", clipSkip, t.Spec.Role, te.Config.NumHiddenLayers)
		}
		h, pl, err := te.EncodeWith([][]int32{clipIDs[i]}, nets.EncodeOpts{Skip: skip, Pooled: true})
		if err != nil {
			return nil, nil, 0, 0, fmt.Errorf("%s: %w", t.Spec.Role, err)
		}
		hs, pools = append(hs, h), append(pools, pl)
		width += h.Dim(2)
	}
	t5, err := p.sd3.t5.Encode([][]int32{t5ids})
	if err != nil {
		return nil, nil, 0, 0, err
	}
	tw := t5.Dim(2)
	if pad := tw - width; pad > 0 {
		hs = append(hs, d.Upload(make([]float32, tokenizer.ContextLen*pad), 1, tokenizer.ContextLen, pad))
	}
	ctx = d.Concat(1, d.Concat(2, hs...), t5)
	pooled = d.Concat(1, pools...)
	if err := d.Err(); err != nil {
		return nil, nil, 0, 0, fmt.Errorf("text encoders: %w", err)
	}
	return ctx, pooled, clipTokens, t5Tokens, nil
}

// predictSD3 runs the MM-DiT on the host latent x [B, C, h, w] at
// timestep t (sigma x 1000), row i conditioned on rows[i], and returns the
// velocity on the host.
func (p *Pipeline) predictSD3(x []float32, shape [4]int, t float64, c *Conditioning, rows []Row) ([]float32, error) {
	if len(rows) != shape[0] {
		return nil, fmt.Errorf("predict: %d rows for a batch of %d", len(rows), shape[0])
	}
	if c.CondPooled == nil {
		return nil, fmt.Errorf("predict: the conditioning has no pooled vector (not encoded by this SD3 pipeline)")
	}
	t0 := time.Now()
	ctx := c.context(rows)
	pooled := c.cached("pooled:"+rowsKey(rows), rows, c.CondPooled, c.UncondPooled)
	ts := make([]float32, shape[0])
	for i := range ts {
		ts[i] = float32(t)
	}
	d := p.dev
	d.PushScope()
	defer d.PopScope()
	out, err := p.sd3.mmdit.Forward(d.Upload(x, shape[:]...), ts, ctx, pooled)
	if err != nil {
		return nil, err
	}
	res, err := d.Download(out)
	p.Timings["unet"] = time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("transformer: %w", err)
	}
	return res, nil
}

// fitLatentRGB measures the VAE decoder's response to each latent channel:
// one decode of a zero latent and of a unit step in every channel (2x2
// latents, in the denoiser's space: scaling and shift applied), averaged
// over the pixels. The differences are the step previews' linear map, made
// from the model itself, for latents that have no published one.
func (p *Pipeline) fitLatentRGB() ([][]float32, [3]float32, error) {
	c := p.LatentChannels()
	const side = 2
	plane := side * side
	lat := make([]float32, (c+1)*c*plane)
	for i := 0; i < c; i++ {
		for k := 0; k < plane; k++ {
			lat[((i+1)*c+i)*plane+k] = 1
		}
	}
	vc := &p.vae.Config
	shift := float32(0)
	if vc.ShiftFactor != nil {
		shift = float32(*vc.ShiftFactor)
	}
	pix, shape, err := p.decodeRaw(lat, [4]int{c + 1, c, side, side}, float32(1/vc.ScalingFactor), shift)
	if err != nil {
		return nil, [3]float32{}, fmt.Errorf("vae decode (preview colours): %w", err)
	}
	n := shape[2] * shape[3]
	mean := func(row, ch int) float32 {
		var sum float64
		for _, v := range pix[(row*3+ch)*n : (row*3+ch+1)*n] {
			sum += float64(v)
		}
		return float32(sum / float64(n))
	}
	var bias [3]float32
	for k := range bias {
		bias[k] = mean(0, k)
	}
	factors := make([][]float32, c)
	for i := range factors {
		factors[i] = []float32{mean(i+1, 0) - bias[0], mean(i+1, 1) - bias[1], mean(i+1, 2) - bias[2]}
	}
	return factors, bias, nil
}

// fittedLatentRGB is LatentRGB for SD3 and Flux: the VAE config's own map
// when it has one, else fitLatentRGB's (measured once; a failed
// measurement leaves a grey map, the previews then stay blank rather than
// wrong).
func (p *Pipeline) fittedLatentRGB() ([][]float32, [3]float32) {
	c := p.vae.Config
	if len(c.LatentRGBFactors) == p.LatentChannels() && len(c.LatentRGBBias) == 3 {
		return c.LatentRGBFactors, [3]float32{c.LatentRGBBias[0], c.LatentRGBBias[1], c.LatentRGBBias[2]}
	}
	var rgb *[][]float32
	var bias *[3]float32
	if p.sd3 != nil {
		rgb, bias = &p.sd3.rgb, &p.sd3.rgbBias
	} else {
		rgb, bias = &p.flux.rgb, &p.flux.rgbBias
	}
	if *rgb == nil {
		f, b, err := p.fitLatentRGB()
		if err != nil {
			f = make([][]float32, p.LatentChannels())
			for i := range f {
				f[i] = []float32{0, 0, 0}
			}
		}
		*rgb, *bias = f, b
	}
	return *rgb, *bias
}
