package checkpoint

import (
	"fmt"
	"strings"

	"github.com/stepwise/stepwise/models/nets"
)

// slot is one parameter a network expects: its diffusers name and shape, and
// the name the same tensor has in the original LDM single-file layout
// (relative to the component prefix). squeeze marks LDM 1x1-conv weights
// [C,C,1,1] that diffusers stores as linear weights [C,C].
type slot struct {
	name    string
	shape   []int
	ldm     string
	squeeze bool
}

// layout collects the slots of one component.
type layout struct {
	slots []slot
}

func (l *layout) add(name, ldm string, shape ...int) {
	l.slots = append(l.slots, slot{name: name, ldm: ldm, shape: shape})
}

// param adds name.weight and name.bias (bias of length shape[0]).
func (l *layout) param(name, ldm string, shape ...int) {
	l.add(name+".weight", ldm+".weight", shape...)
	l.add(name+".bias", ldm+".bias", shape[0])
}

// norm adds a normalisation layer's weight and bias.
func (l *layout) norm(name, ldm string, c int) {
	l.param(name, ldm, c)
}

func (l *layout) expected() map[string][]int {
	m := make(map[string][]int, len(l.slots))
	for _, s := range l.slots {
		m[s.name] = s.shape
	}
	return m
}

// ExpectedUNet lists every parameter (diffusers name -> shape) of a U-Net
// with config c (Defaults applied to a copy first).
func ExpectedUNet(c nets.UNetConfig) map[string][]int { return unetLayout(c).expected() }

// ExpectedVAE lists every parameter of an AutoencoderKL with config c.
func ExpectedVAE(c nets.VAEConfig) map[string][]int { return vaeLayout(c).expected() }

// ExpectedText lists every parameter of a CLIP text model with config c.
func ExpectedText(c nets.TextConfig) map[string][]int { return textLayout(c).expected() }

func hasCrossAttn(blockType string) bool { return strings.Contains(blockType, "CrossAttn") }

// unetLayout walks diffusers' UNet2DConditionModel construction and the
// matching LDM openaimodel.UNetModel numbering (input_blocks, middle_block,
// output_blocks) for any number of levels and layers per block.
func unetLayout(c nets.UNetConfig) *layout {
	c.Defaults()
	l := &layout{}
	ch := c.BlockOutChannels
	n := len(ch)
	lpb := c.LayersPerBlock
	temb := ch[0] * 4
	ki, ko := c.ConvInKernel, c.ConvOutKernel
	l.param("conv_in", "input_blocks.0.0", ch[0], c.InChannels, ki, ki)
	l.param("time_embedding.linear_1", "time_embed.0", temb, ch[0])
	l.param("time_embedding.linear_2", "time_embed.2", temb, temb)

	resnet := func(name, ldm string, in, out int) {
		l.norm(name+".norm1", ldm+".in_layers.0", in)
		l.param(name+".conv1", ldm+".in_layers.2", out, in, 3, 3)
		l.param(name+".time_emb_proj", ldm+".emb_layers.1", out, temb)
		l.norm(name+".norm2", ldm+".out_layers.0", out)
		l.param(name+".conv2", ldm+".out_layers.3", out, out, 3, 3)
		if in != out {
			l.param(name+".conv_shortcut", ldm+".skip_connection", out, in, 1, 1)
		}
	}
	attention := func(name, ldm string, ch, depth int) {
		l.norm(name+".norm", ldm+".norm", ch)
		proj := []int{ch, ch, 1, 1}
		if c.UseLinearProjection {
			proj = []int{ch, ch}
		}
		l.param(name+".proj_in", ldm+".proj_in", proj...)
		for d := 0; d < depth; d++ {
			b := fmt.Sprintf(".transformer_blocks.%d", d)
			for _, a := range []string{".attn1", ".attn2"} {
				ctx := ch
				if a == ".attn2" {
					ctx = c.CrossAttentionDim
				}
				l.add(name+b+a+".to_q.weight", ldm+b+a+".to_q.weight", ch, ch)
				l.add(name+b+a+".to_k.weight", ldm+b+a+".to_k.weight", ch, ctx)
				l.add(name+b+a+".to_v.weight", ldm+b+a+".to_v.weight", ch, ctx)
				l.param(name+b+a+".to_out.0", ldm+b+a+".to_out.0", ch, ch)
			}
			l.param(name+b+".ff.net.0.proj", ldm+b+".ff.net.0.proj", ch*8, ch)
			l.param(name+b+".ff.net.2", ldm+b+".ff.net.2", ch, ch*4)
			for _, nm := range []string{".norm1", ".norm2", ".norm3"} {
				l.norm(name+b+nm, ldm+b+nm, ch)
			}
		}
		l.param(name+".proj_out", ldm+".proj_out", proj...)
	}

	// Down path: LDM input_blocks 1.. hold lpb (resnet[, attention]) pairs
	// per level, then one downsampler except at the last level.
	idx := 1
	for i := 0; i < n; i++ {
		in := ch[0]
		if i > 0 {
			in = ch[i-1]
		}
		attn := i < len(c.DownBlockTypes) && hasCrossAttn(c.DownBlockTypes[i])
		for j := 0; j < lpb; j++ {
			name := fmt.Sprintf("down_blocks.%d", i)
			ldm := fmt.Sprintf("input_blocks.%d", idx)
			cin := ch[i]
			if j == 0 {
				cin = in
			}
			resnet(fmt.Sprintf("%s.resnets.%d", name, j), ldm+".0", cin, ch[i])
			if attn {
				attention(fmt.Sprintf("%s.attentions.%d", name, j), ldm+".1", ch[i], c.TransformerLayers.At(i))
			}
			idx++
		}
		if i < n-1 {
			l.param(fmt.Sprintf("down_blocks.%d.downsamplers.0.conv", i), fmt.Sprintf("input_blocks.%d.0.op", idx), ch[i], ch[i], 3, 3)
			idx++
		}
	}

	// Middle: resnet, transformer, resnet.
	top := ch[n-1]
	resnet("mid_block.resnets.0", "middle_block.0", top, top)
	mid := 1
	if hasCrossAttn(c.MidBlockType) {
		attention("mid_block.attentions.0", "middle_block.1", top, c.TransformerLayers.At(n-1))
		mid = 2
	}
	resnet("mid_block.resnets.1", fmt.Sprintf("middle_block.%d", mid), top, top)

	// Up path: level i uses the channels of down level n-1-i and lpb+1
	// resnets, each also fed a skip connection from the down path.
	prevOut := ch[n-1]
	idx = 0
	for i := 0; i < n; i++ {
		out := ch[n-1-i]
		skipIn := ch[max(n-2-i, 0)]
		attn := i < len(c.UpBlockTypes) && hasCrossAttn(c.UpBlockTypes[i])
		depth := c.TransformerLayers.At(n - 1 - i)
		for j := 0; j <= lpb; j++ {
			resIn := out
			if j == 0 {
				resIn = prevOut
			}
			skip := out
			if j == lpb {
				skip = skipIn
			}
			name := fmt.Sprintf("up_blocks.%d", i)
			ldm := fmt.Sprintf("output_blocks.%d", idx)
			resnet(fmt.Sprintf("%s.resnets.%d", name, j), ldm+".0", resIn+skip, out)
			if attn {
				attention(fmt.Sprintf("%s.attentions.%d", name, j), ldm+".1", out, depth)
			}
			if j == lpb && i < n-1 {
				k := 1
				if attn {
					k = 2
				}
				l.param(name+".upsamplers.0.conv", fmt.Sprintf("%s.%d.conv", ldm, k), out, out, 3, 3)
			}
			idx++
		}
		prevOut = out
	}
	l.norm("conv_norm_out", "out.0", ch[0])
	l.param("conv_out", "out.2", c.OutChannels, ch[0], ko, ko)
	return l
}

// vaeLayout walks diffusers' AutoencoderKL and LDM's Encoder/Decoder
// (encoder.down.i.block.j, decoder.up.i numbered from the lowest
// resolution upwards, i.e. in reverse of diffusers' up_blocks).
func vaeLayout(c nets.VAEConfig) *layout {
	c.Defaults()
	l := &layout{}
	ch := c.BlockOutChannels
	n := len(ch)
	lpb := c.LayersPerBlock
	resnet := func(name, ldm string, in, out int) {
		l.norm(name+".norm1", ldm+".norm1", in)
		l.param(name+".conv1", ldm+".conv1", out, in, 3, 3)
		l.norm(name+".norm2", ldm+".norm2", out)
		l.param(name+".conv2", ldm+".conv2", out, out, 3, 3)
		if in != out {
			l.param(name+".conv_shortcut", ldm+".nin_shortcut", out, in, 1, 1)
		}
	}
	mid := func(name, ldm string, ch int) {
		resnet(name+".resnets.0", ldm+".block_1", ch, ch)
		if *c.MidBlockAddAttention {
			a := name + ".attentions.0"
			l.norm(a+".group_norm", ldm+".attn_1.norm", ch)
			for _, p := range [][2]string{{"to_q", "q"}, {"to_k", "k"}, {"to_v", "v"}, {"to_out.0", "proj_out"}} {
				l.slots = append(l.slots,
					slot{name: a + "." + p[0] + ".weight", ldm: ldm + ".attn_1." + p[1] + ".weight", shape: []int{ch, ch}, squeeze: true},
					slot{name: a + "." + p[0] + ".bias", ldm: ldm + ".attn_1." + p[1] + ".bias", shape: []int{ch}})
			}
		}
		resnet(name+".resnets.1", ldm+".block_2", ch, ch)
	}

	l.param("encoder.conv_in", "encoder.conv_in", ch[0], c.InChannels, 3, 3)
	for i := 0; i < n; i++ {
		in := ch[0]
		if i > 0 {
			in = ch[i-1]
		}
		for j := 0; j < lpb; j++ {
			cin := ch[i]
			if j == 0 {
				cin = in
			}
			resnet(fmt.Sprintf("encoder.down_blocks.%d.resnets.%d", i, j), fmt.Sprintf("encoder.down.%d.block.%d", i, j), cin, ch[i])
		}
		if i < n-1 {
			l.param(fmt.Sprintf("encoder.down_blocks.%d.downsamplers.0.conv", i), fmt.Sprintf("encoder.down.%d.downsample.conv", i), ch[i], ch[i], 3, 3)
		}
	}
	mid("encoder.mid_block", "encoder.mid", ch[n-1])
	l.norm("encoder.conv_norm_out", "encoder.norm_out", ch[n-1])
	l.param("encoder.conv_out", "encoder.conv_out", 2*c.LatentChannels, ch[n-1], 3, 3)
	if *c.UseQuantConv {
		l.param("quant_conv", "quant_conv", 2*c.LatentChannels, 2*c.LatentChannels, 1, 1)
	}
	if *c.UsePostQuantConv {
		l.param("post_quant_conv", "post_quant_conv", c.LatentChannels, c.LatentChannels, 1, 1)
	}

	l.param("decoder.conv_in", "decoder.conv_in", ch[n-1], c.LatentChannels, 3, 3)
	mid("decoder.mid_block", "decoder.mid", ch[n-1])
	prev := ch[n-1]
	for i := 0; i < n; i++ {
		out := ch[n-1-i]
		ldm := fmt.Sprintf("decoder.up.%d", n-1-i)
		for j := 0; j <= lpb; j++ {
			cin := out
			if j == 0 {
				cin = prev
			}
			resnet(fmt.Sprintf("decoder.up_blocks.%d.resnets.%d", i, j), fmt.Sprintf("%s.block.%d", ldm, j), cin, out)
		}
		if i < n-1 {
			l.param(fmt.Sprintf("decoder.up_blocks.%d.upsamplers.0.conv", i), ldm+".upsample.conv", out, out, 3, 3)
		}
		prev = out
	}
	l.norm("decoder.conv_norm_out", "decoder.norm_out", ch[0])
	l.param("decoder.conv_out", "decoder.conv_out", c.OutChannels, ch[0], 3, 3)
	return l
}

// textLayout lists transformers' CLIPTextModel parameters; the LDM names
// are the same below the cond_stage_model.transformer prefix.
func textLayout(c nets.TextConfig) *layout {
	c.Defaults()
	l := &layout{}
	h := c.HiddenSize
	both := func(name string, shape ...int) { l.param("text_model."+name, "text_model."+name, shape...) }
	l.add("text_model.embeddings.token_embedding.weight", "text_model.embeddings.token_embedding.weight", c.VocabSize, h)
	l.add("text_model.embeddings.position_embedding.weight", "text_model.embeddings.position_embedding.weight", c.MaxPositionEmbeddings, h)
	for i := 0; i < c.NumHiddenLayers; i++ {
		p := fmt.Sprintf("encoder.layers.%d.", i)
		for _, proj := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			both(p+"self_attn."+proj, h, h)
		}
		both(p+"layer_norm1", h)
		both(p+"layer_norm2", h)
		both(p+"mlp.fc1", c.IntermediateSize, h)
		both(p+"mlp.fc2", h, c.IntermediateSize)
	}
	both("final_layer_norm", h)
	return l
}
