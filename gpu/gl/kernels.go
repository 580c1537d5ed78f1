package gl

import (
	"fmt"
	"strconv"
)

// The ops table. Each kernel the device launches is one row: the shader
// source, the defines that pick the variant within it, its work group
// size, how a launch's work becomes a grid of work groups, and the uniforms
// it takes. Programs are built from a row plus the defines a launch adds
// for its operands (the storage type of each input, optional inputs such as
// a bias, tile sizes), and looked up by the resulting kernel key (file and
// sorted defines), which the program binary cache and compiling ahead also
// use. An op method picks a row, says how much work there is, and fills in
// operands and uniform values (see newLaunch).

// kernelID names a row of the ops table.
type kernelID int

const (
	kMatMulNaive kernelID = iota
	kMatMulStrided
	kMatMulNN4
	kMatMulNT4
	kMatMulQBlock
	kMatMulNN4Tall // the tiled variants with ROWS16 (16 x 8 blocks)
	kMatMulNT4Tall
	kMatMulQBlockTall
	kConv2D
	kConv2DPairs
	kWinogradWeights
	kWinogradInput
	kWinogradOutput
	kGroupNorm
	kGroupNormSerial
	kGroupNormStats
	kGroupNormMerge
	kGroupNormApply
	kLayerNorm
	kLayerNormSerial
	kRMSNorm
	kRMSNormSerial
	kSoftmax
	kAttention
	kSiLU
	kGELU
	kGELUTanh
	kQuickGELU
	kReLU
	kSoftClamp
	kScale
	kGEGLU
	kAdd
	kMul
	kCopy
	kConcat2
	kUpsample2x
	kEmbedding
	kIm2Col
	numKernels
)

// grid says how a launch's work ([3]int) becomes work groups.
type grid int

const (
	// gridFlat: work[0] invocations, spread over x and y (grid1D; the
	// shader numbers them with linearId).
	gridFlat grid = iota
	// gridRows: work[0] rows, one work group each (gridRows; groupId).
	gridRows
	// gridTiles: work[0] x work[1] outputs in tiles of tile[0] x tile[1]
	// an invocation, work[2] batches along z.
	gridTiles
)

// kernelSpec is one row of the ops table.
type kernelSpec struct {
	name    string   // for the profile and uniform errors
	file    string   // the shader source (package shaders)
	variant []string // defines that pick this kernel in its source
	local   [2]int   // work group size: the LX define, and LY unless 0
	grid    grid
	tile    [2]int   // gridTiles: outputs an invocation along x and y
	ints    []string // uniforms a launch may set: int, float, int array
	floats  []string
	arrays  []string
}

// Uniform lists shared by several rows.
var (
	mmStrides = []string{"M", "N", "K", "aBatch", "aRow", "aCol", "bBatch", "bRow", "bCol"}
	convInts  = []string{"C", "H", "W", "O", "OH", "OW", "SH", "PH", "PW", "tilesW", "tilesH", "NB", "resMode"}
	mmInts    = []string{"M", "N", "K", "aBatch", "bBatch", "resMode"}
	mmQInts   = []string{"M", "N", "K", "aBatch", "resMode"}
)

// kernels is the ops table, indexed by kernelID.
var kernels = [numKernels]kernelSpec{
	kMatMulNaive: {name: "matmul_naive", file: "matmul.comp", variant: []string{"MM_NAIVE"},
		local: [2]int{16, 4}, grid: gridTiles, tile: [2]int{1, 1}, ints: mmStrides, floats: []string{"alpha"}},
	kMatMulStrided: {name: "matmul_strided", file: "matmul.comp", variant: []string{"MM_STRIDED", "HAS_RES"},
		local: [2]int{mmLX, mmLY}, grid: gridTiles, tile: [2]int{mmTile, mmTile}, ints: append(mmStrides[:len(mmStrides):len(mmStrides)], "resMode"), floats: []string{"alpha"}},
	kMatMulNN4: {name: "matmul_nn4", file: "matmul.comp", variant: []string{"MM_NN4", "HAS_RES"},
		local: [2]int{mmLX, mmLY}, grid: gridTiles, tile: [2]int{mmTile, mmTile},
		ints: mmInts, floats: []string{"alpha"}},
	kMatMulNT4: {name: "matmul_nt4", file: "matmul.comp", variant: []string{"MM_NT4", "HAS_RES"},
		local: [2]int{mmLX, mmLY}, grid: gridTiles, tile: [2]int{mmTile, mmTile},
		ints: mmInts, floats: []string{"alpha"}},
	kMatMulQBlock: {name: "matmul_qblock", file: "matmul.comp", variant: []string{"MM_QBLOCK", "HAS_RES"},
		local: [2]int{mmLX, mmLY}, grid: gridTiles, tile: [2]int{mmTile, mmTile},
		ints: mmQInts, floats: []string{"alpha"}},
	kMatMulNN4Tall: {name: "matmul_nn4_tall", file: "matmul.comp", variant: []string{"MM_NN4", "ROWS16", "HAS_RES"},
		local: [2]int{mmLX, mmLY}, grid: gridTiles, tile: [2]int{mmTile, 2 * mmTile},
		ints: mmInts, floats: []string{"alpha"}},
	kMatMulNT4Tall: {name: "matmul_nt4_tall", file: "matmul.comp", variant: []string{"MM_NT4", "ROWS16", "HAS_RES"},
		local: [2]int{mmLX, mmLY}, grid: gridTiles, tile: [2]int{mmTile, 2 * mmTile},
		ints: mmInts, floats: []string{"alpha"}},
	kMatMulQBlockTall: {name: "matmul_qblock_tall", file: "matmul.comp", variant: []string{"MM_QBLOCK", "ROWS16", "HAS_RES"},
		local: [2]int{mmLX, mmLY}, grid: gridTiles, tile: [2]int{mmTile, 2 * mmTile},
		ints: mmQInts, floats: []string{"alpha"}},

	kConv2D: {name: "conv2d", file: "conv2d.comp", variant: []string{"NT=1", "HAS_RES"},
		local: [2]int{convLX}, grid: gridFlat, ints: convInts},
	// Two samples an invocation, in smaller work groups so that the halved
	// count still spreads over threads (tiles of at most 4 pixels).
	kConv2DPairs: {name: "conv2d_pairs", file: "conv2d.comp", variant: []string{"NT=2", "HAS_RES"},
		local: [2]int{8}, grid: gridFlat, ints: convInts},
	kWinogradWeights: {name: "winograd_weights", file: "winograd_weights.comp",
		local: [2]int{elemLX}, grid: gridFlat, ints: []string{"C", "o0", "Oc"}},
	kWinogradInput: {name: "winograd_input", file: "winograd_input.comp",
		local: [2]int{elemLX}, grid: gridFlat,
		ints: []string{"C", "H", "W", "PH", "PW", "tilesH", "tilesW", "tile0", "Tc"}},
	kWinogradOutput: {name: "winograd_output", file: "winograd_output.comp", variant: []string{"HAS_RES"},
		local: [2]int{elemLX}, grid: gridFlat,
		ints: []string{"O", "o0", "Oc", "OH", "OW", "tilesH", "tilesW", "tile0", "Tc", "resMode"}},

	// The norms come in two rows: a work group a row, and SERIAL (one
	// invocation a row, for rows of at most serialRow elements).
	kGroupNorm: {name: "groupnorm", file: "groupnorm.comp",
		local: [2]int{rowLX}, grid: gridRows, ints: []string{"C", "S", "G", "rows"}, floats: []string{"eps"}},
	kGroupNormSerial: {name: "groupnorm_serial", file: "groupnorm.comp", variant: []string{"SERIAL"},
		local: [2]int{serialLX}, grid: gridFlat, ints: []string{"C", "S", "G", "rows"}, floats: []string{"eps"}},
	kGroupNormStats: {name: "groupnorm_stats", file: "groupnorm_stats.comp", variant: []string{"CH=" + strconv.Itoa(normChunk)},
		local: [2]int{serialLX}, grid: gridFlat, ints: []string{"count", "chunks", "rows"}},
	kGroupNormMerge: {name: "groupnorm_merge", file: "groupnorm_merge.comp",
		local: [2]int{serialLX}, grid: gridFlat, ints: []string{"chunks", "rows"}, floats: []string{"eps"}},
	kGroupNormApply: {name: "groupnorm_apply", file: "groupnorm_apply.comp",
		local: [2]int{elemLX}, grid: gridFlat, ints: []string{"C", "S", "cpg", "n4"}},
	kLayerNorm: {name: "layernorm", file: "groupnorm.comp", variant: []string{"LAYERNORM"},
		local: [2]int{rowLX}, grid: gridRows, ints: []string{"C", "rows"}, floats: []string{"eps"}},
	kLayerNormSerial: {name: "layernorm_serial", file: "groupnorm.comp", variant: []string{"LAYERNORM", "SERIAL"},
		local: [2]int{serialLX}, grid: gridFlat, ints: []string{"C", "rows"}, floats: []string{"eps"}},
	kRMSNorm: {name: "rmsnorm", file: "groupnorm.comp", variant: []string{"RMSNORM"},
		local: [2]int{rowLX}, grid: gridRows, ints: []string{"C", "rows"}, floats: []string{"eps"}},
	kRMSNormSerial: {name: "rmsnorm_serial", file: "groupnorm.comp", variant: []string{"RMSNORM", "SERIAL"},
		local: [2]int{serialLX}, grid: gridFlat, ints: []string{"C", "rows"}, floats: []string{"eps"}},
	kSoftmax: {name: "softmax", file: "softmax.comp",
		local: [2]int{rowLX}, grid: gridRows, ints: []string{"C", "rows"}},
	// Attention: work is (queries, heads, batch), attnQ queries an invocation.
	kAttention: {name: "attention", file: "attention.comp",
		local: [2]int{attnLX}, grid: gridTiles, tile: [2]int{attnQ, 1},
		ints: []string{"Lq", "Lk", "H"}, floats: []string{"scale"}},

	kSiLU:      unaryOp("silu", "OP_SILU"),
	kGELU:      unaryOp("gelu", "OP_GELU"),
	kGELUTanh:  unaryOp("gelu_tanh", "OP_GELU_TANH"),
	kQuickGELU: unaryOp("quick_gelu", "OP_QUICKGELU"),
	kReLU:      unaryOp("relu", "OP_RELU"),
	kSoftClamp: unaryOp("softclamp", "OP_SOFTCLAMP"),
	kScale:     unaryOp("scale", "OP_SCALE"),
	kGEGLU: {name: "geglu", file: "unary.comp", variant: []string{"OP_GEGLU"},
		local: [2]int{elemLX}, grid: gridFlat, ints: []string{"n", "halfC"}},
	kAdd: binaryOp("add", "OP_ADD"),
	kMul: binaryOp("mul", "OP_MUL"),
	kCopy: {name: "copy", file: "copy.comp", local: [2]int{elemLX}, grid: gridFlat,
		ints: []string{"n", "rank", "sOff", "dOff"}, arrays: []string{"shape", "ss", "ds"}},
	kConcat2: {name: "concat2", file: "concat2.comp", local: [2]int{elemLX}, grid: gridFlat,
		ints: []string{"n", "ca", "cb"}},
	kUpsample2x: {name: "upsample2x", file: "upsample.comp", local: [2]int{elemLX}, grid: gridFlat,
		ints: []string{"H", "W", "n"}},
	kIm2Col: {name: "im2col", file: "im2col.comp", local: [2]int{elemLX}, grid: gridFlat,
		ints: []string{"n", "C", "H", "W", "KH", "KW", "SH", "SW", "PH", "PW", "OH", "OW"}},
	kEmbedding: {name: "embedding", file: "embedding.comp", local: [2]int{elemLX}, grid: gridFlat,
		ints: []string{"n", "C"}},
}

// unaryOp is the row of one element-wise function of unary.comp.
func unaryOp(name, op string) kernelSpec {
	return kernelSpec{name: name, file: "unary.comp", variant: []string{op},
		local: [2]int{elemLX}, grid: gridFlat, ints: []string{"n"}, floats: []string{"s", "b"}}
}

// binaryOp is the row of one broadcasting operation of binary.comp (SAME
// when neither operand broadcasts; rank, shape, sa, sb otherwise).
func binaryOp(name, op string) kernelSpec {
	return kernelSpec{name: name, file: "binary.comp", variant: []string{op},
		local: [2]int{elemLX}, grid: gridFlat, ints: []string{"n", "rank"}, arrays: []string{"shape", "sa", "sb"}}
}

// defines are the row's own defines: its variant and its local size.
func (s *kernelSpec) defines() []string {
	d := append([]string(nil), s.variant...)
	d = append(d, "LX="+strconv.Itoa(s.local[0]))
	if s.local[1] != 0 {
		d = append(d, "LY="+strconv.Itoa(s.local[1]))
	}
	return d
}

// takes reports whether the row declares uniform name among list.
func takes(list []string, name string) bool {
	for _, n := range list {
		if n == name {
			return true
		}
	}
	return false
}

// newLaunch starts a launch of row id over work (see grid), with the
// operand defines the caller adds (storage types, optional inputs); the
// caller fills in inputs, output and uniform values.
func (d *Device) newLaunch(id kernelID, work [3]int, defines ...string) *launch {
	s := &kernels[id]
	l := &launch{spec: s, kernel: kernel{file: s.file, defines: append(s.defines(), defines...)}}
	lx, ly := s.local[0], max(s.local[1], 1)
	switch s.grid {
	case gridFlat:
		l.groups = d.grid1D(work[0], lx)
	case gridRows:
		l.groups = d.gridRows(work[0])
	case gridTiles:
		l.groups = [3]int{ceilDiv(ceilDiv(work[0], s.tile[0]), lx), ceilDiv(ceilDiv(work[1], s.tile[1]), ly), work[2]}
	}
	return l
}

// checkUniforms reports a uniform l sets that its row does not declare (a
// misspelt one would silently stay 0 in the program).
func (l *launch) checkUniforms() error {
	s := l.spec
	if s == nil {
		return nil
	}
	for name := range l.ints {
		if name != "outWindow" && !takes(s.ints, name) {
			return fmt.Errorf("gl: kernel %s takes no int uniform %q", s.name, name)
		}
	}
	for name := range l.floats {
		if !takes(s.floats, name) {
			return fmt.Errorf("gl: kernel %s takes no float uniform %q", s.name, name)
		}
	}
	for name := range l.arrays {
		if !takes(s.arrays, name) {
			return fmt.Errorf("gl: kernel %s takes no array uniform %q", s.name, name)
		}
	}
	return nil
}
