package main

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// psnr compares two 8-bit PNGs of the same size (dB; +Inf when equal).
func psnr(t *testing.T, a, b string) float64 {
	t.Helper()
	read := func(p string) []float64 {
		f, err := os.Open(p)
		require.NoError(t, err)
		defer f.Close()
		im, err := png.Decode(f)
		require.NoError(t, err)
		var v []float64
		r := im.Bounds()
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				cr, cg, cb, _ := im.At(x, y).RGBA()
				v = append(v, float64(cr>>8), float64(cg>>8), float64(cb>>8))
			}
		}
		return v
	}
	va, vb := read(a), read(b)
	require.Equal(t, len(va), len(vb))
	var se float64
	for i := range va {
		se += (va[i] - vb[i]) * (va[i] - vb[i])
	}
	if se == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(255*255/(se/float64(len(va))))
}

// sd15-mini converted to each weight type loads back (GGUF and fp8
// safetensors through the single-file key maps) and generates an image
// close to the fp16 one. Bounds are the measured PSNRs less about 3 dB.
func TestConvertRoundTrip(t *testing.T) {
	dir := golden.Dir(t)
	in, cfg := filepath.Join(dir, "sd15-mini.fp16.safetensors"), filepath.Join(dir, "sd15_mini_config.json")
	tmp := t.TempDir()
	gen := func(model, out string) {
		log, err := runGen(t, []string{"--model", model, "-p", "a photograph of an astronaut riding a horse",
			"--steps", "6", "--seed", "42", "-W", "64", "-H", "64", "-o", out, "--device", "ref"})
		require.NoError(t, err, log)
	}
	base := filepath.Join(tmp, "f16.png")
	ref16 := filepath.Join(tmp, "f16.safetensors")
	// The fp16 input with its config beside it, as the outputs have theirs.
	data, err := os.ReadFile(in)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(ref16, data, 0o644))
	c, err := os.ReadFile(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "f16.json"), c, 0o644))
	gen(ref16, base)
	for _, tc := range []struct {
		typ, ext string
		dt       gpu.DType
		minPSNR  float64
	}{
		{"q8_0", ".gguf", gpu.Q8_0, 54},         // measured 57.3 dB
		{"fp8", ".safetensors", gpu.F8E4M3, 44}, // 47.8
		{"q4_0", ".gguf", gpu.Q4_0, 37},         // 40.3
		{"q4_k", ".gguf", gpu.Q4_K, 42},         // 45.5 (only the 14 weights with rows of 256)
	} {
		out := filepath.Join(tmp, tc.typ+tc.ext)
		st, err := convert(in, out, cfg, tc.dt)
		require.NoError(t, err, tc.typ)
		assert.Greater(t, st.quantized, 10, tc.typ)
		assert.Less(t, st.outBytes, st.inBytes, tc.typ)
		m, err := checkpoint.Load(out, "")
		require.NoError(t, err, tc.typ)
		kept := 0 // quantized weights keep their type through the key maps
		for _, p := range m.UNetWeights.(nets.MapWeights) {
			if p.DType == tc.dt {
				kept++
			}
		}
		m.Close()
		assert.Positive(t, kept, tc.typ)
		img := filepath.Join(tmp, tc.typ+".png")
		gen(out, img)
		db := psnr(t, base, img)
		t.Logf("%s: %d of %d tensors quantized, %d -> %d bytes, image PSNR vs fp16 %.1f dB", tc.typ, st.quantized, st.tensors, st.inBytes, st.outBytes, db)
		assert.GreaterOrEqual(t, db, tc.minPSNR, tc.typ)
	}
	_, err = convert(in, filepath.Join(tmp, "x.gguf"), cfg, gpu.Q8_0)
	require.NoError(t, err)
	_, err = convert(filepath.Join(tmp, "missing.safetensors"), filepath.Join(tmp, "y.gguf"), "", gpu.Q8_0)
	assert.ErrorContains(t, err, "missing.safetensors")
	_, err = os.Stat(filepath.Join(tmp, "y.gguf"))
	assert.True(t, os.IsNotExist(err), "nothing written on failure")
}

// A truncated GGUF and a GGUF with an unknown quant type are refused by
// name when loaded as a model.
func TestLoadBadGGUF(t *testing.T) {
	dir := golden.Dir(t)
	tmp := t.TempDir()
	out := filepath.Join(tmp, "m.gguf")
	_, err := convert(filepath.Join(dir, "sd15-mini.fp16.safetensors"), out, filepath.Join(dir, "sd15_mini_config.json"), gpu.Q8_0)
	require.NoError(t, err)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	trunc := filepath.Join(tmp, "trunc.gguf")
	require.NoError(t, os.WriteFile(trunc, b[:len(b)/2], 0o644))
	_, err = checkpoint.Load(trunc, "")
	assert.ErrorContains(t, err, "gguf "+trunc)
	assert.ErrorContains(t, err, "truncated file?")
}

// sd3-mini (a diffusers folder) converted to a Q8_0 GGUF in SD3's
// all-in-one key names (model.diffusion_model.joint_blocks.*,
// text_encoders.*) loads back as SD3 with its config bundle and T5
// tokenizer beside it, and generates close to the folder's image.
func TestConvertSD3(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	tmp := t.TempDir()
	out := filepath.Join(tmp, "sd3.gguf")
	st, err := convert(filepath.Join(dir, "sd3-mini"), out, "", gpu.Q8_0)
	require.NoError(t, err)
	assert.Positive(t, st.quantized)
	spm, err := os.ReadFile(filepath.Join(dir, "sd3-mini", "tokenizer_3", "spiece.model"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "spiece.model"), spm, 0o644))
	gen := func(model, png string) {
		log, err := runGen(t, []string{"--model", model, "-p", "a photograph of an astronaut riding a horse",
			"--steps", "6", "--cfg-scale", "7", "--seed", "42", "-W", "64", "-H", "64", "-o", png, "--device", "ref"})
		require.NoError(t, err, log)
	}
	a, b := filepath.Join(tmp, "folder.png"), filepath.Join(tmp, "q8.png")
	gen(filepath.Join(dir, "sd3-mini"), a)
	gen(out, b)
	db := psnr(t, a, b)
	t.Logf("SD3 q8_0: %d of %d tensors quantized, image PSNR vs the fp16 folder %.1f dB", st.quantized, st.tensors, db)
	assert.GreaterOrEqual(t, db, 50.0) // measured 55.0 dB
}

// sdxl-mini (a diffusers folder: two text encoders, OpenCLIP's fused
// in_proj and transposed text_projection in the original names) converted
// to Q4_0 loads back as SDXL and generates close to the folder's image.
func TestConvertSDXL(t *testing.T) {
	dir := golden.Wave(t, "golden-wave2")
	tmp := t.TempDir()
	out := filepath.Join(tmp, "sdxl.gguf")
	st, err := convert(filepath.Join(dir, "sdxl-mini"), out, "", gpu.Q4_0)
	require.NoError(t, err)
	m, err := checkpoint.Load(out, "")
	require.NoError(t, err)
	assert.Equal(t, "SDXL", m.Family)
	m.Close()
	gen := func(model, png string) {
		log, err := runGen(t, []string{"--model", model, "-p", "a photograph of an astronaut riding a horse",
			"--steps", "6", "--seed", "42", "-W", "64", "-H", "64", "-o", png, "--device", "ref"})
		require.NoError(t, err, log)
	}
	a, b := filepath.Join(tmp, "folder.png"), filepath.Join(tmp, "q4_0.png")
	gen(filepath.Join(dir, "sdxl-mini"), a)
	gen(out, b)
	db := psnr(t, a, b)
	t.Logf("SDXL q4_0: %d of %d tensors quantized, image PSNR vs the fp16 folder %.1f dB", st.quantized, st.tensors, db)
	assert.GreaterOrEqual(t, db, 30.0) // measured 33.1 dB
}

// A LoRA merges into a Q8_0 model (quantized weights widen to F32 for the
// merge) and the image stays close to the fp16 model's with the same LoRA.
func TestConvertLoRA(t *testing.T) {
	dir := golden.Dir(t)
	loraDir := filepath.Join(golden.Wave(t, "golden-wave3"), "lora")
	tmp := t.TempDir()
	out := filepath.Join(tmp, "q8.gguf")
	_, err := convert(filepath.Join(dir, "sd15-mini"), out, "", gpu.Q8_0)
	require.NoError(t, err)
	gen := func(model, png string) {
		log, err := runGen(t, []string{"--model", model, "-p", "a photograph of an astronaut riding a horse <lora:sd15-mini-lora.kohya.fp16:0.8>",
			"--steps", "6", "--seed", "42", "-W", "64", "-H", "64", "-o", png, "--device", "ref", "--lora-dir", loraDir})
		require.NoError(t, err, log)
	}
	a, b := filepath.Join(tmp, "f16.png"), filepath.Join(tmp, "q8.png")
	gen(filepath.Join(dir, "sd15-mini"), a)
	gen(out, b)
	db := psnr(t, a, b)
	t.Logf("sd15-mini + LoRA, q8_0 vs fp16: PSNR %.1f dB", db)
	assert.GreaterOrEqual(t, db, 50.0) // measured 56.7 dB
}

// Flux loads fp8 weights from a diffusers folder as ComfyUI users have them
// (an fp8 transformer and T5): a copy of flux-mini whose transformer and
// T5 files hold every 2-D linear weight as F8_E4M3 generates close to the
// fp16 folder's image.
func TestFluxFP8Folder(t *testing.T) {
	src := filepath.Join(golden.Wave(t, "golden-wave3"), "flux-mini")
	dst := filepath.Join(t.TempDir(), "flux-mini-fp8")
	require.NoError(t, os.MkdirAll(dst, 0o755))
	ents, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, e := range ents {
		if e.Name() != "transformer" && e.Name() != "text_encoder_2" {
			require.NoError(t, os.Symlink(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())))
		}
	}
	fp8 := 0
	for _, comp := range []string{"transformer", "text_encoder_2"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dst, comp), 0o755))
		files, err := os.ReadDir(filepath.Join(src, comp))
		require.NoError(t, err)
		for _, f := range files {
			in := filepath.Join(src, comp, f.Name())
			out := filepath.Join(dst, comp, f.Name())
			if filepath.Ext(f.Name()) != ".safetensors" {
				require.NoError(t, os.Symlink(in, out))
				continue
			}
			st, err := safetensors.Open(in)
			require.NoError(t, err)
			var es []safetensors.Entry
			for _, ti := range st.Tensors() {
				raw, err := st.Data(ti.Name)
				require.NoError(t, err)
				e := safetensors.Entry{Name: ti.Name, DType: ti.DType, Shape: ti.Shape, Data: raw}
				if g, _ := ti.DType.GPU(); strings.HasSuffix(ti.Name, ".weight") && nets.QuantizableRow(gpu.F8E4M3, ti.Shape) && !strings.Contains(ti.Name, "shared") {
					v, err := ref.Dequantize(g, raw, int(ti.NumElements()))
					require.NoError(t, err)
					e.DType, e.Data = safetensors.F8E4M3, mustQuantize(t, gpu.F8E4M3, v)
					fp8++
				}
				es = append(es, e)
			}
			var buf bytes.Buffer
			require.NoError(t, safetensors.Write(&buf, es, nil))
			st.Close()
			require.NoError(t, os.WriteFile(out, buf.Bytes(), 0o644))
		}
	}
	require.Positive(t, fp8)
	tmp := t.TempDir()
	gen := func(model, png string) {
		log, err := runGen(t, []string{"--model", model, "-p", "a photograph of an astronaut riding a horse",
			"--steps", "4", "--seed", "42", "-W", "64", "-H", "64", "-o", png, "--device", "ref"})
		require.NoError(t, err, log)
	}
	a, b := filepath.Join(tmp, "f16.png"), filepath.Join(tmp, "fp8.png")
	gen(src, a)
	gen(dst, b)
	db := psnr(t, a, b)
	t.Logf("flux-mini with %d fp8 weights: PSNR vs fp16 %.1f dB", fp8, db)
	assert.GreaterOrEqual(t, db, 40.0) // measured 45.3 dB
}

func mustQuantize(t *testing.T, dt gpu.DType, v []float32) []byte {
	t.Helper()
	b, err := ref.Quantize(dt, v)
	require.NoError(t, err)
	return b
}

// flux-mini (a diffusers folder) converted to Q8_0 is a GGUF in ComfyUI's
// Flux layout (Black Forest Labs' transformer names under
// model.diffusion_model., fused qkv and linear1 quantized whole), loads
// back as Flux with its config bundle, keeps the fused weights packed,
// and generates close to the folder's image.
func TestConvertFlux(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	tmp := t.TempDir()
	out := filepath.Join(tmp, "flux.gguf")
	st, err := convert(filepath.Join(dir, "flux-mini"), out, "", gpu.Q8_0)
	require.NoError(t, err)
	assert.Positive(t, st.quantized)
	require.NoError(t, os.Symlink(filepath.Join(dir, "flux-mini", "tokenizer_2", "spiece.model"), filepath.Join(tmp, "spiece.model")))
	m, err := checkpoint.Load(out, "")
	require.NoError(t, err)
	assert.Equal(t, "Flux", m.Family)
	for _, name := range []string{"single_transformer_blocks.0.attn.to_q.weight", "single_transformer_blocks.1.proj_mlp.weight", "transformer_blocks.0.attn.add_k_proj.weight"} {
		p, ok := m.TransformerWeights.Get(name)
		if assert.True(t, ok, name) {
			assert.Equal(t, gpu.Q8_0, p.DType, "%s: a part of a fused original stays quantized", name)
		}
	}
	m.Close()
	gen := func(model, png string) {
		log, err := runGen(t, []string{"--model", model, "-p", "a photograph of an astronaut riding a horse",
			"--steps", "4", "--seed", "42", "-W", "64", "-H", "64", "-o", png, "--device", "ref"})
		require.NoError(t, err, log)
	}
	a, b := filepath.Join(tmp, "folder.png"), filepath.Join(tmp, "q8.png")
	gen(filepath.Join(dir, "flux-mini"), a)
	gen(out, b)
	db := psnr(t, a, b)
	t.Logf("Flux q8_0: %d of %d tensors quantized, image PSNR vs the fp16 folder %.1f dB", st.quantized, st.tensors, db)
	assert.GreaterOrEqual(t, db, 50.0) // measured 56.6 dB
}
