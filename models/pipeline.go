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
	"os"
	"runtime"
	"runtime/debug"
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

	dev   gpu.Device
	tok   *tokenizer.Tokenizer
	texts []*nets.TextEncoder    // parallel to Model.Texts
	toks  []*tokenizer.Tokenizer // each text encoder's tokenizer
	unet  *nets.UNet
	vae   *nets.VAE
	tiny  *nets.Tiny // TAESD, when set: decodes instead of the VAE
	// tileLimit, when set, replaces the device's tensor limit for the
	// VAE's tiling decision (tests).
	tileLimit int64
	tinyM     *checkpoint.Tiny
	control   *controlState // the ControlNet, when set (controlnet.go)
	sd3       *sd3          // SD3's T5 and MM-DiT (sd3.go); nil for U-Net models
	flux      *fluxNets
	// FluxGuidance is a FLUX.1-dev model's distilled guidance (diffusers'
	// guidance_scale, stable-diffusion.cpp's --guidance; default 3.5).
	FluxGuidance float64

	// MaxSequenceLength is the number of T5 tokens prompts are padded or
	// cut to (diffusers' max_sequence_length; the family's default, 256
	// for SD3). Models without T5 ignore it.
	MaxSequenceLength int

	// LoRADir is the folder <lora:NAME:W> tags of prompts are looked up in
	// (A1111's models/Lora, stable-diffusion.cpp's --lora-model-dir); New
	// sets it from $STEPWISE_LORA_DIR.
	LoRADir string
	lora    *loraState // LoRAs merged into the weights (lora.go)
	ip      *ipState   // an attached IP-Adapter (ipadapter.go)

	// LoadTime is how long Load took (reading, validating, uploading).
	LoadTime time.Duration
	// Timings holds the duration of the latest call of each stage, under
	// "tokenize", "text_encoder", "unet", "vae_decode", "vae_encode".
	Timings map[string]time.Duration
}

// LoRADirEnv names the environment variable that gives pipelines their
// default LoRADir.
const LoRADirEnv = "STEPWISE_LORA_DIR"

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
	m.InPlace = inPlace()
	p := &Pipeline{Model: m, Name: name, dev: dev, tok: tokenizer.Default(), Timings: map[string]time.Duration{},
		LoRADir: os.Getenv(LoRADirEnv)}
	// Each component's weights are copied once, from the mapped file into
	// the device's storage, by Go code that guards the read (a file
	// truncated meanwhile gives an error naming it instead of a SIGBUS) and
	// counts NaN/Inf values as it goes (see checkpoint.Upload).
	upload := func(comp string, build func(d gpu.Device, w nets.Weights) error) error {
		return uploadWeights(dev, m, comp, func(d gpu.Device, w nets.Weights) error {
			if err := build(d, w); err != nil {
				return fmt.Errorf("%s: %s: %w", m.Path, strings.ReplaceAll(comp, "_", " "), err)
			}
			return nil
		})
	}
	if len(m.Texts) == 0 {
		return nil, fmt.Errorf("%s: no text encoder", m.Path)
	}
	var err error
	if m.Flux != nil {
		if err = p.newFlux(upload); err != nil {
			p.Close()
			return nil, err
		}
		return p.finishLoad(start)
	}
	if m.Transformer != nil {
		err = p.newSD3(upload)
		if err != nil {
			p.Close()
			return nil, err
		}
		return p.finishLoad(start)
	}
	for _, t := range m.Texts {
		err = upload(t.Spec.Role, func(d gpu.Device, w nets.Weights) error {
			te, err := nets.NewTextEncoder(d, t.Config, w)
			if err == nil {
				p.texts = append(p.texts, te)
			}
			return err
		})
		if err != nil {
			break
		}
		tok := p.tok
		if t.Pad != tokenizer.EOS && t.Pad != tokenizer.BOS {
			tok = tok.WithSpecial(tok.Token(t.Pad), t.Pad) // "!" as an added pad token
		}
		p.toks = append(p.toks, tok)
	}
	if err == nil {
		err = p.checkContracts()
	}
	if err == nil {
		err = upload("unet", func(d gpu.Device, w nets.Weights) (err error) {
			p.unet, err = nets.NewUNet(d, m.UNet, w)
			return err
		})
	}
	if err == nil {
		err = upload("vae", func(d gpu.Device, w nets.Weights) (err error) {
			p.vae, err = nets.NewVAE(d, m.VAE, w)
			return err
		})
	}
	if err != nil {
		p.Close()
		return nil, err
	}
	return p.finishLoad(start)
}

// finishLoad waits for the uploads and lets the file's pages go.
func (p *Pipeline) finishLoad(start time.Time) (*Pipeline, error) {
	m, dev := p.Model, p.dev
	if err := dev.Finish(); err != nil {
		p.Close()
		return nil, fmt.Errorf("%s: uploading weights: %w", m.Path, err)
	}
	// The device holds the weights now: the file's pages need not stay
	// resident beside them (on llvmpipe both would count against RAM).
	if err := m.DropPages(); err != nil {
		p.Close()
		return nil, err
	}
	// The upload copies are garbage now: give their memory back at once
	// rather than when the runtime's scavenger gets to it, when there is
	// much to give. A small model's few MiB are not worth the collection,
	// nor the page faults of taking them back for the first step's
	// buffers (slow on virtual machines).
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > freeOSAbove {
		debug.FreeOSMemory()
	}
	p.LoadTime = time.Since(start)
	return p, nil
}

// DisplayName is the name Load gives the model at path: the file name
// without its extension (as A1111 writes it in "Model: ..."), or the
// folder name.
func DisplayName(path string) string { return displayName(path) }

// freeOSAbove is the heap size (live and garbage) above which a load hands
// the upload copies' memory back to the OS at once.
const freeOSAbove = 256 << 20

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

// LatentChannels is the number of latent channels (4 for SD): the VAE's,
// which the U-Net denoises (an inpainting U-Net takes more input channels;
// see Inpainting).
func (p *Pipeline) LatentChannels() int { return p.vae.Config.LatentChannels }

// Inpainting reports whether the U-Net is an inpainting one: it takes the
// mask and the masked image's latents as extra input channels (in_channels
// 2*latent+1, 9 for SD), after the latents.
func (p *Pipeline) Inpainting() bool {
	return p.unet != nil && p.unet.Config.InChannels == 2*p.LatentChannels()+1
}

// Downscale is the ratio of image size to latent size (8 for SD).
func (p *Pipeline) Downscale() int { return p.vae.Config.Downscale() }

// SizeMultiple is what image sides must be a multiple of: the VAE's
// downscale times the U-Net's (64 for SD 1.x/2.x, 32 for SDXL).
func (p *Pipeline) SizeMultiple() int {
	if p.sd3 != nil {
		return p.Downscale() * p.sd3.mmdit.Config.PatchSize
	}
	if p.flux != nil {
		return p.Downscale() * 2 // 2x2 packing
	}
	return p.Downscale() << (len(p.unet.Config.BlockOutChannels) - 1)
}

// NativeSize is the image size the model was trained at (sample_size x
// downscale), e.g. 512 for SD 1.5.
func (p *Pipeline) NativeSize() int {
	if p.sd3 != nil {
		return p.sd3.mmdit.Config.SampleSize * p.Downscale()
	}
	if p.flux != nil {
		return p.Model.Spec.NativeSize
	}
	return p.unet.Config.SampleSize * p.Downscale()
}

// LatentRGB returns the linear latent -> RGB projection for step previews:
// the model's own when its config carries one, else SD 1.x's.
func (p *Pipeline) LatentRGB() (factors [][]float32, bias [3]float32) {
	if p.sd3 != nil || p.flux != nil {
		return p.fittedLatentRGB()
	}
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

// checkContracts checks, before the U-Net is uploaded, that the networks
// fit together: the text encoders' widths add up to the U-Net's context
// width, the added conditioning matches the pooled vector, and the VAE's
// latent channels are the U-Net's.
func (p *Pipeline) checkContracts() error {
	m := p.Model
	ctx, pooled := 0, 0
	var parts []string
	for i, t := range m.Texts {
		ctx += t.Config.HiddenSize
		parts = append(parts, fmt.Sprintf("%s %d", t.Spec.Role, t.Config.HiddenSize))
		if t.Spec.Pooled {
			pooled = p.texts[i].Config.ProjectionDim
		}
	}
	u := &m.UNet
	if ctx != u.CrossAttentionDim {
		return fmt.Errorf("%s: the text encoders give %d-wide context (%s) but the U-Net's cross_attention_dim is %d",
			m.Path, ctx, strings.Join(parts, " + "), u.CrossAttentionDim)
	}
	if m.Spec != nil && m.Spec.Added != "" {
		k := 6
		if m.Spec.Added == checkpoint.AddedAestheticTimeIDs {
			k = 5
		}
		if u.AdditionEmbedType != "text_time" {
			return fmt.Errorf("%s: %s needs a U-Net with addition_embed_type text_time", m.Path, m.Spec.Name)
		}
		if want := pooled + k*u.AdditionTimeEmbedDim; want != u.ProjectionClassEmbeddingsInputDim {
			return fmt.Errorf("%s: the U-Net's add_embedding takes %d values, but pooled %d + %d time ids x %d = %d",
				m.Path, u.ProjectionClassEmbeddingsInputDim, pooled, k, u.AdditionTimeEmbedDim, want)
		}
	}
	vl := m.VAE.LatentChannels
	if vl == 0 {
		vl = 4
	}
	if in := u.InChannels; in != vl && in != 2*vl+1 {
		return fmt.Errorf("%s: the VAE has %d latent channels but the U-Net takes %d", m.Path, vl, in)
	}
	return nil
}

// uploadSide uploads component comp of a side model (a ControlNet's, an
// IP-Adapter's or a TAESD's Source) to the pipeline's device as New uploads
// the checkpoint's: copied under a guard or read in place as the
// checkpoint is, NaN/Inf counted (Finish's error names the file). build
// makes the network; on an error the caller releases what it made.
func (p *Pipeline) uploadSide(src *checkpoint.Model, comp string, build func(d gpu.Device, w nets.Weights) error) error {
	src.InPlace = p.Model != nil && p.Model.InPlace
	return uploadWeights(p.dev, src, comp, build)
}

// uploadWeights uploads component comp of src to dev through a
// checkpoint.Upload, build making the network over it. Finish's error (a
// faulted read or NaN/Inf, naming the file) comes first, then build's.
func uploadWeights(dev gpu.Device, src *checkpoint.Model, comp string, build func(d gpu.Device, w nets.Weights) error) error {
	u, err := src.StartUpload(comp)
	if err != nil {
		return err
	}
	err = build(u.Device(dev), u)
	if ferr := u.Finish(); ferr != nil {
		return ferr
	}
	return err
}

// doneReading waits for the device before src's mappings go, when it reads
// weights in them in place (queued ops may still read them).
func (p *Pipeline) doneReading(src *checkpoint.Model) {
	if src != nil && src.ReadsInPlace() {
		_ = p.dev.Finish()
	}
}

// checkFiles refuses work on weights read in place from a checkpoint that
// changed on disk since it was loaded (a truncated mapping would crash the
// device's threads, which no guard covers): load it again.
func (p *Pipeline) checkFiles() error {
	srcs := []*checkpoint.Model{p.Model}
	if p.control != nil {
		srcs = append(srcs, p.control.m.Source())
	}
	if p.ip != nil {
		srcs = append(srcs, p.ip.m.Source())
	}
	if p.tinyM != nil {
		srcs = append(srcs, p.tinyM.Source())
	}
	for _, m := range srcs {
		if m == nil || !m.ReadsInPlace() {
			continue
		}
		if err := m.CheckFiles(); err != nil {
			return fmt.Errorf("%w (its weights are read from the file as they are used; load it again)", err)
		}
	}
	return nil
}

// Close releases the device memory and the checkpoint's mapping.
func (p *Pipeline) Close() error {
	p.closeLoRAs()
	p.releaseIP()
	p.closeSD3()
	p.closeFlux()
	for _, t := range p.texts {
		t.Release()
	}
	if p.unet != nil {
		p.unet.Release()
	}
	if p.vae != nil {
		p.vae.Release()
	}
	p.texts, p.unet, p.vae = nil, nil, nil
	p.releaseTiny()
	p.releaseControlNet()
	if p.Model != nil {
		if p.Model.ReadsInPlace() {
			// The device may still be reading weights in the mapping
			// (queued ops): let it finish before the mapping goes.
			_ = p.dev.Finish()
		}
		err := p.Model.Close()
		p.Model = nil
		return err
	}
	return nil
}

// Conditioning is a prompt pair encoded for classifier-free guidance. Both
// tensors live on the device with shape [1, 77*chunks, C] and the same
// number of chunks (the shorter prompt is padded with empty chunks, as
// A1111 does); C is the text encoders' widths added (SDXL: 768 + 1280).
type Conditioning struct {
	Cond, Uncond *gpu.Tensor
	// CondPooled and UncondPooled are the pooled text vectors [1, P] of
	// families that have one (SDXL), from each prompt's first chunk.
	CondPooled, UncondPooled *gpu.Tensor
	// Chunks is the number of 77-token chunks; more than 1 means a prompt
	// was longer than 75 tokens and was split.
	Chunks int
	// Tokens counts each prompt's tokens as A1111 does (75 per full chunk).
	PromptTokens, NegativeTokens int
	// CondTimeIDs and UncondTimeIDs are SDXL's added time ids (set by
	// SetSize).
	CondTimeIDs, UncondTimeIDs []float32
	// PromptT5Tokens and NegativeT5Tokens count each prompt's T5 tokens
	// with </s> (SD3), before padding or truncation to MaxSequenceLength.
	PromptT5Tokens, NegativeT5Tokens int
	// guidance is an LCM model's guidance embedding [1, dim] (SetGuidance).
	guidance *gpu.Tensor
	// CondImage and UncondImage are an IP-Adapter's image embeddings [1,
	// 1, P]: the reference image's, and zeros (SetImagePrompt).
	CondImage, UncondImage *gpu.Tensor

	batch map[string]*gpu.Tensor // contexts built for row patterns
	dev   gpu.Device
}

// Release frees the conditioning's device memory.
func (c *Conditioning) Release() {
	if c == nil || c.dev == nil {
		return
	}
	for _, t := range []*gpu.Tensor{c.Cond, c.Uncond, c.CondPooled, c.UncondPooled, c.guidance, c.CondImage, c.UncondImage} {
		if t != nil {
			c.dev.Release(t)
		}
	}
	for _, t := range c.batch {
		c.dev.Release(t)
	}
	c.batch = nil
}

// SizeCond is SDXL's size conditioning (ComfyUI's CLIPTextEncodeSDXL
// fields; diffusers' original_size, crops_coords_top_left, target_size).
// Zero sizes mean the image's own size.
type SizeCond struct {
	OriginalW, OriginalH int
	CropLeft, CropTop    int
	TargetW, TargetH     int
	// Aesthetic scores of the refiner (diffusers' defaults 6.0 and 2.5).
	Aesthetic, NegativeAesthetic float64
}

// SetSize fills c's time ids for a w x h image from sc, for families with
// added conditioning (a no-op otherwise), as diffusers' _get_add_time_ids:
// (original h, w, crop top, left, target h, w), or for the refiner
// (original h, w, crop top, left, aesthetic score).
func (p *Pipeline) SetSize(c *Conditioning, w, h int, sc SizeCond) {
	if p.Model.Spec == nil || p.Model.Spec.Added == "" {
		return
	}
	ow, oh, tw, th := sc.OriginalW, sc.OriginalH, sc.TargetW, sc.TargetH
	if ow <= 0 || oh <= 0 {
		ow, oh = w, h
	}
	if tw <= 0 || th <= 0 {
		tw, th = w, h
	}
	f := func(v ...float64) []float32 {
		out := make([]float32, len(v))
		for i, x := range v {
			out[i] = float32(x)
		}
		return out
	}
	base := []float64{float64(oh), float64(ow), float64(sc.CropTop), float64(sc.CropLeft)}
	if p.Model.Spec.Added == checkpoint.AddedAestheticTimeIDs {
		a, na := sc.Aesthetic, sc.NegativeAesthetic
		if a == 0 {
			a = 6
		}
		if na == 0 {
			na = 2.5
		}
		c.CondTimeIDs, c.UncondTimeIDs = f(append(base, a)...), f(append(base, na)...)
	} else {
		ids := f(append(base, float64(th), float64(tw))...)
		c.CondTimeIDs, c.UncondTimeIDs = ids, ids
	}
	for k, t := range c.batch { // contexts built with other ids
		if strings.HasPrefix(k, "added:") {
			c.dev.Release(t)
			delete(c.batch, k)
		}
	}
}

// EncodePrompt tokenizes both prompts (A1111 weighting syntax, 75-token
// chunks), runs the text encoders and applies the token weights with A1111's
// mean-restoring rule, per encoder. clipSkip follows A1111: 1 (or 0) = the
// family's usual layer (SD 1.x/2.x: the last, SDXL: the penultimate), 2 =
// one layer earlier. An empty negative prompt of a family that zeroes it
// (SDXL, diffusers' force_zeros_for_empty_prompt) is all zeros.
// The prompt's <lora:NAME:W> tags are removed and become the pipeline's
// set of LoRAs first (see SetLoRAs; looked up in LoRADir): a LoRA changes
// the text encoders too.
func (p *Pipeline) EncodePrompt(prompt, negative string, clipSkip int) (*Conditioning, error) {
	if err := p.checkFiles(); err != nil {
		return nil, err
	}
	if p.sd3 != nil {
		return p.encodeSD3(prompt, negative, clipSkip)
	}
	if p.flux != nil {
		return p.encodeFlux(prompt, negative)
	}
	if err := p.applyPromptLoRAs(prompt, negative); err != nil {
		return nil, err
	}
	t0 := time.Now()
	// Each encoder tokenizes on its own (their pad tokens split text
	// differently); all are padded to the same number of chunks.
	pos := make([]tokenizer.Encoded, len(p.toks))
	neg := make([]tokenizer.Encoded, len(p.toks))
	n := 0
	for i, tok := range p.toks {
		var err error
		if pos[i], err = tok.EncodeWeighted(prompt); err != nil {
			return nil, fmt.Errorf("prompt: %w", err)
		}
		if neg[i], err = tok.EncodeWeighted(negative); err != nil {
			return nil, fmt.Errorf("negative prompt: %w", err)
		}
		n = max(n, len(pos[i].Chunks), len(neg[i].Chunks))
	}
	for i := range p.toks {
		padChunks(&pos[i], n, nil)
		padChunks(&neg[i], n, nil)
	}
	p.Timings["tokenize"] = time.Since(t0)

	t1 := time.Now()
	c := &Conditioning{Chunks: n, PromptTokens: pos[0].TokenCount, NegativeTokens: neg[0].TokenCount, dev: p.dev}
	zero := negative == "" && p.Model.Spec != nil && p.Model.Spec.ZeroEmptyNegative
	if zero {
		hs, pooled, err := p.encode(pos, clipSkip, 1)
		if err != nil {
			return nil, err
		}
		c.Cond, c.CondPooled = hs[0], pooled[0]
		c.Uncond = p.dev.Upload(make([]float32, c.Cond.Numel()), c.Cond.Shape...)
		if c.CondPooled != nil {
			c.UncondPooled = p.dev.Upload(make([]float32, c.CondPooled.Numel()), c.CondPooled.Shape...)
		}
	} else {
		// Both prompts in one pass: twice the rows make the encoders'
		// products faster per row (SD 1.5's CLIP-L: 77 rows fill two
		// 64-row blocks to 60%, 154 fill three to 80%), and each row is
		// computed exactly as alone.
		both := make([]tokenizer.Encoded, len(pos))
		for i := range pos {
			both[i] = tokenizer.Encoded{
				Chunks:  append(append([][]int32(nil), pos[i].Chunks...), neg[i].Chunks...),
				Weights: append(append([][]float32(nil), pos[i].Weights...), neg[i].Weights...),
			}
		}
		hs, pooled, err := p.encode(both, clipSkip, 2)
		if err != nil {
			return nil, err
		}
		c.Cond, c.Uncond, c.CondPooled, c.UncondPooled = hs[0], hs[1], pooled[0], pooled[1]
	}
	if err := p.dev.Err(); err != nil {
		c.Release()
		return nil, fmt.Errorf("text encoder: %w", err)
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

// withPad returns chunks whose positions after each chunk's first EOS hold
// pad (the tokenizer pads with EOS, CLIP-L's padding).
func withPad(chunks [][]int32, pad int32) [][]int32 {
	if pad == tokenizer.EOS {
		return chunks
	}
	out := make([][]int32, len(chunks))
	for i, ids := range chunks {
		row := append([]int32(nil), ids...)
		for j := 1; j < len(row); j++ {
			if row[j] == tokenizer.EOS {
				for k := j + 1; k < len(row); k++ {
					row[k] = pad
				}
				break
			}
		}
		out[i] = row
	}
	return out
}

// encode runs every text encoder on every chunk of groups prompts at once
// (es[i]: encoder i's chunks, the prompts' one after another, as many
// each) and returns each prompt's context [1, 77*chunks, C] (the
// encoders' outputs side by side) and pooled vector [1, P] of its first
// chunk (nil without one).
func (p *Pipeline) encode(es []tokenizer.Encoded, clipSkip, groups int) ([]*gpu.Tensor, []*gpu.Tensor, error) {
	if clipSkip < 1 {
		clipSkip = 1
	}
	d := p.dev
	var hs []*gpu.Tensor
	var pooled []*gpu.Tensor
	release := func() {
		for _, h := range hs {
			d.Release(h)
		}
		for _, t := range pooled {
			if t != nil {
				d.Release(t)
			}
		}
	}
	n := len(es[0].Chunks) / groups // chunks a prompt
	for i, t := range p.Model.Texts {
		te, e := p.texts[i], es[i]
		weighted := false
		for _, ws := range e.Weights {
			for _, w := range ws {
				if w != 1 {
					weighted = true
				}
			}
		}
		skip := t.Spec.Skip + clipSkip - 1
		if skip > te.Config.NumHiddenLayers {
			release()
			return nil, nil, fmt.Errorf("clip skip %d: the %s has only %d layers", clipSkip, t.Spec.Role, te.Config.NumHiddenLayers)
		}
		h, pl, err := te.EncodeWith(withPad(e.Chunks, t.Pad), nets.EncodeOpts{Skip: skip, FinalNorm: t.Spec.FinalNorm, Pooled: t.Spec.Pooled})
		if err != nil {
			release()
			return nil, nil, fmt.Errorf("%s: %w", t.Spec.Role, err)
		}
		if pl != nil {
			for g := 0; g < groups; g++ {
				pooled = append(pooled, d.Embedding(pl, []int32{int32(g * n)})) // each prompt's first chunk's
			}
			d.Release(pl)
		}
		if weighted {
			z, err := d.Download(h)
			d.Release(h)
			if err != nil {
				release()
				return nil, nil, fmt.Errorf("%s: %w", t.Spec.Role, err)
			}
			dim := h.Dim(-1)
			per := h.Dim(1) * dim
			for i, ws := range e.Weights {
				tokenizer.ApplyWeights(z[i*per:(i+1)*per], len(ws), dim, ws)
			}
			h = d.Upload(z, h.Shape...)
		}
		hs = append(hs, h)
	}
	h := hs[0]
	if len(hs) > 1 {
		h = d.Concat(2, hs...)
		for _, x := range hs {
			d.Release(x)
		}
	}
	hs = nil
	outs := make([]*gpu.Tensor, groups)
	for g := range outs {
		part := h
		if groups > 1 {
			part = d.Slice(h, 0, g*n, (g+1)*n)
		}
		outs[g] = part.View(1, part.Dim(0)*part.Dim(1), part.Dim(2))
	}
	if groups > 1 {
		d.Release(h)
	}
	pools := make([]*gpu.Tensor, groups)
	if len(pooled) >= groups {
		copy(pools, pooled[len(pooled)-groups:]) // the last encoder's, as before
		for _, t := range pooled[:len(pooled)-groups] {
			d.Release(t)
		}
	}
	return outs, pools, d.Err()
}

// Row selects the conditioning of one batch row of PredictNoise.
type Row bool

// Rows of a CFG batch.
const (
	Uncond Row = false
	Cond   Row = true
)

// rowsKey names a row pattern ("ucc...").
func rowsKey(rows []Row) string {
	key := make([]byte, len(rows))
	for i, r := range rows {
		if r {
			key[i] = 'c'
		} else {
			key[i] = 'u'
		}
	}
	return string(key)
}

// context returns the [B, L, C] text context for a row pattern, cached on c
// so that every step of a run reuses it.
func (c *Conditioning) context(rows []Row) *gpu.Tensor {
	return c.cached(rowsKey(rows), rows, c.Cond, c.Uncond)
}

// cached concatenates cond or uncond per row along dimension 0, once per
// key.
func (c *Conditioning) cached(key string, rows []Row, cond, uncond *gpu.Tensor) *gpu.Tensor {
	if t, ok := c.batch[key]; ok {
		return t
	}
	parts := make([]*gpu.Tensor, len(rows))
	for i, r := range rows {
		parts[i] = uncond
		if r {
			parts[i] = cond
		}
	}
	t := c.dev.Concat(0, parts...)
	if c.batch == nil {
		c.batch = map[string]*gpu.Tensor{}
	}
	c.batch[key] = t
	return t
}

// GuidanceDistilled reports an LCM-distilled U-Net (time_cond_proj_dim):
// guidance is an input of the network, not a second batch row.
func (p *Pipeline) GuidanceDistilled() bool {
	return p.unet != nil && p.unet.Config.TimeCondProjDim > 0
}

// SetGuidance gives a guidance-distilled (LCM) model its guidance w
// (diffusers: guidance_scale - 1) as the embedding it takes; a no-op for
// other models.
func (p *Pipeline) SetGuidance(c *Conditioning, w float64) {
	if !p.GuidanceDistilled() {
		return
	}
	if c.guidance != nil {
		c.dev.Release(c.guidance)
	}
	dim := p.unet.Config.TimeCondProjDim
	c.guidance = c.dev.Upload(nets.GuidanceEmbedding([]float64{w}, dim), 1, dim)
	for k, t := range c.batch {
		if strings.HasPrefix(k, "lcm:") {
			c.dev.Release(t)
			delete(c.batch, k)
		}
	}
}

// added returns the added conditioning for a row pattern (SDXL's pooled
// vector and time ids, an LCM model's guidance embedding, an IP-Adapter's
// image embeddings), or nil.
func (c *Conditioning) added(rows []Row) *nets.Added {
	if c.CondPooled == nil && c.guidance == nil && c.CondImage == nil {
		return nil
	}
	a := &nets.Added{}
	if c.guidance != nil {
		a.TimestepCond = c.cached("lcm:"+rowsKey(rows), rows, c.guidance, c.guidance)
	}
	if c.CondImage != nil {
		a.ImageEmbeds = c.cached("image:"+rowsKey(rows), rows, c.CondImage, c.UncondImage)
	}
	if c.CondPooled == nil {
		return a
	}
	a.TextEmbeds = c.cached("added:"+rowsKey(rows), rows, c.CondPooled, c.UncondPooled)
	for _, r := range rows {
		if r {
			a.TimeIDs = append(a.TimeIDs, c.CondTimeIDs...)
		} else {
			a.TimeIDs = append(a.TimeIDs, c.UncondTimeIDs...)
		}
	}
	return a
}

// PredictNoise runs the U-Net on the host latent x [B, C, h, w] at timestep
// t, row i conditioned on rows[i], and returns the raw model output (eps or
// v, [B, LatentChannels, h, w]) on the host. C is the U-Net's input
// channels: an inpainting U-Net's x holds the mask and the masked image's
// latents after the latents.
func (p *Pipeline) PredictNoise(x []float32, shape [4]int, t float64, c *Conditioning, rows []Row) ([]float32, error) {
	return p.predict(x, shape, t, c, rows, nil, 0)
}

// predict is PredictNoise, steered by the ControlNet when ctl is set.
func (p *Pipeline) predict(x []float32, shape [4]int, t float64, c *Conditioning, rows []Row, ctl *Control, scale float64) ([]float32, error) {
	if err := p.checkFiles(); err != nil {
		return nil, err
	}
	if p.sd3 != nil {
		return p.predictSD3(x, shape, t, c, rows)
	}
	if p.flux != nil {
		return p.predictFlux(x, shape, t, c, rows)
	}
	if len(rows) != shape[0] {
		return nil, fmt.Errorf("predict: %d rows for a batch of %d", len(rows), shape[0])
	}
	if in := p.unet.Config.InChannels; shape[1] != in {
		return nil, fmt.Errorf("predict: latent has %d channels, the U-Net wants %d", shape[1], in)
	}
	if p.ip != nil && c.CondImage == nil {
		return nil, fmt.Errorf("predict: the IP-Adapter %s is loaded but no reference image was encoded (Pipeline.SetImagePrompt)", p.ip.m.Path)
	}
	if c.CondPooled != nil && len(c.CondTimeIDs) == 0 {
		return nil, fmt.Errorf("predict: %s needs size conditioning (Pipeline.SetSize)", p.Model.Family)
	}
	t0 := time.Now()
	ctx := c.context(rows)
	added := c.added(rows)
	ts := make([]float32, shape[0])
	for i := range ts {
		ts[i] = float32(t)
	}
	d := p.dev
	var cond *gpu.Tensor
	if ctl != nil {
		cond = ctl.tensor(shape[0]) // kept with ctl, outside the step's scope
	}
	d.PushScope()
	xin := d.Upload(x, shape[:]...)
	var cres *nets.Residuals
	if cond != nil {
		cres = p.control.net.Forward(xin, ts, ctx, cond, added, float32(scale))
	}
	out := p.unet.ForwardControl(xin, ts, ctx, added, cres)
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
	if err := p.checkFiles(); err != nil {
		return nil, err
	}
	if p.tiny != nil {
		return p.DecodeTiny(latent, shape)
	}
	t0 := time.Now()
	c := &p.vae.Config
	inv := float32(1 / c.ScalingFactor)
	shift := float32(0)
	if s := c.ShiftFactor; s != nil {
		shift = float32(*s)
	}
	if ch := shape[1]; len(c.LatentsMean) == ch && len(c.LatentsStd) == ch {
		// Per channel: latent * std / scaling + mean, on the host copy.
		z := make([]float32, len(latent))
		plane := shape[2] * shape[3]
		for i := range z {
			k := (i / plane) % ch
			z[i] = latent[i]*float32(c.LatentsStd[k])*inv + float32(c.LatentsMean[k])
		}
		latent, inv, shift = z, 1, 0
	}
	if limit := p.tensorLimit(); limit > 0 && p.decodePeakBytes(shape) > limit {
		pix, out, err := p.decodeTiled(latent, shape, inv, shift)
		p.Timings["vae_decode"] = time.Since(t0)
		if err != nil {
			return nil, fmt.Errorf("vae decode (tiled): %w", err)
		}
		return ToImages(pix, out), nil
	}
	pix, out, err := p.decodeRaw(latent, shape, inv, shift)
	p.Timings["vae_decode"] = time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("vae decode: %w", err)
	}
	return ToImages(pix, out), nil
}

// decodeRaw runs the VAE decoder on latent*inv + shift and returns its raw
// output [B,3,H,W] on the host.
func (p *Pipeline) decodeRaw(latent []float32, shape [4]int, inv, shift float32) ([]float32, gpu.Shape, error) {
	d := p.dev
	d.PushScope()
	z := d.Upload(latent, shape[:]...)
	img := p.vae.Decode(d.Scale(z, inv, shift))
	pix, err := d.Download(img)
	out := img.Shape.Clone()
	d.PopScope()
	return pix, out, err
}

// tensorLimit is the largest tensor the device writes in one op (0: none).
func (p *Pipeline) tensorLimit() int64 {
	if p.tileLimit > 0 {
		return p.tileLimit
	}
	return gpu.MaxTensorBytes(p.dev)
}

// decodePeakBytes is the largest activation the VAE decoder makes for
// latents of shape: each up block's channels at twice its input size once
// upsampled, the last block's at the image size.
func (p *Pipeline) decodePeakBytes(shape [4]int) int64 {
	ch := p.vae.Config.BlockOutChannels
	n := len(ch)
	var peak int64
	for i := 0; i < n; i++ {
		scale := int64(1) << min(i+1, n-1)
		peak = max(peak, int64(shape[0])*int64(ch[n-1-i])*int64(shape[2])*scale*int64(shape[3])*scale*4)
	}
	return peak
}

// decodeTiled decodes large latents in overlapping tiles and blends them
// as diffusers' AutoencoderKL.tiled_decode does (tiles of sample_size/8
// latents, 25% overlap, linear blends over a quarter of a tile), so every
// op stays under the device's tensor limit. Seams are blended, not exact:
// the result differs slightly from an untiled decode.
func (p *Pipeline) decodeTiled(latent []float32, shape [4]int, inv, shift float32) ([]float32, gpu.Shape, error) {
	c := &p.vae.Config
	ds := c.Downscale()
	tile := max(c.SampleSize/ds, 8)
	for tile > 8 && p.decodePeakBytes([4]int{shape[0], shape[1], tile, tile}) > p.tensorLimit() {
		tile /= 2
	}
	return decodeTiles(latent, shape, ds, tile, func(z []float32, zs [4]int) ([]float32, error) {
		pix, _, err := p.decodeRaw(z, zs, inv, shift)
		return pix, err
	})
}

// decodeTiles is tiled_decode over a decode function: tile x tile latent
// tiles every int(tile*0.75) latents, each blended with the tile above and
// the one to its left over a quarter of a decoded tile, cropped to the
// rest and placed side by side.
func decodeTiles(latent []float32, shape [4]int, ds, tile int, decode func([]float32, [4]int) ([]float32, error)) ([]float32, gpu.Shape, error) {
	b, ch, h, w := shape[0], shape[1], shape[2], shape[3]
	step := int(float64(tile) * 0.75)
	sample := tile * ds
	blend := int(float64(sample) * 0.25)
	limit := sample - blend
	type img struct {
		pix  []float32
		h, w int
	}
	var rows [][]img
	for i := 0; i < h; i += step {
		var row []img
		for j := 0; j < w; j += step {
			th, tw := min(tile, h-i), min(tile, w-j)
			z := make([]float32, b*ch*th*tw)
			for n := 0; n < b*ch; n++ {
				for y := 0; y < th; y++ {
					copy(z[(n*th+y)*tw:(n*th+y+1)*tw], latent[(n*h+i+y)*w+j:(n*h+i+y)*w+j+tw])
				}
			}
			pix, err := decode(z, [4]int{b, ch, th, tw})
			if err != nil {
				return nil, nil, err
			}
			row = append(row, img{pix, th * ds, tw * ds})
		}
		rows = append(rows, row)
	}
	planes := b * 3
	at := func(t img, n, y, x int) *float32 { return &t.pix[(n*t.h+y)*t.w+x] }
	for i, row := range rows {
		for j, t := range row {
			if i > 0 { // blend_v with the tile above
				a := rows[i-1][j]
				e := min(a.h, t.h, blend)
				for n := 0; n < planes; n++ {
					for y := 0; y < e; y++ {
						f := float32(y) / float32(e)
						for x := 0; x < min(a.w, t.w); x++ {
							*at(t, n, y, x) = *at(a, n, a.h-e+y, x)*(1-f) + *at(t, n, y, x)*f
						}
					}
				}
			}
			if j > 0 { // blend_h with the (blended) tile to the left
				a := row[j-1]
				e := min(a.w, t.w, blend)
				for n := 0; n < planes; n++ {
					for y := 0; y < min(a.h, t.h); y++ {
						for x := 0; x < e; x++ {
							f := float32(x) / float32(e)
							*at(t, n, y, x) = *at(a, n, y, a.w-e+x)*(1-f) + *at(t, n, y, x)*f
						}
					}
				}
			}
		}
	}
	H, W := h*ds, w*ds
	out := make([]float32, planes*H*W)
	oy := 0
	for _, row := range rows {
		ox, rh := 0, 0
		for _, t := range row {
			th, cw := min(t.h, limit), min(t.w, limit)
			rh = th
			for n := 0; n < planes; n++ {
				for y := 0; y < th && oy+y < H; y++ {
					for x := 0; x < cw && ox+x < W; x++ {
						out[(n*H+oy+y)*W+ox+x] = *at(t, n, y, x)
					}
				}
			}
			ox += cw
		}
		oy += rh
	}
	return out, gpu.Shape{b, 3, H, W}, nil
}

// SetTAESD makes the pipeline decode with a TAESD (stable-diffusion.cpp's
// --taesd: final images and previews), uploading it to the pipeline's
// device; nil goes back to the VAE. The pipeline owns t from then on.
func (p *Pipeline) SetTAESD(t *checkpoint.Tiny) error {
	if t != nil && t.Config.LatentChannels != p.LatentChannels() {
		return fmt.Errorf("taesd %s: %d latent channels, the model's are %d", t.Path, t.Config.LatentChannels, p.LatentChannels())
	}
	var net *nets.Tiny
	if t != nil {
		err := p.uploadSide(t.Source(), "taesd", func(d gpu.Device, w nets.Weights) (err error) {
			net, err = nets.NewTiny(d, t.Config, w)
			return err
		})
		if err != nil {
			if net != nil {
				net.Release()
			}
			p.doneReading(t.Source())
			return fmt.Errorf("taesd %s: %w", t.Path, err)
		}
		if err := p.dev.Finish(); err != nil {
			net.Release()
			p.doneReading(t.Source())
			return fmt.Errorf("taesd %s: uploading weights: %w", t.Path, err)
		}
	}
	p.releaseTiny()
	p.tiny, p.tinyM = net, t
	return nil
}

// TAESD is the TAESD the pipeline decodes with, or nil.
func (p *Pipeline) TAESD() *checkpoint.Tiny { return p.tinyM }

func (p *Pipeline) releaseTiny() {
	if p.tiny != nil {
		p.tiny.Release()
		p.doneReading(p.tinyM.Source())
		p.tinyM.Close()
	}
	p.tiny, p.tinyM = nil, nil
}

// DecodeTiny decodes latents [B, C, h, w] (as the sampler leaves them:
// TAESD works in diffusion space, nothing to undo) with the TAESD.
func (p *Pipeline) DecodeTiny(latent []float32, shape [4]int) ([]*image.RGBA, error) {
	if p.tiny == nil {
		return nil, errors.New("taesd decode: no TAESD loaded")
	}
	t0 := time.Now()
	d := p.dev
	d.PushScope()
	img := p.tiny.Decode(d.Upload(latent, shape[:]...))
	pix, err := d.Download(img)
	d.PopScope()
	p.Timings["taesd_decode"] = time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("taesd decode: %w", err)
	}
	return ToImages(pix, img.Shape), nil
}

// PreviewSide is the largest side, in pixels, of a TAESD step preview
// (PreviewTiny): more than a terminal's half-block picture resolves, even on
// a wide screen.
const PreviewSide = 256

// PreviewTiny is a TAESD step preview of latents [1, C, h, w] no larger than
// maxSide pixels a side: the latent is first averaged over f x f cells, f
// the smallest factor (dividing h and w) that brings 8*h/f and 8*w/f within
// maxSide, so a 512x512 preview decodes a 32x32 latent into 256x256 pixels at
// a quarter of a full decode's cost. Below maxSide it is DecodeTiny.
func (p *Pipeline) PreviewTiny(latent []float32, shape [4]int, maxSide int) (*image.RGBA, error) {
	if shape[0] != 1 || len(latent) != shape[0]*shape[1]*shape[2]*shape[3] {
		return nil, fmt.Errorf("taesd preview: latent of %d values for shape %v (one image)", len(latent), shape)
	}
	c, h, w := shape[1], shape[2], shape[3]
	f := 1
	for 8*max(h, w)/f > maxSide && f < min(h, w) {
		f++
		for f < min(h, w) && (h%f != 0 || w%f != 0) {
			f++
		}
	}
	if f > 1 && h%f == 0 && w%f == 0 {
		latent, shape = poolLatent(latent, c, h, w, f), [4]int{1, c, h / f, w / f}
	}
	imgs, err := p.DecodeTiny(latent, shape)
	if err != nil {
		return nil, err
	}
	return imgs[0], nil
}

// poolLatent averages each f x f cell of a [c, h, w] latent.
func poolLatent(x []float32, c, h, w, f int) []float32 {
	oh, ow := h/f, w/f
	out := make([]float32, c*oh*ow)
	inv := 1 / float32(f*f)
	for ch := 0; ch < c; ch++ {
		for y := 0; y < oh; y++ {
			for xx := 0; xx < ow; xx++ {
				var sum float32
				for dy := 0; dy < f; dy++ {
					row := x[(ch*h+y*f+dy)*w+xx*f:]
					for dx := 0; dx < f; dx++ {
						sum += row[dx]
					}
				}
				out[(ch*oh+y)*ow+xx] = sum * inv
			}
		}
	}
	return out
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
	return p.EncodePixels(x, [4]int{len(imgs), 3, h, w})
}

// EncodePixels is Encode of images already in the VAE's input form: x is
// [B, 3, H, W] in [-1, 1] (diffusers' preprocessed image tensor; an
// inpainting pipeline's masked image holds 0 where it repaints).
func (p *Pipeline) EncodePixels(x []float32, shape [4]int) ([]float32, gpu.Shape, error) {
	t0 := time.Now()
	b, c, h, w := shape[0], shape[1], shape[2], shape[3]
	if b < 1 || c != 3 || len(x) != b*c*h*w {
		return nil, nil, fmt.Errorf("vae encode: %d values for images %v", len(x), shape)
	}
	if ds := p.Downscale(); h < ds || w < ds || h%ds != 0 || w%ds != 0 {
		return nil, nil, fmt.Errorf("vae encode: %dx%d is not a multiple of %d", w, h, ds)
	}
	d := p.dev
	d.PushScope()
	m := p.vae.Encode(d.Upload(x, b, 3, h, w))
	out, err := d.Download(m)
	ms := m.Shape.Clone()
	d.PopScope()
	p.Timings["vae_encode"] = time.Since(t0)
	if err != nil {
		return nil, nil, fmt.Errorf("vae encode: %w", err)
	}
	return out, ms, nil
}
