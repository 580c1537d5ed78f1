package models_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
)

// withConfig copies sd15-mini (as links) with one config file's keys
// changed.
func withConfig(t *testing.T, rel string, set map[string]any) string {
	t.Helper()
	d := diffusersCopy(t, t.TempDir(), rel)
	raw, err := os.ReadFile(filepath.Join(golden.Path(t, "sd15-mini"), rel))
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, json.Unmarshal(raw, &cfg))
	for k, v := range set {
		cfg[k] = v
	}
	out, err := json.Marshal(cfg)
	require.NoError(t, err)
	writeFile(t, filepath.Join(d, rel), out)
	return d
}

// TestConfigKeysNeverIgnored: a config key that changes the result is
// either implemented (the image changes) or refused by name at load; a
// config that would only break at generate time is refused at load,
// naming the file.
func TestConfigKeysNeverIgnored(t *testing.T) {
	refused := []struct {
		rel  string
		set  map[string]any
		want string
	}{
		{"unet/config.json", map[string]any{"class_embed_type": "timestep"}, "class_embed_type"},
		{"unet/config.json", map[string]any{"resnet_out_scale_factor": 2.0}, "resnet_out_scale_factor"},
		{"unet/config.json", map[string]any{"timestep_post_act": "silu"}, "timestep_post_act"},
		{"unet/config.json", map[string]any{"time_embedding_act_fn": "silu"}, "time_embedding_act_fn"},
		{"unet/config.json", map[string]any{"only_cross_attention": true}, "only_cross_attention"},
		{"unet/config.json", map[string]any{"cross_attention_norm": "group_norm"}, "cross_attention_norm"},
		{"unet/config.json", map[string]any{"attention_type": "gated"}, "attention_type"},
		{"scheduler/scheduler_config.json", map[string]any{"thresholding": true}, "thresholding"},
		{"scheduler/scheduler_config.json", map[string]any{"rescale_betas_zero_snr": true}, "rescale_betas_zero_snr"},
		{"scheduler/scheduler_config.json", map[string]any{"beta_end": 0.9999999}, "beta_end"},
		{"scheduler/scheduler_config.json", map[string]any{"num_train_timesteps": 1}, "num_train_timesteps"},
		{"text_encoder/config.json", map[string]any{"layer_norm_eps": -10}, "layer_norm_eps"},
		{"vae/config.json", map[string]any{"latents_mean": []float64{0, 0}}, "latents_mean"},
	}
	for _, c := range refused {
		d := withConfig(t, c.rel, c.set)
		d2 := ref.New()
		p, err := models.Load(d2, d, "")
		if assert.Errorf(t, err, "%s %v accepted", c.rel, c.set) {
			assert.Contains(t, err.Error(), c.want)
			assert.Contains(t, err.Error(), c.rel, "the error names the file")
		} else {
			p.Close()
		}
		d2.Close()
	}

	// Implemented keys change the decoded image.
	decode := func(dir string) []byte {
		d := ref.New()
		defer d.Close()
		p, err := models.Load(d, dir, "")
		require.NoError(t, err)
		defer p.Close()
		lat := make([]float32, 4*8*8)
		for i := range lat {
			lat[i] = float32(i%11)/11 - 0.5
		}
		imgs, err := p.Decode(lat, [4]int{1, 4, 8, 8})
		require.NoError(t, err)
		return imgs[0].Pix
	}
	base := decode(golden.Path(t, "sd15-mini"))
	for _, set := range []map[string]any{
		{"shift_factor": 0.5},
		{"latents_mean": []float64{0.1, -0.2, 0.3, 0}, "latents_std": []float64{1, 2, 0.5, 1}},
	} {
		assert.NotEqualf(t, base, decode(withConfig(t, "vae/config.json", set)), "vae %v changed nothing", set)
	}
}
