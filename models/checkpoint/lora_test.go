package checkpoint

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

func TestParseLoRAKey(t *testing.T) {
	ok := []struct {
		key  string
		want LoRAKey
	}{
		{"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", LoRAKey{LoRAKohya, "unet", "down_blocks_0_attentions_0_proj_in", LoRADown}},
		{"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k.lora_up.weight", LoRAKey{LoRAKohya, "unet", "input_blocks_4_1_transformer_blocks_0_attn1_to_k", LoRAUp}},
		{"lora_te_text_model_encoder_layers_0_mlp_fc1.alpha", LoRAKey{LoRAKohya, "text_encoder", "text_model_encoder_layers_0_mlp_fc1", LoRAAlpha}},
		{"lora_te1_text_model_encoder_layers_3_self_attn_q_proj.lora_down.weight", LoRAKey{LoRAKohya, "text_encoder", "text_model_encoder_layers_3_self_attn_q_proj", LoRADown}},
		{"lora_te2_text_model_encoder_layers_3_self_attn_q_proj.lora_down.weight", LoRAKey{LoRAKohya, "text_encoder_2", "text_model_encoder_layers_3_self_attn_q_proj", LoRADown}},
		{"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight", LoRAKey{LoRADiffusers, "unet", "down_blocks.0.attentions.0.proj_in", LoRADown}},
		{"text_encoder.text_model.encoder.layers.0.mlp.fc2.lora_B.weight", LoRAKey{LoRADiffusers, "text_encoder", "text_model.encoder.layers.0.mlp.fc2", LoRAUp}},
		{"text_encoder_2.text_model.encoder.layers.0.mlp.fc2.lora_B.weight", LoRAKey{LoRADiffusers, "text_encoder_2", "text_model.encoder.layers.0.mlp.fc2", LoRAUp}},
		{"base_model.model.down_blocks.1.attentions.0.proj_out.lora_A.weight", LoRAKey{LoRADiffusers, "unet", "down_blocks.1.attentions.0.proj_out", LoRADown}},
		{"base_model.model.text_model.encoder.layers.0.mlp.fc2.lora_B.weight", LoRAKey{LoRADiffusers, "text_encoder", "text_model.encoder.layers.0.mlp.fc2", LoRAUp}},
		{"unet.mid_block.attentions.0.proj_in.lora_A.default.weight", LoRAKey{LoRADiffusers, "unet", "mid_block.attentions.0.proj_in", LoRADown}},
		{"unet.mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.up.weight", LoRAKey{LoRADiffusers, "unet", "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0", LoRAUp}},
		{"unet.up_blocks.1.attentions.0.proj_in.lora.down.weight", LoRAKey{LoRADiffusers, "unet", "up_blocks.1.attentions.0.proj_in", LoRADown}},
		{"text_encoder.text_model.encoder.layers.1.self_attn.k_proj.lora_linear_layer.up.weight", LoRAKey{LoRADiffusers, "text_encoder", "text_model.encoder.layers.1.self_attn.k_proj", LoRAUp}},
		{"unet.conv_in.alpha", LoRAKey{LoRADiffusers, "unet", "conv_in", LoRAAlpha}},
	}
	for _, c := range ok {
		got, err := ParseLoRAKey(c.key)
		if assert.NoError(t, err, c.key) {
			assert.Equal(t, c.want, got, c.key)
		}
	}
	bad := []struct{ key, says string }{
		{"lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a", "LoHa"},
		{"lora_unet_down_blocks_0_resnets_0_conv1.lokr_w1", "LoKr"},
		{"lora_unet_x.lora_mid.weight", "Tucker"},
		{"lora_unet_x.dora_scale", "DoRA"},
		{"unet.x.lora_magnitude_vector", "DoRA"},
		{"lora_te3_encoder_block_0.lora_down.weight", "T5"},
		{"lora_transformer_single_blocks_0_attn_to_q.lora_down.weight", "transformer"},
		{"transformer.single_blocks.0.attn.to_q.lora_A.weight", "transformer"},
		{"lora_unet_.lora_down.weight", "no module"},
		{"lora_unet_x", "no module"},
		{"lora_vae_decoder.lora_down.weight", "not a LoRA name"},
		{"model.diffusion_model.input_blocks.0.0.weight", "not a LoRA tensor"},
		{"unet..lora_A.weight", "no module"},
		{"lora_unet_x.lora_down.bias", "unknown LoRA tensor"},
	}
	for _, c := range bad {
		_, err := ParseLoRAKey(c.key)
		if assert.Error(t, err, c.key) {
			assert.Contains(t, err.Error(), c.says, c.key)
		}
	}
}

// FuzzParseLoRAKey: any name parses or is refused with a reason, never
// panics; a parsed kohya name is its parts put back together.
func FuzzParseLoRAKey(f *testing.F) {
	for _, s := range []string{
		"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha",
		"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight", "base_model.model.text_model.x.lora_B.adapter.weight",
		"unet.a.processor.to_out_lora.up.weight", "lora_unet_x.hada_w1_a", ".lora_A.weight", "unet..lora_B.weight",
		"lora_te_", "lora_", "", ".", "text_encoder_2.alpha", "x.lora_A..weight",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		k, err := ParseLoRAKey(key)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("ParseLoRAKey(%q): empty error", key)
			}
			return
		}
		if k.Module == "" || (k.Part != LoRADown && k.Part != LoRAUp && k.Part != LoRAAlpha) {
			t.Fatalf("ParseLoRAKey(%q) = %+v", key, k)
		}
		switch k.Role {
		case "unet", "text_encoder", "text_encoder_2":
		default:
			t.Fatalf("ParseLoRAKey(%q): role %q", key, k.Role)
		}
		if k.Format == LoRAKohya {
			suffix := map[string]string{LoRADown: "lora_down.weight", LoRAUp: "lora_up.weight", LoRAAlpha: "alpha"}[k.Part]
			if strings.Contains(k.Module, ".") || !strings.HasSuffix(key, k.Module+"."+suffix) {
				t.Fatalf("ParseLoRAKey(%q) = %+v does not rebuild the name", key, k)
			}
		} else if !strings.Contains(key, k.Module) && !strings.Contains(k.Module, ".to_") {
			t.Fatalf("ParseLoRAKey(%q) = %+v: module not in the name", key, k)
		}
	})
}

// loraTestModel loads shared/golden's sd15-mini folder (configs and mapped
// weights; no device).
func loraTestModel(t *testing.T) *Model {
	t.Helper()
	m, err := Load(filepath.Join(golden.Dir(t), "sd15-mini"), "")
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// loraEntry is an F16 tensor of a synthetic LoRA file filled with v.
func loraEntry(name string, v float32, shape ...int) safetensors.Entry {
	n := 1
	for _, d := range shape {
		n *= d
	}
	data := make([]byte, 2*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint16(data[2*i:], ref.FloatToHalf(v*float32(1+i%7)/7))
	}
	return safetensors.Entry{Name: name, DType: safetensors.F16, Shape: shape, Data: data}
}

// kohyaModule is the three tensors of one kohya module.
func kohyaModule(name string, rank, in, out int, kernel ...int) []safetensors.Entry {
	down := append([]int{rank, in}, kernel...)
	up := []int{out, rank}
	if len(kernel) > 0 {
		up = append(up, 1, 1)
	}
	return []safetensors.Entry{
		loraEntry(name+".lora_down.weight", 0.1, down...),
		loraEntry(name+".lora_up.weight", 0.2, up...),
		loraEntry(name+".alpha", 7), // 7 * 1/7: alpha 1
	}
}

func writeLoRA(t *testing.T, name string, entries []safetensors.Entry, meta map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, safetensors.Write(&buf, entries, meta))
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
	return path
}

// TestOpenLoRA: the names kohya and diffusers write resolve to the same
// declared weights in both naming styles (diffusers and LDM module paths),
// including 3x3 convolutions, and the alpha is read.
func TestOpenLoRA(t *testing.T) {
	m := loraTestModel(t)
	var es []safetensors.Entry
	es = append(es, kohyaModule("lora_unet_down_blocks_0_attentions_0_proj_in", 4, 32, 32, 1, 1)...)
	es = append(es, kohyaModule("lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k", 2, 64, 32)...) // LDM names (SDXL kohya files)
	es = append(es, kohyaModule("lora_unet_down_blocks_0_resnets_0_conv1", 8, 32, 32, 3, 3)...)              // LoCon 3x3
	es = append(es, kohyaModule("lora_te_text_model_encoder_layers_1_mlp_fc2", 4, 256, 64)...)
	path := writeLoRA(t, "mix.safetensors", es, nil)
	l, err := OpenLoRA(path, m)
	require.NoError(t, err)
	defer l.Close()
	assert.Equal(t, LoRAKohya, l.Format)
	var got []string
	for _, mod := range l.Modules {
		got = append(got, mod.Target.Role+"/"+mod.Target.Param)
		assert.InDelta(t, 1/float64(mod.Rank), mod.Scale(), 1e-9, mod.Key)
	}
	assert.Equal(t, []string{
		"text_encoder/text_model.encoder.layers.1.mlp.fc2.weight",
		"unet/down_blocks.0.attentions.0.proj_in.weight",
		"unet/down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
		"unet/down_blocks.0.resnets.0.conv1.weight",
	}, got)
	h, err := l.Hash()
	require.NoError(t, err)
	assert.Len(t, h, 12)
	full, err := AddnetHash(path)
	require.NoError(t, err)
	assert.Equal(t, full[:12], h)
}

// TestLoRAIndexUnambiguous: no two LoRA-able weights of SD 1.x, SD 2.x and
// SDXL share a module name in any of the four forms.
func TestLoRAIndexUnambiguous(t *testing.T) {
	for _, fam := range []string{"SD 1.x", "SD 2.x", "SDXL"} {
		spec := FamilyNamed(fam)
		m := &Model{Spec: spec, Family: fam}
		infos := []safetensors.TensorInfo{}
		shaped, _ := inferConfigs(infos, spec)
		m.UNet, m.VAE = shaped.UNet, shaped.VAE
		for _, ts := range spec.Texts {
			m.Texts = append(m.Texts, TextModel{Spec: ts, Config: shaped.Texts[ts.Role]})
		}
		ix, err := loraIndexes(m)
		require.NoError(t, err, fam)
		for role, x := range ix {
			for name, i := range x.byName {
				assert.GreaterOrEqual(t, i, 0, "%s %s: %q names several weights", fam, role, name)
			}
			assert.NotEmpty(t, x.targets, "%s %s", fam, role)
		}
	}
}

// TestOpenLoRABad: every bad LoRA is refused before any device work, with
// an error naming the file and, by name, what is wrong.
func TestOpenLoRABad(t *testing.T) {
	m := loraTestModel(t)
	good := kohyaModule("lora_unet_down_blocks_0_attentions_0_proj_in", 4, 32, 32, 1, 1)
	nan := kohyaModule("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 4, 64, 64)
	binary.LittleEndian.PutUint16(nan[1].Data[6:], 0x7E00) // a NaN in up
	inf := kohyaModule("lora_unet_down_blocks_0_attentions_0_proj_out", 4, 32, 32)
	binary.LittleEndian.PutUint16(inf[0].Data[0:], 0x7C00) // +Inf in down
	sdxl := append(append(append([]safetensors.Entry{},
		kohyaModule("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 4, 64, 64)...),
		kohyaModule("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 4, 1280, 1280)...),
		kohyaModule("lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k", 4, 2048, 640)...)
	cases := []struct {
		name    string
		entries []safetensors.Entry
		meta    map[string]string
		says    []string
	}{
		{"shape", append(append([]safetensors.Entry{}, good...), kohyaModule("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 4, 33, 32)...), nil,
			[]string{"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", "do not fit", "[4,33]"}},
		{"nan", append(append([]safetensors.Entry{}, good...), nan...), nil,
			[]string{"lora_te_text_model_encoder_layers_0_self_attn_q_proj up", "NaN or Inf"}},
		{"inf", inf, nil, []string{"lora_unet_down_blocks_0_attentions_0_proj_out down", "1 of 128"}},
		{"sdxl", sdxl, map[string]string{"ss_base_model_version": "sdxl_base_v1-0"}, []string{"another family", "text_encoder_2 (lora_te2_*)", "trained for SDXL"}},
		{"unknown key", append(append([]safetensors.Entry{}, good...), loraEntry("something_else", 1, 2)), nil, []string{`"something_else"`, "not a LoRA tensor"}},
		{"unmatched", append(append([]safetensors.Entry{}, good...), kohyaModule("lora_unet_down_blocks_0_attentions_7_proj_in", 4, 32, 32)...), nil,
			[]string{"lora_unet_down_blocks_0_attentions_7_proj_in", "no such Linear or Conv2d"}},
		{"loha", []safetensors.Entry{loraEntry("lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a", 1, 4, 4)}, nil, []string{"LoHa"}},
		{"half", good[:1], nil, []string{"no up (lora_up / lora_B) factor"}},
		{"alpha", append(good[:2:2], loraEntry("lora_unet_down_blocks_0_attentions_0_proj_in.alpha", 1, 2)), nil, []string{"alpha", "want a scalar"}},
		{"checkpoint", []safetensors.Entry{loraEntry("model.diffusion_model.input_blocks.0.0.weight", 1, 4)}, nil, []string{"full checkpoint"}},
		{"empty", nil, nil, []string{"no tensors"}},
	}
	for _, c := range cases {
		path := writeLoRA(t, c.name+".safetensors", c.entries, c.meta)
		l, err := OpenLoRA(path, m)
		if !assert.Error(t, err, c.name) {
			l.Close()
			continue
		}
		msg := err.Error()
		assert.Contains(t, msg, path, c.name)
		for _, s := range c.says {
			assert.Contains(t, msg, s, c.name)
		}
		var le *LoRAError
		assert.True(t, errors.As(err, &le), "%s: %T", c.name, err)
	}
	_, err := OpenLoRA(filepath.Join(t.TempDir(), "x.ckpt"), m)
	assert.ErrorIs(t, err, ErrPickle)
	_, err = OpenLoRA(filepath.Join(t.TempDir(), "missing.safetensors"), m)
	assert.Error(t, err)
}

// FuzzOpenLoRA: arbitrary bytes as a LoRA file are refused with an error
// or give modules whose factors fit their weights; nothing panics.
func FuzzOpenLoRA(f *testing.F) {
	for _, es := range [][]safetensors.Entry{
		kohyaModule("lora_unet_down_blocks_0_attentions_0_proj_in", 4, 32, 32, 1, 1),
		kohyaModule("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 2, 64, 64),
		{loraEntry("unet.mid_block.attentions.0.proj_out.lora_A.weight", 1, 2, 128, 1, 1), loraEntry("unet.mid_block.attentions.0.proj_out.lora_B.weight", 1, 128, 2, 1, 1)},
	} {
		var buf bytes.Buffer
		if err := safetensors.Write(&buf, es, nil); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	m, err := Load(filepath.Join(golden.Dir(f), "sd15-mini"), "")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := OpenLoRABytes("fuzz.safetensors", data, m)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.safetensors") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, mod := range l.Modules {
			out := mod.Target.Shape[0]
			numel := 1
			for _, d := range mod.Target.Shape {
				numel *= d
			}
			dn := len(mod.Down.Raw) / mod.Down.DType.Size()
			un := len(mod.Up.Raw) / mod.Up.DType.Size()
			if mod.Rank < 1 || un != out*mod.Rank || dn != mod.Rank*(numel/out) || math.IsNaN(mod.Alpha) {
				t.Fatalf("module %s: rank %d, %d down and %d up values for %v", mod.Key, mod.Rank, dn, un, mod.Target.Shape)
			}
		}
		l.Close()
	})
}

// TestOpenLoRAFamilies: on SD 2.x and SDXL (golden-wave2's minis, folder
// and single file), kohya names in both styles (lora_unet_ with LDM/SGM
// module paths as SDXL kohya files write them, lora_te1_ / lora_te2_ for
// the two encoders) and diffusers names reach the declared weights.
func TestOpenLoRAFamilies(t *testing.T) {
	dir := golden.Wave(t, "golden-wave2")
	for _, src := range []struct{ name, path, config string }{
		{"sd2/folder", "sd2-mini", ""},
		{"sdxl/folder", "sdxl-mini", ""},
		{"sdxl/single", "sdxl-mini.fp16.safetensors", "sdxl_mini_config.json"},
	} {
		t.Run(src.name, func(t *testing.T) {
			cfg := ""
			if src.config != "" {
				cfg = filepath.Join(dir, src.config)
			}
			m, err := Load(filepath.Join(dir, src.path), cfg)
			require.NoError(t, err)
			defer m.Close()
			ud, _, tds, err := declsOf(m)
			require.NoError(t, err)
			prefixes := map[string]string{"text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"}
			if len(m.Texts) == 2 {
				prefixes["text_encoder"] = "lora_te1_"
			}
			var kohya, peft []safetensors.Entry
			want := map[string]bool{}
			pick := func(role string, decls []nets.Decl, orig bool) {
				n2, n4 := 0, 0
				for _, d := range decls {
					mod, ok := strings.CutSuffix(d.Name, ".weight")
					if !ok || strings.HasSuffix(mod, "embedding") || (len(d.Shape) == 2 && n2 == 3) || (len(d.Shape) == 4 && n4 == 1) || (len(d.Shape) != 2 && len(d.Shape) != 4) {
						continue
					}
					if len(d.Shape) == 2 {
						n2++
					} else {
						n4++
					}
					name := mod
					if o, ok := strings.CutSuffix(d.Orig, ".weight"); orig && ok && d.Parts <= 1 {
						name = o
					}
					prefix := "lora_unet_"
					if role != "unet" {
						prefix = prefixes[role]
					}
					kernel := d.Shape[2:]
					kohya = append(kohya, kohyaModule(prefix+underscore(name), 2, d.Shape[1], d.Shape[0], kernel...)...)
					peftDown := loraEntry(role+"."+mod+".lora_A.weight", 1, append([]int{2, d.Shape[1]}, kernel...)...)
					peftUp := loraEntry(role+"."+mod+".lora_B.weight", 1, d.Shape[0], 2)
					if len(kernel) > 0 {
						peftUp = loraEntry(role+"."+mod+".lora_B.weight", 1, d.Shape[0], 2, 1, 1)
					}
					peft = append(peft, peftDown, peftUp)
					want[role+"/"+d.Name] = true
				}
			}
			pick("unet", ud, true)
			for i, tm := range m.Texts {
				pick(tm.Spec.Role, tds[i], false)
			}
			for format, es := range map[string][]safetensors.Entry{"kohya": kohya, "peft": peft} {
				l, err := OpenLoRA(writeLoRA(t, format+".safetensors", es, nil), m)
				require.NoError(t, err, format)
				got := map[string]bool{}
				for _, mod := range l.Modules {
					got[mod.Target.Role+"/"+mod.Target.Param] = true
				}
				assert.Equal(t, want, got, format)
				l.Close()
			}
			if len(m.Texts) == 2 {
				assert.True(t, want["text_encoder_2/text_model.encoder.layers.0.self_attn.q_proj.weight"], "bigG's q_proj (a slice of OpenCLIP's in_proj) is reachable")
			}
		})
	}
}
