package nets

import (
	"fmt"
	"strings"

	"github.com/stepwise/stepwise/gpu"
)

// IPAdapterConfig describes an IP-Adapter (h94's "ip-adapter_sd15" kind):
// an image projection of the image encoder's embedding to NumTokens tokens
// of the U-Net's cross-attention width, and a key and value projection of
// those tokens for every cross-attention layer of the U-Net.
type IPAdapterConfig struct {
	// ImageEmbedDim is the width of the image embedding it projects (the
	// image encoder's projection_dim).
	ImageEmbedDim int
	// NumTokens is the number of image tokens (4 for the plain adapters).
	NumTokens int
	// UNet is the configuration of the U-Net it attaches to: its
	// cross-attention layers, their widths and cross_attention_dim (the
	// tokens' width).
	UNet UNetConfig
}

// IPAdapter holds an IP-Adapter's weights on a device: diffusers'
// ImageProjection (unet.encoder_hid_proj) and the to_k_ip / to_v_ip of
// every IPAdapterAttnProcessor. Attach it to its U-Net (UNet.SetIPAdapter).
type IPAdapter struct {
	Config IPAdapterConfig

	d        gpu.Device
	params   []*gpu.Tensor
	proj     linear
	norm     norm
	branches []ipBranch // per cross-attention layer, in processor order
}

// ipBranch is the image half of one decoupled cross-attention layer.
type ipBranch struct {
	k, v   linear
	hidden int // the layer's width
}

// ipAttach is an attached branch while the U-Net runs: its weights, the
// scale, and the image tokens of the current forward pass.
type ipAttach struct {
	ipBranch
	scale  float32
	tokens *gpu.Tensor
}

// CrossAttentionLayer is one attn2 of a U-Net in diffusers' processor order
// (unet.attn_processors: down blocks, up blocks, then the mid block).
type CrossAttentionLayer struct {
	// Name is the attention's diffusers name without "attn2"
	// ("down_blocks.0.attentions.0.transformer_blocks.0.").
	Name string
	// Hidden is its width (the query's channels).
	Hidden int
}

// CrossAttentionLayers lists the cross-attention layers of a U-Net with
// config c in diffusers' processor order; IP-Adapter files number them
// 1, 3, 5, ... in that order.
func CrossAttentionLayers(c UNetConfig) ([]CrossAttentionLayer, error) {
	ds, err := UNetDecls(c)
	if err != nil {
		return nil, err
	}
	var down, up, mid []CrossAttentionLayer
	for _, d := range ds {
		name, ok := strings.CutSuffix(d.Name, "attn2.to_q.weight")
		if !ok {
			continue
		}
		l := CrossAttentionLayer{Name: name, Hidden: d.Shape[0]}
		switch {
		case strings.HasPrefix(name, "down_blocks."):
			down = append(down, l)
		case strings.HasPrefix(name, "up_blocks."):
			up = append(up, l)
		default:
			mid = append(mid, l)
		}
	}
	return append(append(down, up...), mid...), nil
}

// IPAdapterDecls lists every parameter of an IP-Adapter with config c:
// diffusers names (as in the U-Net's state dict after load_ip_adapter:
// "encoder_hid_proj.image_projection_layers.0.*", "<attn2>.processor.
// to_k_ip.0.weight") with the original h94 names ("image_proj.*",
// "ip_adapter.<k>.to_k_ip.weight").
func IPAdapterDecls(c IPAdapterConfig) ([]Decl, error) {
	c.UNet.Defaults()
	return decls(func(b builder) (*IPAdapter, error) { return buildIPAdapter(b, c) })
}

// NewIPAdapter checks w against the parameters c calls for and uploads
// them to d. Call it outside any device scope.
func NewIPAdapter(d gpu.Device, c IPAdapterConfig, w Weights) (*IPAdapter, error) {
	c.UNet.Defaults()
	a, params, _, err := construct(d, w, "ip_adapter", func(b builder) (*IPAdapter, error) { return buildIPAdapter(b, c) })
	if err != nil {
		return nil, err
	}
	a.d, a.params = d, params
	return a, nil
}

// Release frees the adapter's weights on the device.
func (a *IPAdapter) Release() { releaseAll(a.d, a.params) }

// ParamBytes is the device memory the weights occupy.
func (a *IPAdapter) ParamBytes() int64 { return paramBytes(a.params) }

func buildIPAdapter(b builder, c IPAdapterConfig) (*IPAdapter, error) {
	ctx := c.UNet.CrossAttentionDim
	if c.ImageEmbedDim < 1 || c.NumTokens < 1 || ctx < 1 {
		return nil, fmt.Errorf("image embedding width %d, %d tokens and cross_attention_dim %d must be positive", c.ImageEmbedDim, c.NumTokens, ctx)
	}
	layers, err := CrossAttentionLayers(c.UNet)
	if err != nil {
		return nil, err
	}
	if len(layers) == 0 {
		return nil, fmt.Errorf("the U-Net has no cross-attention layers")
	}
	a := &IPAdapter{Config: c}
	p := b.as("encoder_hid_proj.image_projection_layers.0", "image_proj")
	a.proj = p.as("image_embeds", "proj").linear("", c.ImageEmbedDim, c.NumTokens*ctx, true)
	a.norm = p.at("norm").layerNorm("", ctx, 1e-5)
	for i, l := range layers {
		m := b.as(l.Name+"attn2.processor", fmt.Sprintf("ip_adapter.%d", 2*i+1))
		a.branches = append(a.branches, ipBranch{
			k:      m.as("to_k_ip.0", "to_k_ip").linear("", ctx, l.Hidden, false),
			v:      m.as("to_v_ip.0", "to_v_ip").linear("", ctx, l.Hidden, false),
			hidden: l.Hidden,
		})
	}
	return a, nil
}

// Project is diffusers' ImageProjection: image embeddings [B,n,P] (or
// [B,P]) -> LayerNorm(reshape(Linear(embeds), [B, n*NumTokens, ctx])).
func (a *IPAdapter) Project(embeds *gpu.Tensor) (*gpu.Tensor, error) {
	c, d := &a.Config, a.d
	if embeds == nil || (embeds.Rank() != 2 && embeds.Rank() != 3) || embeds.Dim(embeds.Rank()-1) != c.ImageEmbedDim {
		return nil, fmt.Errorf("ip-adapter: image embeddings must be [B,%d] or [B,n,%d], got %v", c.ImageEmbedDim, c.ImageEmbedDim, embeds)
	}
	bsz, n := embeds.Dim(0), 1
	if embeds.Rank() == 3 {
		n = embeds.Dim(1)
	}
	ctx := c.UNet.CrossAttentionDim
	h := a.proj.apply(d, embeds.View(bsz*n, c.ImageEmbedDim))
	return a.norm.apply(d, h.View(bsz, n*c.NumTokens, ctx)), nil
}

// SetIPAdapter attaches an IP-Adapter to the U-Net's cross-attention
// layers with the given scale (nil detaches it). From then on Forward
// needs Added.ImageEmbeds. The adapter stays owned by the caller.
func (u *UNet) SetIPAdapter(a *IPAdapter, scale float32) error {
	var blocks []*basicBlock
	for _, lvls := range [][]*unetLevel{u.down, u.up, {u.mid}} {
		for _, lvl := range lvls {
			for _, t := range lvl.attns {
				blocks = append(blocks, t.blocks...)
			}
		}
	}
	if a == nil {
		for _, b := range blocks {
			b.ip = nil
		}
		u.ip = nil
		return nil
	}
	if a.Config.UNet.CrossAttentionDim != u.Config.CrossAttentionDim {
		return fmt.Errorf("ip-adapter: made for cross-attention width %d, the U-Net's is %d", a.Config.UNet.CrossAttentionDim, u.Config.CrossAttentionDim)
	}
	if len(a.branches) != len(blocks) {
		return fmt.Errorf("ip-adapter: %d cross-attention layers, the U-Net has %d", len(a.branches), len(blocks))
	}
	for i, b := range blocks {
		if w := b.attn2.q.w.Dim(0); w != a.branches[i].hidden {
			return fmt.Errorf("ip-adapter: cross-attention layer %d is %d wide, the U-Net's is %d", i, a.branches[i].hidden, w)
		}
	}
	for i, b := range blocks {
		b.ip = &ipAttach{ipBranch: a.branches[i], scale: scale}
	}
	u.ip = &unetIP{adapter: a, blocks: blocks}
	return nil
}

// SetIPAdapterScale changes the attached adapter's scale (diffusers'
// set_ip_adapter_scale); a no-op without one.
func (u *UNet) SetIPAdapterScale(scale float32) {
	if u.ip == nil {
		return
	}
	for _, b := range u.ip.blocks {
		b.ip.scale = scale
	}
}

// unetIP is the U-Net's attached adapter.
type unetIP struct {
	adapter *IPAdapter
	blocks  []*basicBlock
}

// begin projects the image embeddings for one forward pass and hands the
// tokens to every attached layer; end takes them back.
func (ip *unetIP) begin(d gpu.Device, a *Added, batch int) error {
	if a == nil || a.ImageEmbeds == nil {
		return fmt.Errorf("unet: an IP-Adapter is attached; it needs image embeddings (added_cond_kwargs image_embeds)")
	}
	if a.ImageEmbeds.Dim(0) != batch {
		return fmt.Errorf("unet: image embeddings %v for a batch of %d", a.ImageEmbeds, batch)
	}
	tokens, err := ip.adapter.Project(a.ImageEmbeds)
	if err != nil {
		return err
	}
	for _, b := range ip.blocks {
		b.ip.tokens = tokens
	}
	return nil
}

func (ip *unetIP) end() {
	for _, b := range ip.blocks {
		b.ip.tokens = nil
	}
}

// forwardIP is IPAdapterAttnProcessor: the text attention plus scale times
// the attention of the same queries to the image tokens' keys and values,
// then to_out.
func (a attention) forwardIP(d gpu.Device, x, context *gpu.Tensor, ip *ipAttach) *gpu.Tensor {
	q := a.q.apply(d, x)
	opts := gpu.AttentionOpts{Heads: a.heads}
	h := d.Attention(q, a.k.apply(d, context), a.v.apply(d, context), opts)
	img := d.Attention(q, ip.k.apply(d, ip.tokens), ip.v.apply(d, ip.tokens), opts)
	return a.out.apply(d, d.Add(h, d.Scale(img, ip.scale, 0)))
}
