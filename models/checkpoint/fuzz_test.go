package checkpoint

import (
	"errors"
	"testing"

	"github.com/stepwise/stepwise/models/safetensors"
)

// checkConfigs asserts what a successful parse guarantees: validated
// configs whose layouts can be enumerated.
func checkConfigs(t *testing.T, c configs) {
	t.Helper()
	if len(ExpectedUNet(c.UNet)) == 0 || len(ExpectedVAE(c.VAE)) == 0 || len(ExpectedText(c.Text)) == 0 {
		t.Fatal("empty layout from a valid config")
	}
	if c.UNet.Heads(0) <= 0 || c.UNet.BlockOutChannels[0]%c.UNet.Heads(0) != 0 {
		t.Fatalf("invalid heads accepted: %+v", c.UNet)
	}
}

func wantConfigError(t *testing.T, err error) {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Path == "" {
		t.Fatalf("error %T is not a *ConfigError naming the file: %v", err, err)
	}
}

// FuzzDiffusersConfig feeds arbitrary bytes as each diffusers config.json,
// as a scheduler config and as a config bundle.
func FuzzDiffusersConfig(f *testing.F) {
	f.Add([]byte(`{"block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		names := [4]string{"unet/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json"}
		for i := range 4 {
			var parts [4][]byte
			parts[i] = data
			c, err := parseDiffusersConfigs(parts[0], parts[1], parts[2], parts[3], names)
			if err != nil {
				wantConfigError(t, err)
				continue
			}
			checkConfigs(t, c)
		}
		c, err := parseBundle("bundle.json", data)
		if err != nil {
			wantConfigError(t, err)
			return
		}
		checkConfigs(t, c)
	})
}

// FuzzLDMYAML feeds arbitrary bytes as an original LDM inference config.
func FuzzLDMYAML(f *testing.F) {
	f.Add([]byte(miniYAML))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseLDMYAML("fuzz.yaml", data)
		if err != nil {
			wantConfigError(t, err)
			return
		}
		checkConfigs(t, c)
	})
}

// FuzzLoadBytes feeds arbitrary files to the single-file loader without a
// config (so the shape inference runs on untrusted shapes): a Model or a
// typed error, never a panic.
func FuzzLoadBytes(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := LoadBytes("fuzz.safetensors", data, nil)
		if err != nil {
			var le *LoadError
			var fe *safetensors.FormatError
			var ce *ConfigError
			if !errors.As(err, &le) && !errors.As(err, &fe) && !errors.As(err, &ce) {
				t.Fatalf("untyped error %T: %v", err, err)
			}
			return
		}
		m.Close()
	})
}
