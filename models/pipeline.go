// Package models loads diffusion models and runs them: Pipeline ties a
// checkpoint's tokenizer, text encoder, U-Net and VAE (subpackages
// checkpoint, tokenizer and nets) to one gpu.Device, loaded once and kept
// resident between generations.
package models

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"math"
	"strings"
	"time"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/tokenizer"
	"github.com/stepwise/stepwise/render"
)

// Pipeline is one loaded model on one device.
type Pipeline struct {
	// Model is the checkpoint: configs, family, scheduler config, warnings.
	Model *checkpoint.Model
	// Name is a short display name: the file name without its extension (as
	// A1111 writes it in "Model: ..."), or the folder name.
	Name string

	dev  gpu.Device
	tok  *tokenizer.Tokenizer
	text *nets.TextEncoder
	unet *nets.UNet
	vae  *nets.VAE

	// LoadTime is how long Load took (reading, validating, uploading).
	LoadTime time.Duration
	// Timings holds the duration of the latest call of each stage, under
	// "tokenize", "text_encoder", "unet", "vae_decode", "vae_encode".
	Timings map[string]time.Duration
}

// Load reads a checkpoint (a .safetensors file or a diffusers folder, with an
// optional config file; see checkpoint.Load) and uploads its networks to dev.
func Load(dev gpu.Device, path, configPath string) (*Pipeline, error) {
	start := time.Now()
	m, err := checkpoint.Load(path, configPath)
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

// New builds a pipeline from an already loaded checkpoint. The weights are
// uploaded to dev; m stays owned by the pipeline (Close closes it).
func New(dev gpu.Device, m *checkpoint.Model, name string) (*Pipeline, error) {
	start := time.Now()
	p := &Pipeline{Model: m, Name: name, dev: dev, tok: tokenizer.Default(), Timings: map[string]time.Duration{}}
	// Each component's weights are scanned for NaN/Inf just before its
	// upload reads the same bytes (the mapped pages are then resident).
	// Both reads are guarded: a file truncated meanwhile gives an error
	// naming it instead of a SIGBUS.
	upload := func(comp string, build func(w nets.Weights) error) error {
		if err := m.CheckFinite(comp); err != nil {
			return err
		}
		gw, err := m.GuardedWeights(comp)
		if err != nil {
			return err
		}
		err = build(gw)
		if ferr := gw.Err(); ferr != nil {
			return ferr
		}
		if err != nil {
			return fmt.Errorf("%s: %s: %w", m.Path, strings.ReplaceAll(comp, "_", " "), err)
		}
		return nil
	}
	err := upload("text_encoder", func(w nets.Weights) (err error) {
		p.text, err = nets.NewTextEncoder(dev, m.Text, w)
		return err
	})
	if err == nil {
		err = upload("unet", func(w nets.Weights) (err error) {
			p.unet, err = nets.NewUNet(dev, m.UNet, w)
			return err
		})
	}
	if err == nil {
		err = upload("vae", func(w nets.Weights) (err error) {
			p.vae, err = nets.NewVAE(dev, m.VAE, w)
			return err
		})
	}
	if err != nil {
		p.Close()
		return nil, err
	}
	if err := dev.Finish(); err != nil {
		p.Close()
		return nil, fmt.Errorf("%s: uploading weights: %w", m.Path, err)
	}
	p.LoadTime = time.Since(start)
	return p, nil
}

func displayName(path string) string {
	for len(path) > 1 && path[len(path)-1] == '/' {
		path = path[:len(path)-1]
	}
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			path = path[i+1:]
			break
		}
	}
	for _, ext := range []string{".safetensors", ".ckpt"} {
		if len(path) > len(ext) && path[len(path)-len(ext):] == ext {
			return path[:len(path)-len(ext)]
		}
	}
	return path
}

// Device is the device the pipeline runs on.
func (p *Pipeline) Device() gpu.Device { return p.dev }

// Tokenizer is the pipeline's CLIP tokenizer.
func (p *Pipeline) Tokenizer() *tokenizer.Tokenizer { return p.tok }

// LatentChannels is the number of latent channels (4 for SD).
func (p *Pipeline) LatentChannels() int { return p.unet.Config.InChannels }

// Downscale is the ratio of image size to latent size (8 for SD).
func (p *Pipeline) Downscale() int { return p.vae.Config.Downscale() }

// NativeSize is the image size the model was trained at (sample_size x
// downscale), e.g. 512 for SD 1.5.
func (p *Pipeline) NativeSize() int { return p.unet.Config.SampleSize * p.Downscale() }

// LatentRGB returns the linear latent -> RGB projection for step previews:
// the model's own when its config carries one, else SD 1.x's.
func (p *Pipeline) LatentRGB() (factors [][]float32, bias [3]float32) {
	c := p.vae.Config
	if len(c.LatentRGBFactors) == p.LatentChannels() && len(c.LatentRGBBias) == 3 {
		ok := true
		for _, f := range c.LatentRGBFactors {
			ok = ok && len(f) == 3
		}
		if ok {
			return c.LatentRGBFactors, [3]float32{c.LatentRGBBias[0], c.LatentRGBBias[1], c.LatentRGBBias[2]}
		}
	}
	return render.SD15LatentRGBFactors, render.SD15LatentRGBBias
}

// Close releases the device memory and the checkpoint's mapping.
func (p *Pipeline) Close() error {
	if p.text != nil {
		p.text.Release()
	}
	if p.unet != nil {
		p.unet.Release()
	}
	if p.vae != nil {
		p.vae.Release()
	}
	p.text, p.unet, p.vae = nil, nil, nil
	if p.Model != nil {
		err := p.Model.Close()
		p.Model = nil
		return err
	}
	return nil
}

// Conditioning is a prompt pair encoded for classifier-free guidance. Both
// tensors live on the device with shape [1, 77*chunks, C] and the same
// number of chunks (the shorter prompt is padded with empty chunks, as
// A1111 does).
type Conditioning struct {
	Cond, Uncond *gpu.Tensor
	// Chunks is the number of 77-token chunks; more than 1 means a prompt
	// was longer than 75 tokens and was split.
	Chunks int
	// Tokens counts each prompt's tokens as A1111 does (75 per full chunk).
	PromptTokens, NegativeTokens int

	batch map[string]*gpu.Tensor // contexts built for row patterns
	dev   gpu.Device
}

// Release frees the conditioning's device memory.
func (c *Conditioning) Release() {
	if c == nil || c.dev == nil {
		return
	}
	c.dev.Release(c.Cond)
	c.dev.Release(c.Uncond)
	for _, t := range c.batch {
		c.dev.Release(t)
	}
	c.batch = nil
}

// EncodePrompt tokenizes both prompts (A1111 weighting syntax, 75-token
// chunks), runs the text encoder and applies the token weights with A1111's
// mean-restoring rule. clipSkip follows A1111: 1 (or 0) = last layer, 2 =
// penultimate.
func (p *Pipeline) EncodePrompt(prompt, negative string, clipSkip int) (*Conditioning, error) {
	t0 := time.Now()
	pos, err := p.tok.EncodeWeighted(prompt)
	if err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	neg, err := p.tok.EncodeWeighted(negative)
	if err != nil {
		return nil, fmt.Errorf("negative prompt: %w", err)
	}
	n := max(len(pos.Chunks), len(neg.Chunks))
	padChunks(&pos, n, p.tok)
	padChunks(&neg, n, p.tok)
	p.Timings["tokenize"] = time.Since(t0)

	t1 := time.Now()
	c := &Conditioning{Chunks: n, PromptTokens: pos.TokenCount, NegativeTokens: neg.TokenCount, dev: p.dev}
	if c.Cond, err = p.encode(pos, clipSkip); err != nil {
		return nil, err
	}
	if c.Uncond, err = p.encode(neg, clipSkip); err != nil {
		p.dev.Release(c.Cond)
		return nil, err
	}
	p.Timings["text_encoder"] = time.Since(t1)
	return c, nil
}

// padChunks appends empty-prompt chunks until e has n chunks.
func padChunks(e *tokenizer.Encoded, n int, tok *tokenizer.Tokenizer) {
	for len(e.Chunks) < n {
		ids := tokenizer.Pad77(nil)
		w := make([]float32, len(ids))
		for i := range w {
			w[i] = 1
		}
		e.Chunks = append(e.Chunks, ids)
		e.Weights = append(e.Weights, w)
	}
}

// encode runs the text encoder on every chunk and returns [1, 77*chunks, C].
func (p *Pipeline) encode(e tokenizer.Encoded, clipSkip int) (*gpu.Tensor, error) {
	if clipSkip < 1 {
		clipSkip = 1
	}
	if clipSkip > p.text.Config.NumHiddenLayers {
		return nil, fmt.Errorf("clip skip %d: the text encoder has only %d layers", clipSkip, p.text.Config.NumHiddenLayers)
	}
	h, err := p.text.EncodeSkip(e.Chunks, clipSkip) // [chunks, 77, C]
	if err != nil {
		return nil, fmt.Errorf("text encoder: %w", err)
	}
	weighted := false
	for _, ws := range e.Weights {
		for _, w := range ws {
			if w != 1 {
				weighted = true
			}
		}
	}
	if weighted {
		z, err := p.dev.Download(h)
		if err != nil {
			p.dev.Release(h)
			return nil, fmt.Errorf("text encoder: %w", err)
		}
		p.dev.Release(h)
		dim := h.Dim(-1)
		per := h.Dim(1) * dim
		for i, ws := range e.Weights {
			tokenizer.ApplyWeights(z[i*per:(i+1)*per], len(ws), dim, ws)
		}
		h = p.dev.Upload(z, h.Shape...)
	}
	out := h.View(1, h.Dim(0)*h.Dim(1), h.Dim(2))
	return out, p.dev.Err()
}

// Row selects the conditioning of one batch row of PredictNoise.
type Row bool

// Rows of a CFG batch.
const (
	Uncond Row = false
	Cond   Row = true
)

// context returns the [B, L, C] text context for a row pattern, cached on c
// so that every step of a run reuses it.
func (c *Conditioning) context(rows []Row) *gpu.Tensor {
	key := make([]byte, len(rows))
	for i, r := range rows {
		if r {
			key[i] = 'c'
		} else {
			key[i] = 'u'
		}
	}
	if t, ok := c.batch[string(key)]; ok {
		return t
	}
	parts := make([]*gpu.Tensor, len(rows))
	for i, r := range rows {
		parts[i] = c.Uncond
		if r {
			parts[i] = c.Cond
		}
	}
	t := c.dev.Concat(0, parts...)
	if c.batch == nil {
		c.batch = map[string]*gpu.Tensor{}
	}
	c.batch[string(key)] = t
	return t
}

// PredictNoise runs the U-Net on the host latent x [B, C, h, w] at timestep
// t, row i conditioned on rows[i], and returns the raw model output (eps or
// v) on the host.
func (p *Pipeline) PredictNoise(x []float32, shape [4]int, t float64, c *Conditioning, rows []Row) ([]float32, error) {
	if len(rows) != shape[0] {
		return nil, fmt.Errorf("predict: %d rows for a batch of %d", len(rows), shape[0])
	}
	if shape[1] != p.LatentChannels() {
		return nil, fmt.Errorf("predict: latent has %d channels, the model wants %d", shape[1], p.LatentChannels())
	}
	t0 := time.Now()
	ctx := c.context(rows)
	ts := make([]float32, shape[0])
	for i := range ts {
		ts[i] = float32(t)
	}
	d := p.dev
	d.PushScope()
	xin := d.Upload(x, shape[:]...)
	out := p.unet.Forward(xin, ts, ctx)
	res, err := d.Download(out)
	d.PopScope()
	p.Timings["unet"] = time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("unet: %w", err)
	}
	return res, nil
}

// Decode turns SD latents [B, C, h, w] (as the sampler leaves them, before
// the scaling factor is undone) into images.
func (p *Pipeline) Decode(latent []float32, shape [4]int) ([]*image.RGBA, error) {
	t0 := time.Now()
	d := p.dev
	inv := float32(1 / p.vae.Config.ScalingFactor)
	d.PushScope()
	z := d.Upload(latent, shape[:]...)
	img := p.vae.Decode(d.Scale(z, inv, 0))
	pix, err := d.Download(img)
	d.PopScope()
	p.Timings["vae_decode"] = time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("vae decode: %w", err)
	}
	return ToImages(pix, img.Shape), nil
}

// ToImages converts raw VAE output [B, 3, H, W] in [-1, 1] to 8-bit images
// as diffusers does: clamp(x/2 + 0.5, 0, 1) * 255, rounded half to even.
func ToImages(pix []float32, shape gpu.Shape) []*image.RGBA {
	b, h, w := shape[0], shape[2], shape[3]
	out := make([]*image.RGBA, b)
	plane := h * w
	for n := 0; n < b; n++ {
		im := image.NewRGBA(image.Rect(0, 0, w, h))
		base := n * 3 * plane
		for i := 0; i < plane; i++ {
			var c [3]uint8
			for ch := 0; ch < 3; ch++ {
				v := pix[base+ch*plane+i]/2 + 0.5
				v = min(max(v, 0), 1)
				c[ch] = uint8(math.RoundToEven(float64(v * 255)))
			}
			im.SetRGBA(i%w, i/w, color.RGBA{c[0], c[1], c[2], 255})
		}
		out[n] = im
	}
	return out
}

// Encode turns images into latent moments [B, 2C, h, w] (mean, logvar), the
// VAE encoder's output before sampling and scaling. Images are RGBA with
// values mapped to [-1, 1].
func (p *Pipeline) Encode(imgs []image.Image) ([]float32, gpu.Shape, error) {
	if len(imgs) == 0 {
		return nil, nil, errors.New("vae encode: no images")
	}
	t0 := time.Now()
	bnd := imgs[0].Bounds()
	w, h := bnd.Dx(), bnd.Dy()
	if w%p.Downscale() != 0 || h%p.Downscale() != 0 {
		return nil, nil, fmt.Errorf("vae encode: %dx%d is not a multiple of %d", w, h, p.Downscale())
	}
	plane := w * h
	x := make([]float32, len(imgs)*3*plane)
	for n, im := range imgs {
		if im.Bounds().Dx() != w || im.Bounds().Dy() != h {
			return nil, nil, fmt.Errorf("vae encode: image %d is %v, want %dx%d", n, im.Bounds().Size(), w, h)
		}
		b := im.Bounds()
		for yy := 0; yy < h; yy++ {
			for xx := 0; xx < w; xx++ {
				r, g, bl, _ := im.At(b.Min.X+xx, b.Min.Y+yy).RGBA()
				i := n*3*plane + yy*w + xx
				x[i] = float32(r)/65535*2 - 1
				x[i+plane] = float32(g)/65535*2 - 1
				x[i+2*plane] = float32(bl)/65535*2 - 1
			}
		}
	}
	d := p.dev
	d.PushScope()
	m := p.vae.Encode(d.Upload(x, len(imgs), 3, h, w))
	out, err := d.Download(m)
	shape := m.Shape.Clone()
	d.PopScope()
	p.Timings["vae_encode"] = time.Since(t0)
	if err != nil {
		return nil, nil, fmt.Errorf("vae encode: %w", err)
	}
	return out, shape, nil
}
