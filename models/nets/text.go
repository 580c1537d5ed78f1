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
	tokEmb, posEmb *gpu.Tensor
	layers         []*clipLayer
	finalNorm      norm
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
	te, params, err := construct(d, w, "text_encoder", func(b builder) (*TextEncoder, error) { return buildText(b, c) })
	if err != nil {
		return nil, err
	}
	te.d, te.params = d, params
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
	m := b.at("text_model")
	te.tokEmb = m.param("embeddings.token_embedding.weight", c.VocabSize, w)
	te.posEmb = m.param("embeddings.position_embedding.weight", c.MaxPositionEmbeddings, w)
	eps := c.LayerNormEps
	for i := 0; i < c.NumHiddenLayers; i++ {
		l := m.at("encoder.layers.%d", i)
		te.layers = append(te.layers, &clipLayer{
			ln1: l.layerNorm("layer_norm1", w, eps),
			q:   l.linear("self_attn.q_proj", w, w, true),
			k:   l.linear("self_attn.k_proj", w, w, true),
			v:   l.linear("self_attn.v_proj", w, w, true),
			out: l.linear("self_attn.out_proj", w, w, true),
			ln2: l.layerNorm("layer_norm2", w, eps),
			fc1: l.linear("mlp.fc1", w, c.IntermediateSize, true),
			fc2: l.linear("mlp.fc2", c.IntermediateSize, w, true),
		})
	}
	te.finalNorm = m.layerNorm("final_layer_norm", w, eps)
	return te, nil
}

func (l *clipLayer) forward(d gpu.Device, x *gpu.Tensor, heads int, act func(gpu.Device, *gpu.Tensor) *gpu.Tensor) *gpu.Tensor {
	return gpu.Scoped(d, func() *gpu.Tensor {
		h := l.ln1.apply(d, x)
		a := d.Attention(l.q.apply(d, h), l.k.apply(d, h), l.v.apply(d, h), gpu.AttentionOpts{Heads: heads, Causal: true})
		x = d.Add(x, l.out.apply(d, a))
		h = l.fc2.apply(d, act(d, l.fc1.apply(d, l.ln2.apply(d, x))))
		return d.Add(x, h)
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
	c, d := &te.Config, te.d
	if skip < 1 || skip > c.NumHiddenLayers {
		return nil, fmt.Errorf("text encoder: clip skip %d outside 1..%d", skip, c.NumHiddenLayers)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("text encoder: no token sequences")
	}
	seq := len(ids[0])
	if seq < 1 || seq > c.MaxPositionEmbeddings {
		return nil, fmt.Errorf("text encoder: sequence length %d outside 1..%d", seq, c.MaxPositionEmbeddings)
	}
	flat := make([]int32, 0, len(ids)*seq)
	for i, row := range ids {
		if len(row) != seq {
			return nil, fmt.Errorf("text encoder: sequence %d has %d tokens, sequence 0 has %d", i, len(row), seq)
		}
		for j, id := range row {
			if id < 0 || int(id) >= c.VocabSize {
				return nil, fmt.Errorf("text encoder: token %d of sequence %d is %d, outside the vocabulary of %d", j, i, id, c.VocabSize)
			}
		}
		flat = append(flat, row...)
	}
	pos := make([]int32, seq)
	for i := range pos {
		pos[i] = int32(i)
	}

	d.PushScope()
	x := d.Add(d.Embedding(te.tokEmb, flat).View(len(ids), seq, c.HiddenSize), d.Embedding(te.posEmb, pos))
	for _, l := range te.layers[:c.NumHiddenLayers-skip+1] {
		prev := x
		x = l.forward(d, x, c.NumAttentionHeads, te.act)
		d.Release(prev)
	}
	x = te.finalNorm.apply(d, x)
	d.PopScope(x)
	if err := d.Err(); err != nil {
		d.Release(x)
		return nil, fmt.Errorf("text encoder: %w", err)
	}
	return x, nil
}
