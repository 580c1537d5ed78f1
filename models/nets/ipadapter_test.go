package nets

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
)

// ipMiniConfig is the IP-Adapter of golden-wave4 for sd15-mini: 48-wide
// image embeddings to 4 tokens.
func ipMiniConfig(t *testing.T) IPAdapterConfig {
	var c UNetConfig
	loadConfig(t, filepath.Join(golden.Dir(t), "sd15-mini/unet/config.json"), &c)
	return IPAdapterConfig{ImageEmbedDim: 48, NumTokens: 4, UNet: c}
}

// ipMiniWeights reads the h94-layout adapter file and renames its tensors
// through the declarations (original -> diffusers name), as the
// checkpoint loader does.
func ipMiniWeights(t *testing.T, c IPAdapterConfig) MapWeights {
	orig := loadWeights(t, filepath.Join(golden.Wave(t, "golden-wave4"), "ip-adapter-mini/models/ip-adapter_sd15-mini.safetensors"))
	ds, err := IPAdapterDecls(c)
	require.NoError(t, err)
	require.Len(t, ds, len(orig), "every tensor of the file is declared once")
	w := MapWeights{}
	for _, d := range ds {
		p, ok := orig[d.Orig]
		require.True(t, ok, "declared original %s (for %s) is in the file", d.Orig, d.Name)
		w[d.Name] = p
	}
	return w
}

func TestIPAdapterDeclsFollowProcessorOrder(t *testing.T) {
	c := ipMiniConfig(t)
	layers, err := CrossAttentionLayers(c.UNet)
	require.NoError(t, err)
	require.Len(t, layers, 16)
	// The golden README: keys 1, 3, ..., 31 are down, up, then mid blocks.
	assert.Equal(t, "down_blocks.0.attentions.0.transformer_blocks.0.", layers[0].Name)
	assert.Equal(t, "up_blocks.1.attentions.0.transformer_blocks.0.", layers[6].Name)
	assert.Equal(t, "mid_block.attentions.0.transformer_blocks.0.", layers[15].Name)
	assert.Equal(t, 128, layers[15].Hidden)
	ds, err := IPAdapterDecls(c)
	require.NoError(t, err)
	byOrig := map[string]Decl{}
	for _, d := range ds {
		byOrig[d.Orig] = d
	}
	assert.Equal(t, "mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.0.weight", byOrig["ip_adapter.31.to_k_ip.weight"].Name)
	assert.Equal(t, []int{128, 64}, byOrig["ip_adapter.31.to_k_ip.weight"].Shape)
	assert.Equal(t, "encoder_hid_proj.image_projection_layers.0.image_embeds.weight", byOrig["image_proj.proj.weight"].Name)
	assert.Equal(t, []int{256, 48}, byOrig["image_proj.proj.weight"].Shape)
}

func TestVisionEncoderAndProjectionGolden(t *testing.T) {
	dir := filepath.Join(golden.Wave(t, "golden-wave4"), "ip-adapter-mini/models/image_encoder")
	var vc VisionConfig
	loadConfig(t, filepath.Join(dir, "config.json"), &vc)
	vw := loadWeights(t, filepath.Join(dir, "model.safetensors"))
	ic := ipMiniConfig(t)
	iw := ipMiniWeights(t, ic)
	g := golden.Open(t, filepath.Join(golden.Wave(t, "golden-wave4"), "ipadapter_image.safetensors"))

	for name, d := range testDevices(t) {
		t.Run(name, func(t *testing.T) {
			g := g.For(t)
			ve, err := NewVisionEncoder(d, vc, vw)
			require.NoError(t, err)
			defer ve.Release()
			a, err := NewIPAdapter(d, ic, iw)
			require.NoError(t, err)
			defer a.Release()

			out, err := ve.EncodeImages(upload(d, g, "pixel_values"), true)
			require.NoError(t, err)
			defer out.Release(d)
			// Tolerance: the README's 1e-4 for encoders and projections.
			hs, _ := g.F32("hidden_states")
			require.Len(t, out.Hidden, 3)
			for i, h := range out.Hidden {
				n := 17 * 32
				diff := compare(t, d, "hidden_states", h, hs[i*n:(i+1)*n], []int{1, 17, 32}, 1e-4)
				t.Logf("hidden_states[%d]: max |diff| %.3g", i, diff)
			}
			want, shape := g.F32("image_embeds")
			t.Logf("image_embeds: max |diff| %.3g", compare(t, d, "image_embeds", out.ImageEmbeds, want, shape, 1e-4))

			// The U-Net gets [zeros, image]: the zero row projects to
			// LayerNorm of the bias.
			embeds := upload(d, g, "ip_adapter_image_embeds")
			tokens, err := a.Project(embeds)
			require.NoError(t, err)
			want, _ = g.F32("ip_tokens")
			t.Logf("ip_tokens: max |diff| %.3g", compare(t, d, "ip_tokens", tokens, want, []int{2, 4, 64}, 1e-4))
		})
	}
}

func TestIPAdapterUNetGolden(t *testing.T) {
	dir := golden.Dir(t)
	ic := ipMiniConfig(t)
	iw := ipMiniWeights(t, ic)
	uw := loadWeights(t, filepath.Join(dir, "sd15-mini/unet/diffusion_pytorch_model.fp16.safetensors"))
	g := golden.Open(t, filepath.Join(golden.Wave(t, "golden-wave4"), "ipadapter_unet.safetensors"))
	cases := map[string]float32{"b1_t500_s0.6": 0.6, "b1_t999_s0.6": 0.6, "b1_t500_s1.0": 1, "b1_t500_s0.0": 0, "b2cfg_t500_s0.6": 0.6}

	for name, d := range testDevices(t) {
		t.Run(name, func(t *testing.T) {
			g := g.For(t)
			u, err := NewUNet(d, ic.UNet, uw)
			require.NoError(t, err)
			defer u.Release()
			a, err := NewIPAdapter(d, ic, iw)
			require.NoError(t, err)
			defer a.Release()

			// Without the adapter: the plain U-Net's output.
			x := upload(d, g, "b1_t500_s0.0.sample")
			ctx := upload(d, g, "b1_t500_s0.0.encoder_hidden_states")
			ts, _ := g.F32("b1_t500_s0.0.timestep")
			want, shape := g.F32("b1_t500.out_plain_unet")
			compare(t, d, "out_plain_unet", u.Forward(x, ts, ctx), want, shape, 1e-4)

			require.NoError(t, u.SetIPAdapter(a, 0.6))
			// Attached, a forward pass without image embeddings is an error.
			u.Forward(x, ts, ctx)
			require.Error(t, d.Err())
			assert.Contains(t, d.Err().Error(), "image embeddings")
		})
	}
	// The device error above is sticky: the cases run on fresh devices.
	for name, d := range testDevices(t) {
		t.Run(name, func(t *testing.T) {
			g := g.For(t)
			u, err := NewUNet(d, ic.UNet, uw)
			require.NoError(t, err)
			defer u.Release()
			a, err := NewIPAdapter(d, ic, iw)
			require.NoError(t, err)
			defer a.Release()
			require.NoError(t, u.SetIPAdapter(a, 1))
			worst := 0.0
			for cs, scale := range cases {
				u.SetIPAdapterScale(scale)
				x := upload(d, g, cs+".sample")
				ctx := upload(d, g, cs+".encoder_hidden_states")
				ts, _ := g.F32(cs + ".timestep")
				out := u.ForwardAdded(x, ts, ctx, &Added{ImageEmbeds: upload(d, g, cs+".image_embeds")})
				require.NoError(t, d.Err(), cs)
				want, shape := g.F32(cs + ".out")
				// Tolerance: the README's 1e-4 for U-Net outputs.
				diff := compare(t, d, cs+".out", out, want, shape, 1e-4)
				t.Logf("%s: max |diff| %.3g", cs, diff)
				worst = max(worst, diff)
			}
			t.Logf("worst U-Net difference on %s: %.3g", name, worst)
		})
	}
}

func TestIPAdapterRefusesAnotherUNet(t *testing.T) {
	ic := ipMiniConfig(t)
	iw := ipMiniWeights(t, ic)
	uw := loadWeights(t, filepath.Join(golden.Dir(t), "sd15-mini/unet/diffusion_pytorch_model.fp16.safetensors"))
	d := testDevices(t)["ref"]
	u, err := NewUNet(d, ic.UNet, uw)
	require.NoError(t, err)
	defer u.Release()
	other := ic
	other.UNet.CrossAttentionDim = 768
	// Declared for another width, the file's tensors do not fit.
	_, err = NewIPAdapter(d, other, iw)
	require.Error(t, err)
	a, err := NewIPAdapter(d, ic, iw)
	require.NoError(t, err)
	defer a.Release()
	a.Config.UNet.CrossAttentionDim = 768
	err = u.SetIPAdapter(a, 1)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "768")
}
