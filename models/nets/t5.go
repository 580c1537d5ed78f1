package nets

import (
	"fmt"
	"math"

	"github.com/stepwise/stepwise/gpu"
)

// T5Config is the part of transformers' T5Config an encoder uses (the
// config.json of SD3's text_encoder_3, Flux's text_encoder_2, DeepFloyd
// IF's text_encoder).
type T5Config struct {
	VocabSize                    int     `json:"vocab_size"`
	DModel                       int     `json:"d_model"`
	DKV                          int     `json:"d_kv"`
	DFF                          int     `json:"d_ff"`
	NumLayers                    int     `json:"num_layers"`
	NumHeads                     int     `json:"num_heads"`
	RelativeAttentionNumBuckets  int     `json:"relative_attention_num_buckets"`
	RelativeAttentionMaxDistance int     `json:"relative_attention_max_distance"`
	LayerNormEpsilon             float64 `json:"layer_norm_epsilon"`
	// FeedForwardProj is "gated-gelu" (T5 v1.1, used by SD3, Flux and
	// IF) or "relu" (the original T5); DenseActFn is the activation
	// transformers derives from it ("gelu_new" for gated-gelu).
	FeedForwardProj string `json:"feed_forward_proj"`
	DenseActFn      string `json:"dense_act_fn"`
}

// Defaults fills unset fields with T5 v1.1 XXL's encoder (google/t5-v1_1-xxl,
// SD3's and Flux's text_encoder_3 / text_encoder_2).
func (c *T5Config) Defaults() {
	setInt(&c.VocabSize, 32128)
	setInt(&c.DModel, 4096)
	setInt(&c.DKV, 64)
	setInt(&c.DFF, 10240)
	setInt(&c.NumLayers, 24)
	setInt(&c.NumHeads, 64)
	setInt(&c.RelativeAttentionNumBuckets, 32)
	setInt(&c.RelativeAttentionMaxDistance, 128)
	if c.LayerNormEpsilon == 0 {
		c.LayerNormEpsilon = 1e-6
	}
	if c.FeedForwardProj == "" {
		c.FeedForwardProj = "gated-gelu"
	}
	if c.DenseActFn == "" {
		c.DenseActFn = "relu"
		if c.FeedForwardProj == "gated-gelu" {
			c.DenseActFn = "gelu_new"
		}
	}
}

// gated reports a gated feed-forward (wi_0, wi_1) rather than a single wi.
func (c *T5Config) gated() bool {
	return len(c.FeedForwardProj) > 6 && c.FeedForwardProj[:6] == "gated-"
}

// T5Encoder is transformers' T5EncoderModel: token embeddings, pre-norm
// transformer layers with RMS norms (no mean, no bias), unscaled attention
// with a learned relative position bias (bucketed, shared by every layer),
// a gated-GELU feed-forward, and a final RMS norm. Activations stay F32 on
// every device, so the fp16 overflow transformers clamps against cannot
// happen here (T5-XXL's activations exceed fp16's range).
type T5Encoder struct {
	// Config is the configuration the network was built from, with defaults
	// filled in.
	Config T5Config

	d         gpu.Device
	params    []*gpu.Tensor
	emb       *gpu.Tensor
	relBias   *gpu.Tensor // [buckets, heads]
	layers    []*t5Layer
	finalNorm *gpu.Tensor
	act       func(gpu.Device, *gpu.Tensor) *gpu.Tensor

	// biasHost is the host copy of the bias table.
	biasHost []float32
}

type t5Layer struct {
	norm1, norm2 *gpu.Tensor
	q, k, v, o   linear
	wi0, wi1, wo linear // wi1 unset without the gate
}

// NewT5Encoder checks w (transformers names: "shared.weight",
// "encoder.block.N...") against the parameters c calls for, reporting every
// missing or mis-shaped one in a single *WeightsError, and uploads them to
// d keeping their storage type. Call it outside any device scope.
func NewT5Encoder(d gpu.Device, c T5Config, w Weights) (*T5Encoder, error) {
	c.Defaults()
	te, params, _, err := construct(d, w, "t5", func(b builder) (*T5Encoder, error) { return buildT5(b, c) })
	if err != nil {
		return nil, err
	}
	te.d, te.params = d, params
	return te, nil
}

// T5Decls lists every parameter of a T5 encoder with config c (unset fields
// take T5 v1.1 XXL's values) in declaration order, or says why c is
// unsupported. Original names are the same (a single file stores them
// under its own prefix, such as SD3's text_encoders.t5xxl.transformer.).
func T5Decls(c T5Config) ([]Decl, error) {
	c.Defaults()
	return decls(func(b builder) (*T5Encoder, error) { return buildT5(b, c) })
}

// Release frees the network's weights on the device.
func (te *T5Encoder) Release() { releaseAll(te.d, te.params) }

// ParamBytes is the device memory the weights occupy.
func (te *T5Encoder) ParamBytes() int64 { return paramBytes(te.params) }

func buildT5(b builder, c T5Config) (*T5Encoder, error) {
	if c.DModel < 1 || c.DKV < 1 || c.NumHeads < 1 || c.DFF < 1 || c.NumLayers < 1 || c.VocabSize < 1 {
		return nil, fmt.Errorf("d_model %d, d_kv %d, num_heads %d, d_ff %d, num_layers %d, vocab_size %d must be positive",
			c.DModel, c.DKV, c.NumHeads, c.DFF, c.NumLayers, c.VocabSize)
	}
	if c.RelativeAttentionNumBuckets < 2 || c.RelativeAttentionMaxDistance < 2 {
		return nil, fmt.Errorf("relative_attention_num_buckets %d and relative_attention_max_distance %d must be at least 2",
			c.RelativeAttentionNumBuckets, c.RelativeAttentionMaxDistance)
	}
	var act func(gpu.Device, *gpu.Tensor) *gpu.Tensor
	if c.DenseActFn == "relu" {
		act = func(d gpu.Device, x *gpu.Tensor) *gpu.Tensor { return d.ReLU(x) }
	} else {
		a, err := activation(c.DenseActFn)
		if err != nil {
			return nil, fmt.Errorf("dense_act_fn: %w", err)
		}
		act = a
	}
	switch c.FeedForwardProj {
	case "gated-gelu", "relu", "gated-relu", "gelu":
	default:
		return nil, fmt.Errorf("feed_forward_proj %q is not supported (want gated-gelu or relu)", c.FeedForwardProj)
	}
	w, inner := c.DModel, c.NumHeads*c.DKV
	te := &T5Encoder{Config: c, act: act}
	te.emb = b.param("shared.weight", c.VocabSize, w)
	for i := 0; i < c.NumLayers; i++ {
		blk := b.at("encoder.block.%d", i)
		at, ff := blk.at("layer.0"), blk.at("layer.1")
		sa := at.at("SelfAttention")
		l := &t5Layer{
			norm1: at.param("layer_norm.weight", w),
			q:     sa.linear("q", w, inner, false),
			k:     sa.linear("k", w, inner, false),
			v:     sa.linear("v", w, inner, false),
			o:     sa.linear("o", inner, w, false),
			norm2: ff.param("layer_norm.weight", w),
		}
		if i == 0 {
			te.relBias = sa.param("relative_attention_bias.weight", c.RelativeAttentionNumBuckets, c.NumHeads)
		}
		dr := ff.at("DenseReluDense")
		if c.gated() {
			l.wi0 = dr.linear("wi_0", w, c.DFF, false)
			l.wi1 = dr.linear("wi_1", w, c.DFF, false)
		} else {
			l.wi0 = dr.linear("wi", w, c.DFF, false)
		}
		l.wo = dr.linear("wo", c.DFF, w, false)
		te.layers = append(te.layers, l)
	}
	te.finalNorm = b.param("encoder.final_layer_norm.weight", w)
	return te, nil
}

// T5RelativeBucket is transformers' T5Attention._relative_position_bucket
// for an encoder (bidirectional): the bucket of key position minus query
// position rel, computed in float32 as PyTorch does so that the bucket
// edges agree.
func T5RelativeBucket(rel, buckets, maxDistance int) int {
	buckets /= 2
	b := 0
	if rel > 0 {
		b = buckets
	}
	if rel < 0 {
		rel = -rel
	}
	exact := buckets / 2
	if rel < exact {
		return b + rel
	}
	l := float32(math.Log(float64(float32(rel) / float32(exact))))
	f := l / float32(math.Log(float64(maxDistance)/float64(exact))) * float32(buckets-exact)
	large := exact + int(f)
	return b + min(large, buckets-1)
}

// positionBias returns the attention bias [1, heads, L, L] for sequence
// length L, in the current scope.
func (te *T5Encoder) positionBias(L int) (*gpu.Tensor, error) {
	d, c := te.d, &te.Config
	if te.biasHost == nil {
		h, err := d.Download(te.relBias)
		if err != nil {
			return nil, err
		}
		te.biasHost = h
	}
	H := c.NumHeads
	out := make([]float32, H*L*L)
	for i := 0; i < L; i++ {
		for j := 0; j < L; j++ {
			bk := T5RelativeBucket(j-i, c.RelativeAttentionNumBuckets, c.RelativeAttentionMaxDistance)
			for h := 0; h < H; h++ {
				out[(h*L+i)*L+j] = te.biasHost[bk*H+h]
			}
		}
	}
	return d.Upload(out, 1, H, L, L), nil
}

// attend is T5Attention without a mask: softmax(q kᵀ + bias) v per head,
// with no 1/sqrt(d) scaling (T5 folds it into the weights' initialisation).
func (te *T5Encoder) attend(d gpu.Device, q, k, v, bias *gpu.Tensor) *gpu.Tensor {
	B, L, H, D := q.Dim(0), q.Dim(1), te.Config.NumHeads, te.Config.DKV
	heads := func(x *gpu.Tensor) *gpu.Tensor { return d.Permute(x.View(B, L, H, D), 0, 2, 1, 3) }
	s := d.MatMul(heads(q), heads(k), gpu.MatMulOpts{TransB: true}) // [B,H,L,L]
	p := d.Softmax(d.Add(s, bias))
	o := d.MatMul(p, heads(v), gpu.MatMulOpts{}) // [B,H,L,D]
	return d.Permute(o, 0, 2, 1, 3).View(B, L, H*D)
}

func (l *t5Layer) forward(te *T5Encoder, x, bias *gpu.Tensor) *gpu.Tensor {
	d, eps := te.d, float32(te.Config.LayerNormEpsilon)
	return gpu.Scoped(d, func() *gpu.Tensor {
		h := d.RMSNorm(x, l.norm1, eps)
		a := te.attend(d, l.q.apply(d, h), l.k.apply(d, h), l.v.apply(d, h), bias)
		x = d.Add(x, l.o.apply(d, a))
		h = d.RMSNorm(x, l.norm2, eps)
		g := te.act(d, l.wi0.apply(d, h))
		if l.wi1.w != nil {
			g = d.Mul(g, l.wi1.apply(d, h))
		}
		return d.Add(x, l.wo.apply(d, g))
	})
}

// Encode runs the encoder on token ids [B][L] (every row the same length;
// no attention mask, as SD3 and Flux call it) and returns the last hidden
// state [B,L,d_model] after the final RMS norm.
func (te *T5Encoder) Encode(ids [][]int32) (*gpu.Tensor, error) {
	h, _, err := te.EncodeHidden(ids, false)
	return h, err
}

// EncodeHidden is Encode that also returns, when all is set, transformers'
// hidden_states: the embeddings and each layer's output (before the final
// norm), each [B,L,d_model].
func (te *T5Encoder) EncodeHidden(ids [][]int32, all bool) (*gpu.Tensor, []*gpu.Tensor, error) {
	return te.encode(ids, nil, all)
}

// EncodeMasked is Encode with transformers' attention mask, as DeepFloyd
// IF calls it: key j of row i is masked out when mask[i][j] is false (the
// padding). Every position, padding included, is still computed and
// returned.
func (te *T5Encoder) EncodeMasked(ids [][]int32, mask [][]bool) (*gpu.Tensor, error) {
	if len(mask) != len(ids) {
		return nil, fmt.Errorf("t5: %d mask rows for %d sequences", len(mask), len(ids))
	}
	for i := range mask {
		if len(mask[i]) != len(ids[i]) {
			return nil, fmt.Errorf("t5: mask row %d has %d entries for %d tokens", i, len(mask[i]), len(ids[i]))
		}
	}
	h, _, err := te.encode(ids, mask, false)
	return h, err
}

// encode runs the encoder; mask (nil: none) masks keys per row.
func (te *T5Encoder) encode(ids [][]int32, mask [][]bool, all bool) (*gpu.Tensor, []*gpu.Tensor, error) {
	c, d := &te.Config, te.d
	if len(ids) == 0 || len(ids[0]) == 0 {
		return nil, nil, fmt.Errorf("t5: no tokens")
	}
	L := len(ids[0])
	flat := make([]int32, 0, len(ids)*L)
	for i, row := range ids {
		if len(row) != L {
			return nil, nil, fmt.Errorf("t5: sequence %d has %d tokens, sequence 0 has %d", i, len(row), L)
		}
		for j, id := range row {
			if id < 0 || int(id) >= c.VocabSize {
				return nil, nil, fmt.Errorf("t5: token %d of sequence %d is %d, outside the vocabulary of %d", j, i, id, c.VocabSize)
			}
		}
		flat = append(flat, row...)
	}
	d.PushScope()
	bias, err := te.positionBias(L)
	if err != nil {
		d.PopScope()
		return nil, nil, fmt.Errorf("t5: %w", err)
	}
	if mask != nil {
		// transformers adds (1-mask)*finfo.min to the scores; any huge
		// negative value gives the same zero weights.
		m := make([]float32, len(ids)*L)
		for i, row := range mask {
			for j, keep := range row {
				if !keep {
					m[i*L+j] = -1e30
				}
			}
		}
		bias = d.Add(bias, d.Upload(m, len(ids), 1, 1, L))
	}
	x := d.Embedding(te.emb, flat).View(len(ids), L, c.DModel)
	var states []*gpu.Tensor
	if all {
		states = append(states, x)
	}
	for _, l := range te.layers {
		prev := x
		x = l.forward(te, x, bias)
		if all {
			states = append(states, x)
		} else {
			d.Release(prev)
		}
	}
	out := d.RMSNorm(x, te.finalNorm, float32(c.LayerNormEpsilon))
	d.PopScope(append([]*gpu.Tensor{out}, states...)...)
	if err := d.Err(); err != nil {
		d.Release(out)
		for _, s := range states {
			d.Release(s)
		}
		return nil, nil, fmt.Errorf("t5: %w", err)
	}
	return out, states, nil
}
