package gl

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/gputest"
	"github.com/stepwise/stepwise/gpu/ref"
)

// winogradCases are convolutions Winograd F(4x4, 3x3) takes: output sizes
// that are not multiples of the 4x4 tile, paddings 0, 1 and 2, two samples,
// every weight type, with and without bias.
func winogradCases() []gputest.Case {
	var cs []gputest.Case
	add := func(n, c, h, w, o, pad int, dt gpu.DType, bias bool) {
		ins := []gputest.Input{inp(n, c, h, w), typed(dt, o, c, 3, 3)}
		if bias {
			ins = append(ins, typed(dt, o))
		}
		cs = append(cs, gputest.Case{
			Name:   fmt.Sprintf("Winograd/%dx%dx%dx%d_o%d_pad%d_%v_bias%v", n, c, h, w, o, pad, dt, bias),
			Inputs: ins,
			Run: func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
				var b *gpu.Tensor
				if bias {
					b = x[2]
				}
				return d.Conv2D(x[0], x[1], b, gpu.Conv2DOpts{PadH: pad, PadW: pad})
			},
		})
	}
	add(1, 4, 4, 4, 4, 1, gpu.F32, true)
	add(1, 8, 7, 13, 12, 1, gpu.F32, false)
	add(2, 12, 9, 5, 20, 1, gpu.F16, true)
	add(2, 4, 11, 10, 8, 0, gpu.BF16, true)
	add(1, 16, 6, 6, 4, 2, gpu.F16, false)
	add(1, 20, 17, 19, 36, 1, gpu.F32, true)
	cs = append(cs, gputest.Case{
		Name:   "Winograd/residual_2x8x9x10_o12",
		Inputs: []gputest.Input{inp(2, 8, 9, 10), typed(gpu.F16, 12, 8, 3, 3), inp(12), inp(2, 12, 9, 10)},
		Run: func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			return d.Conv2D(x[0], x[1], x[2], gpu.Conv2DOpts{PadH: 1, PadW: 1, Residual: x[3]})
		},
	})
	cs = append(cs, gputest.Case{
		Name:   "Winograd/residual_plane_2x8x9x10_o12",
		Inputs: []gputest.Input{inp(2, 8, 9, 10), typed(gpu.F16, 12, 8, 3, 3), inp(12), inp(2, 12, 1, 1)},
		Run: func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			return d.Conv2D(x[0], x[1], x[2], gpu.Conv2DOpts{PadH: 1, PadW: 1, Residual: x[3]})
		},
	})
	return cs
}

// TestWinograd checks the Winograd path against gpu/ref's direct
// convolution, whole and in chunks of a few tiles (so that chunk edges fall
// inside rows and across samples).
func TestWinograd(t *testing.T) {
	oracle := ref.New()
	defer oracle.Close()
	for _, chunk := range []int64{winogradChunk, 36 * 4 * 36 * 3} { // 3 tiles of 36 channels
		d := fresh(t)
		d.convAlgo = convWinograd
		d.winogradChunk = chunk
		for _, c := range winogradCases() {
			t.Run(fmt.Sprintf("chunk%d/%s", chunk, c.Name), func(t *testing.T) {
				assert.NoError(t, gputest.CheckCase(oracle, d, c, tol)) // tol: the GL suite's bar
			})
		}
		assert.Zero(t, d.Stats().Buffers, "chunk %d: buffers left after the cases (intermediates released)", chunk)
	}
}

// TestWinogradChoice: the default picks Winograd for big 3x3 convolutions
// only, and both paths agree with gpu/ref there.
func TestWinogradChoice(t *testing.T) {
	big := gpu.ConvGeom{N: 1, C: 8, H: 32, W: 32, O: 8, KH: 3, KW: 3, OH: 32, OW: 32, SH: 1, SW: 1, PH: 1, PW: 1}
	d := &Device{}
	assert.True(t, d.useWinograd(big), "32x32 3x3 conv: want Winograd")
	for name, g := range map[string]gpu.ConvGeom{
		"small map": {N: 1, C: 8, H: 16, W: 16, O: 8, KH: 3, KW: 3, OH: 16, OW: 16, SH: 1, SW: 1, PH: 1, PW: 1},
		"stride 2":  {N: 1, C: 8, H: 64, W: 64, O: 8, KH: 3, KW: 3, OH: 32, OW: 32, SH: 2, SW: 2, PH: 1, PW: 1},
		"1x1":       {N: 1, C: 8, H: 64, W: 64, O: 8, KH: 1, KW: 1, OH: 64, OW: 64, SH: 1, SW: 1},
		"C % 4":     {N: 1, C: 3, H: 64, W: 64, O: 8, KH: 3, KW: 3, OH: 64, OW: 64, SH: 1, SW: 1, PH: 1, PW: 1},
		"O % 4":     {N: 1, C: 8, H: 64, W: 64, O: 3, KH: 3, KW: 3, OH: 64, OW: 64, SH: 1, SW: 1, PH: 1, PW: 1},
	} {
		assert.False(t, d.useWinograd(g), "%s: Winograd chosen", name)
	}
	d.convAlgo = convDirect
	assert.False(t, d.useWinograd(big), "convDirect: Winograd chosen")
	d.convAlgo, d.noWinograd = convAuto, true
	assert.False(t, d.useWinograd(big), "STEPWISE_GL_WINOGRAD=off: Winograd chosen")
}

// TestPointwise checks 1x1 convolutions, which run as matrix products,
// against gpu/ref: odd output channel counts, two samples, every weight type.
func TestPointwise(t *testing.T) {
	oracle := ref.New()
	defer oracle.Close()
	d := fresh(t)
	for _, tc := range []struct {
		n, c, h, w, o int
		dt            gpu.DType
		bias          bool
	}{
		{1, 4, 1, 4, 1, gpu.F32, true},
		{2, 12, 3, 4, 5, gpu.F16, true},
		{2, 8, 5, 4, 17, gpu.BF16, false},
		{1, 36, 9, 12, 23, gpu.F16, true},
	} {
		ins := []gputest.Input{inp(tc.n, tc.c, tc.h, tc.w), typed(tc.dt, tc.o, tc.c, 1, 1)}
		if tc.bias {
			ins = append(ins, typed(tc.dt, tc.o))
		}
		c := gputest.Case{
			Name:   fmt.Sprintf("Pointwise/%dx%dx%dx%d_o%d_%v_bias%v", tc.n, tc.c, tc.h, tc.w, tc.o, tc.dt, tc.bias),
			Inputs: ins,
			Run: func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
				var b *gpu.Tensor
				if len(x) > 2 {
					b = x[2]
				}
				return d.Conv2D(x[0], x[1], b, gpu.Conv2DOpts{})
			},
		}
		g := gpu.ConvGeom{N: tc.n, C: tc.c, H: tc.h, W: tc.w, O: tc.o, KH: 1, KW: 1, OH: tc.h, OW: tc.w, SH: 1, SW: 1}
		require.True(t, d.usePointwise(g), "%s: not taken as a matrix product", c.Name)
		t.Run(c.Name, func(t *testing.T) {
			assert.NoError(t, gputest.CheckCase(oracle, d, c, tol)) // tol: the GL suite's bar
		})
	}
}

// TestTuner: a convolution near the Winograd threshold is timed both ways
// once, the decision is written beside the program cache and read by the
// next device (which times nothing); shapes far from the threshold are not
// timed; a damaged decisions file is timed again and rewritten. Every way
// agrees with gpu/ref.
func TestTuner(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("STEPWISE_GL_CACHE", dir)
	t.Setenv("STEPWISE_GL_TUNE", "")
	oracle := ref.New()
	defer oracle.Close()
	near := winogradCase(1, 8, 32, 32, 8) // 64 tiles: in the band
	far := winogradCase(1, 8, 8, 8, 8)    // 4 tiles: below it
	run := func(wantTimed int) *Device {
		d := fresh(t)
		for _, c := range []gputest.Case{near, far} {
			assert.NoError(t, gputest.CheckCase(oracle, d, c, tol)) // tol: the GL suite's bar
		}
		assert.Equal(t, wantTimed, d.tune.timed, "shapes timed (decisions %v)", d.tune.choices)
		return d
	}
	d := run(1)
	files, _ := filepath.Glob(filepath.Join(dir, "tune-*.json"))
	require.Len(t, files, 1, "decision files")
	raw, err := os.ReadFile(files[0])
	require.NoError(t, err)
	var saved map[string]bool
	require.NoError(t, json.Unmarshal(raw, &saved), "decisions file %s: %q", files[0], raw)
	require.Len(t, saved, 1, "decisions")
	assert.Contains(t, saved, convKey(gpu.ConvGeom{N: 1, C: 8, H: 32, W: 32, O: 8, PH: 1, PW: 1}, gpu.F32), "the 32x32 shape")
	d.Close()
	run(0).Close()
	require.NoError(t, os.WriteFile(files[0], []byte("{not json"), 0o644))
	run(1).Close()
	raw, err = os.ReadFile(files[0])
	require.NoError(t, err)
	assert.NoError(t, json.Unmarshal(raw, &saved), "damaged decisions file rewritten: %q", raw)
}

// winogradCase is a padded 3x3 conv with bias on an n x c x h x w input.
func winogradCase(n, c, h, w, o int) gputest.Case {
	return gputest.Case{
		Name:   fmt.Sprintf("Conv2D/%dx%dx%dx%d_o%d", n, c, h, w, o),
		Inputs: []gputest.Input{inp(n, c, h, w), inp(o, c, 3, 3), inp(o)},
		Run: func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			return d.Conv2D(x[0], x[1], x[2], gpu.Conv2DOpts{PadH: 1, PadW: 1})
		},
	}
}

// TestAttentionPaths runs big single-head attention both ways against
// gpu/ref: attention.comp (the flash kernel) and the unfused matmuls,
// whole and in chunks of queries that do not divide Lq.
func TestAttentionPaths(t *testing.T) {
	oracle := ref.New()
	defer oracle.Close()
	c := gputest.Case{
		Name:   "Attention/2x37x256_lk45",
		Inputs: []gputest.Input{inp(2, 37, 256), inp(2, 45, 256), inp(2, 45, 260)},
		Run: func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			return d.Attention(x[0], x[1], x[2], gpu.AttentionOpts{Heads: 1})
		},
	}
	for _, tc := range []struct {
		name    string
		unfused bool
		scores  int64
	}{{"flash", false, unfusedScores}, {"unfused", true, unfusedScores}, {"unfused_chunks_of_5", true, 4 * 45 * 2 * 5}} {
		t.Run(tc.name, func(t *testing.T) {
			d := fresh(t)
			d.attnUnfused, d.attnScoreBytes = tc.unfused, tc.scores
			require.Equal(t, tc.unfused, d.useUnfusedAttention(1, 256, 260), "useUnfusedAttention")
			assert.NoError(t, gputest.CheckCase(oracle, d, c, tol)) // tol: the GL suite's bar
			assert.Zero(t, d.Stats().Buffers, "buffers left (intermediates released)")
		})
	}
}

// TestLargeSuite runs gputest's SD-sized cases on the GL device with the
// default kernel choices, and the VAE's widest convolution (512 channels,
// F16 weights, inputs of the VAE's magnitude) through Winograd, whose error
// grows with the channel count: there the bar is winogradTol (measured worst
// 2.1e-4 on 67 of 524288 outputs, all near zero: 3e-5 of the outputs' scale).
func TestLargeSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("large cases skipped with -short")
	}
	d := fresh(t)
	gputest.RunLargeSuite(t, d, tol)
	d.convAlgo = convWinograd
	oracle := ref.New()
	defer oracle.Close()
	c := gputest.Case{
		Name: "Winograd/sd_vae_1x512x32x32_f16",
		Inputs: []gputest.Input{{Shape: []int{1, 512, 32, 32}, Scale: 4}, {Shape: []int{512, 512, 3, 3}, DType: gpu.F16, Scale: 0.03},
			typed(gpu.F16, 512), {Shape: []int{1, 512, 32, 32}, Scale: 4}},
		Run: func(d gpu.Device, x []*gpu.Tensor) *gpu.Tensor {
			return d.Conv2D(x[0], x[1], x[2], gpu.Conv2DOpts{PadH: 1, PadW: 1, Residual: x[3]})
		},
	}
	assert.NoError(t, gputest.CheckCase(oracle, d, c, winogradTol))
}

// winogradTol is the bar of Winograd on 512 input channels.
const winogradTol = 4e-4
