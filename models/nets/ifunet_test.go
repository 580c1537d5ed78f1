package nets

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
)

// ifFolder returns a folder of golden-wave4 (if-mini, if-mini-sr).
func ifFolder(t *testing.T, name string) string {
	return filepath.Join(golden.Wave(t, "golden-wave4"), name)
}

// Both IF U-Nets reproduce diffusers on every golden case (stage I at t
// 999/500/0 and a CFG batch; stage II with noise-level class labels), and
// the stage's intermediates (time, class and text-time embeddings, the
// text projection, conv_in, the mid block) for the traced case.
func TestIFUNetGolden(t *testing.T) {
	g := golden.Open(t, filepath.Join(golden.Wave(t, "golden-wave4"), "if_unet.safetensors"))
	stages := []struct {
		name, folder, traced string
		cases                []string
	}{
		{"stage1", "if-mini", "b1_t500", []string{"b1_t999", "b1_t500", "b1_t0", "b2cfg_t500"}},
		{"stage2", "if-mini-sr", "b1_t500_nl250", []string{"b1_t500_nl250", "b1_t900_nl0", "b2cfg_t100_nl250"}},
	}
	for _, st := range stages {
		var c IFUNetConfig
		loadConfig(t, filepath.Join(ifFolder(t, st.folder), "unet", "config.json"), &c)
		w := loadWeights(t, filepath.Join(ifFolder(t, st.folder), "unet", "diffusion_pytorch_model.fp16.safetensors"))
		for name, d := range testDevices(t) {
			t.Run(st.name+"/"+name, func(t *testing.T) {
				u, err := NewIFUNet(d, c, w)
				require.NoError(t, err)
				defer u.Release()
				for _, cs := range st.cases {
					p := st.name + "." + cs + "."
					ts, _ := g.F32(p + "timestep")
					var labels []float32
					if st.name == "stage2" {
						for _, l := range g.I64(p + "class_labels") {
							labels = append(labels, float32(l))
						}
					}
					traced := map[string]bool{}
					if cs == st.traced {
						u.Trace = func(n string, tt *gpu.Tensor) {
							if _, ok := g.Lookup(p + "intermediate." + n); !ok {
								return
							}
							want, shape := g.F32(p + "intermediate." + n)
							// README: U-Net outputs max abs <= 1e-4 (values O(1)).
							t.Logf("%s %s: %.3g", name, p+n, compare(t, d, p+n, tt, want, shape, 1e-4))
							traced[n] = true
						}
					}
					x, e := upload(d, g, p+"sample"), upload(d, g, p+"encoder_hidden_states")
					out := u.Forward(x, ts, e, labels)
					u.Trace = nil
					require.NoError(t, d.Err())
					want, shape := g.F32(p + "out")
					// README: U-Net outputs max abs <= 1e-4 (values O(1)).
					worst := compare(t, d, p+"out", out, want, shape, 1e-4)
					t.Logf("%s %s: worst |diff| %.3g", name, p+"out", worst)
					if cs == st.traced {
						require.NotEmpty(t, traced, fmt.Sprintf("%s: no intermediates compared", cs))
					}
					d.Release(x)
					d.Release(e)
					d.Release(out)
				}
			})
		}
	}
}

// if-mini's T5 with the attention mask reproduces what IF's encode_prompt
// gets (4 prompts x 77 tokens, padding positions included); without the
// mask it would not (the golden holds both).
func TestIFT5MaskedGolden(t *testing.T) {
	dir := ifFolder(t, "if-mini")
	g := golden.Open(t, filepath.Join(golden.Wave(t, "golden-wave4"), "if_text_encoder.safetensors"))
	var c T5Config
	loadConfig(t, filepath.Join(dir, "text_encoder", "config.json"), &c)
	w := loadWeights(t, filepath.Join(dir, "text_encoder", "model.fp16.safetensors"))
	rows := ids(t, g, "input_ids")
	var mask [][]bool
	for _, r := range ids(t, g, "attention_mask") {
		m := make([]bool, len(r))
		for j, v := range r {
			m[j] = v != 0
		}
		mask = append(mask, m)
	}
	want, shape := g.F32("last_hidden_state")
	unmasked, _ := g.F32("last_hidden_state_without_mask")
	for name, d := range testDevices(t) {
		t.Run(name, func(t *testing.T) {
			te, err := NewT5Encoder(d, c, w)
			require.NoError(t, err)
			defer te.Release()
			out, err := te.EncodeMasked(rows, mask)
			require.NoError(t, err)
			// README: T5 max abs <= 1e-4 (values O(1)).
			worst := compare(t, d, "t5 masked last_hidden_state", out, want, shape, 1e-4)
			t.Logf("%s: IF t5 masked worst |diff| %.3g", name, worst)
			d.Release(out)
			out, err = te.Encode(rows)
			require.NoError(t, err)
			worst = compare(t, d, "t5 unmasked last_hidden_state", out, unmasked, shape, 1e-4)
			t.Logf("%s: IF t5 unmasked worst |diff| %.3g", name, worst)
			d.Release(out)
			_, err = te.EncodeMasked(rows, mask[:1])
			assert.Error(t, err)
		})
	}
}

// Unsupported IF U-Net options are refused by name, and weights that do
// not fit the config are reported before anything is uploaded.
func TestIFUNetBadConfig(t *testing.T) {
	var c IFUNetConfig
	loadConfig(t, filepath.Join(ifFolder(t, "if-mini"), "unet", "config.json"), &c)
	require.NotNil(t, ExpectedIFUNet(c))
	d := testDevices(t)["ref"]
	for field, mutate := range map[string]func(*IFUNetConfig){
		"down_block_types[1]": func(c *IFUNetConfig) {
			c.DownBlockTypes = append([]string(nil), c.DownBlockTypes...)
			c.DownBlockTypes[1] = "CrossAttnDownBlock2D"
		},
		"mid_block_type":      func(c *IFUNetConfig) { c.MidBlockType = "UNetMidBlock2DCrossAttn" },
		"act_fn":              func(c *IFUNetConfig) { c.ActFn = "mish" },
		"addition_embed_type": func(c *IFUNetConfig) { c.AdditionEmbedType = "image" },
		"attention_head_dim":  func(c *IFUNetConfig) { c.AttentionHeadDim = IntOrList{7} },
	} {
		bad := c
		mutate(&bad)
		assert.Nil(t, ExpectedIFUNet(bad), field)
		_, err := NewIFUNet(d, bad, MapWeights{})
		if assert.Error(t, err, field) {
			assert.Contains(t, err.Error(), field)
		}
	}
	w := loadWeights(t, filepath.Join(ifFolder(t, "if-mini"), "unet", "diffusion_pytorch_model.fp16.safetensors"))
	delete(w, "add_embedding.pool.positional_embedding")
	_, err := NewIFUNet(d, c, w)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "add_embedding.pool.positional_embedding")
}
