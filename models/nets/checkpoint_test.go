package nets_test

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
)

// The checkpoint loader keeps its own key layout; it must agree with the
// networks' parameter lists.
func TestCheckpointExpectedAgrees(t *testing.T) {
	sd2 := nets.UNetConfig{AttentionHeadDim: nets.IntOrList{5, 10, 20, 20}, CrossAttentionDim: 1024, UseLinearProjection: true}
	mini := nets.UNetConfig{BlockOutChannels: []int{32, 64, 128, 128}, CrossAttentionDim: 64}
	for name, c := range map[string]nets.UNetConfig{"sd15": {}, "sd2": sd2, "mini": mini} {
		if got, want := checkpoint.ExpectedUNet(c), nets.ExpectedUNet(c); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: checkpoint.ExpectedUNet differs from nets.ExpectedUNet (%d vs %d entries)", name, len(got), len(want))
		}
	}
	for name, c := range map[string]nets.VAEConfig{"sd15": {}, "mini": {BlockOutChannels: []int{16, 32, 64, 64}, NormNumGroups: 8}} {
		if got, want := checkpoint.ExpectedVAE(c), nets.ExpectedVAE(c); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: checkpoint.ExpectedVAE differs from nets.ExpectedVAE (%d vs %d entries)", name, len(got), len(want))
		}
	}
	for name, c := range map[string]nets.TextConfig{"sd15": {}, "mini": {HiddenSize: 64, IntermediateSize: 256, NumHiddenLayers: 3, NumAttentionHeads: 4}} {
		if got, want := checkpoint.ExpectedText(c), nets.ExpectedText(c); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: checkpoint.ExpectedText differs from nets.ExpectedText (%d vs %d entries)", name, len(got), len(want))
		}
	}
}

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
			te, err := nets.NewTextEncoder(d, m.Text, m.TextWeights)
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
