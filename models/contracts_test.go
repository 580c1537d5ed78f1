package models

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/models/nets"
)

// TestContractsCheckedAtLoad: networks that do not fit together are
// refused by New before the U-Net is uploaded, naming the file and the two
// numbers that disagree (they used to fail as a GPU error at step 1).
func TestContractsCheckedAtLoad(t *testing.T) {
	for _, c := range []struct {
		name  string
		patch func(u *nets.UNetConfig, v *nets.VAEConfig)
		want  []string
	}{
		{"context width", func(u *nets.UNetConfig, v *nets.VAEConfig) { u.CrossAttentionDim = 32 },
			[]string{"64-wide context", "cross_attention_dim is 32"}},
		{"latent channels", func(u *nets.UNetConfig, v *nets.VAEConfig) { v.LatentChannels = 8 },
			[]string{"8 latent channels", "U-Net takes 4"}},
	} {
		m, err := RandomModel("sd15-mini", 1)
		require.NoError(t, err)
		m.Path = "/models/odd.safetensors"
		c.patch(&m.UNet, &m.VAE)
		r := rand.New(rand.NewPCG(1, 2))
		m.UNetWeights = randomWeights(nets.ExpectedUNet(m.UNet), r)
		m.VAEWeights = randomWeights(nets.ExpectedVAE(m.VAE), r)
		d := ref.New()
		p, err := New(d, m, "odd")
		if assert.Errorf(t, err, "%s: accepted", c.name) {
			for _, w := range append(c.want, "/models/odd.safetensors") {
				assert.Containsf(t, err.Error(), w, "%s", c.name)
			}
		} else {
			p.Close()
		}
		d.Close()
	}
}
