package models

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models/nets"
)

// TestLCMUNet runs golden-wave3's lcm_unet cases (time_cond_proj_dim 32:
// the guidance embedding through cond_proj, added before linear_1; and
// the case without it) on every device: max abs <= 1e-4.
func TestLCMUNet(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	u := golden.Open(t, filepath.Join(dir, "lcm_unet.safetensors"))
	for devName, open := range testdev.All(t) {
		t.Run(devName, func(t *testing.T) {
			d := open(t)
			p, err := Load(d, filepath.Join(dir, "lcm-mini"), "")
			require.NoError(t, err)
			defer p.Close()
			worst := 0.0
			for _, cs := range []string{"b1_t999_w7", "b1_t259_w7", "b1_t999_nocond", "b2_t999_t499_w7_w5"} {
				x, xs := u.F32(cs + ".sample")
				ctx, cshape := u.F32(cs + ".encoder_hidden_states")
				ts, _ := u.F32(cs + ".timestep")
				d.PushScope()
				var added *nets.Added
				if _, ok := u.Lookup(cs + ".timestep_cond"); ok {
					w, wshape := u.F32(cs + ".timestep_cond")
					added = &nets.Added{TimestepCond: d.Upload(w, wshape...)}
				}
				out := p.unet.ForwardAdded(d.Upload(x, xs...), ts, d.Upload(ctx, cshape...), added)
				got := download(t, d, out)
				d.PopScope()
				want, _ := u.F32(cs + ".out")
				worst = max(worst, golden.Close(t, "lcm_unet "+cs, got, want, 1e-4, 0))
			}
			t.Logf("worst max |diff| %.3g (bound 1e-4)", worst)
		})
	}
}
