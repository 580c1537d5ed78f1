package models

import (
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
)

// On every device flux-mini's conditioning equals diffusers'
// FluxPipeline.encode_prompt for the three golden prompts: T5's 512 tokens
// and CLIP-L's unprojected pooled output; the model's defaults are
// FLUX.1-dev's (T5 512, guidance 3.5).
func TestFluxConditioning(t *testing.T) {
	w3 := golden.Wave(t, "golden-wave3")
	g := golden.Open(t, filepath.Join(w3, "flux_text_encoders.safetensors"))
	embeds, eshape := g.F32("prompt_embeds")
	pooled, pshape := g.F32("pooled_prompt_embeds")
	prompts := []string{"a photograph of an astronaut riding a horse", "", "a red sports car on a mountain road"}
	for name, open := range testdev.All(t) {
		t.Run(name, func(t *testing.T) {
			d := open(t)
			p, err := Load(d, filepath.Join(w3, "flux-mini"), "")
			require.NoError(t, err)
			defer p.Close()
			assert.Equal(t, 512, p.MaxSequenceLength)
			assert.Equal(t, 3.5, p.FluxGuidance)
			assert.True(t, p.IsFlow())
			assert.Equal(t, 16, p.SizeMultiple())
			per, pp := eshape[1]*eshape[2], pshape[1]
			worst := 0.0
			defer func() { t.Logf("%s: conditioning worst |diff| %.3g", name, worst) }()
			for i, pr := range prompts {
				c, err := p.EncodePrompt(pr, "", 0)
				require.NoError(t, err)
				// README: text encoders max abs <= 1e-4.
				worst = max(worst, golden.Close(t, "prompt_embeds "+pr, download(t, d, c.Cond), embeds[i*per:(i+1)*per], 1e-4, 0))
				worst = max(worst, golden.Close(t, "pooled "+pr, download(t, d, c.CondPooled), pooled[i*pp:(i+1)*pp], 1e-4, 0))
				c.Release()
			}
		})
	}
}

// Packing 2x2 is FluxPipeline's _pack_latents (token (i,j) holds channel c
// at c*4 + dy*2 + dx) and unpacking inverts it.
func TestFluxPacking(t *testing.T) {
	shape := [4]int{2, 3, 4, 6}
	x := make([]float32, 2*3*4*6)
	r := rand.New(rand.NewSource(1))
	for i := range x {
		x[i] = r.Float32()
	}
	p := PackLatents(x, shape)
	// batch 1, channel 2, pixel (y 3, x 4): token (1, 2) of a 2x3 grid, slot 2*4 + 1*2 + 0.
	assert.Equal(t, x[((1*3+2)*4+3)*6+4], p[(1*6+1*3+2)*12+2*4+1*2+0])
	assert.Equal(t, x, UnpackLatents(p, shape))
}

// A Flux folder without its T5 or with a T5 of the wrong width is named
// before any weight is read.
func TestFluxBadFolders(t *testing.T) {
	src := filepath.Join(golden.Wave(t, "golden-wave3"), "flux-mini")
	d := testdev.All(t)["ref"](t)
	link := func(skip string) string {
		out := filepath.Join(t.TempDir(), "flux")
		require.NoError(t, os.Mkdir(out, 0o755))
		ents, err := os.ReadDir(src)
		require.NoError(t, err)
		for _, e := range ents {
			if e.Name() != skip {
				require.NoError(t, os.Symlink(filepath.Join(src, e.Name()), filepath.Join(out, e.Name())))
			}
		}
		return out
	}
	_, err := Load(d, link("text_encoder_2"), "")
	assert.ErrorContains(t, err, "text_encoder_2/config.json is missing (Flux's T5 encoder)")
	_, err = Load(d, link("tokenizer_2"), "")
	assert.ErrorContains(t, err, "tokenizer_2/spiece.model (the T5 tokenizer) is missing")
	dir := link("text_encoder_2")
	require.NoError(t, os.Mkdir(filepath.Join(dir, "text_encoder_2"), 0o755))
	cfg, err := os.ReadFile(filepath.Join(src, "text_encoder_2", "config.json"))
	require.NoError(t, err)
	cfg = []byte(strings.Replace(string(cfg), `"d_model": 96`, `"d_model": 64`, 1))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "text_encoder_2", "config.json"), cfg, 0o644))
	_, err = Load(d, dir, "")
	assert.ErrorContains(t, err, "joint_attention_dim 96, but the T5 encoder (text_encoder_2) is 64 wide")
	assert.Zero(t, d.Stats().Resident)
}
