package nets_test

import (
	"path/filepath"
	"testing"

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
		if err != nil {
			t.Fatalf("%s: %v", layout.name, err)
		}
		for dname, d := range nets.DevicesForTest(t) {
			u, err := nets.NewUNet(d, m.UNet, m.UNetWeights)
			if err != nil {
				t.Fatalf("%s: %v", layout.name, err)
			}
			te, err := nets.NewTextEncoder(d, m.Text("text_encoder").Config, m.Text("text_encoder").Weights)
			if err != nil {
				t.Fatalf("%s: %v", layout.name, err)
			}
			v, err := nets.NewVAE(d, m.VAE, m.VAEWeights)
			if err != nil {
				t.Fatalf("%s: %v", layout.name, err)
			}
			t.Logf("%s, %s: max |diff| text %.3g, U-Net %.3g, VAE %.3g", layout.name, dname,
				nets.CheckTextGolden(t, d, te), nets.CheckUNetGolden(t, d, u), nets.CheckVAEGolden(t, d, v))
			u.Release()
			te.Release()
			v.Release()
			if err := d.Err(); err != nil {
				t.Errorf("%s, %s: %v", layout.name, dname, err)
			}
		}
		m.Close()
	}
}
