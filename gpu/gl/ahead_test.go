package gl

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu/gputest"
	"github.com/stepwise/stepwise/gpu/ref"
)

// aheadCases are op cases on odd shapes whose programs differ: F16 convs
// with residuals, stride 2, matmuls with F16 weights and bias, attention,
// group norm with SiLU, GEGLU.
func aheadCases(t *testing.T) []gputest.Case {
	var cs []gputest.Case
	for _, c := range gputest.Cases() {
		for _, name := range []string{
			"Conv2D/residual_3x3_p1_1x8x33x35_to12_f16", "Conv2D/3x3_s2_p1_1x6x13x13_to7",
			"MatMul/linear_f16_2x7x33_w13x33_bias", "Attention/clip_b2_l77_h4_d16_causal",
			"GroupNormSiLU/2x12x5x7_g3_f16", "GEGLU/2x7x26",
		} {
			if c.Name == name {
				cs = append(cs, c)
			}
		}
	}
	require.Len(t, cs, 6, "the cases this test picks must exist")
	return cs
}

// TestCompileAhead: a dry run of some ops computes nothing, CompileAhead
// reports its progress counting up to the total of programs built, and the
// real run afterwards builds no program and still matches the reference
// (the warm-up dispatches leave no state behind).
// With compile workers (three threads) some programs are built in their
// shared contexts and adopted by the GL thread; with one thread none are.
func TestCompileAhead(t *testing.T) {
	for _, threads := range []string{"1", "3"} {
		t.Run("threads_"+threads, func(t *testing.T) {
			t.Setenv("STEPWISE_GL_COMPILE_THREADS", threads)
			testCompileAhead(t, threads != "1")
		})
	}
}

func testCompileAhead(t *testing.T, workers bool) {
	t.Setenv("STEPWISE_GL_CACHE", t.TempDir()) // programs are compiled, not loaded
	d := fresh(t)
	cases := aheadCases(t)
	var calls [][2]int
	err := d.CompileAhead(func() {
		for _, c := range cases {
			res, err := gputest.Exec(d, c)
			require.NoError(t, err, c.Name)
			for _, v := range res.Data {
				require.Zero(t, v, "%s: a dry run computes nothing", c.Name)
			}
		}
	}, func(done, total int) { calls = append(calls, [2]int{done, total}) })
	require.NoError(t, err)
	require.NotEmpty(t, calls)
	total := calls[0][1]
	assert.GreaterOrEqual(t, total, len(cases), "at least one program per op")
	assert.Len(t, calls, total+1, "one call before the first program and one after each")
	for i, c := range calls {
		assert.Equal(t, [2]int{i, total}, c, "progress call %d", i)
	}
	built := d.Built()
	before := map[string]bool{}
	d.call(func() {
		for k := range d.progs {
			before[k] = true
		}
	})
	defer d.call(func() {
		for k := range d.progs {
			if !before[k] {
				t.Logf("built late: %s", k)
			}
		}
	})
	assert.Equal(t, total, built, "programs built ahead")
	var adopted, waiting int
	d.call(func() { adopted, waiting = d.adopted, len(d.built) })
	if workers {
		assert.Positive(t, adopted, "programs built by workers")
	} else {
		assert.Zero(t, adopted, "no workers with one thread")
	}
	assert.Zero(t, waiting, "every program a worker built was adopted")

	for _, c := range cases {
		assert.NoError(t, gputest.CheckCase(ref.New(), d, c, 1e-4))
	}
	assert.Equal(t, built, d.Built(), "the real run built no program")

	// Ahead of work whose programs are all built there is nothing to do.
	calls = nil
	require.NoError(t, d.CompileAhead(func() {
		_, err := gputest.Exec(d, cases[0])
		require.NoError(t, err)
	}, func(done, total int) { calls = append(calls, [2]int{done, total}) }))
	assert.Equal(t, [][2]int{{0, 0}}, calls)
}

// TestCompileAheadWarmCache: with every program's binary in the program
// cache there is no GLSL to compile, and the GL thread loads them alone
// (workers only slowed a warm start), however many threads are allowed.
func TestCompileAheadWarmCache(t *testing.T) {
	t.Setenv("STEPWISE_GL_CACHE", t.TempDir())
	t.Setenv("STEPWISE_GL_COMPILE_THREADS", "3")
	cases := aheadCases(t)
	work := func(d *Device) func() {
		return func() {
			for _, c := range cases {
				_, err := gputest.Exec(d, c)
				require.NoError(t, err, c.Name)
			}
		}
	}
	cold := fresh(t)
	require.NoError(t, cold.CompileAhead(work(cold), nil))
	var coldAdopted int
	cold.call(func() { coldAdopted = cold.adopted })
	require.Positive(t, coldAdopted, "an empty cache: workers compile")

	warm := fresh(t)
	require.NoError(t, warm.CompileAhead(work(warm), nil))
	var adopted, hits int
	warm.call(func() { adopted, hits = warm.adopted, warm.cache.hits })
	assert.Zero(t, adopted, "a warm cache: no workers")
	assert.Equal(t, cold.Built(), warm.Built(), "the same programs are built")
	assert.Equal(t, warm.Built(), hits, "every one from the cache")
	for _, c := range cases {
		assert.NoError(t, gputest.CheckCase(ref.New(), warm, c, 1e-4))
	}
}

// TestCompileAheadBadProgram: a program that does not compile is left to
// its first real launch, which reports it naming the shader.
// Two bad programs and two threads: whichever thread built one, its
// error waits for the launch.
func TestCompileAheadBadProgram(t *testing.T) {
	t.Setenv("STEPWISE_GL_COMPILE_THREADS", "2")
	d := fresh(t)
	bad := func(lx string) *launch {
		return &launch{kernel: kernel{file: "unary.comp", defines: []string{"LX=" + lx, "X_LOADER=NO_SUCH_LOADER"}}}
	}
	launches := []*launch{bad("64"), bad("32")}
	runAll := func() {
		for _, l := range launches {
			x := d.Upload([]float32{1, 2, 3}, 3)
			l.ins = []input{in(x)}
			l.out = d.out(x.Shape)
			l.groups = [3]int{1, 1, 1}
			d.run("Bad", l)
		}
	}
	require.NoError(t, d.CompileAhead(runAll, nil), "building ahead does not fail the device")
	require.NoError(t, d.Err())
	runAll()
	err := d.Finish()
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "unary.comp"), "error names the shader: %v", err)
}

// TestTrimPool: released buffers wait in the pool (an allocation of their
// size makes none) until TrimPool deletes them.
func TestTrimPool(t *testing.T) {
	d := fresh(t)
	x := d.Upload(make([]float32, 1<<14), 1<<14)
	d.Release(d.Scale(x, 2, 0))
	require.NoError(t, d.Finish())
	created := d.BuffersCreated()
	d.Release(d.Scale(x, 2, 0))
	assert.Equal(t, created, d.BuffersCreated(), "the pooled buffer is reused")
	var pooled int64
	d.call(func() { pooled = d.pooled })
	assert.Equal(t, sizeClass(4<<14), pooled)

	d.TrimPool()
	d.call(func() { pooled = d.pooled })
	assert.Zero(t, pooled)
	y := d.Scale(x, 2, 0)
	assert.Equal(t, created+1, d.BuffersCreated(), "after trimming a new buffer is made")
	got, err := d.Download(y)
	require.NoError(t, err)
	assert.Equal(t, float32(0), got[0])
}

// TestSlowFirst: convolution and attention programs go first, each group
// in its original order.
func TestSlowFirst(t *testing.T) {
	needs := map[string]need{}
	for _, k := range []string{"a:add", "b:conv2d", "c:matmul", "d:attention", "e:conv2d"} {
		file, _, _ := strings.Cut(k[2:], ":")
		needs[k] = need{kernel: kernel{file: file + ".comp"}}
	}
	got := slowFirst([]string{"a:add", "b:conv2d", "c:matmul", "d:attention", "e:conv2d"}, needs)
	assert.Equal(t, []string{"b:conv2d", "d:attention", "e:conv2d", "a:add", "c:matmul"}, got)
}

// TestDummyLike: a warm-up buffer agrees with the size it stands for on
// both things llvmpipe's variant key reads of a buffer's bytes (a power of
// two; bits 8-15 all zero), is a whole number of 16-byte texels, and is
// never bigger than that size.
func TestDummyLike(t *testing.T) {
	kind := func(n int64) [2]bool { return [2]bool{n&(n-1) == 0, (n>>8)&0xff == 0} }
	sizes := []int64{16, 32, 48, 128, 256, 272, 4096, 65536, 65552, 1 << 20, 3 << 20, 12345678}
	for n := int64(16); n < 1<<22; n = n*5/4 + 16 {
		sizes = append(sizes, n/16*16, sizeClass(n))
	}
	for _, n := range sizes {
		got := dummyLike(n)
		assert.Equal(t, kind(n), kind(got), "dummyLike(%d) = %d", n, got)
		assert.Zero(t, got%16, "dummyLike(%d) = %d", n, got)
		assert.LessOrEqual(t, got, max(n, 16), "dummyLike(%d)", n)
	}
	assert.Equal(t, int64(272), dummyLike(sizeClass(5<<20)), "every size class is one kind")
}
