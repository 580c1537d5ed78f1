package nets_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
)

// The networks built from either checkpoint layout reproduce diffusers.
func TestNetsFromCheckpointLayouts(t *testing.T) {
	dir := golden.Dir(t)
	for _, layout := range []struct{ name, path, config string }{
		{"single file", filepath.Join(dir, "sd15-mini.fp16.safetensors"), filepath.Join(dir, "sd15_mini_config.json")},
		{"diffusers folder", filepath.Join(dir, "sd15-mini"), ""},
	} {
		m, err := checkpoint.Load(layout.path, layout.config)
		require.NoError(t, err, layout.name)
		for dname, d := range nets.DevicesForTest(t) {
			u, err := nets.NewUNet(d, m.UNet, m.UNetWeights)
			require.NoError(t, err, layout.name)
			te, err := nets.NewTextEncoder(d, m.Text("text_encoder").Config, m.Text("text_encoder").Weights)
			require.NoError(t, err, layout.name)
			v, err := nets.NewVAE(d, m.VAE, m.VAEWeights)
			require.NoError(t, err, layout.name)
			t.Logf("%s, %s: max |diff| text %.3g, U-Net %.3g, VAE %.3g", layout.name, dname,
				nets.CheckTextGolden(t, d, te), nets.CheckUNetGolden(t, d, u), nets.CheckVAEGolden(t, d, v))
			u.Release()
			te.Release()
			v.Release()
			assert.NoError(t, d.Err(), "%s, %s", layout.name, dname)
		}
		m.Close()
	}
}
