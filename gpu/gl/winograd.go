package gl

import (
	"github.com/stepwise/stepwise/gpu"
)

// Convolution algorithms (Device.convAlgo).
const (
	convAuto     = iota // winogradFits decides
	convDirect          // conv2d.comp always
	convWinograd        // Winograd wherever it applies (tests)
)

// winogradChunk caps the bytes of each of a Winograd convolution's two
// intermediate tensors (36 transformed values per tile and channel, or per
// weight); bigger images run in chunks of tiles, wide layers in chunks of
// output channels.
const winogradChunk = 64 << 20

// winogradMinTiles is the fewest 4x4 output tiles (over the batch) for which
// Winograd beats conv2d.comp on llvmpipe: below it the per-call weight
// transform (36 floats per weight triple) and the thin matrix products cost
// more than the 4x fewer multiplications save. (Measured with
// BenchmarkConvWinograd*: at 16x16 outputs, 16 tiles, direct wins.)
const winogradMinTiles = 64

// Winograd's rounding error is larger than the direct form's: on SD's widest
// VAE convolution (512 channels) the worst output is off by about 2e-4 x
// (1 + |y|) against about 2e-6 (see TestLargeSuite); on the sd15-mini VAE
// golden 1.3e-5 against 6e-6. STEPWISE_GL_WINOGRAD=off keeps every
// convolution direct, for comparisons that want the last digits.

// winogradApplies reports whether conv g can run as Winograd F(4x4, 3x3):
// 3x3 kernel, stride 1, and channel counts the vector matmul accepts.
func winogradApplies(g gpu.ConvGeom) bool {
	return g.KH == 3 && g.KW == 3 && g.SH == 1 && g.SW == 1 && g.C%4 == 0 && g.O%4 == 0
}

// useWinograd picks the algorithm for conv g without timing (see
// tunedWinograd for the default).
func (d *Device) useWinograd(g gpu.ConvGeom) bool {
	if !winogradApplies(g) || d.convAlgo == convDirect || (d.noWinograd && d.convAlgo == convAuto) {
		return false
	}
	return d.convAlgo == convWinograd || g.N*ceilDiv(g.OH, 4)*ceilDiv(g.OW, 4) >= winogradMinTiles
}

// convWinograd computes conv g as Winograd F(4x4, 3x3) (Lavin & Gray; points
// 0, +-1, +-1/2, infinity): the
// weights and each 6x6 input patch are transformed to 36 values, the conv
// becomes 36 independent [tiles, C] x [C, O] matrix products (the vector
// matmul kernel), and each tile's 36 products transform back to a 4x4 output
// block: 2.25x fewer multiplications per output than the 3x3 direct form,
// in kernels that vectorise well. Tiles go in chunks that keep the
// intermediates under winogradChunk bytes.
func (d *Device) convWinograd(x, w, bias, res *gpu.Tensor, g gpu.ConvGeom) *gpu.Tensor {
	out := d.out(gpu.Shape{g.N, g.O, g.OH, g.OW})
	tilesH, tilesW := ceilDiv(g.OH, 4), ceilDiv(g.OW, 4)
	tiles := g.N * tilesH * tilesW
	limit := min(d.winogradChunk, d.maxBlock)
	// Output channels in chunks of oc (a multiple of 4) whose transformed
	// weights fit the limit; then tiles in chunks of tc.
	oc := min(g.O, max(4, int(limit/(36*4*int64(g.C)))/4*4))
	for o0 := 0; o0 < g.O; o0 += oc {
		ocn := min(oc, g.O-o0)
		u := d.alloc(gpu.Shape{36, g.C, ocn}, gpu.F32, nil)
		wl := d.newLaunch(kWinogradWeights, [3]int{g.C * ocn}, loader("W", w))
		wl.ins = []input{in(w)}
		wl.out = u
		wl.ints = map[string]int{"C": g.C, "o0": o0, "Oc": ocn}
		d.run("Conv2D", wl)
		chunk := max(1, int(limit/(36*4*int64(max(g.C, ocn)))))
		for t0 := 0; t0 < tiles; t0 += chunk {
			tc := min(chunk, tiles-t0)
			v := d.alloc(gpu.Shape{36, tc, g.C}, gpu.F32, nil)
			il := d.newLaunch(kWinogradInput, [3]int{tc * g.C}, loader("X", x))
			il.ins = []input{in(x)}
			il.out = v
			il.ints = map[string]int{"C": g.C, "H": g.H, "W": g.W, "PH": g.PH, "PW": g.PW,
				"tilesH": tilesH, "tilesW": tilesW, "tile0": t0, "Tc": tc}
			d.run("Conv2D", il)
			m := d.MatMul(v, u, gpu.MatMulOpts{})
			d.Release(v)
			l := d.newLaunch(kWinogradOutput, [3]int{tc * ocn}, loader("M", m))
			l.ins = []input{in(m)}
			l.out = out
			l.ints = map[string]int{"O": g.O, "o0": o0, "Oc": ocn, "OH": g.OH, "OW": g.OW,
				"tilesH": tilesH, "tilesW": tilesW, "tile0": t0, "Tc": tc}
			if bias != nil {
				l.ins = append(l.ins, in(bias))
				l.defines = append(l.defines, "HAS_BIAS", loader("BIAS", bias))
			}
			d.residual(l, 2, res)
			d.run("Conv2D", l)
			d.Release(m)
		}
		d.Release(u)
	}
	return out
}

// usePointwise reports whether conv g is a 1x1 convolution that runs as a
// matrix product (matmul.comp's MM_NN4 variant): [O, C] weights times each sample's
// [C, H*W] input. conv2d.comp reaches about a fifth of the matmul's rate on
// these (no kernel window to reuse inputs across).
func (d *Device) usePointwise(g gpu.ConvGeom) bool {
	return d.convAlgo != convDirect && g.KH == 1 && g.KW == 1 && g.SH == 1 && g.SW == 1 &&
		g.PH == 0 && g.PW == 0 && g.C%4 == 0 && (g.H*g.W)%4 == 0 && !d.noVec4
}

// convPointwise computes the 1x1 conv g as out[n] = w · x[n] + bias (per
// output channel, matmul.comp's MM_NN4 variant with BIAS_ROWS).
func (d *Device) convPointwise(x, w, bias, res *gpu.Tensor, g gpu.ConvGeom) *gpu.Tensor {
	return d.weightsTimes(w, x, bias, res, g, g.C, g.H*g.W)
}

// weightsTimes is conv g's output as the weights w, seen as [O, k], times
// each sample's [k, p] matrix of cols (matmul.comp's MM_NN4 with BIAS_ROWS),
// plus the bias and the residual.
func (d *Device) weightsTimes(w, cols, bias, res *gpu.Tensor, g gpu.ConvGeom, k, p int) *gpu.Tensor {
	out := d.out(gpu.Shape{g.N, g.O, g.OH, g.OW})
	l := d.newLaunch(tallTiles(kMatMulNN4, g.O, p, g.N), [3]int{p, g.O, g.N}, loader4("A", w), loader4("B", cols))
	l.ins = []input{in4(w), in4(cols)}
	l.out = out
	l.ints = map[string]int{"M": g.O, "N": p, "K": k, "aBatch": 0, "bBatch": k * p}
	l.floats = map[string]float32{"alpha": 1}
	if bias != nil {
		l.ins = append(l.ins, in(bias))
		l.defines = append(l.defines, "HAS_BIAS", "BIAS_ROWS", loader("BIAS", bias))
	}
	d.residual(l, 3, res)
	d.run("Conv2D", l)
	return out
}
