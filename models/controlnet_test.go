package models

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// TestControlNetResiduals runs golden-wave3's controlnet_residuals cases
// on every device: the ControlNet's 12 down residuals and mid residual
// (already x conditioning scale), its conditioning embedding, conv_in and
// time embedding, and the U-Net's output with the residuals added, each
// within max abs 1e-4 (the README's bound).
func TestControlNetResiduals(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	g := golden.Open(t, filepath.Join(dir, "controlnet_residuals.safetensors"))
	img, ishape := g.F32("control_image")
	for devName, open := range testdev.All(t) {
		t.Run(devName, func(t *testing.T) {
			d := open(t)
			p, err := Load(d, filepath.Join(golden.Dir(t), "sd15-mini"), "")
			require.NoError(t, err)
			defer p.Close()
			cn, err := checkpoint.LoadControlNet(filepath.Join(dir, "sd15-mini-controlnet"))
			require.NoError(t, err)
			assert.Equal(t, "diffusers folder", cn.Layout)
			require.NoError(t, p.SetControlNet(cn))
			// On llvmpipe its weights are read in place from the file, as
			// the checkpoint's (models.MmapEnv): the cases below check them.
			assert.Equal(t, devName == "gl", cn.Source().ReadsInPlace(), "ControlNet weights read in place")
			net := p.control.net
			require.Equal(t, 12, net.Skips())
			worst := 0.0
			check := func(what string, got []float32, want []float32) {
				worst = max(worst, golden.Close(t, what, got, want, 1e-4, 0))
			}
			for _, cs := range []string{"b1_t500_s1.0", "b1_t999_s1.0", "b1_t500_s0.5", "b2cfg_t500_s1.0"} {
				x, xs := g.F32(cs + ".sample")
				ctx, cshape := g.F32(cs + ".encoder_hidden_states")
				ts, _ := g.F32(cs + ".timestep")
				scale := 1.0
				if cs == "b1_t500_s0.5" {
					scale = 0.5
				}
				cond := img
				if xs[0] == 2 {
					cond = append(append([]float32(nil), img...), img...)
				}
				traced := map[string][]float32{}
				if cs == "b1_t500_s1.0" {
					net.SetTrace(func(name string, tt *gpu.Tensor) {
						switch name {
						case "conv_in", "controlnet_cond_embedding", "time_embedding":
							traced[name] = download(t, d, tt)
						}
					})
				}
				d.PushScope()
				xin := d.Upload(x, xs...)
				cin := d.Upload(ctx, cshape...)
				res := net.Forward(xin, ts, cin, d.Upload(cond, xs[0], ishape[1], ishape[2], ishape[3]), nil, float32(scale))
				require.NoError(t, d.Err())
				for j, r := range res.Down {
					want, _ := g.F32(fmt.Sprintf("%s.down_residual.%d", cs, j))
					check(fmt.Sprintf("%s down_residual.%d", cs, j), download(t, d, r), want)
				}
				want, _ := g.F32(cs + ".mid_residual")
				check(cs+" mid_residual", download(t, d, res.Mid), want)
				out := download(t, d, p.unet.ForwardControl(xin, ts, cin, nil, res))
				want, _ = g.F32(cs + ".unet_out")
				check(cs+" unet_out", out, want)
				plain := download(t, d, p.unet.Forward(xin, ts, cin))
				want, _ = g.F32(cs + ".unet_out_no_control")
				check(cs+" unet_out_no_control", plain, want)
				d.PopScope()
				net.SetTrace(nil)
				for name, got := range traced {
					want, _ := g.F32(cs + ".intermediate." + name)
					check(cs+" "+name, got, want)
				}
				if cs == "b1_t500_s1.0" {
					require.Len(t, traced, 3)
				}
			}
			t.Logf("worst max |diff| %.3g (bound 1e-4)", worst)
		})
	}
}

// TestControlNetSingleFile writes the mini ControlNet as lllyasviel's
// original single file (control_model.* keys, and bare keys), from the
// same declarations, and loads it back: the hyper-parameters inferred from
// the shapes and every weight are the diffusers folder's.
func TestControlNetSingleFile(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	ref, err := checkpoint.LoadControlNet(filepath.Join(dir, "sd15-mini-controlnet"))
	require.NoError(t, err)
	defer ref.Close()
	for _, prefix := range []string{"control_model.", ""} {
		path := writeOriginalControlNet(t, ref, prefix)
		c, err := checkpoint.LoadControlNet(path)
		require.NoError(t, err, prefix)
		assert.Equal(t, "original", c.Layout)
		assert.Equal(t, ref.Config.BlockOutChannels, c.Config.BlockOutChannels)
		assert.Equal(t, ref.Config.ConditioningEmbeddingOutChannels, c.Config.ConditioningEmbeddingOutChannels)
		assert.Equal(t, ref.Config.CrossAttentionDim, c.Config.CrossAttentionDim)
		assert.Equal(t, ref.Config.Heads(0), c.Config.Heads(0))
		require.Len(t, c.Weights, len(ref.Weights))
		for name, p := range ref.Weights {
			q, ok := c.Weights[name]
			require.True(t, ok, name)
			assert.Equal(t, p.Raw, q.Raw, name)
		}
		c.Close()
	}
}

// writeOriginalControlNet writes c's weights under their original names
// (prefix + Decl.Orig) to a temporary .safetensors file.
func writeOriginalControlNet(t *testing.T, c *checkpoint.ControlNet, prefix string) string {
	t.Helper()
	decls, err := nets.ControlNetDecls(c.Config)
	require.NoError(t, err)
	var entries []safetensors.Entry
	for _, d := range decls {
		p := c.Weights[d.Name]
		dt := safetensors.F32
		if p.DType == gpu.F16 {
			dt = safetensors.F16
		}
		entries = append(entries, safetensors.Entry{Name: prefix + d.Orig, DType: dt, Shape: d.OrigShape(), Data: p.Raw})
	}
	path := filepath.Join(t.TempDir(), "control_sd15_mini.safetensors")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, safetensors.Write(f, entries, nil))
	require.NoError(t, f.Close())
	return path
}
