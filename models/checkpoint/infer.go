package checkpoint

import (
	"fmt"
	"strings"

	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// inferConfigs derives what the tensor shapes of an LDM single file reveal
// (levels, widths, layers per block, attention placement, context and text
// sizes); group and head counts cannot be seen and follow SD conventions.
// The notes say what was inferred and what was assumed.
func inferConfigs(infos []safetensors.TensorInfo) (configs, []string) {
	shapes := make(map[string][]int, len(infos))
	for _, t := range infos {
		shapes[t.Name] = t.Shape
	}
	dim := func(name string, i int) int {
		s := shapes[name]
		if i < len(s) {
			return s[i]
		}
		return 0
	}
	has := func(name string) bool { _, ok := shapes[name]; return ok }
	// count is how many of prefix+format(0), prefix+format(1), ... exist in a
	// row, at most limit.
	count := func(limit int, prefix, format string) int {
		n := 0
		for n < limit && has(prefix+fmt.Sprintf(format, n)) {
			n++
		}
		return n
	}
	c := configs{Scheduler: DefaultScheduler()}
	var notes []string

	// U-Net: walk input_blocks; a downsampler ends a level.
	u := &c.UNet
	p := ldmUNet
	if has(p + "input_blocks.0.0.weight") {
		u.InChannels = dim(p+"input_blocks.0.0.weight", 1)
		u.ConvInKernel = dim(p+"input_blocks.0.0.weight", 2)
		u.OutChannels = dim(p+"out.2.weight", 0)
		u.ConvOutKernel = dim(p+"out.2.weight", 2)
		var ch []int
		var attn []bool
		var depth []int
		layers, firstLayers := 0, 0
		for i := 1; i < 1000; i++ {
			b := fmt.Sprintf("%sinput_blocks.%d.", p, i)
			if has(b + "0.op.weight") {
				if firstLayers == 0 {
					firstLayers = layers
				}
				layers = 0
				continue
			}
			if !has(b + "0.out_layers.3.weight") {
				break
			}
			if layers == 0 {
				ch = append(ch, dim(b+"0.out_layers.3.weight", 0))
				attn = append(attn, has(b+"1.proj_in.weight"))
				depth = append(depth, max(count(len(infos), b, "1.transformer_blocks.%d.norm1.weight"), 1))
			}
			layers++
		}
		if firstLayers == 0 {
			firstLayers = layers
		}
		if len(ch) > 0 && len(ch) <= 8 {
			u.BlockOutChannels = ch
			u.LayersPerBlock = firstLayers
			n := len(ch)
			u.DownBlockTypes = make([]string, n)
			u.UpBlockTypes = make([]string, n)
			for i := range ch {
				u.DownBlockTypes[i], u.UpBlockTypes[n-1-i] = "DownBlock2D", "UpBlock2D"
				if attn[i] {
					u.DownBlockTypes[i], u.UpBlockTypes[n-1-i] = "CrossAttnDownBlock2D", "CrossAttnUpBlock2D"
				}
			}
			u.TransformerLayers = nets.IntOrList(depth)
			allOne := true
			for _, d := range depth {
				allOne = allOne && d == 1
			}
			if allOne {
				u.TransformerLayers = nets.IntOrList{1}
			}
		}
		for _, t := range infos {
			if strings.HasPrefix(t.Name, p) && strings.HasSuffix(t.Name, ".attn2.to_k.weight") && len(t.Shape) == 2 {
				u.CrossAttentionDim = t.Shape[1]
				break
			}
		}
		for _, t := range infos {
			if strings.HasPrefix(t.Name, p) && strings.HasSuffix(t.Name, ".proj_in.weight") {
				u.UseLinearProjection = len(t.Shape) == 2
				break
			}
		}
		notes = append(notes, fmt.Sprintf("U-Net widths %v, %d layers per block, context dim %d", u.BlockOutChannels, u.LayersPerBlock, u.CrossAttentionDim))
	}
	// SD 2.x fixes the head width at 64; SD 1.x the head count at 8.
	if u.UseLinearProjection || u.CrossAttentionDim == 1024 {
		u.AttentionHeadDim = nil
		for _, ch := range u.BlockOutChannels {
			u.AttentionHeadDim = append(u.AttentionHeadDim, max(ch/64, 1))
		}
		notes = append(notes, "heads assumed 64 wide (SD 2.x)")
	} else {
		notes = append(notes, "8 heads assumed (SD 1.x)")
	}
	u.NormNumGroups = groupsFor(u.BlockOutChannels)

	// VAE.
	v := &c.VAE
	p = ldmVAE
	if has(p + "encoder.conv_in.weight") {
		v.InChannels = dim(p+"encoder.conv_in.weight", 1)
		v.OutChannels = dim(p+"decoder.conv_out.weight", 0)
		v.LatentChannels = dim(p+"decoder.conv_in.weight", 1)
		var ch []int
		for i := 0; i < 8 && has(fmt.Sprintf("%sencoder.down.%d.block.0.conv1.weight", p, i)); i++ {
			ch = append(ch, dim(fmt.Sprintf("%sencoder.down.%d.block.0.conv1.weight", p, i), 0))
		}
		if len(ch) > 0 {
			v.BlockOutChannels = ch
		}
		v.LayersPerBlock = count(16, p, "encoder.down.0.block.%d.conv1.weight")
		t, f := true, false
		v.UseQuantConv, v.UsePostQuantConv, v.MidBlockAddAttention = &f, &f, &f
		if has(p + "quant_conv.weight") {
			v.UseQuantConv = &t
		}
		if has(p + "post_quant_conv.weight") {
			v.UsePostQuantConv = &t
		}
		if has(p + "encoder.mid.attn_1.q.weight") {
			v.MidBlockAddAttention = &t
		}
		notes = append(notes, fmt.Sprintf("VAE widths %v", v.BlockOutChannels))
	}
	v.NormNumGroups = groupsFor(v.BlockOutChannels)

	// Text encoder: with or without the text_model level.
	tc := &c.Text
	tp := ldmText + "text_model."
	if !has(tp + "embeddings.token_embedding.weight") {
		tp = ldmText
	}
	if has(tp + "embeddings.token_embedding.weight") {
		tc.VocabSize = dim(tp+"embeddings.token_embedding.weight", 0)
		tc.HiddenSize = dim(tp+"embeddings.token_embedding.weight", 1)
		tc.MaxPositionEmbeddings = dim(tp+"embeddings.position_embedding.weight", 0)
		tc.IntermediateSize = dim(tp+"encoder.layers.0.mlp.fc1.weight", 0)
		n := count(256, tp, "encoder.layers.%d.mlp.fc1.weight")
		tc.NumHiddenLayers = n
		tc.ProjectionDim = tc.HiddenSize
		if tc.HiddenSize%64 == 0 {
			tc.NumAttentionHeads = tc.HiddenSize / 64
		} else {
			tc.NumAttentionHeads = 1
		}
		notes = append(notes, fmt.Sprintf("CLIP text width %d, %d layers, heads assumed 64 wide", tc.HiddenSize, n))
	}
	// OpenCLIP text tower (SD 2.x): diffusers keeps all but the last layer.
	op := ldmOpen
	if has(op + "token_embedding.weight") {
		tc.VocabSize = dim(op+"token_embedding.weight", 0)
		tc.HiddenSize = dim(op+"token_embedding.weight", 1)
		tc.MaxPositionEmbeddings = dim(op+"positional_embedding", 0)
		tc.IntermediateSize = dim(op+"transformer.resblocks.0.mlp.c_fc.weight", 0)
		n := count(256, op, "transformer.resblocks.%d.mlp.c_fc.weight")
		tc.NumHiddenLayers = max(n-1, 1)
		tc.HiddenAct = "gelu"
		tc.ProjectionDim = dim(op+"text_projection", 1)
		tc.NumAttentionHeads = max(tc.HiddenSize/64, 1)
		notes = append(notes, fmt.Sprintf("OpenCLIP text width %d, %d of %d layers (penultimate output), heads assumed 64 wide", tc.HiddenSize, tc.NumHiddenLayers, n))
	}
	notes = append(notes, "groups assumed 32 where widths allow", "prediction type assumed epsilon")

	// Inference can still produce nonsense on a strange file; fall back to
	// the defaults field by field rather than fail here: the tensor check
	// that follows reports what does not fit.
	if c.validate("inferred config") != nil {
		d := configs{Scheduler: DefaultScheduler()}
		d.validate("")
		if validateUNet("", &c.UNet) != nil {
			c.UNet = d.UNet
		}
		if validateVAE("", &c.VAE) != nil {
			c.VAE = d.VAE
		}
		if validateText("", &c.Text) != nil {
			c.Text = d.Text
		}
		notes = append(notes, "some inferred values were unusable; SD 1.5 defaults used")
	}
	return c, notes
}

// groupsFor is 32 groups (the SD value) halved until it divides every width.
func groupsFor(ch []int) int {
	g := 32
	for g > 1 {
		ok := true
		for _, c := range ch {
			ok = ok && c%g == 0
		}
		if ok {
			break
		}
		g /= 2
	}
	return g
}

// classify names the model family and the evidence.
func classify(m *Model, inferred bool) (string, string) {
	u, t := &m.UNet, &m.Text
	pred := m.Scheduler.PredictionType
	text := fmt.Sprintf("CLIP text encoder width %d (%d layers, %s)", t.HiddenSize, t.NumHiddenLayers, t.HiddenAct)
	if t.HiddenSize == 768 && t.NumHiddenLayers == 12 && t.HiddenAct == "quick_gelu" {
		text = "CLIP ViT-L text encoder"
	} else if t.HiddenSize == 1024 && t.HiddenAct == "gelu" {
		text = "OpenCLIP ViT-H text encoder"
	}
	why := fmt.Sprintf("context dim %d, %s, %s", u.CrossAttentionDim, text, pred)
	sd1Topology := len(u.BlockOutChannels) == 4 && u.LayersPerBlock == 2 && !u.UseLinearProjection &&
		u.DownBlockTypes[3] == "DownBlock2D" && hasCrossAttn(u.DownBlockTypes[0])
	family := "unknown"
	switch {
	case u.CrossAttentionDim == 768 && t.HiddenSize == 768 && t.HiddenAct == "quick_gelu" && !u.UseLinearProjection:
		family = "SD 1.x"
	case u.CrossAttentionDim == 1024 && t.HiddenSize == 1024 && u.UseLinearProjection:
		family = "SD 2.x"
	case sd1Topology && u.CrossAttentionDim == t.HiddenSize && t.HiddenAct == "quick_gelu":
		family = "SD 1.x"
		why += fmt.Sprintf(", SD 1.x topology at non-standard widths %v", u.BlockOutChannels)
	case u.CrossAttentionDim == t.HiddenSize && t.HiddenAct == "quick_gelu" && !u.UseLinearProjection &&
		len(u.DownBlockTypes) > 0 && hasCrossAttn(u.DownBlockTypes[0]):
		// A smaller model built from SD 1.x's blocks (the bundled model).
		family = "SD 1.x"
		why += fmt.Sprintf(", SD 1.x block types at a smaller size: %d levels x %d layers, widths %v",
			len(u.BlockOutChannels), u.LayersPerBlock, u.BlockOutChannels)
	default:
		why += fmt.Sprintf(", widths %v, linear projections %v: not a family we recognise", u.BlockOutChannels, u.UseLinearProjection)
	}
	switch u.InChannels {
	case 4:
	case 9:
		family += " inpainting"
		why += ", 9 input channels (inpainting)"
	default:
		why += fmt.Sprintf(", %d input channels", u.InChannels)
	}
	if inferred {
		why += "; hyper-parameters inferred from shapes (no config)"
	}
	return family, why
}
