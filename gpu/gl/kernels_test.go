package gl

import (
	"fmt"
	"github.com/stepwise/stepwise/gpu"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/shaders"
)

// TestKernelTable checks the ops table itself: every row is filled in and
// names an embedded shader, no two rows build the same program, and every
// shader source is used by some row.
func TestKernelTable(t *testing.T) {
	names := map[string]bool{}
	programs := map[string]string{}
	used := map[string]bool{}
	embedded := map[string]bool{}
	for _, f := range shaders.Names() {
		embedded[f] = true
	}
	for id := kernelID(0); id < numKernels; id++ {
		s := &kernels[id]
		require.NotEmpty(t, s.name, "row %d has no name", id)
		assert.False(t, names[s.name], "two rows named %s", s.name)
		names[s.name] = true
		assert.True(t, embedded[s.file], "%s: no shader %q", s.name, s.file)
		used[s.file] = true
		assert.Positive(t, s.local[0], "%s: no local size", s.name)
		if s.grid == gridTiles {
			assert.Positive(t, s.tile[0]*s.tile[1], "%s: tiled grid without a tile", s.name)
		}
		key := kernel{file: s.file, defines: s.defines()}.key()
		assert.Empty(t, programs[key], "%s builds the same program as %s", s.name, programs[key])
		programs[key] = s.name
	}
	for f := range embedded {
		assert.True(t, used[f], "shader %s is in no row of the ops table", f)
	}
}

// TestKernelUniforms checks each row's uniforms against its shader variant
// (the declarations glslangValidator -E leaves, for the row's defines):
// each is declared there, with its type. (A shader may declare more: unary.comp
// declares s, b and halfC for all its functions.)
func TestKernelUniforms(t *testing.T) {
	tool, err := exec.LookPath("glslangValidator")
	if err != nil {
		if os.Getenv("STEPWISE_REQUIRE_GLSLANG") != "" {
			t.Fatal("glslangValidator not found: install glslang-tools")
		}
		t.Skip("glslangValidator not found")
	}
	decl := regexp.MustCompile(`uniform\s+(int|float)\s+([^;{]+);`)
	// Operand defines that a source needs to preprocess at all.
	operands := map[string][]string{"conv2d.comp": {"KH=3", "KW=3", "SW=1", "PX=4", "PY=1", "C4"}}
	for id := kernelID(0); id < numKernels; id++ {
		s := &kernels[id]
		src, err := shaders.Source(s.file, append(s.defines(), operands[s.file]...))
		require.NoError(t, err, s.name)
		cmd := exec.Command(tool, "-E", "--stdin", "-S", "comp")
		cmd.Stdin = strings.NewReader(src)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s: glslangValidator -E: %s", s.name, out)
		var got []string
		for _, m := range decl.FindAllStringSubmatch(string(out), -1) {
			for _, name := range strings.Split(m[2], ",") {
				name = strings.TrimSpace(name)
				kind := m[1]
				if i := strings.Index(name, "["); i >= 0 {
					name, kind = strings.TrimSpace(name[:i]), "array"
				}
				got = append(got, kind+" "+name)
			}
		}
		var want []string
		for _, n := range s.ints {
			want = append(want, "int "+n)
		}
		for _, n := range s.floats {
			want = append(want, "float "+n)
		}
		for _, n := range s.arrays {
			want = append(want, "array "+n)
		}
		assert.Subset(t, got, want, "%s (%s %v): uniforms", s.name, s.file, s.variant)
	}
}

// TestUndeclaredUniform: a launch that sets a uniform its row does not take
// (a misspelt name would stay 0 in the program) fails the device, naming
// the kernel and the uniform.
func TestUndeclaredUniform(t *testing.T) {
	d := fresh(t)
	x := d.Upload([]float32{1, 2, 3}, 3)
	l := d.newLaunch(kReLU, [3]int{3}, loader("X", x))
	l.ins = []input{in(x)}
	l.out = d.out(x.Shape)
	l.ints = map[string]int{"N": 3}
	d.run("ReLU", l)
	err := d.Finish()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `kernel relu takes no int uniform "N"`)
}

// TestNewLaunchGrid: each grid kind over the work a launch names.
func TestNewLaunchGrid(t *testing.T) {
	d := fresh(t)
	for _, c := range []struct {
		id   kernelID
		work [3]int
		want [3]int
	}{
		{kReLU, [3]int{1000}, [3]int{ceilDiv(1000, elemLX), 1, 1}},
		{kSoftmax, [3]int{77}, [3]int{77, 1, 1}},
		{kLayerNormSerial, [3]int{37}, [3]int{ceilDiv(37, serialLX), 1, 1}},
		{kMatMulNT4, [3]int{130, 65, 3}, [3]int{ceilDiv(ceilDiv(130, mmTile), mmLX), ceilDiv(ceilDiv(65, mmTile), mmLY), 3}},
		{kMatMulNT4Tall, [3]int{130, 65, 3}, [3]int{ceilDiv(ceilDiv(130, mmTile), mmLX), ceilDiv(ceilDiv(65, 2*mmTile), mmLY), 3}},
		{kMatMulNaive, [3]int{33, 9, 2}, [3]int{3, 3, 2}},
		{kAttention, [3]int{301, 3, 2}, [3]int{ceilDiv(ceilDiv(301, attnQ), attnLX), 3, 2}},
	} {
		l := d.newLaunch(c.id, c.work)
		assert.Equal(t, c.want, l.groups, "%s over %v", kernels[c.id].name, c.work)
	}
	l := d.newLaunch(kMatMulNN4, [3]int{8, 8, 1}, "A_LOADER4=LOADER4_F32")
	assert.Equal(t, []string{"MM_NN4", "HAS_RES", fmt.Sprintf("LX=%d", mmLX), fmt.Sprintf("LY=%d", mmLY), "A_LOADER4=LOADER4_F32"}, l.defines)
	assert.Equal(t, "matmul.comp", l.file)
}

// TestTallTiles: 16-row blocks from tallMinRows rows where the grid keeps
// eight work groups of invocations with them, 8-row blocks otherwise; the
// tall cases of glCases and TestMatMulQuantized are on the tall side.
func TestTallTiles(t *testing.T) {
	for _, c := range []struct {
		id      kernelID
		m, n, b int
		want    kernelID
	}{
		{kMatMulNT4, 515, 250, 1, kMatMulNT4Tall}, // glCases tall_nt4: 33 x 32 invocations
		{kMatMulNN4, 515, 252, 2, kMatMulNN4Tall}, // tall_nn4
		{kMatMulNN4, 515, 72, 2, kMatMulNN4Tall},  // the 1x1 convolution: O x H*W, 2 samples: 33 x 9 x 2
		{kMatMulQBlock, 515, 250, 1, kMatMulQBlockTall},
		{kMatMulNT4, 2048, 2560, 1, kMatMulNT4Tall}, // SD 1.5's feed-forward at 256x256
		{kMatMulNT4, 154, 768, 1, kMatMulNT4},       // CLIP, two prompts: slower with 16 rows
		{kMatMulNT4, 512, 8, 1, kMatMulNT4},         // 32 invocations
		{kMatMulNT4, 512, 8 * 16, 1, kMatMulNT4Tall},
		{kMatMulStrided, 4096, 4096, 1, kMatMulStrided},
	} {
		assert.Equal(t, kernels[c.want].name, kernels[tallTiles(c.id, c.m, c.n, c.b)].name, "%s %dx%d batch %d", kernels[c.id].name, c.m, c.n, c.b)
	}
}

// TestIm2colChosen: the strided convolutions that im2col.comp and the
// product can take go that way (ops_test.go's im2col cases check their
// values against gpu/ref), the others, stride 1 and forced-direct devices
// run conv2d.comp.
func TestIm2colChosen(t *testing.T) {
	d := &Device{}
	for _, c := range []struct {
		g    gpu.ConvGeom
		want bool
	}{
		{gpu.ConvGeom{N: 2, C: 12, H: 16, W: 16, O: 10, KH: 3, KW: 3, SH: 2, SW: 2, PH: 1, PW: 1, OH: 8, OW: 8}, true},
		{gpu.ConvGeom{N: 1, C: 8, H: 9, W: 10, O: 6, KH: 4, KW: 4, SH: 2, SW: 2, PH: 1, PW: 1, OH: 4, OW: 5}, true},
		{gpu.ConvGeom{N: 1, C: 4, H: 7, W: 8, O: 5, KH: 3, KW: 3, SH: 2, SW: 1, PH: 1, PW: 1, OH: 4, OW: 8}, true},
		{gpu.ConvGeom{N: 2, C: 4, H: 8, W: 8, O: 7, KH: 3, KW: 3, SH: 2, SW: 2, PH: 1, PW: 1, OH: 4, OW: 4}, true},
		{gpu.ConvGeom{N: 2, C: 8, H: 9, W: 13, O: 70, KH: 3, KW: 3, SH: 2, SW: 2, PH: 1, PW: 1, OH: 5, OW: 7}, false},  // 35 pixels
		{gpu.ConvGeom{N: 2, C: 7, H: 16, W: 16, O: 11, KH: 3, KW: 3, SH: 2, SW: 2, PH: 1, PW: 1, OH: 8, OW: 8}, false}, // K 63
		{gpu.ConvGeom{N: 2, C: 12, H: 16, W: 16, O: 10, KH: 3, KW: 3, SH: 1, SW: 1, PH: 1, PW: 1, OH: 16, OW: 16}, false},
		{gpu.ConvGeom{N: 1, C: 128, H: 1024, W: 1024, O: 128, KH: 3, KW: 3, SH: 2, SW: 2, OH: 511, OW: 512}, false}, // columns too big
	} {
		assert.Equal(t, c.want, d.useIm2col(c.g), "%+v", c.g)
	}
	d.convAlgo = convDirect
	assert.False(t, d.useIm2col(gpu.ConvGeom{N: 2, C: 12, H: 16, W: 16, O: 10, KH: 3, KW: 3, SH: 2, SW: 2, PH: 1, PW: 1, OH: 8, OW: 8}))
}
