package gl

import (
	"fmt"

	"github.com/stepwise/stepwise/gpu"
)

// Quantized weights (Q8_0, Q4_0, Q4_K, Q5_K, F8_E4M3, F8_E5M2) stay packed
// on the device and are dequantized inside the matmul kernels by the
// readers of shaders/quant.glsl: the block formats in matmul.comp's
// MM_QBLOCK variant (a scale pair per 32 weights), fp8 through the MM_NT4
// variant's vector loader. They may only be the weight of a linear layer:
// the B operand of a MatMul with TransB, 2-D (shared by every batch), its
// inner dimension K a whole number of blocks. Every other op refuses them (the
// loaders widen such weights to F16 at load).

// quantMatMulOK says why a MatMul cannot take its quantized operands, or
// returns nil (also when nothing is quantized).
func quantMatMulOK(a, b *gpu.Tensor, o gpu.MatMulOpts, g gpu.MatMulGeom) error {
	switch {
	case a.DType.Quantized():
		return fmt.Errorf("A is %v: only the weight operand B may be quantized", a.DType)
	case o.Bias != nil && o.Bias.DType.Quantized():
		return fmt.Errorf("bias is %v: biases are kept in F16/F32", o.Bias.DType)
	case !b.DType.Quantized():
		return nil
	case !o.TransB || o.TransA || b.Rank() != 2:
		return fmt.Errorf("B is %v: a quantized weight must be a 2-D [N, K] linear weight used with TransB", b.DType)
	case g.K%b.DType.Block() != 0 || g.K%4 != 0:
		return fmt.Errorf("B is %v with K=%d: K must be a multiple of its %d-element block", b.DType, g.K, b.DType.Block())
	}
	return nil
}

// quantRefused records an error when one of ts is quantized: op cannot
// read packed weights.
func (d *Device) quantRefused(op string, ts []*gpu.Tensor) bool {
	for i, t := range ts {
		if t != nil && t.DType.Quantized() {
			d.Fail(fmt.Errorf("gl: %s: operand %d is %v: quantized weights only feed MatMul as a linear weight (widen it to F16 at load)", op, i, t.DType))
			return true
		}
	}
	return false
}
