package gl

import (
	"fmt"
	"math"

	"github.com/stepwise/stepwise/gpu"
)

// Tile sizes and local sizes of the kernels (tuned on llvmpipe).
const (
	mmTile = 8 // matmul: outputs per invocation along M and N (fixed in matmul.comp)
	mmLX   = 8 // matmul local size x (N tiles)
	mmLY   = 8 // matmul local size y (M tiles)
	convOC = 8 // conv2d: output channels per invocation (fixed in conv2d.comp)
	convPX = 8 // conv2d: most output pixels per invocation (PX in conv2d.comp)
	// convLX is conv2d's local size: small, so that small outputs still
	// make several work groups for llvmpipe's threads (64 was no faster on
	// big ones), and one size, so that it adds no program variants.
	convLX = 16
	elemLX = 256 // element-wise kernels
	rowLX  = 64  // one-work-group-per-row kernels (norms, softmax)
	// serialRow is the longest row (elements) that the norms' SERIAL
	// variant handles, one invocation a row, in serialLX-wide work groups.
	serialRow = 1024
	serialLX  = 8
	attnLX    = 16 // attention local size (query tiles)
	attnQ     = 4  // attention: queries per invocation (fixed in attention.comp)
	maxDimsB  = 6  // binary.comp MAXR
	maxDimsC  = 8  // copy.comp MAXR
)

func (d *Device) shapeFail(op, why string, ts ...*gpu.Tensor) {
	var s []gpu.Shape
	for _, t := range ts {
		if t != nil {
			s = append(s, t.Shape)
		}
	}
	d.Fail(&gpu.ShapeError{Op: op, Shapes: s, Why: why})
}

// out makes an F32 output tensor for op.
func (d *Device) out(shape gpu.Shape) *gpu.Tensor { return d.alloc(shape, gpu.F32, nil) }

// shapeOf guesses an output shape for a placeholder when inputs are bad.
func shapeOf(t *gpu.Tensor) gpu.Shape {
	if t == nil {
		return gpu.Shape{1}
	}
	return t.Shape
}

// MatMul multiplies the last two dims of a and b (see gpu.Device).
func (d *Device) MatMul(a, b *gpu.Tensor, o gpu.MatMulOpts) *gpu.Tensor {
	ts := []*gpu.Tensor{a, b}
	if o.Bias != nil {
		ts = append(ts, o.Bias)
	}
	if o.Residual != nil {
		ts = append(ts, o.Residual)
	}
	if !d.check("MatMul", ts...) {
		return d.placeholder(shapeOf(a))
	}
	g, err := gpu.MatMulShape(a.Shape, b.Shape, o)
	if err != nil {
		d.shapeFail("MatMul", err.Error(), a, b)
		return d.placeholder(shapeOf(a))
	}
	if err := quantMatMulOK(a, b, o, g); err != nil {
		d.shapeFail("MatMul", err.Error(), a, b)
		return d.placeholder(shapeOf(a))
	}
	id := d.matMulKernel(a, b, o, g)
	l := d.newLaunch(id, [3]int{g.N, g.M, g.Batch})
	switch id {
	case kMatMulNaive: // F32 storage buffers
		l.ssbos = []*gpu.Tensor{a, b}
	case kMatMulQBlock, kMatMulQBlockTall:
		l.ins = []input{in4(a), {b, texU32}}
		l.defines = append(l.defines, loader4("A", a), "QUANT_"+b.DType.String())
	case kMatMulNN4, kMatMulNT4, kMatMulNN4Tall, kMatMulNT4Tall:
		l.ins = []input{in4(a), in4(b)}
		l.defines = append(l.defines, loader4("A", a), loader4("B", b))
	default:
		l.ins = []input{in(a), in(b)}
		l.defines = append(l.defines, loader("A", a), loader("B", b))
	}
	if o.Bias != nil {
		l.defines = append(l.defines, "HAS_BIAS")
		if id == kMatMulNaive {
			l.ssbos = append(l.ssbos, o.Bias)
		} else {
			l.ins = append(l.ins, in(o.Bias))
			l.defines = append(l.defines, loader("BIAS", o.Bias))
			if o.BiasRows {
				l.defines = append(l.defines, "BIAS_ROWS")
			}
		}
	}
	out := d.out(g.Out)
	l.out = out
	alpha := o.Alpha
	if alpha == 0 {
		alpha = 1
	}
	l.floats = map[string]float32{"alpha": alpha}
	// Element strides between batch matrices (0: one matrix for all), and
	// for the strided kernels along rows and columns. A block-quantized B
	// is always one matrix.
	l.ints = map[string]int{"M": g.M, "N": g.N, "K": g.K, "aBatch": 0}
	if g.BatchA > 1 {
		l.ints["aBatch"] = g.M * g.K
	}
	if id != kMatMulQBlock && id != kMatMulQBlockTall {
		l.ints["bBatch"] = 0
		if g.BatchB > 1 {
			l.ints["bBatch"] = g.K * g.N
		}
	}
	if id == kMatMulNaive || id == kMatMulStrided {
		l.ints["aRow"], l.ints["aCol"] = g.K, 1
		if o.TransA {
			l.ints["aRow"], l.ints["aCol"] = 1, g.M
		}
		l.ints["bRow"], l.ints["bCol"] = g.N, 1
		if o.TransB {
			l.ints["bRow"], l.ints["bCol"] = 1, g.K
		}
	}
	if id != kMatMulNaive {
		d.residual(l, 3, o.Residual) // store() of the tiled and strided variants
	}
	d.run("MatMul", l)
	return out
}

// matMulKernel picks the matmul variant: the naive one when a test or
// benchmark asks (F32 operands, no residual nor row bias), the block-quantized one for a Q8_0/Q4_0/
// Q4_K/Q5_K weight, the vector ones where rows are contiguous along K (and
// for A.B along N) in whole texels of four, else the strided one.
func (d *Device) matMulKernel(a, b *gpu.Tensor, o gpu.MatMulOpts, g gpu.MatMulGeom) kernelID {
	switch {
	case d.naiveMatMul && a.DType == gpu.F32 && b.DType == gpu.F32 && (o.Bias == nil || o.Bias.DType == gpu.F32) && o.Residual == nil && !o.BiasRows:
		return kMatMulNaive
	case b.DType.Block() > 1:
		return tallTiles(kMatMulQBlock, g.M, g.N, g.Batch)
	case b.DType.Quantized() || (!o.TransA && g.K%4 == 0 && (o.TransB || g.N%4 == 0) && !d.noVec4):
		if o.TransB {
			return tallTiles(kMatMulNT4, g.M, g.N, g.Batch)
		}
		return tallTiles(kMatMulNN4, g.M, g.N, g.Batch)
	}
	return kMatMulStrided
}

// Where 16-row blocks pay (llvmpipe, training paused, GFLOP/s 8-row ->
// 16-row): the U-Net's linear layers at 256x256 (2048x320x2560) 30.6-33.7 ->
// 37.6-38.8 and at 512x512 (8192x320x2560) 32.3-33.8 -> 38.7-39.4; CLIP's
// two prompts (154x768x768) 26.8-28.2 -> 24.3-26.5, so not below
// tallMinRows; Winograd's products unchanged within noise. And not where
// the grid would be too small to spread over llvmpipe's threads.
const (
	tallMinRows     = 512
	tallInvocations = 8 * mmLX * mmLY // eight work groups
)

// tallTiles returns the ROWS16 twin of the tiled matmul id (see matmul.comp)
// for an M x N product (batch matrices of it) of at least tallMinRows rows
// that keeps tallInvocations invocations with 16-row blocks, else id.
func tallTiles(id kernelID, m, n, batch int) kernelID {
	if m < tallMinRows || ceilDiv(m, 2*mmTile)*ceilDiv(n, mmTile)*batch < tallInvocations {
		return id
	}
	switch id {
	case kMatMulNN4:
		return kMatMulNN4Tall
	case kMatMulNT4:
		return kMatMulNT4Tall
	case kMatMulQBlock:
		return kMatMulQBlockTall
	}
	return id
}

// Conv2D is a direct convolution (see gpu.Device).
func (d *Device) Conv2D(x, w, bias *gpu.Tensor, o gpu.Conv2DOpts) *gpu.Tensor {
	ts := []*gpu.Tensor{x, w}
	if bias != nil {
		ts = append(ts, bias)
	}
	res := o.Residual
	if res != nil {
		ts = append(ts, res)
	}
	if !d.check("Conv2D", ts...) {
		return d.placeholder(shapeOf(x))
	}
	g, err := gpu.Conv2DShape(x.Shape, w.Shape, bias, o)
	if err != nil {
		d.shapeFail("Conv2D", err.Error(), x, w)
		return d.placeholder(shapeOf(x))
	}
	if d.usePointwise(g) {
		return d.convPointwise(x, w, bias, res, g)
	}
	if winogradApplies(g) && d.convAlgo == convAuto && !d.noWinograd {
		if d.tunedWinograd(x, w, bias, res, g) {
			return d.convWinograd(x, w, bias, res, g)
		}
	} else if d.useWinograd(g) {
		return d.convWinograd(x, w, bias, res, g)
	}
	if d.useIm2col(g) {
		return d.convIm2col(x, w, bias, res, g)
	}
	return d.convDirect(x, w, bias, res, g)
}

// im2colMaxBytes caps the columns convIm2col makes; bigger convolutions
// (a VAE encoder's first downsampling at 1024x1024) run direct.
const im2colMaxBytes = 48 << 20

// useIm2col reports whether the strided conv g runs as columns times the
// weights (convIm2col) rather than with conv2d.comp: on a fresh machine
// llvmpipe spends ~1.8 s of a core compiling each of conv2d.comp's
// unrolled stride-2 variants (a U-Net's downsamplers need one or two that
// nothing else uses) against ~0.1 s for im2col.comp, and the product
// reuses the 1x1 convolutions' program. Both need whole texels of four
// along K (C*KH*KW) and along the output pixels.
func (d *Device) useIm2col(g gpu.ConvGeom) bool {
	k, p := g.C*g.KH*g.KW, g.OH*g.OW
	return d.convAlgo != convDirect && (g.SH > 1 || g.SW > 1) && k%4 == 0 && p%4 == 0 && !d.noVec4 &&
		int64(g.N)*int64(k)*int64(p)*4 <= im2colMaxBytes
}

// convIm2col computes conv g as im2col.comp's columns [N, C*KH*KW, OH*OW]
// times the weights [O, C*KH*KW] (their own layout), as convPointwise
// multiplies a 1x1 convolution's.
func (d *Device) convIm2col(x, w, bias, res *gpu.Tensor, g gpu.ConvGeom) *gpu.Tensor {
	k, p := g.C*g.KH*g.KW, g.OH*g.OW
	col := d.out(gpu.Shape{g.N, k, p})
	n := g.N * k * p
	l := d.newLaunch(kIm2Col, [3]int{n}, loader("X", x))
	l.ins = []input{in(x)}
	l.out = col
	l.ints = map[string]int{"n": n, "C": g.C, "H": g.H, "W": g.W, "KH": g.KH, "KW": g.KW,
		"SH": g.SH, "SW": g.SW, "PH": g.PH, "PW": g.PW, "OH": g.OH, "OW": g.OW}
	d.run("Conv2D", l)
	out := d.weightsTimes(w, col, bias, res, g, k, p)
	d.Release(col)
	return out
}

// convDirect is conv2d.comp.
func (d *Device) convDirect(x, w, bias, res *gpu.Tensor, g gpu.ConvGeom) *gpu.Tensor {
	out := d.out(gpu.Shape{g.N, g.O, g.OH, g.OW})
	// C4 for kernels up to 3x3: a 4x4 one compiles for over 10 s on llvmpipe.
	c4 := g.C%4 == 0 && g.KH <= 4 && g.KW <= 4 && g.KH*g.KW <= 9 && g.SW <= 2 && !d.noVec4
	px, py := convTile(g.OW, g.OH, c4 && g.SH == 1)
	tilesW, tilesH := ceilDiv(g.OW, px), ceilDiv(g.OH, py)
	// Tiles of at most 4 pixels take two samples an invocation.
	id, nt := kConv2D, 1
	if c4 && px*py <= 4 && g.N > 1 && !d.noFoldSamples {
		id, nt = kConv2DPairs, 2
	}
	total := ceilDiv(g.N, nt) * ceilDiv(g.O, convOC) * tilesH * tilesW
	l := d.newLaunch(id, [3]int{total}, fmt.Sprintf("KH=%d", g.KH), fmt.Sprintf("KW=%d", g.KW), fmt.Sprintf("SW=%d", g.SW),
		fmt.Sprintf("PX=%d", px), fmt.Sprintf("PY=%d", py), loader("X", x))
	l.ins = []input{in(x), in(w)}
	l.out = out
	l.ints = map[string]int{"C": g.C, "H": g.H, "W": g.W, "O": g.O, "OH": g.OH, "OW": g.OW,
		"SH": g.SH, "PH": g.PH, "PW": g.PW, "tilesW": tilesW, "tilesH": tilesH, "NB": g.N}
	if c4 {
		l.ins[1] = in4(w)
		l.defines = append(l.defines, "C4", loader4("W", w))
	} else {
		l.defines = append(l.defines, loader("W", w))
	}
	if bias != nil {
		l.ins = append(l.ins, in(bias))
		l.defines = append(l.defines, "HAS_BIAS", loader("BIAS", bias))
	}
	d.residual(l, 3, res)
	d.run("Conv2D", l)
	return out
}

// residual binds a conv's or a matmul's residual to texture unit `unit`
// for the kernel's RES_LOADER (the rows that call it have HAS_RES) and sets
// its resMode: 1 for a
// residual of the output's shape, 2 for one value a plane of the output (a
// conv's [N, O, 1, 1] residual for an output of more than one pixel; see
// gpu.Conv2DOpts), 0 without one, when the device's stand-in is bound
// instead (never read), so that products and convolutions with and without
// a residual share one program: on llvmpipe each program costs seconds of
// compiling on a fresh machine and milliseconds to load from the caches.
// The stand-in is an F32 buffer of the size class of the others, so the
// driver's variant (keyed by the bound textures' formats) is the same.
func (d *Device) residual(l *launch, unit int, res *gpu.Tensor) {
	for len(l.ins) < unit {
		l.ins = append(l.ins, input{})
	}
	mode := 1
	switch {
	case res == nil:
		res, mode = d.standIn, 0
	case res.Numel() != l.out.Numel():
		mode = 2
	}
	l.ins = append(l.ins, in(res))
	l.defines = append(l.defines, loader("RES", res)) // HAS_RES is the row's
	if l.ints == nil {
		l.ints = map[string]int{}
	}
	l.ints["resMode"] = mode
}

// convTile is conv2d.comp's output tile per invocation, PX pixels of PY
// rows: PX the smallest of 1, 2, 4, 8 that covers the width, so narrow maps
// compute no dead pixels, and when that is under 8 and rows may be stacked
// (rows2), PY rows (1, 2 or 4, PX*PY <= 8) so each weight fetched serves more
// pixels.
func convTile(ow, oh int, rows2 bool) (px, py int) {
	px, py = 1, 1
	for px < convPX && px < ow {
		px *= 2
	}
	for rows2 && py < 4 && px*py < convPX && py < oh {
		py *= 2
	}
	return px, py
}

// GroupNorm normalises groups of channels over all positions (see
// gpu.Device). gamma and beta may be nil (1 and 0).
func (d *Device) GroupNorm(x, gamma, beta *gpu.Tensor, groups int, eps float32) *gpu.Tensor {
	return d.groupNorm("GroupNorm", x, gamma, beta, groups, eps, false)
}

// GroupNormSiLU is SiLU(GroupNorm(...)) in the same kernels (see gpu.Device).
func (d *Device) GroupNormSiLU(x, gamma, beta *gpu.Tensor, groups int, eps float32) *gpu.Tensor {
	return d.groupNorm("GroupNormSiLU", x, gamma, beta, groups, eps, true)
}

// splitNormRow is the shortest row (elements of one sample and group) that
// GroupNorm splits over three kernels: per-chunk statistics, their merge,
// and an element-wise apply, all with every invocation busy, instead of one
// work group per row walking it three times (the VAE's 128 channels at
// 256x256 in 32 groups: 32 work groups for two threads, rows of 262144).
const splitNormRow = 16384

// normChunk is groupnorm_stats.comp's chunk (elements an invocation sums).
const normChunk = 1024

func (d *Device) groupNorm(op string, x, gamma, beta *gpu.Tensor, groups int, eps float32, silu bool) *gpu.Tensor {
	if !d.check(op, x) || !d.checkOptional(op, gamma, beta) {
		return d.placeholder(shapeOf(x))
	}
	if x.Rank() < 2 || groups <= 0 || x.Dim(1)%groups != 0 ||
		(gamma != nil && gamma.Numel() != x.Dim(1)) || (beta != nil && beta.Numel() != x.Dim(1)) {
		d.shapeFail(op, fmt.Sprintf("want x [N, C, ...] with C divisible by %d groups and gamma, beta [C]", groups), x, gamma, beta)
		return d.placeholder(x.Shape)
	}
	n, c := x.Dim(0), x.Dim(1)
	s := x.Numel() / (n * c)
	rows, count := n*groups, x.Numel()/(n*groups)
	var act []string
	if silu {
		act = []string{"SILU"}
	}
	if s%4 == 0 && count >= splitNormRow {
		return d.groupNormSplit(op, x, gamma, beta, groups, eps, act)
	}
	out := d.out(x.Shape)
	l := d.newLaunch(rowKernel(count, kGroupNorm, kGroupNormSerial), [3]int{rows}, append([]string{loader("X", x)}, act...)...)
	l.ins = []input{in(x)}
	l.out = out
	l.ints = map[string]int{"C": c, "S": s, "G": groups, "rows": rows}
	l.floats = map[string]float32{"eps": eps}
	affine(l, gamma, beta)
	d.run(op, l)
	return out
}

// groupNormSplit is GroupNorm over groupnorm_stats.comp, groupnorm_merge.comp
// and groupnorm_apply.comp (rows long enough to fill the device by chunks).
func (d *Device) groupNormSplit(op string, x, gamma, beta *gpu.Tensor, groups int, eps float32, act []string) *gpu.Tensor {
	n, c := x.Dim(0), x.Dim(1)
	s := x.Numel() / (n * c)
	rows, count := n*groups, x.Numel()/(n*groups)
	chunks := ceilDiv(count, normChunk)
	part := d.alloc(gpu.Shape{rows * chunks * 3}, gpu.F32, nil)
	stats := d.newLaunch(kGroupNormStats, [3]int{rows * chunks}, loader4("X", x))
	stats.ins = []input{in4(x)}
	stats.out = part
	stats.ints = map[string]int{"count": count, "chunks": chunks, "rows": rows}
	d.run(op, stats)
	moments := d.alloc(gpu.Shape{rows * 2}, gpu.F32, nil)
	merge := d.newLaunch(kGroupNormMerge, [3]int{rows}, loader("P", part))
	merge.ins = []input{in(part)}
	merge.out = moments
	merge.ints = map[string]int{"chunks": chunks, "rows": rows}
	merge.floats = map[string]float32{"eps": eps}
	d.run(op, merge)
	d.Release(part)
	out := d.out(x.Shape)
	n4 := x.Numel() / 4
	l := d.newLaunch(kGroupNormApply, [3]int{n4}, append([]string{loader4("X", x), loader("R", moments)}, act...)...)
	l.ins = []input{in4(x), in(moments)}
	l.out = out
	l.ints = map[string]int{"C": c, "S": s, "cpg": c / groups, "n4": n4}
	affine(l, gamma, beta)
	d.run(op, l)
	d.Release(moments)
	return out
}

// rowKernel picks a norm's kernel for rows of n elements: one invocation
// per row (serial) when rows are short, so that a row costs no barriers and
// many rows share a SIMD vector, else one work group per row (wide).
func rowKernel(n int, wide, serial kernelID) kernelID {
	if n <= serialRow {
		return serial
	}
	return wide
}

// affine adds the optional gamma and beta of a norm on the next two texture
// units.
func affine(l *launch, gamma, beta *gpu.Tensor) {
	u := len(l.ins)
	l.ins = append(l.ins, input{}, input{})
	if gamma != nil {
		l.ins[u] = in(gamma)
		l.defines = append(l.defines, "HAS_G", loader("G", gamma))
	}
	if beta != nil {
		l.ins[u+1] = in(beta)
		l.defines = append(l.defines, "HAS_B", loader("B", beta))
	}
}

// checkOptional is check for operands that may be nil.
func (d *Device) checkOptional(op string, ts ...*gpu.Tensor) bool {
	for _, t := range ts {
		if t != nil && !d.check(op, t) {
			return false
		}
	}
	return true
}

// LayerNorm normalises over the last dim (see gpu.Device). gamma and beta
// may be nil (1 and 0). It is groupnorm.comp's LAYERNORM variant: one group
// a row.
func (d *Device) LayerNorm(x, gamma, beta *gpu.Tensor, eps float32) *gpu.Tensor {
	if !d.check("LayerNorm", x) || !d.checkOptional("LayerNorm", gamma, beta) {
		return d.placeholder(shapeOf(x))
	}
	c := x.Dim(-1)
	if (gamma != nil && gamma.Numel() != c) || (beta != nil && beta.Numel() != c) {
		d.shapeFail("LayerNorm", "gamma and beta must have the last dim's size", x, gamma, beta)
		return d.placeholder(x.Shape)
	}
	out := d.out(x.Shape)
	rows := x.Numel() / c
	l := d.newLaunch(rowKernel(c, kLayerNorm, kLayerNormSerial), [3]int{rows}, loader("X", x))
	l.ins = []input{in(x)}
	l.out = out
	l.ints = map[string]int{"C": c, "rows": rows}
	l.floats = map[string]float32{"eps": eps}
	affine(l, gamma, beta)
	d.run("LayerNorm", l)
	return out
}

// RMSNorm normalises over the last dim by the root mean square (see
// gpu.Device). gamma may be nil (1).
func (d *Device) RMSNorm(x, gamma *gpu.Tensor, eps float32) *gpu.Tensor {
	if !d.check("RMSNorm", x) || !d.checkOptional("RMSNorm", gamma) {
		return d.placeholder(shapeOf(x))
	}
	c := x.Dim(-1)
	if gamma != nil && gamma.Numel() != c {
		d.shapeFail("RMSNorm", "gamma must have the last dim's size", x, gamma)
		return d.placeholder(x.Shape)
	}
	out := d.out(x.Shape)
	rows := x.Numel() / c
	l := d.newLaunch(rowKernel(c, kRMSNorm, kRMSNormSerial), [3]int{rows}, loader("X", x))
	l.ins = []input{in(x)}
	l.out = out
	l.ints = map[string]int{"C": c, "rows": rows}
	l.floats = map[string]float32{"eps": eps}
	if gamma != nil {
		l.ins = append(l.ins, in(gamma))
		l.defines = append(l.defines, "HAS_G", loader("G", gamma))
	}
	d.run("RMSNorm", l)
	return out
}

// Softmax over the last dim.
func (d *Device) Softmax(x *gpu.Tensor) *gpu.Tensor {
	if !d.check("Softmax", x) {
		return d.placeholder(shapeOf(x))
	}
	c := x.Dim(-1)
	out := d.out(x.Shape)
	rows := x.Numel() / c
	l := d.newLaunch(kSoftmax, [3]int{rows}, loader("X", x))
	l.ins = []input{in(x)}
	l.out = out
	l.ints = map[string]int{"C": c, "rows": rows}
	d.run("Softmax", l)
	return out
}

// Attention is flash-style multi-head attention (see gpu.Device).
func (d *Device) Attention(q, k, v *gpu.Tensor, o gpu.AttentionOpts) *gpu.Tensor {
	if !d.check("Attention", q, k, v) {
		return d.placeholder(shapeOf(q))
	}
	h := o.Heads
	if q.Rank() != 3 || k.Rank() != 3 || v.Rank() != 3 || h <= 0 ||
		q.Dim(0) != k.Dim(0) || k.Dim(0) != v.Dim(0) || k.Dim(1) != v.Dim(1) ||
		q.Dim(2) != k.Dim(2) || q.Dim(2)%h != 0 || v.Dim(2)%h != 0 {
		d.shapeFail("Attention", fmt.Sprintf("want q [B, Lq, H*D], k [B, Lk, H*D], v [B, Lk, H*Dv] with H=%d", h), q, k, v)
		return d.placeholder(shapeOf(q))
	}
	b, lq, lk := q.Dim(0), q.Dim(1), k.Dim(1)
	dh, dv := q.Dim(2)/h, v.Dim(2)/h
	scale := o.Scale
	if scale == 0 {
		scale = float32(1 / math.Sqrt(float64(dh)))
	}
	if d.useUnfusedAttention(h, dh, dv) {
		return d.attentionUnfused(q, k, v, scale)
	}
	defs := []string{fmt.Sprintf("D=%d", dh), fmt.Sprintf("DV=%d", dv), loader("Q", q)}
	ins := []input{in(q), in(k), in(v)}
	unroll := d.attnUnroll / 4
	if dh%4 == 0 && dv%4 == 0 && !d.noVec4 {
		defs = append(defs, "VEC4", loader4("K", k), loader4("V", v))
		ins = []input{in(q), in4(k), in4(v)}
		unroll = d.attnUnroll
	} else {
		defs = append(defs, loader("K", k), loader("V", v))
	}
	if o.Causal {
		defs = append(defs, "CAUSAL")
	}
	if dh <= unroll && dv <= unroll {
		defs = append(defs, "UNROLL")
	}
	out := d.out(gpu.Shape{b, lq, h * dv})
	l := d.newLaunch(kAttention, [3]int{lq, h, b}, defs...)
	l.ins = ins
	l.out = out
	l.ints = map[string]int{"Lq": lq, "Lk": lk, "H": h}
	l.floats = map[string]float32{"scale": scale}
	d.run("Attention", l)
	return out
}

// unfusedHeadDim is the smallest head dim for which single-head attention
// runs as two matrix products around a softmax: attention.comp keeps a
// query's head-dim accumulators in registers, which a head dim of 512 (the
// VAE's mid block) spills.
const unfusedHeadDim = 256

// unfusedScores caps the bytes of the score matrix of one query chunk
// (Device.attnScoreBytes).
const unfusedScores = 64 << 20

func (d *Device) useUnfusedAttention(h, dh, dv int) bool {
	return d.attnUnfused && h == 1 && dh >= unfusedHeadDim && dh%4 == 0 && dv%4 == 0 && !d.noVec4
}

// attentionUnfused is single-head attention as softmax(scale q·k^T)·v with
// the vector matmuls, in chunks of queries whose [chunk, Lk] scores fit
// unfusedScores (and one storage block).
func (d *Device) attentionUnfused(q, k, v *gpu.Tensor, scale float32) *gpu.Tensor {
	lq, lk := q.Dim(1), k.Dim(1)
	chunk := max(1, int(min(d.attnScoreBytes, d.maxBlock)/(4*int64(lk)*int64(q.Dim(0)))))
	if chunk >= lq {
		s := d.MatMul(q, k, gpu.MatMulOpts{TransB: true, Alpha: scale})
		p := d.Softmax(s)
		d.Release(s)
		out := d.MatMul(p, v, gpu.MatMulOpts{})
		d.Release(p)
		return out
	}
	var parts []*gpu.Tensor
	for q0 := 0; q0 < lq; q0 += chunk {
		qc := d.Slice(q, 1, q0, min(q0+chunk, lq))
		s := d.MatMul(qc, k, gpu.MatMulOpts{TransB: true, Alpha: scale})
		d.Release(qc)
		p := d.Softmax(s)
		d.Release(s)
		parts = append(parts, d.MatMul(p, v, gpu.MatMulOpts{}))
		d.Release(p)
	}
	out := d.Concat(1, parts...)
	for _, t := range parts {
		d.Release(t)
	}
	return out
}

// unary runs one of unary.comp's element-wise functions.
func (d *Device) unary(op string, id kernelID, x *gpu.Tensor, s, b float32) *gpu.Tensor {
	if !d.check(op, x) {
		return d.placeholder(shapeOf(x))
	}
	out := d.out(x.Shape)
	n := x.Numel()
	l := d.newLaunch(id, [3]int{n}, loader("X", x))
	l.ins = []input{in(x)}
	l.out = out
	l.ints = map[string]int{"n": n}
	l.floats = map[string]float32{"s": s, "b": b}
	d.run(op, l)
	return out
}

// SiLU is x * sigmoid(x).
func (d *Device) SiLU(x *gpu.Tensor) *gpu.Tensor { return d.unary("SiLU", kSiLU, x, 0, 0) }

// GELU is the erf form.
func (d *Device) GELU(x *gpu.Tensor) *gpu.Tensor { return d.unary("GELU", kGELU, x, 0, 0) }

// GELUTanh is the tanh approximation of GELU.
func (d *Device) GELUTanh(x *gpu.Tensor) *gpu.Tensor {
	return d.unary("GELUTanh", kGELUTanh, x, 0, 0)
}

// QuickGELU is x * sigmoid(1.702 x).
func (d *Device) QuickGELU(x *gpu.Tensor) *gpu.Tensor {
	return d.unary("QuickGELU", kQuickGELU, x, 0, 0)
}

// ReLU returns max(x, 0).
func (d *Device) ReLU(x *gpu.Tensor) *gpu.Tensor { return d.unary("ReLU", kReLU, x, 0, 0) }

// SoftClamp returns s * tanh(x / s).
func (d *Device) SoftClamp(x *gpu.Tensor, s float32) *gpu.Tensor {
	return d.unary("SoftClamp", kSoftClamp, x, s, 0)
}

// Scale returns x*s + b.
func (d *Device) Scale(x *gpu.Tensor, s, b float32) *gpu.Tensor {
	return d.unary("Scale", kScale, x, s, b)
}

// GEGLU returns a * GELU(g) for the halves (a, g) of the last dim.
func (d *Device) GEGLU(x *gpu.Tensor) *gpu.Tensor {
	if !d.check("GEGLU", x) {
		return d.placeholder(shapeOf(x))
	}
	c := x.Dim(-1)
	if c%2 != 0 {
		d.shapeFail("GEGLU", "last dim must be even", x)
		return d.placeholder(x.Shape)
	}
	s := x.Shape.Clone()
	s[len(s)-1] = c / 2
	out := d.out(s)
	n := out.Numel()
	l := d.newLaunch(kGEGLU, [3]int{n}, loader("X", x))
	l.ins = []input{in(x)}
	l.out = out
	l.ints = map[string]int{"n": n, "halfC": c / 2}
	d.run("GEGLU", l)
	return out
}

// Add is a + b with broadcasting.
func (d *Device) Add(a, b *gpu.Tensor) *gpu.Tensor { return d.binary("Add", kAdd, a, b) }

// Mul is a * b with broadcasting.
func (d *Device) Mul(a, b *gpu.Tensor) *gpu.Tensor { return d.binary("Mul", kMul, a, b) }

func (d *Device) binary(op string, id kernelID, a, b *gpu.Tensor) *gpu.Tensor {
	if !d.check(op, a, b) {
		return d.placeholder(shapeOf(a))
	}
	shape, err := gpu.BroadcastShape(a.Shape, b.Shape)
	if err != nil {
		d.shapeFail(op, err.Error(), a, b)
		return d.placeholder(a.Shape)
	}
	out := d.out(shape)
	n := out.Numel()
	l := d.newLaunch(id, [3]int{n}, loader("A", a), loader("B", b))
	l.ins = []input{in(a), in(b)}
	l.out = out
	l.ints = map[string]int{"n": n}
	if a.Shape.Equal(shape) && b.Shape.Equal(shape) {
		l.defines = append(l.defines, "SAME")
	} else {
		dims, strides := collapse(shape, broadcastStrides(a.Shape, shape), broadcastStrides(b.Shape, shape))
		if len(dims) > maxDimsB {
			d.shapeFail(op, fmt.Sprintf("broadcast pattern needs more than %d dims", maxDimsB), a, b)
			return out
		}
		l.ints["rank"] = len(dims)
		l.arrays = map[string][]int32{"shape": i32(dims), "sa": i32(strides[0]), "sb": i32(strides[1])}
	}
	d.run(op, l)
	return out
}

// contiguous returns row-major element strides of s.
func contiguous(s gpu.Shape) []int {
	st := make([]int, len(s))
	acc := 1
	for i := len(s) - 1; i >= 0; i-- {
		st[i] = acc
		acc *= s[i]
	}
	return st
}

// broadcastStrides returns the strides with which an operand of shape s is
// read at each index of out (0 along broadcast dims).
func broadcastStrides(s, out gpu.Shape) []int {
	cs := contiguous(s)
	st := make([]int, len(out))
	off := len(out) - len(s)
	for i := range s {
		if s[i] != 1 {
			st[off+i] = cs[i]
		}
	}
	return st
}

// collapse drops size-1 dims and merges neighbours that every stride list
// walks contiguously, so kernels do fewer divisions.
func collapse(shape []int, strides ...[]int) ([]int, [][]int) {
	var dims []int
	ss := make([][]int, len(strides))
	for i, n := range shape {
		if n == 1 {
			continue
		}
		if k := len(dims) - 1; k >= 0 {
			merge := true
			for j := range strides {
				if ss[j][k] != strides[j][i]*n {
					merge = false
				}
			}
			if merge {
				dims[k] *= n
				for j := range strides {
					ss[j][k] = strides[j][i]
				}
				continue
			}
		}
		dims = append(dims, n)
		for j := range strides {
			ss[j] = append(ss[j], strides[j][i])
		}
	}
	if len(dims) == 0 {
		dims = []int{1}
		for j := range ss {
			ss[j] = []int{0}
		}
	}
	return dims, ss
}

func i32(v []int) []int32 {
	r := make([]int32, len(v))
	for i, x := range v {
		r[i] = int32(x)
	}
	return r
}

// copyRegion queues a strided copy of a region of src into dst (copy.comp).
func (d *Device) copyRegion(op string, src, dst *gpu.Tensor, shape, ss, ds []int, sOff, dOff int) {
	dims, st := collapse(shape, ss, ds)
	if len(dims) > maxDimsC {
		d.shapeFail(op, fmt.Sprintf("copy pattern needs more than %d dims", maxDimsC), src)
		return
	}
	n := gpu.Shape(dims).Numel()
	l := d.newLaunch(kCopy, [3]int{n}, loader("X", src))
	l.ins = []input{in(src)}
	l.out = dst
	l.ints = map[string]int{"n": n, "rank": len(dims), "sOff": sOff, "dOff": dOff}
	l.arrays = map[string][]int32{"shape": i32(dims), "ss": i32(st[0]), "ds": i32(st[1])}
	d.run(op, l)
}

// Upsample2x is nearest-neighbour 2x upsampling of [N, C, H, W].
func (d *Device) Upsample2x(x *gpu.Tensor) *gpu.Tensor {
	if !d.check("Upsample2x", x) {
		return d.placeholder(shapeOf(x))
	}
	if x.Rank() != 4 {
		d.shapeFail("Upsample2x", "want [N, C, H, W]", x)
		return d.placeholder(x.Shape)
	}
	h, w := x.Dim(2), x.Dim(3)
	out := d.out(gpu.Shape{x.Dim(0), x.Dim(1), 2 * h, 2 * w})
	n := out.Numel()
	l := d.newLaunch(kUpsample2x, [3]int{n}, loader("X", x))
	l.ins = []input{in(x)}
	l.out = out
	l.ints = map[string]int{"H": h, "W": w, "n": n}
	d.run("Upsample2x", l)
	return out
}

func normDim(dim, rank int) (int, bool) {
	if dim < 0 {
		dim += rank
	}
	return dim, dim >= 0 && dim < rank
}

// Concat joins tensors along dim.
func (d *Device) Concat(dim int, ts ...*gpu.Tensor) *gpu.Tensor {
	if len(ts) == 0 {
		d.Fail(&gpu.ShapeError{Op: "Concat", Why: "no tensors"})
		return d.placeholder(gpu.Shape{1})
	}
	if !d.check("Concat", ts...) {
		return d.placeholder(shapeOf(ts[0]))
	}
	dm, ok := normDim(dim, ts[0].Rank())
	if !ok {
		d.shapeFail("Concat", fmt.Sprintf("dim %d out of range", dim), ts...)
		return d.placeholder(ts[0].Shape)
	}
	shape := ts[0].Shape.Clone()
	shape[dm] = 0
	for _, t := range ts {
		if t.Rank() != len(shape) {
			d.shapeFail("Concat", "ranks differ", ts...)
			return d.placeholder(ts[0].Shape)
		}
		for i := range shape {
			if i != dm && t.Shape[i] != shape[i] {
				d.shapeFail("Concat", fmt.Sprintf("dim %d differs", i), ts...)
				return d.placeholder(ts[0].Shape)
			}
		}
		shape[dm] += t.Shape[dm]
	}
	out := d.out(shape)
	if len(ts) == 2 {
		d.concat2(ts[0], ts[1], out, dm)
		return out
	}
	ds := contiguous(shape)
	off := 0
	for _, t := range ts {
		d.copyRegion("Concat", t, out, t.Shape, contiguous(t.Shape), ds, 0, off*ds[dm])
		off += t.Shape[dm]
	}
	return out
}

// concat2 is Concat of two tensors in one dispatch (concat2.comp): a
// U-Net's up path joins every skip connection this way.
func (d *Device) concat2(a, b, out *gpu.Tensor, dim int) {
	inner := 1
	for _, s := range out.Shape[dim+1:] {
		inner *= s
	}
	n := out.Numel()
	l := d.newLaunch(kConcat2, [3]int{n}, loader("A", a), loader("B", b))
	l.ins = []input{in(a), in(b)}
	l.out = out
	l.ints = map[string]int{"n": n, "ca": a.Shape[dim] * inner, "cb": b.Shape[dim] * inner}
	d.run("Concat", l)
}

// Slice keeps indices [start, end) of dim.
func (d *Device) Slice(x *gpu.Tensor, dim, start, end int) *gpu.Tensor {
	if !d.check("Slice", x) {
		return d.placeholder(shapeOf(x))
	}
	dm, ok := normDim(dim, x.Rank())
	if !ok || start < 0 || end > x.Shape[dm] || start >= end {
		d.shapeFail("Slice", fmt.Sprintf("bad range dim %d [%d, %d)", dim, start, end), x)
		return d.placeholder(x.Shape)
	}
	shape := x.Shape.Clone()
	shape[dm] = end - start
	out := d.out(shape)
	ss := contiguous(x.Shape)
	d.copyRegion("Slice", x, out, shape, ss, contiguous(shape), start*ss[dm], 0)
	return out
}

// Permute reorders dims into a new contiguous tensor.
func (d *Device) Permute(x *gpu.Tensor, perm ...int) *gpu.Tensor {
	if !d.check("Permute", x) {
		return d.placeholder(shapeOf(x))
	}
	if len(perm) != x.Rank() {
		d.shapeFail("Permute", fmt.Sprintf("permutation %v has the wrong length", perm), x)
		return d.placeholder(x.Shape)
	}
	seen := make([]bool, len(perm))
	shape := make(gpu.Shape, len(perm))
	ss := make([]int, len(perm))
	xs := contiguous(x.Shape)
	for i, p := range perm {
		if p < 0 || p >= len(perm) || seen[p] {
			d.shapeFail("Permute", fmt.Sprintf("%v is not a permutation", perm), x)
			return d.placeholder(x.Shape)
		}
		seen[p] = true
		shape[i] = x.Shape[p]
		ss[i] = xs[p]
	}
	out := d.out(shape)
	d.copyRegion("Permute", x, out, shape, ss, contiguous(shape), 0, 0)
	return out
}

// Cast converts any storage type to F32.
func (d *Device) Cast(x *gpu.Tensor) *gpu.Tensor {
	if !d.check("Cast", x) {
		return d.placeholder(shapeOf(x))
	}
	out := d.out(x.Shape)
	n := x.Numel()
	d.copyRegion("Cast", x, out, []int{n}, []int{1}, []int{1}, 0, 0)
	return out
}

// Embedding gathers rows of table [V, C] -> [len(ids), C].
func (d *Device) Embedding(table *gpu.Tensor, ids []int32) *gpu.Tensor {
	if !d.check("Embedding", table) {
		return d.placeholder(gpu.Shape{max(len(ids), 1), 1})
	}
	if table.Rank() != 2 || len(ids) == 0 {
		d.shapeFail("Embedding", fmt.Sprintf("want table [V, C] and at least one id, got %d ids", len(ids)), table)
		return d.placeholder(gpu.Shape{max(len(ids), 1), 1})
	}
	v, c := table.Dim(0), table.Dim(1)
	raw := make([]byte, 4*len(ids))
	for i, id := range ids {
		if id < 0 || int(id) >= v {
			d.shapeFail("Embedding", fmt.Sprintf("id %d at %d outside [0, %d)", id, i, v), table)
			return d.placeholder(gpu.Shape{len(ids), c})
		}
		raw[4*i], raw[4*i+1], raw[4*i+2], raw[4*i+3] = byte(id), byte(id>>8), byte(id>>16), byte(id>>24)
	}
	idt := d.alloc(gpu.Shape{len(ids)}, gpu.F32, raw) // int32 bits, read through an R32I view
	out := d.out(gpu.Shape{len(ids), c})
	n := out.Numel()
	l := d.newLaunch(kEmbedding, [3]int{n}, loader("X", table))
	l.ins = []input{in(table), {idt, texI32}}
	l.out = out
	l.ints = map[string]int{"n": n, "C": c}
	d.run("Embedding", l)
	d.Release(idt)
	return out
}

// TimestepEmbedding is diffusers' sinusoidal embedding (see gpu.Device). It is
// a few hundred values, computed on the host and uploaded.
func (d *Device) TimestepEmbedding(t []float32, dim int, flipSinToCos bool, shift float32, maxPeriod float32) *gpu.Tensor {
	half := dim / 2
	if len(t) == 0 || half < 1 || maxPeriod <= 0 || float32(half)-shift == 0 {
		d.Fail(&gpu.ShapeError{Op: "TimestepEmbedding", Why: fmt.Sprintf("%d timesteps, dim %d, shift %v", len(t), dim, shift)})
		return d.placeholder(gpu.Shape{max(len(t), 1), max(dim, 1)})
	}
	data := make([]float32, len(t)*dim)
	for b, tv := range t {
		row := data[b*dim : (b+1)*dim]
		for i := 0; i < half; i++ {
			// float32 steps where diffusers computes in float32, so the
			// rounding of large arguments matches.
			expo := float32(-math.Log(float64(maxPeriod))) * float32(i) / (float32(half) - shift)
			arg := float64(tv * float32(math.Exp(float64(expo))))
			s, c := math.Sin(arg), math.Cos(arg)
			if flipSinToCos {
				s, c = c, s
			}
			row[i], row[half+i] = float32(s), float32(c)
		}
	}
	return d.Upload(data, len(t), dim)
}

var _ gpu.Device = (*Device)(nil)
