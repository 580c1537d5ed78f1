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
func inferConfigs(infos []safetensors.TensorInfo, fam *Family) (configs, []string) {
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
	c := newConfigs()
	c.Scheduler = fam.Scheduler
	var notes []string

	// U-Net: walk input_blocks; a downsampler ends a level.
	u := &c.UNet
	p := fam.UNetPrefix
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
	// SD 2.x and SDXL fix the head width at 64; SD 1.x the head count at 8.
	if fam.HeadWidth > 0 || u.UseLinearProjection {
		w := max(fam.HeadWidth, 64)
		u.AttentionHeadDim = nil
		for _, ch := range u.BlockOutChannels {
			u.AttentionHeadDim = append(u.AttentionHeadDim, max(ch/w, 1))
		}
		notes = append(notes, fmt.Sprintf("heads assumed %d wide", w))
	} else {
		notes = append(notes, "8 heads assumed (SD 1.x)")
	}
	u.NormNumGroups = groupsFor(u.BlockOutChannels)
	if fam.NativeSize > 0 {
		u.SampleSize = fam.NativeSize / 8
	}

	// VAE.
	v := &c.VAE
	v.ScalingFactor = fam.Scaling
	p = fam.VAEPrefix
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

	// Text encoders, as the family names them.
	pooledDim := 0
	for _, spec := range fam.Texts {
		tc := nets.TextConfig{HiddenAct: spec.Act}
		op := spec.Prefix
		if spec.OpenCLIP {
			if !has(op + "token_embedding.weight") {
				continue
			}
			tc.VocabSize = dim(op+"token_embedding.weight", 0)
			tc.HiddenSize = dim(op+"token_embedding.weight", 1)
			tc.MaxPositionEmbeddings = dim(op+"positional_embedding", 0)
			tc.IntermediateSize = dim(op+"transformer.resblocks.0.mlp.c_fc.weight", 0)
			n := count(256, op, "transformer.resblocks.%d.mlp.c_fc.weight")
			tc.NumHiddenLayers = n
			if spec.ExtraBlock {
				tc.NumHiddenLayers = max(n-1, 1)
			}
			tc.ProjectionDim = dim(op+"text_projection", 1)
			if spec.Pooled {
				pooledDim = tc.ProjectionDim
			}
			notes = append(notes, fmt.Sprintf("%s: OpenCLIP width %d, %d of %d blocks", spec.Role, tc.HiddenSize, tc.NumHiddenLayers, n))
		} else {
			tp := op + "text_model."
			if !has(tp + "embeddings.token_embedding.weight") {
				tp = op
			}
			if !has(tp + "embeddings.token_embedding.weight") {
				continue
			}
			tc.VocabSize = dim(tp+"embeddings.token_embedding.weight", 0)
			tc.HiddenSize = dim(tp+"embeddings.token_embedding.weight", 1)
			tc.MaxPositionEmbeddings = dim(tp+"embeddings.position_embedding.weight", 0)
			tc.IntermediateSize = dim(tp+"encoder.layers.0.mlp.fc1.weight", 0)
			tc.NumHiddenLayers = count(256, tp, "encoder.layers.%d.mlp.fc1.weight")
			tc.ProjectionDim = tc.HiddenSize
			notes = append(notes, fmt.Sprintf("%s: CLIP width %d, %d layers", spec.Role, tc.HiddenSize, tc.NumHiddenLayers))
		}
		tc.NumAttentionHeads = 1
		if tc.HiddenSize%64 == 0 {
			tc.NumAttentionHeads = tc.HiddenSize / 64
		}
		c.Texts[spec.Role] = tc
	}
	if len(fam.Texts) > 0 {
		notes = append(notes, "text heads assumed 64 wide")
	}
	// SDXL's added conditioning: label_emb takes pooled ++ k time ids.
	if fam.Added != "" && has(p0(fam)+"label_emb.0.0.weight") {
		k := 6
		if fam.Added == AddedAestheticTimeIDs {
			k = 5
		}
		in := dim(p0(fam)+"label_emb.0.0.weight", 1)
		u.AdditionEmbedType = "text_time"
		u.ProjectionClassEmbeddingsInputDim = in
		if pooledDim > 0 && (in-pooledDim) > 0 && (in-pooledDim)%k == 0 {
			u.AdditionTimeEmbedDim = (in - pooledDim) / k
		}
		notes = append(notes, fmt.Sprintf("added conditioning: pooled %d + %d time ids x %d", pooledDim, k, u.AdditionTimeEmbedDim))
	}
	notes = append(notes, "groups assumed 32 where widths allow", "prediction type assumed epsilon")

	// Inference can still produce nonsense on a strange file; fall back to
	// the defaults field by field rather than fail here: the tensor check
	// that follows reports what does not fit.
	if c.validate("inferred config") != nil {
		d := newConfigs()
		d.validate("")
		if validateUNet("", &c.UNet) != nil {
			c.UNet = d.UNet
		}
		if validateVAE("", &c.VAE) != nil {
			c.VAE = d.VAE
		}
		for role, t := range c.Texts {
			if validateText("", role, &t) != nil {
				c.Texts[role] = nets.TextConfig{}
			}
		}
		notes = append(notes, "some inferred values were unusable; SD 1.5 defaults used")
	}
	for _, spec := range fam.Texts {
		if _, ok := c.Texts[spec.Role]; !ok {
			t := nets.TextConfig{}
			t.Defaults()
			c.Texts[spec.Role] = t
		}
	}
	return c, notes
}

func p0(f *Family) string { return f.UNetPrefix }

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

// classify names the model family and the evidence: the family the
// layout gave away (why), checked against the networks' shapes.
func classify(m *Model, inferred bool, why string) (string, string) {
	u := &m.UNet
	fam := m.Spec
	var parts []string
	for _, t := range m.Texts {
		c := &t.Config
		desc := fmt.Sprintf("%s width %d (%d layers, %s)", t.Spec.Role, c.HiddenSize, c.NumHiddenLayers, c.HiddenAct)
		switch {
		case c.HiddenSize == 768 && c.NumHiddenLayers == 12 && c.HiddenAct == "quick_gelu":
			desc = "CLIP ViT-L text encoder"
		case c.HiddenSize == 1024 && c.HiddenAct == "gelu":
			desc = "OpenCLIP ViT-H text encoder"
		case c.HiddenSize == 1280 && c.HiddenAct == "gelu":
			desc = "OpenCLIP ViT-bigG text encoder"
		}
		parts = append(parts, desc)
	}
	pred := m.Scheduler.PredictionType
	ev := fmt.Sprintf("context dim %d, %s, %s", u.CrossAttentionDim, strings.Join(parts, " + "), pred)
	if why != "" {
		ev = why + "; " + ev
	}
	family := fam.Name
	ctx := 0
	for _, t := range m.Texts {
		ctx += t.Config.HiddenSize
	}
	switch {
	case ctx != u.CrossAttentionDim:
		family = "unknown"
		ev += fmt.Sprintf(": the text encoders give %d-wide context, the U-Net attends to %d", ctx, u.CrossAttentionDim)
	case fam.Added != "" && u.AdditionEmbedType == "":
		family = "unknown"
		ev += ": the family needs added conditioning (addition_embed_type text_time), the U-Net has none"
	case fam.Added == "" && u.AdditionEmbedType != "":
		family = "unknown"
		ev += fmt.Sprintf(": the U-Net takes added conditioning (%s) that %s does not make", u.AdditionEmbedType, fam.Name)
	case fam.Name == "SD 1.x" && (u.UseLinearProjection || len(u.BlockOutChannels) != 4):
		ev += fmt.Sprintf(", SD 1.x blocks at another size: %d levels x %d layers, widths %v, linear projections %v",
			len(u.BlockOutChannels), u.LayersPerBlock, u.BlockOutChannels, u.UseLinearProjection)
	}
	switch u.InChannels {
	case 4:
	case 9:
		family += " inpainting"
		ev += ", 9 input channels (inpainting)"
	default:
		ev += fmt.Sprintf(", %d input channels", u.InChannels)
	}
	if inferred {
		ev += "; hyper-parameters inferred from shapes (no config)"
	}
	return family, ev
}
