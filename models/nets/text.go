package nets

import (
	"fmt"

	"github.com/stepwise/stepwise/gpu"
)

// TextEncoder is transformers' CLIPTextModel: token and position
// embeddings, a pre-LayerNorm transformer with a causal mask, and a final
// LayerNorm.
type TextEncoder struct {
	// Config is the configuration the network was built from, with defaults
	// filled in.
	Config TextConfig

	d              gpu.Device
	params         []*gpu.Tensor
	named          map[string]*gpu.Tensor // params by declared name
	tokEmb, posEmb *gpu.Tensor
	layers         []*clipLayer
	finalNorm      norm
	proj           *gpu.Tensor // text_projection [P,C] (CLIPTextModelWithProjection)
	act            func(gpu.Device, *gpu.Tensor) *gpu.Tensor
}

// clipLayer is a CLIPEncoderLayer.
type clipLayer struct {
	ln1, ln2     norm
	q, k, v, out linear
	fc1, fc2     linear
}

// NewTextEncoder checks w against the parameters c calls for (reporting
// every missing or mis-shaped one in a single *WeightsError) and uploads them
// to d, keeping their storage type. Call it outside any device scope.
func NewTextEncoder(d gpu.Device, c TextConfig, w Weights) (*TextEncoder, error) {
	c.Defaults()
	te, params, named, err := construct(d, w, "text_encoder", func(b builder) (*TextEncoder, error) { return buildText(b, c) })
	if err != nil {
		return nil, err
	}
	te.d, te.params, te.named = d, params, named
	return te, nil
}

// ExpectedText lists every parameter a CLIP text model with config c uses
// (transformers names, "text_model.…") with its shape; unset fields take SD
// 1.5's values. It returns nil when c is not a supported configuration
// (NewTextEncoder says why).
func ExpectedText(c TextConfig) map[string][]int {
	c.Defaults()
	m, err := expected(func(b builder) (*TextEncoder, error) { return buildText(b, c) })
	if err != nil {
		return nil
	}
	return m
}

// Release frees the network's weights on the device.
func (te *TextEncoder) Release() { releaseAll(te.d, te.params) }

// ParamBytes is the device memory the weights occupy.
func (te *TextEncoder) ParamBytes() int64 { return paramBytes(te.params) }

// Param returns the uploaded parameter with the declared (diffusers) name,
// or nil.
func (te *TextEncoder) Param(name string) *gpu.Tensor { return te.named[name] }

// ReplaceParam puts t in place of the uploaded parameter name: every layer
// that uses it computes with t from then on, without rebuilding the
// network (LoRA merges and unmerges). t must have the parameter's shape;
// its storage type may differ (a merge kept in F32 over F16 weights). The
// old storage is released and t's belongs to the network: do not release
// t, and make it outside any device scope (or keep it from the scope).
func (te *TextEncoder) ReplaceParam(name string, t *gpu.Tensor) error {
	return replaceParam(te.d, te.named, name, t)
}

func activation(name string) (func(gpu.Device, *gpu.Tensor) *gpu.Tensor, error) {
	switch name {
	case "quick_gelu":
		return func(d gpu.Device, x *gpu.Tensor) *gpu.Tensor { return d.QuickGELU(x) }, nil
	case "gelu":
		return func(d gpu.Device, x *gpu.Tensor) *gpu.Tensor { return d.GELU(x) }, nil
	case "gelu_new", "gelu_pytorch_tanh":
		return func(d gpu.Device, x *gpu.Tensor) *gpu.Tensor { return d.GELUTanh(x) }, nil
	}
	return nil, fmt.Errorf("hidden_act %q is not supported (want quick_gelu, gelu or gelu_pytorch_tanh)", name)
}

func buildText(b builder, c TextConfig) (*TextEncoder, error) {
	act, err := activation(c.HiddenAct)
	if err != nil {
		return nil, err
	}
	w, heads := c.HiddenSize, c.NumAttentionHeads
	if w < 1 || heads < 1 || w%heads != 0 {
		return nil, fmt.Errorf("hidden_size %d does not split into %d attention heads", w, heads)
	}
	if c.NumHiddenLayers < 1 || c.IntermediateSize < 1 || c.VocabSize < 1 || c.MaxPositionEmbeddings < 1 {
		return nil, fmt.Errorf("num_hidden_layers %d, intermediate_size %d, vocab_size %d, max_position_embeddings %d must be positive",
			c.NumHiddenLayers, c.IntermediateSize, c.VocabSize, c.MaxPositionEmbeddings)
	}
	te := &TextEncoder{Config: c, act: act}
	// Original names are OpenCLIP's (SD 2.x, SDXL's bigG); CLIP ViT-L
	// single files keep transformers' names, which the loader uses instead.
	m := b.as("text_model", "")
	te.tokEmb = m.as("embeddings.token_embedding", "token_embedding").param("weight", c.VocabSize, w)
	te.posEmb = m.stored(Decl{Orig: "positional_embedding"}).param("embeddings.position_embedding.weight", c.MaxPositionEmbeddings, w)
	eps := c.LayerNormEps
	for i := 0; i < c.NumHiddenLayers; i++ {
		l := m.as(fmt.Sprintf("encoder.layers.%d", i), fmt.Sprintf("transformer.resblocks.%d", i))
		qkv := func(name string, part int) linear {
			p := l.as("self_attn."+name, "attn")
			return linear{
				w: p.stored(Decl{Orig: "in_proj_weight", Part: part, Parts: 3}).linearWeight("weight", w, w),
				b: p.stored(Decl{Orig: "in_proj_bias", Part: part, Parts: 3}).param("bias", w),
			}
		}
		te.layers = append(te.layers, &clipLayer{
			ln1: l.as("layer_norm1", "ln_1").layerNorm("", w, eps),
			q:   qkv("q_proj", 0),
			k:   qkv("k_proj", 1),
			v:   qkv("v_proj", 2),
			out: l.as("self_attn.out_proj", "attn.out_proj").linear("", w, w, true),
			ln2: l.as("layer_norm2", "ln_2").layerNorm("", w, eps),
			fc1: l.as("mlp.fc1", "mlp.c_fc").linear("", w, c.IntermediateSize, true),
			fc2: l.as("mlp.fc2", "mlp.c_proj").linear("", c.IntermediateSize, w, true),
		})
	}
	te.finalNorm = m.as("final_layer_norm", "ln_final").layerNorm("", w, eps)
	if c.WithProjection() {
		te.proj = b.stored(Decl{Orig: "text_projection", Transpose: true}).param("text_projection.weight", c.ProjectionDim, w)
	}
	return te, nil
}

func (l *clipLayer) forward(d gpu.Device, x *gpu.Tensor, heads int, act func(gpu.Device, *gpu.Tensor) *gpu.Tensor) *gpu.Tensor {
	return l.forwardMasked(d, x, heads, true, act)
}

// forwardMasked is forward with the causal mask on (the text model) or off
// (the vision model).
func (l *clipLayer) forwardMasked(d gpu.Device, x *gpu.Tensor, heads int, causal bool, act func(gpu.Device, *gpu.Tensor) *gpu.Tensor) *gpu.Tensor {
	return gpu.Scoped(d, func() *gpu.Tensor {
		h := l.ln1.apply(d, x)
		a := d.Attention(l.q.apply(d, h), l.k.apply(d, h), l.v.apply(d, h), gpu.AttentionOpts{Heads: heads, Causal: causal})
		x = l.out.applyAdd(d, a, x)
		return l.fc2.applyAdd(d, act(d, l.fc1.apply(d, l.ln2.apply(d, x))), x)
	})
}

// Encode returns the last hidden state [B,L,C] after the final LayerNorm
// (SD 1.x's prompt embeddings) for token ids [B][L] (L <= 77, all rows the
// same length, usually 77 with BOS/EOS and EOS padding).
func (te *TextEncoder) Encode(ids [][]int32) (*gpu.Tensor, error) { return te.EncodeSkip(ids, 1) }

// EncodeSkip is Encode with "CLIP skip": it takes the output of layer
// N-skip+1 of N (skip 1 = the last layer, 2 = the penultimate, as A1111
// counts) and applies the final LayerNorm to it, as diffusers' clip_skip
// (which counts one less) does for SD 1.x.
func (te *TextEncoder) EncodeSkip(ids [][]int32, skip int) (*gpu.Tensor, error) {
	h, _, err := te.EncodeWith(ids, EncodeOpts{Skip: skip, FinalNorm: true})
	return h, err
}

// EncodeOpts selects the outputs of EncodeWith.
type EncodeOpts struct {
	// Skip picks the hidden state: the output of layer N-Skip+1 of N (1 =
	// the last layer, 2 = the penultimate: transformers' hidden_states[-2]).
	Skip int
	// FinalNorm applies final_layer_norm to that hidden state (SD 1.x/2.x
	// do; SDXL takes hidden_states[-2] as it is).
	FinalNorm bool
	// Pooled also returns text_projection(final_layer_norm(last layer) at
	// each row's end-of-text token, the first occurrence of its largest id)
	// [B,P]: CLIPTextModelWithProjection's text_embeds, SDXL's pooled vector.
	Pooled bool
	// Unprojected: the pooled vector without text_projection [B,C]
	// (CLIPTextModel's pooler_output, Flux's pooled vector).
	Unprojected bool
}

// EncodeWith runs the encoder on token ids [B][L] and returns the hidden
// state [B,L,C] and, with opts.Pooled, the pooled projection [B,P].
func (te *TextEncoder) EncodeWith(ids [][]int32, opts EncodeOpts) (hidden, pooled *gpu.Tensor, err error) {
	c, d := &te.Config, te.d
	skip := opts.Skip
	if skip < 1 || skip > c.NumHiddenLayers {
		return nil, nil, fmt.Errorf("text encoder: clip skip %d outside 1..%d", skip, c.NumHiddenLayers)
	}
	if opts.Pooled && te.proj == nil && !opts.Unprojected {
		return nil, nil, fmt.Errorf("text encoder: no text_projection for a pooled output (not a CLIPTextModelWithProjection)")
	}
	if len(ids) == 0 {
		return nil, nil, fmt.Errorf("text encoder: no token sequences")
	}
	seq := len(ids[0])
	if seq < 1 || seq > c.MaxPositionEmbeddings {
		return nil, nil, fmt.Errorf("text encoder: sequence length %d outside 1..%d", seq, c.MaxPositionEmbeddings)
	}
	flat := make([]int32, 0, len(ids)*seq)
	eot := make([]int32, len(ids)) // flat index of each row's end-of-text token
	for i, row := range ids {
		if len(row) != seq {
			return nil, nil, fmt.Errorf("text encoder: sequence %d has %d tokens, sequence 0 has %d", i, len(row), seq)
		}
		best := 0
		for j, id := range row {
			if id < 0 || int(id) >= c.VocabSize {
				return nil, nil, fmt.Errorf("text encoder: token %d of sequence %d is %d, outside the vocabulary of %d", j, i, id, c.VocabSize)
			}
			if id > row[best] {
				best = j
			}
		}
		eot[i] = int32(i*seq + best)
		flat = append(flat, row...)
	}
	pos := make([]int32, seq)
	for i := range pos {
		pos[i] = int32(i)
	}

	d.PushScope()
	x := d.Add(d.Embedding(te.tokEmb, flat).View(len(ids), seq, c.HiddenSize), d.Embedding(te.posEmb, pos))
	stop := c.NumHiddenLayers - skip + 1
	run := stop
	if opts.Pooled {
		run = c.NumHiddenLayers
	}
	var kept *gpu.Tensor
	for i, l := range te.layers[:run] {
		prev := x
		x = l.forward(d, x, c.NumAttentionHeads, te.act)
		if prev != kept {
			d.Release(prev)
		}
		if i+1 == stop {
			kept = x
		}
	}
	hidden = kept
	if opts.FinalNorm {
		hidden = te.finalNorm.apply(d, kept)
	}
	if opts.Pooled {
		last := te.finalNorm.apply(d, x)
		rows := d.Embedding(last.View(len(ids)*seq, c.HiddenSize), eot)
		if opts.Unprojected {
			pooled = rows
		} else {
			pooled = gpu.Linear(d, rows, te.proj, nil)
		}
		d.PopScope(hidden, pooled)
	} else {
		d.PopScope(hidden)
	}
	if err := d.Err(); err != nil {
		d.Release(hidden)
		if pooled != nil {
			d.Release(pooled)
		}
		return nil, nil, fmt.Errorf("text encoder: %w", err)
	}
	return hidden, pooled, nil
}
