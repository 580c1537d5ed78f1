package checkpoint

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// checkConfigs asserts what a successful parse guarantees: validated
// configs whose layouts can be enumerated.
func checkConfigs(t *testing.T, c configs) {
	t.Helper()
	require.NotEmpty(t, ExpectedUNet(c.UNet), "empty layout from a valid config")
	require.NotEmpty(t, ExpectedVAE(c.VAE), "empty layout from a valid config")
	for role, tc := range c.Texts {
		require.NotEmpty(t, ExpectedText(tc), "empty %s layout from a valid config", role)
	}
	require.Positive(t, c.UNet.Heads(0), "invalid heads accepted: %+v", c.UNet)
	require.Zero(t, c.UNet.BlockOutChannels[0]%c.UNet.Heads(0), "invalid heads accepted: %+v", c.UNet)
}

func wantConfigError(t *testing.T, err error) {
	t.Helper()
	var ce *ConfigError
	require.ErrorAs(t, err, &ce, "error %T is not a *ConfigError naming the file: %v", err, err)
	require.NotEmpty(t, ce.Path, "error %T is not a *ConfigError naming the file: %v", err, err)
}

// FuzzDiffusersConfig feeds arbitrary bytes as each diffusers config.json,
// as a scheduler config and as a config bundle.
func FuzzDiffusersConfig(f *testing.F) {
	f.Add([]byte(`{"block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		names := map[string]string{"unet": "unet/config.json", "vae": "vae/config.json", "text_encoder": "text_encoder/config.json",
			"text_encoder_2": "text_encoder_2/config.json", "scheduler": "scheduler/scheduler_config.json"}
		for i := range 5 {
			var parts [5][]byte
			parts[i] = data
			texts := map[string][]byte{}
			if parts[2] != nil {
				texts["text_encoder"] = parts[2]
			}
			if parts[4] != nil {
				texts["text_encoder_2"] = parts[4]
			}
			c, err := parseDiffusersConfigs(parts[0], parts[1], parts[3], texts, names)
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
// config (so the shape inference runs on untrusted shapes): a Model whose
// weights match its configs' layouts, or a typed error naming the file;
// never a panic. The weights of a loaded model go through the NaN/Inf scan.
func FuzzLoadBytes(f *testing.F) {
	const name = "fuzz.safetensors"
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := LoadBytes(name, data, nil)
		if err != nil {
			var le *LoadError
			var fe *safetensors.FormatError
			var ce *ConfigError
			switch {
			case errors.As(err, &le):
				require.Equal(t, name, le.Path, "LoadError for %q with %d problems: %v", le.Path, len(le.Problems), err)
				require.NotEmpty(t, le.Problems, "LoadError for %q with %d problems: %v", le.Path, len(le.Problems), err)
			case errors.As(err, &fe):
				require.Equal(t, name, fe.Path, "FormatError %+v", fe)
				require.NotEmpty(t, fe.Msg, "FormatError %+v", fe)
			case errors.As(err, &ce):
				require.True(t, strings.HasPrefix(ce.Path, name), "ConfigError for %q", ce.Path)
			default:
				require.Failf(t, "untyped error", "untyped error %T: %v", err, err)
			}
			require.ErrorContains(t, err, name, "error does not name the file: %v", err)
			return
		}
		defer m.Close()
		checkConfigs(t, configs{UNet: m.UNet, VAE: m.VAE, Texts: map[string]nets.TextConfig{"text_encoder": m.Text("text_encoder").Config}})
		for _, c := range []struct {
			w    nets.Weights
			want map[string][]int
		}{{m.UNetWeights, ExpectedUNet(m.UNet)}, {m.VAEWeights, ExpectedVAE(m.VAE)}, {m.Text("text_encoder").Weights, ExpectedText(m.Text("text_encoder").Config)}} {
			for n, shape := range c.want {
				p, ok := c.w.Get(n)
				require.True(t, ok, "loaded model: %s is %v (%d bytes), want %v", n, p.Shape, len(p.Raw), shape)
				require.True(t, slices.Equal(p.Shape, shape), "loaded model: %s is %v (%d bytes), want %v", n, p.Shape, len(p.Raw), shape)
				require.Len(t, p.Raw, gpu.Shape(shape).Numel()*p.DType.Size(), "loaded model: %s is %v (%d bytes), want %v", n, p.Shape, len(p.Raw), shape)
			}
		}
		if err := m.CheckFinite(); err != nil {
			var ne *NonFiniteError
			require.ErrorAs(t, err, &ne, "CheckFinite: %v", err)
			require.NotEmpty(t, ne.Tensors, "CheckFinite: %v", err)
			require.Positive(t, ne.Tensors[0].Count, "CheckFinite: %v", err)
			require.LessOrEqual(t, ne.Tensors[0].Count, ne.Tensors[0].Total, "CheckFinite: %v", err)
		}
	})
}

// FuzzModelIndex feeds arbitrary bytes as a diffusers folder's
// model_index.json: a *ConfigError naming the file, or an index that agrees
// with encoding/json on the class name and holds only component entries.
func FuzzModelIndex(f *testing.F) {
	const path = "folder/model_index.json"
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := parseModelIndex(path, data)
		if err != nil {
			var ce *ConfigError
			require.ErrorAs(t, err, &ce, "error %T is not a *ConfigError naming %s: %v", err, path, err)
			require.Equal(t, path, ce.Path, "error %T is not a *ConfigError naming %s: %v", err, path, err)
			return
		}
		// The oracle looks the key up exactly: diffusers (Python's json)
		// matches keys by case, where encoding/json's struct fields do not.
		var oracle map[string]json.RawMessage
		err = json.Unmarshal(data, &oracle)
		require.NoError(t, err, "parsed what encoding/json rejects (%v): %q", err, data)
		if v, ok := oracle["_class_name"]; ok {
			var name *string
			require.NoError(t, json.Unmarshal(v, &name), "accepted _class_name %s that is not a string", v)
			if name != nil {
				require.Equal(t, *name, idx.ClassName, "class %q, encoding/json says %q", idx.ClassName, *name)
			}
		}
		for k := range idx.Components {
			require.False(t, strings.HasPrefix(k, "_"), "metadata key %q taken as a component", k)
		}
		if err := idx.supported(path); err != nil {
			var ce *ConfigError
			require.ErrorAs(t, err, &ce, "supported: %v", err)
			require.Equal(t, path, ce.Path, "supported: %v", err)
			require.ErrorContains(t, err, "supported", "supported: %v", err)
		}
	})
}

// FuzzSideConfig writes arbitrary bytes as the config file beside the
// sd15-mini checkpoint (mini.json, then mini.yaml: the same-named side file
// a user drops next to a .safetensors, read as --config would be) and loads
// the checkpoint: a *ConfigError naming the side file, a *LoadError naming
// the checkpoint (a valid config that does not fit the weights), or a model
// whose hyper-parameters came from the side file.
func FuzzSideConfig(f *testing.F) {
	g := golden.Dir(f)
	dir := f.TempDir()
	src, err := filepath.Abs(filepath.Join(g, "sd15-mini.fp16.safetensors"))
	if err != nil {
		f.Fatal(err)
	}
	type pair struct{ model, side string }
	var pairs []pair
	for _, ext := range []string{".json", ".yaml"} {
		p := filepath.Join(dir, "mini"+strings.TrimPrefix(ext, ".")+".safetensors")
		if err := os.Symlink(src, p); err != nil {
			f.Skip("symlinks unavailable:", err)
		}
		pairs = append(pairs, pair{p, strings.TrimSuffix(p, ".safetensors") + ext})
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, c := range pairs {
			require.NoError(t, os.WriteFile(c.side, data, 0o644))
			m, err := Load(c.model, "")
			if err != nil {
				var ce *ConfigError
				var le *LoadError
				switch {
				case errors.As(err, &ce):
					require.Equal(t, c.side, ce.Path, "ConfigError names %q, not the side file %s: %v", ce.Path, c.side, err)
				case errors.As(err, &le):
					require.Equal(t, c.model, le.Path, "LoadError names %q with %d problems", le.Path, len(le.Problems))
					require.NotEmpty(t, le.Problems, "LoadError names %q with %d problems", le.Path, len(le.Problems))
				default:
					require.Failf(t, "untyped error", "untyped error %T: %v", err, err)
				}
				continue
			}
			require.True(t, strings.HasPrefix(m.ConfigSource, c.side), "config source %q, want the side file %s", m.ConfigSource, c.side)
			checkConfigs(t, configs{UNet: m.UNet, VAE: m.VAE, Texts: map[string]nets.TextConfig{"text_encoder": m.Text("text_encoder").Config}})
			err = validateScheduler(c.side, &m.Scheduler)
			require.NoError(t, err, "loaded an invalid scheduler: %v", err)
			m.Close()
		}
	})
}
