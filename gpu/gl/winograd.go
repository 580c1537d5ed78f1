package gl

import (
	"fmt"

	"github.com/stepwise/stepwise/gpu"
)

// Convolution algorithms (Device.convAlgo).
const (
	convAuto     = iota // winogradFits decides
	convDirect          // conv2d.comp always
	convWinograd        // Winograd wherever it applies (tests)
)

// winogradChunk caps the bytes of each of a Winograd convolution's two
// intermediate tensors (36 transformed values per tile and channel); bigger
// images run in chunks of tiles.
const winogradChunk = 64 << 20

// winogradMinTiles is the fewest 4x4 output tiles (over the batch) for which
// Winograd beats conv2d.comp on llvmpipe: below it the per-call weight
// transform (36 floats per weight triple) and the thin matrix products cost
// more than the 4x fewer multiplications save. (Measured with
// BenchmarkConvWinograd*: at 16x16 outputs, 16 tiles, direct wins.)
const winogradMinTiles = 64

// winogradApplies reports whether conv g can run as Winograd F(4x4, 3x3):
// 3x3 kernel, stride 1, and channel counts the vector matmul accepts.
func winogradApplies(g gpu.ConvGeom) bool {
	return g.KH == 3 && g.KW == 3 && g.SH == 1 && g.SW == 1 && g.C%4 == 0 && g.O%4 == 0
}

// useWinograd picks the algorithm for conv g.
func (d *Device) useWinograd(g gpu.ConvGeom) bool {
	if !winogradApplies(g) || d.convAlgo == convDirect {
		return false
	}
	if d.convAlgo == convWinograd {
		return true
	}
	return g.N*ceilDiv(g.OH, 4)*ceilDiv(g.OW, 4) >= winogradMinTiles
}

// convWinograd computes conv g as Winograd F(4x4, 3x3) (Lavin & Gray): the
// weights and each 6x6 input patch are transformed to 36 values, the conv
// becomes 36 independent [tiles, C] x [C, O] matrix products (the vector
// matmul kernel), and each tile's 36 products transform back to a 4x4 output
// block: 2.25x fewer multiplications per output than the 3x3 direct form,
// in kernels that vectorise well. Tiles go in chunks that keep the
// intermediates under winogradChunk bytes.
func (d *Device) convWinograd(x, w, bias *gpu.Tensor, g gpu.ConvGeom) *gpu.Tensor {
	out := d.out(gpu.Shape{g.N, g.O, g.OH, g.OW})
	u := d.alloc(gpu.Shape{36, g.C, g.O}, gpu.F32, nil)
	d.run("Conv2D", &launch{
		kernel: kernel{file: "winograd_weights.comp", defines: []string{fmt.Sprintf("LX=%d", elemLX), loader("W", w)}},
		ins:    []input{in(w)},
		out:    u,
		ints:   map[string]int{"C": g.C, "O": g.O},
		groups: d.grid1D(g.C*g.O, elemLX),
	})
	tilesH, tilesW := ceilDiv(g.OH, 4), ceilDiv(g.OW, 4)
	tiles := g.N * tilesH * tilesW
	limit := min(d.winogradChunk, d.maxBlock)
	chunk := max(1, int(limit/(36*4*int64(max(g.C, g.O)))))
	for t0 := 0; t0 < tiles; t0 += chunk {
		tc := min(chunk, tiles-t0)
		v := d.alloc(gpu.Shape{36, tc, g.C}, gpu.F32, nil)
		d.run("Conv2D", &launch{
			kernel: kernel{file: "winograd_input.comp", defines: []string{fmt.Sprintf("LX=%d", elemLX), loader("X", x)}},
			ins:    []input{in(x)},
			out:    v,
			ints: map[string]int{"C": g.C, "H": g.H, "W": g.W, "PH": g.PH, "PW": g.PW,
				"tilesH": tilesH, "tilesW": tilesW, "tile0": t0, "Tc": tc},
			groups: d.grid1D(tc*g.C, elemLX),
		})
		m := d.MatMul(v, u, gpu.MatMulOpts{})
		d.Release(v)
		l := &launch{
			kernel: kernel{file: "winograd_output.comp", defines: []string{fmt.Sprintf("LX=%d", elemLX), loader("M", m)}},
			ins:    []input{in(m)},
			out:    out,
			ints: map[string]int{"O": g.O, "OH": g.OH, "OW": g.OW,
				"tilesH": tilesH, "tilesW": tilesW, "tile0": t0, "Tc": tc},
			groups: d.grid1D(tc*g.O, elemLX),
		}
		if bias != nil {
			l.ins = append(l.ins, in(bias))
			l.defines = append(l.defines, "HAS_BIAS", loader("BIAS", bias))
		}
		d.run("Conv2D", l)
		d.Release(m)
	}
	d.Release(u)
	return out
}
