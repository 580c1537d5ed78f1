package gpu

// Counter wraps a Device and tallies the floating-point operations of the
// ops that dominate a diffusion model's cost (matrix products, convolutions
// and attention), so benchmarks can report GFLOP/s of real pipelines.
// Element-wise ops and norms are not counted.
type Counter struct {
	Device
	FLOPs int64
}

// MaxTensorBytes forwards the wrapped device's limit (0: none known).
func (c *Counter) MaxTensorBytes() int64 { return MaxTensorBytes(c.Device) }

// MaxTensorBytes is the largest tensor d can write in one op, for devices
// that have such a limit (GL: its storage-block windows); 0 means none.
func MaxTensorBytes(d Device) int64 {
	if m, ok := d.(interface{ MaxTensorBytes() int64 }); ok {
		return m.MaxTensorBytes()
	}
	return 0
}

// MatMul counts 2·M·N·K per output matrix.
func (c *Counter) MatMul(a, b *Tensor, o MatMulOpts) *Tensor {
	if g, err := MatMulShape(a.Shape, b.Shape, o); err == nil {
		c.FLOPs += 2 * int64(g.Batch) * int64(g.M) * int64(g.N) * int64(g.K)
	}
	return c.Device.MatMul(a, b, o)
}

// Conv2D counts 2·C·KH·KW per output element.
func (c *Counter) Conv2D(x, w, bias *Tensor, o Conv2DOpts) *Tensor {
	if g, err := Conv2DShape(x.Shape, w.Shape, bias, o); err == nil {
		c.FLOPs += 2 * int64(g.N) * int64(g.O) * int64(g.OH) * int64(g.OW) * int64(g.C) * int64(g.KH) * int64(g.KW)
	}
	return c.Device.Conv2D(x, w, bias, o)
}

// Attention counts the two products Q·Kᵀ and P·V.
func (c *Counter) Attention(q, k, v *Tensor, o AttentionOpts) *Tensor {
	if q.Rank() == 3 && k.Rank() == 3 && v.Rank() == 3 {
		b, lq, lk := int64(q.Dim(0)), int64(q.Dim(1)), int64(k.Dim(1))
		c.FLOPs += 2 * b * lq * lk * (int64(q.Dim(2)) + int64(v.Dim(2)))
	}
	return c.Device.Attention(q, k, v, o)
}
