package models

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models/safetensors"
)

// loraTol is golden-wave3's README bound for network outputs (U-Net, text
// encoder): max abs <= 1e-4. The README measures diffusers' own fused vs
// unfused LoRA at ~1e-6 and the PEFT vs kohya file at ~1.2e-6.
const loraTol = 1e-4

// fusedWeightTol bounds a merged weight against diffusers' fuse_lora
// (W + 0.8*0.5*up@down in fp32): the same arithmetic up to the order of a
// 4-term sum and the device's multiply-add.
const fusedWeightTol = 1e-6

// loraFormats are the two published files of the same LoRA: the kohya /
// A1111 layout and the diffusers / PEFT one (no alpha; up pre-scaled).
var loraFormats = []struct{ name, file string }{
	{"kohya", "sd15-mini-lora.kohya.fp16"},
	{"peft", "sd15-mini-lora.peft.fp16"},
}

// loraPipeline loads shared/golden's sd15-mini folder with the LoRA folder
// of golden-wave3 as its LoRADir.
func loraPipeline(t *testing.T, d gpu.Device) *Pipeline {
	t.Helper()
	p, err := Load(d, filepath.Join(golden.Dir(t), "sd15-mini"), "")
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	p.LoRADir = filepath.Join(golden.Wave(t, "golden-wave3"), "lora")
	return p
}

// TestLoRAGoldens: golden-wave3's lora_text_encoder and lora_unet cases at
// scales 0.8, 0.5 and 1.0 (and back to none) in both file formats on every
// device, the text encoder through the prompt's <lora:NAME:W> tag, the
// U-Net through SetLoRAs; the merged weights against diffusers' fused
// ones.
func TestLoRAGoldens(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	te := golden.Open(t, filepath.Join(dir, "lora_text_encoder.safetensors"))
	un := golden.Open(t, filepath.Join(dir, "lora_unet.safetensors"))
	var meta struct{ Prompts []string }
	raw, err := os.ReadFile(filepath.Join(dir, "lora_text_encoder.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &meta))
	require.Len(t, meta.Prompts, 4)
	scales := []string{"0.8", "0.5", "1.0"}
	cases := []string{"b1_t500", "b1_t999", "b2cfg_t500"}
	fused := []string{
		"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
		"unet.down_blocks.0.attentions.0.proj_in",
		"unet.mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj",
		"text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
	}
	for devName, open := range testdev.All(t) {
		for _, f := range loraFormats {
			t.Run(devName+"/"+f.name, func(t *testing.T) {
				te, un := te.For(t), un.For(t)
				d := open(t)
				p := loraPipeline(t, d)
				worst, worstText, worstFused := 0.0, 0.0, 0.0

				// Text encoder: the tag is removed from the prompt and
				// scales the text encoder's LoRA.
				for _, s := range append([]string{"base"}, scales...) {
					name := "lora_scale" + s
					if s == "base" {
						name = "base"
					}
					want, shape := te.F32(name + ".prompt_embeds")
					per := shape[1] * shape[2]
					for i, prompt := range meta.Prompts {
						if s != "base" {
							prompt = fmt.Sprintf("<lora:%s:%s>%s", f.file, s, prompt)
						}
						c, err := p.EncodePrompt(prompt, "", 1)
						require.NoError(t, err)
						worstText = max(worstText, golden.Close(t, fmt.Sprintf("text %s %q", name, prompt), download(t, d, c.Cond), want[i*per:(i+1)*per], loraTol, 0))
						c.Release()
					}
				}

				// U-Net: every case at every scale.
				for _, s := range scales {
					var w float64
					fmt.Sscan(s, &w)
					require.NoError(t, p.SetLoRAs([]LoRAUse{{Name: f.file, Path: filepath.Join(p.LoRADir, f.file+".safetensors"), TE: w, UNet: w}}))
					for _, cs := range cases {
						want, _ := un.F32(cs + ".lora_scale" + s + ".out")
						worst = max(worst, golden.Close(t, cs+" scale "+s, loraUNetCase(t, p, un, cs), want, loraTol, 0))
					}
					if s == "0.8" {
						for _, cs := range cases {
							want, _ := un.F32(cs + ".fused0.8.out")
							golden.Close(t, cs+" fused 0.8", loraUNetCase(t, p, un, cs), want, loraTol, 0)
						}
						for _, mod := range fused {
							want, _ := un.F32("fused_weight." + mod)
							role, param := loraSplitRole(mod)
							got := download(t, d, p.netOf(role).Param(param+".weight"))
							worstFused = max(worstFused, golden.Close(t, "fused weight "+mod, got, want, fusedWeightTol, 0))
						}
					}
				}
				require.NoError(t, p.SetLoRAs(nil))
				for _, cs := range cases {
					want, _ := un.F32(cs + ".base_out")
					worst = max(worst, golden.Close(t, cs+" after removing the LoRA", loraUNetCase(t, p, un, cs), want, loraTol, 0))
				}
				assert.Empty(t, p.LoRAs())
				t.Logf("%s %s: worst max |diff| text encoder %.3g, U-Net %.3g (bound %g); merged weights %.3g (bound %g)",
					devName, f.name, worstText, worst, loraTol, worstFused, fusedWeightTol)
			})
		}
	}
}

func loraSplitRole(mod string) (string, string) {
	for _, r := range []string{"unet.", "text_encoder."} {
		if len(mod) > len(r) && mod[:len(r)] == r {
			return r[:len(r)-1], mod[len(r):]
		}
	}
	return "", mod
}

// loraUNetCase runs golden case cs of lora_unet through the pipeline's U-Net.
func loraUNetCase(t *testing.T, p *Pipeline, g *golden.File, cs string) []float32 {
	t.Helper()
	d := p.Device()
	x, xs := g.F32(cs + ".sample")
	ctx, cshape := g.F32(cs + ".encoder_hidden_states")
	ts, _ := g.F32(cs + ".timestep")
	d.PushScope()
	defer d.PopScope()
	return download(t, d, p.unet.ForwardAdded(d.Upload(x, xs...), ts, d.Upload(ctx, cshape...), nil))
}

// TestLoRANoReload: changing the LoRA set re-uploads only the weights it
// touches, from the mapped checkpoint: the other weights keep their device
// storage, the checkpoint is not read again, and taking the LoRA out gives
// back the checkpoint's weights bit for bit in their own dtype.
func TestLoRANoReload(t *testing.T) {
	d := testdev.All(t)["ref"](t)
	p := loraPipeline(t, d)
	path := filepath.Join(p.LoRADir, "sd15-mini-lora.kohya.fp16.safetensors")
	const touched, untouched = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", "conv_in.weight"
	base := download(t, d, p.unet.Param(touched))
	dt := p.unet.Param(touched).DType
	store := p.unet.Param(untouched).Store
	model := p.Model
	for _, w := range []float64{0.8, 0.5, 0} {
		require.NoError(t, p.SetLoRAs([]LoRAUse{{Name: "x", Path: path, TE: w, UNet: w}}))
		assert.Same(t, store, p.unet.Param(untouched).Store, "weight %v: an untouched weight was re-uploaded", w)
		assert.Same(t, model, p.Model)
		got := download(t, d, p.unet.Param(touched))
		if w == 0 {
			assert.Equal(t, base, got, "weight 0 leaves the weight as the checkpoint has it")
			assert.Equal(t, dt, p.unet.Param(touched).DType)
		} else {
			assert.NotEqual(t, base, got)
			assert.Equal(t, gpu.F32, p.unet.Param(touched).DType, "merged weights are kept in F32")
		}
	}
	require.Len(t, p.LoRAs(), 1)
	assert.Regexp(t, `^x: [0-9a-f]{12}$`, p.LoRAHashes())
	require.NoError(t, p.SetLoRAs(nil))
	assert.Equal(t, base, download(t, d, p.unet.Param(touched)))
	assert.Equal(t, dt, p.unet.Param(touched).DType)
	assert.Empty(t, p.LoRAHashes())
}

// TestLoRAStacked: several LoRAs at once add up. The PEFT file is the kohya
// one with up pre-scaled by alpha/rank, so <kohya:0.4> + <peft:0.4> is the
// kohya LoRA at 0.8 (the lora_scale0.8 goldens); te= and unet= weigh the
// two networks apart.
func TestLoRAStacked(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	te := golden.Open(t, filepath.Join(dir, "lora_text_encoder.safetensors"))
	un := golden.Open(t, filepath.Join(dir, "lora_unet.safetensors"))
	const prompt = "a photograph of an astronaut riding a horse" // lora_text_encoder's prompt 0
	for devName, open := range testdev.All(t) {
		t.Run(devName, func(t *testing.T) {
			te, un := te.For(t), un.For(t)
			d := open(t)
			p := loraPipeline(t, d)
			embeds := func(name string) []float32 {
				want, shape := te.F32(name + ".prompt_embeds")
				return want[:shape[1]*shape[2]]
			}
			check := func(tags, textGolden, unetGolden string) {
				c, err := p.EncodePrompt(tags+" "+prompt, "", 1)
				require.NoError(t, err, tags)
				golden.Close(t, tags+" text", download(t, d, c.Cond), embeds(textGolden), loraTol, 0)
				c.Release()
				want, _ := un.F32("b1_t500." + unetGolden)
				golden.Close(t, tags+" unet", loraUNetCase(t, p, un, "b1_t500"), want, loraTol, 0)
			}
			check("<lora:sd15-mini-lora.kohya.fp16:0.4> <lora:sd15-mini-lora.peft.fp16:0.4>", "lora_scale0.8", "lora_scale0.8.out")
			require.Len(t, p.LoRAs(), 2)
			assert.Regexp(t, `^sd15-mini-lora.kohya.fp16: [0-9a-f]{12}, sd15-mini-lora.peft.fp16: [0-9a-f]{12}$`, p.LoRAHashes())
			check("<lora:sd15-mini-lora.kohya.fp16:te=0:unet=0.5>", "base", "lora_scale0.5.out")
			check("<lora:sd15-mini-lora.peft.fp16:1:0>", "lora_scale1.0", "base_out")
			check("", "base", "base_out")
		})
	}
}

// TestLoRAConv3x3: a LoCon module on a 3x3 convolution (down [r, in, 3, 3],
// up [out, r, 1, 1]) merges as W + m * alpha/rank * up @ down with the
// kernel dimensions flattened, on every device.
func TestLoRAConv3x3(t *testing.T) {
	const name = "lora_unet_down_blocks_0_resnets_0_conv1"
	const param = "down_blocks.0.resnets.0.conv1.weight" // [32, 32, 3, 3]
	rank, out, in := 3, 32, 32
	down := make([]float32, rank*in*9)
	up := make([]float32, out*rank)
	for i := range down {
		down[i] = float32(i%11-5) / 16
	}
	for i := range up {
		up[i] = float32(i%7-3) / 8
	}
	es := []safetensors.Entry{
		{Name: name + ".lora_down.weight", DType: safetensors.F32, Shape: []int{rank, in, 3, 3}, Data: loraF32Bytes(down)},
		{Name: name + ".lora_up.weight", DType: safetensors.F32, Shape: []int{out, rank, 1, 1}, Data: loraF32Bytes(up)},
		{Name: name + ".alpha", DType: safetensors.F32, Shape: []int{}, Data: loraF32Bytes([]float32{1.5})},
	}
	path := filepath.Join(t.TempDir(), "locon.safetensors")
	var buf bytes.Buffer
	require.NoError(t, safetensors.Write(&buf, es, nil))
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
	for devName, open := range testdev.All(t) {
		t.Run(devName, func(t *testing.T) {
			d := open(t)
			p := loraPipeline(t, d)
			base := download(t, d, p.unet.Param(param))
			require.NoError(t, p.SetLoRAs([]LoRAUse{{Name: "locon", Path: path, TE: 1, UNet: 0.7}}))
			got := download(t, d, p.unet.Param(param))
			want := make([]float32, len(base))
			flat := in * 9
			for o := 0; o < out; o++ {
				for k := 0; k < flat; k++ {
					var s float64
					for r := 0; r < rank; r++ {
						s += float64(up[o*rank+r]) * float64(down[r*flat+k])
					}
					want[o*flat+k] = float32(float64(base[o*flat+k]) + 0.7*1.5/3*s)
				}
			}
			golden.Close(t, "3x3 LoCon merge", got, want, fusedWeightTol, 0)
		})
	}
}

// TestLoRARefusedKeepsState: a set with a bad file is refused before any
// device work and leaves the LoRAs applied before in place.
func TestLoRARefusedKeepsState(t *testing.T) {
	d := testdev.All(t)["ref"](t)
	p := loraPipeline(t, d)
	good := filepath.Join(p.LoRADir, "sd15-mini-lora.kohya.fp16.safetensors")
	require.NoError(t, p.SetLoRAs([]LoRAUse{{Name: "good", Path: good, TE: 0.8, UNet: 0.8}}))
	const touched = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
	before := download(t, d, p.unet.Param(touched))
	bad := filepath.Join(t.TempDir(), "bad.safetensors")
	var buf bytes.Buffer
	require.NoError(t, safetensors.Write(&buf, []safetensors.Entry{
		{Name: "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", DType: safetensors.F32, Shape: []int{2, 31}, Data: make([]byte, 4*62)},
		{Name: "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", DType: safetensors.F32, Shape: []int{32, 2}, Data: make([]byte, 4*64)},
	}, nil))
	require.NoError(t, os.WriteFile(bad, buf.Bytes(), 0o644))
	err := p.SetLoRAs([]LoRAUse{{Name: "good", Path: good, TE: 0.5, UNet: 0.5}, {Name: "bad", Path: bad, TE: 1, UNet: 1}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), bad)
	assert.Contains(t, err.Error(), "lora_unet_down_blocks_0_attentions_0_proj_in")
	assert.Equal(t, before, download(t, d, p.unet.Param(touched)), "the weights changed")
	require.Len(t, p.LoRAs(), 1)
	assert.Equal(t, 0.8, p.LoRAs()[0].UNet)

	// Tags: a missing file, another kind of network, a bad weight, a tag in
	// the negative prompt: refused by name, nothing changed.
	for _, c := range []struct{ prompt, neg, says string }{
		{"<lora:nowhere:1> x", "", `lora "nowhere": no nowhere.safetensors in ` + p.LoRADir},
		{"<hypernet:h:1> x", "", `extra network "hypernet" is not supported`},
		{"<lora:good:lots> x", "", `weight "lots" is not a number`},
		{"<lora:good:1:1:8> x", "", "dyn"},
		{"x", "<lora:good:1>", "negative prompt"},
	} {
		_, err := p.EncodePrompt(c.prompt, c.neg, 1)
		if assert.Error(t, err, c.prompt) {
			assert.Contains(t, err.Error(), c.says, c.prompt)
		}
	}
	assert.Equal(t, before, download(t, d, p.unet.Param(touched)), "the weights changed")
	p.LoRADir = ""
	_, err = p.EncodePrompt("<lora:good:1> x", "", 1)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--lora-dir")
}

func loraF32Bytes(v []float32) []byte {
	out := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(x))
	}
	return out
}

// TestLoRASingleFile: the same LoRA on sd15-mini's original single file
// (LDM names; the merge re-reads the base weights through that layout).
func TestLoRASingleFile(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	te := golden.Open(t, filepath.Join(dir, "lora_text_encoder.safetensors"))
	un := golden.Open(t, filepath.Join(dir, "lora_unet.safetensors"))
	d := testdev.All(t)["ref"](t)
	g := golden.Dir(t)
	p, err := Load(d, filepath.Join(g, "sd15-mini.fp16.safetensors"), filepath.Join(g, "sd15_mini_config.json"))
	require.NoError(t, err)
	defer p.Close()
	p.LoRADir = filepath.Join(dir, "lora")
	c, err := p.EncodePrompt("a photograph of an astronaut riding a horse <lora:sd15-mini-lora.kohya.fp16:0.5>", "", 1)
	require.NoError(t, err)
	want, shape := te.F32("lora_scale0.5.prompt_embeds")
	golden.Close(t, "text encoder", download(t, d, c.Cond), want[:shape[1]*shape[2]], loraTol, 0)
	c.Release()
	out, _ := un.F32("b2cfg_t500.lora_scale0.5.out")
	golden.Close(t, "unet", loraUNetCase(t, p, un, "b2cfg_t500"), out, loraTol, 0)
}
