package models

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
)

// sd3Tol is golden-wave3's README bound for text encoders, the MM-DiT and
// the VAE: max abs <= 1e-4 (values O(1)).
const sd3Tol = 1e-4

// On every device, sd3-mini's conditioning equals diffusers'
// encode_prompt for the four golden prompts (the empty one included):
// [CLIP-L | CLIP-G | zeros] penultimate states then 256 T5 tokens, and
// both projections as the pooled vector; the VAE's encoder and its decoder
// (fed latent / 1.5305 + 0.0609 by Decode) match too.
func TestSD3Components(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	te := golden.Open(t, filepath.Join(dir, "sd3_text_encoders.safetensors"))
	vae := golden.Open(t, filepath.Join(dir, "sd3_vae.safetensors"))
	prompts := []string{"a photograph of an astronaut riding a horse", "low quality, blurry, watermark", "",
		"a red sports car on a mountain road"}
	embeds, eshape := te.F32("prompt_embeds")
	pooled, _ := te.F32("pooled_prompt_embeds")
	for name, open := range testdev.All(t) {
		t.Run(name, func(t *testing.T) {
			d := open(t)
			p, err := Load(d, filepath.Join(dir, "sd3-mini"), "")
			require.NoError(t, err)
			defer p.Close()
			assert.Equal(t, 256, p.MaxSequenceLength, "diffusers' default for SD3")
			assert.Equal(t, 16, p.SizeMultiple())
			assert.Equal(t, 64, p.NativeSize())
			per := eshape[1] * eshape[2]
			worst := 0.0
			defer func() { t.Logf("%s: conditioning worst |diff| %.3g", name, worst) }()
			for i, pr := range prompts {
				c, err := p.EncodePrompt(pr, pr, 0)
				require.NoError(t, err)
				require.Equal(t, []int{1, eshape[1], eshape[2]}, []int(c.Cond.Shape))
				worst = max(worst, golden.Close(t, "prompt_embeds "+pr, download(t, d, c.Cond), embeds[i*per:(i+1)*per], sd3Tol, 0))
				worst = max(worst, golden.Close(t, "pooled "+pr, download(t, d, c.CondPooled), pooled[i*64:(i+1)*64], sd3Tol, 0))
				c.Release()
			}

			lat, shape := vae.F32("decode.latent")
			imgs, err := p.Decode(lat, [4]int{shape[0], shape[1], shape[2], shape[3]})
			require.NoError(t, err)
			want, _ := vae.F32("decode.image")
			raw, _, err := p.decodeRaw(lat, [4]int{1, 16, 8, 8}, 1/1.5305, 0.0609)
			require.NoError(t, err)
			golden.Close(t, "vae decode", raw, want, sd3Tol, 0)
			require.Len(t, imgs, 1)

			x, xs := vae.F32("encode.image")
			moments, _, err := p.EncodePixels(x, [4]int{xs[0], xs[1], xs[2], xs[3]})
			require.NoError(t, err)
			wantM, _ := vae.F32("encode.moments")
			golden.Close(t, "vae encode moments", moments, wantM, sd3Tol, 0)
		})
	}
}

// max_sequence_length changes the T5 token count (and so the context
// length); a prompt past it is cut to n-1 pieces + </s>, as diffusers does.
func TestSD3MaxSequenceLength(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	d := testdev.All(t)["ref"](t)
	p, err := Load(d, filepath.Join(dir, "sd3-mini"), "")
	require.NoError(t, err)
	defer p.Close()
	p.MaxSequenceLength = 8
	long := strings.Repeat("a horse ", 20)
	c, err := p.EncodePrompt(long, "", 0)
	require.NoError(t, err)
	defer c.Release()
	assert.Equal(t, []int{1, 77 + 8, 96}, []int(c.Cond.Shape))
	assert.Equal(t, 41, c.PromptT5Tokens, "40 pieces + </s> before truncation")
	p.MaxSequenceLength = 0
	_, err = p.EncodePrompt("x", "", 0)
	assert.ErrorContains(t, err, "max sequence length 0")
	_, err = p.EncodePrompt("x <lora:foo:1>", "", 0)
	assert.ErrorContains(t, err, "LoRAs and other extra networks are not supported for SD3 models yet")
}

// A T5 of the wrong width for the transformer, or a missing text encoder or
// tokenizer, is named before any weight is read.
func TestSD3BadFolders(t *testing.T) {
	src := filepath.Join(golden.Wave(t, "golden-wave3"), "sd3-mini")
	copyDir := func(t *testing.T, skip string) string {
		out := filepath.Join(t.TempDir(), "sd3")
		ents, err := os.ReadDir(src)
		require.NoError(t, err)
		require.NoError(t, os.Mkdir(out, 0o755))
		for _, e := range ents {
			if e.Name() != skip {
				require.NoError(t, os.Symlink(filepath.Join(src, e.Name()), filepath.Join(out, e.Name())))
			}
		}
		return out
	}
	d := testdev.All(t)["ref"](t)
	for _, c := range []struct{ skip, want string }{
		{"text_encoder_3", "text_encoder_3/config.json is missing (SD3's T5 encoder)"},
		{"text_encoder_2", "text_encoder_2/config.json is missing"},
		{"tokenizer_3", "tokenizer_3/spiece.model (the T5 tokenizer's SentencePiece model) is missing"},
		{"transformer", "transformer/config.json is missing"},
	} {
		_, err := Load(d, copyDir(t, c.skip), "")
		assert.ErrorContains(t, err, c.want, c.skip)
	}
	// A T5 config 128 wide for a transformer that joins 96-wide tokens.
	dir := copyDir(t, "text_encoder_3")
	require.NoError(t, os.Mkdir(filepath.Join(dir, "text_encoder_3"), 0o755))
	cfg, err := os.ReadFile(filepath.Join(src, "text_encoder_3", "config.json"))
	require.NoError(t, err)
	cfg = []byte(strings.Replace(string(cfg), `"d_model": 96`, `"d_model": 128`, 1))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "text_encoder_3", "config.json"), cfg, 0o644))
	require.NoError(t, os.Symlink(filepath.Join(src, "text_encoder_3", "model.fp16.safetensors"), filepath.Join(dir, "text_encoder_3", "model.fp16.safetensors")))
	_, err = Load(d, dir, "")
	assert.ErrorContains(t, err, "joint_attention_dim 96, but the T5 encoder (text_encoder_3) is 128 wide")
	assert.Zero(t, d.Stats().Resident, "nothing uploaded")
}

// The step previews' latent -> RGB map of SD3 (16 channels, no published
// map in the config) is measured from the VAE: decoding a latent through
// the map's prediction is close to the real decode's mean colour.
func TestSD3LatentRGB(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	d := testdev.All(t)["ref"](t)
	p, err := Load(d, filepath.Join(dir, "sd3-mini"), "")
	require.NoError(t, err)
	defer p.Close()
	f, b := p.LatentRGB()
	require.Len(t, f, 16)
	// The map predicts the decoded colour of a unit step in channel 3.
	lat := make([]float32, 16*2*2)
	for k := 0; k < 4; k++ {
		lat[3*4+k] = 1
	}
	pix, shape, err := p.decodeRaw(lat, [4]int{1, 16, 2, 2}, 1/1.5305, 0.0609)
	require.NoError(t, err)
	n := shape[2] * shape[3]
	for ch := 0; ch < 3; ch++ {
		sum := 0.0
		for _, v := range pix[ch*n : (ch+1)*n] {
			sum += float64(v)
		}
		assert.InDelta(t, sum/float64(n), float64(f[3][ch]+b[ch]), 1e-5, "channel %d", ch) // float32 sums
	}
	nonzero := 0
	for _, row := range f {
		for _, v := range row {
			if v != 0 {
				nonzero++
			}
		}
	}
	assert.Equal(t, 48, nonzero)
}
