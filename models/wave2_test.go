package models

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models/nets"
)

// wave2Tol is golden-wave2's README bound for networks: max abs <= 1e-4.
const wave2Tol = 1e-4

// wave2Sources are the published layouts of golden-wave2's models.
func wave2Sources(dir string) []struct{ name, family, path, config string } {
	return []struct{ name, family, path, config string }{
		{"sd2/folder", "SD 2.x", filepath.Join(dir, "sd2-mini"), ""},
		{"sdxl/folder", "SDXL", filepath.Join(dir, "sdxl-mini"), ""},
		{"sdxl/single", "SDXL", filepath.Join(dir, "sdxl-mini.fp16.safetensors"), filepath.Join(dir, "sdxl_mini_config.json")},
	}
}

func download(t *testing.T, d gpu.Device, x *gpu.Tensor) []float32 {
	t.Helper()
	v, err := d.Download(x)
	require.NoError(t, err)
	return v
}

// TestWave2Networks runs the text encoders (through EncodePrompt: the
// tokenizer, each encoder's padding token and hidden-state choice, the
// pooled vector) and every U-Net case of golden-wave2 on every device from
// every layout.
func TestWave2Networks(t *testing.T) {
	dir := golden.Wave(t, "golden-wave2")
	for devName, open := range testdev.All(t) {
		for _, src := range wave2Sources(dir) {
			t.Run(devName+"/"+src.name, func(t *testing.T) {
				d := open(t)
				p, err := Load(d, src.path, src.config)
				require.NoError(t, err)
				defer p.Close()
				assert.Equal(t, src.family, p.Model.Family, p.Model.FamilyWhy)
				sdxl := src.family == "SDXL"

				// Text: the golden prompts through the whole prompt path.
				textFile, embeds := "sd2_text_encoder", "prompt_embeds"
				if sdxl {
					textFile = "sdxl_text_encoders"
				}
				g := golden.Open(t, filepath.Join(dir, textFile+".safetensors"))
				var meta struct{ Prompts []string }
				raw, err := os.ReadFile(filepath.Join(dir, textFile+".json"))
				require.NoError(t, err)
				require.NoError(t, json.Unmarshal(raw, &meta))
				require.Len(t, meta.Prompts, 5)
				want, shape := g.F32(embeds)
				per := shape[1] * shape[2]
				var wantPooled []float32
				if sdxl {
					wantPooled, _ = g.F32("pooled_prompt_embeds")
				}
				worst := 0.0
				for i, prompt := range meta.Prompts {
					c, err := p.EncodePrompt(prompt, "x", 1)
					require.NoError(t, err)
					worst = max(worst, golden.Close(t, textFile+" "+prompt, download(t, d, c.Cond), want[i*per:(i+1)*per], wave2Tol, 0))
					if sdxl {
						require.NotNil(t, c.CondPooled)
						pw := len(wantPooled) / 5
						worst = max(worst, golden.Close(t, "pooled "+prompt, download(t, d, c.CondPooled), wantPooled[i*pw:(i+1)*pw], wave2Tol, 0))
					}
					c.Release()
				}

				// U-Net: every case, with the added conditioning for SDXL.
				unetFile := "sd2_unet.safetensors"
				cases := []string{"b1_t999", "b1_t500", "b1_t1", "b2cfg_t999", "b2cfg_t500", "b2cfg_t1", "b2_mixed"}
				if sdxl {
					unetFile = "sdxl_unet.safetensors"
					cases = []string{"b1_t999", "b1_t500", "b1_t1", "b1_t500_timeids_alt", "b2cfg_t999", "b2cfg_t500", "b2cfg_zero_neg_t500", "b2_mixed"}
				}
				u := golden.Open(t, filepath.Join(dir, unetFile))
				for _, cs := range cases {
					x, xs := u.F32(cs + ".sample")
					ctx, cshape := u.F32(cs + ".encoder_hidden_states")
					ts, _ := u.F32(cs + ".timestep")
					var added *nets.Added
					d.PushScope()
					if sdxl {
						te, tshape := u.F32(cs + ".text_embeds")
						ids, _ := u.F32(cs + ".time_ids")
						added = &nets.Added{TextEmbeds: d.Upload(te, tshape...), TimeIDs: ids}
					}
					out := p.unet.ForwardAdded(d.Upload(x, xs...), ts, d.Upload(ctx, cshape...), added)
					got := download(t, d, out)
					d.PopScope()
					wantOut, _ := u.F32(cs + ".out")
					worst = max(worst, golden.Close(t, unetFile+" "+cs, got, wantOut, wave2Tol, 0))
				}
				t.Logf("%s: worst max |diff| %.3g (bound %g)", src.name, worst, wave2Tol)
			})
		}
	}
}
