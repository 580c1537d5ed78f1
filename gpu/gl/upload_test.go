package gl

import (
	"math/rand"
	"testing"
	"unsafe"

	gogl "github.com/go-gl/gl/v4.3-core/gl"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
)

// rawBytes reads back the bytes of t's buffer: the whole buffer, so that
// a test sees its size too.
func rawBytes(t *testing.T, d *Device, x *gpu.Tensor) []byte {
	t.Helper()
	require.NoError(t, d.Finish())
	buf := x.Store.Handle.(*buffer)
	out := make([]byte, buf.size)
	d.call(func() {
		gogl.BindBuffer(gogl.COPY_READ_BUFFER, buf.id)
		gogl.GetBufferSubData(gogl.COPY_READ_BUFFER, 0, len(out), unsafe.Pointer(&out[0]))
		gogl.BindBuffer(gogl.COPY_READ_BUFFER, 0)
		d.glCheck("rawBytes")
	})
	require.NoError(t, d.Err())
	return out
}

// TestUploadFill: UploadFill stores exactly the bytes fill writes, the same
// bytes UploadRaw stores, for every storage type (quantized blocks
// included) and sizes that are not multiples of anything, in buffers sized
// by exactSize; both read back as gpu/ref reads the same bytes, and the
// memory accounting counts the requested bytes. Both ways of filling are
// tested: the big tensors in memory of the device's own (pinned.go, where
// the driver offers it) and in the driver's buffers mapped for writing.
func TestUploadFill(t *testing.T) {
	for _, pinned := range []bool{true, false} {
		name := map[bool]string{true: "pinned", false: "mapped"}[pinned]
		t.Run(name, func(t *testing.T) {
			d := fresh(t)
			var offered bool
			d.call(func() {
				offered = d.pinned
				d.pinned = d.pinned && pinned
			})
			if pinned && !offered {
				t.Skipf("%s offers no pinned memory", d.Name())
			}
			testUploadFill(t, d, pinned)
		})
	}
}

func testUploadFill(t *testing.T, d *Device, pinned bool) {
	r := ref.New()
	defer r.Close()
	rng := rand.New(rand.NewSource(7))
	types := []gpu.DType{gpu.F32, gpu.F16, gpu.BF16, gpu.Q8_0, gpu.Q4_0, gpu.Q4_K, gpu.Q5_K, gpu.F8E4M3, gpu.F8E5M2}
	for _, dt := range types {
		for _, blocks := range []int{1, 3, 37, 1031, 70001} {
			shape := []int{blocks * dt.Block()}
			if dt.Block() == 1 && blocks > 3 {
				shape = []int{blocks, 3} // an odd element count
			}
			n := gpu.Shape(shape).Numel()
			raw := make([]byte, dt.Bytes(n))
			rng.Read(raw)
			if dt.Quantized() && dt.Block() > 1 {
				// Finite block scales, so that the read-backs compare.
				for b := 0; b < blocks; b++ {
					raw[b*dt.BlockBytes()+1] &= 0x3b
				}
			}
			before := d.Stats().Resident
			calls := 0
			filled := d.UploadFill(dt, func(dst []byte) {
				calls++
				require.Len(t, dst, len(raw))
				copy(dst, raw)
			}, shape...)
			require.NoError(t, d.Err(), "%v %v", dt, shape)
			assert.Equal(t, 1, calls, "fill calls")
			assert.Equal(t, int64(len(raw)), d.Stats().Resident-before, "%v %v: resident bytes", dt, shape)
			viaRaw := d.UploadRaw(dt, raw, shape...)

			got := rawBytes(t, d, filled)
			assert.Equal(t, exactSize(int64(len(raw))), int64(len(got)), "%v %v: buffer size", dt, shape)
			assert.Equal(t, raw, got[:len(raw)], "%v %v: UploadFill bytes", dt, shape)
			assert.Equal(t, raw, rawBytes(t, d, viaRaw)[:len(raw)], "%v %v: UploadRaw bytes", dt, shape)

			if dt.Quantized() && dt.Block() == 1 {
				continue // fp8: only MatMul reads it (and Download only as blocks)
			}
			want, err := r.Download(r.UploadRaw(dt, raw, shape...))
			require.NoError(t, err)
			for _, x := range []*gpu.Tensor{filled, viaRaw} {
				v, err := d.Download(x)
				require.NoError(t, err)
				require.Len(t, v, len(want))
				same := 0
				for i := range v {
					// Bits, so that NaN payloads compare too.
					if *(*uint32)(unsafe.Pointer(&v[i])) == *(*uint32)(unsafe.Pointer(&want[i])) {
						same++
					}
				}
				assert.Equal(t, len(v), same, "%v %v: values equal to gpu/ref's", dt, shape)
			}
			fb := filled.Store.Handle.(*buffer)
			assert.Equal(t, pinned && len(raw) >= pinnedMin, fb.host != nil, "%v %v: in pinned memory", dt, shape)
			d.Release(filled)
			d.Release(viaRaw)
			require.NoError(t, d.Finish())
			assert.Nil(t, fb.host, "%v %v: pinned memory left mapped after release", dt, shape)
			assert.Equal(t, before, d.Stats().Resident, "%v %v: resident after release", dt, shape)
		}
	}
	// Released weights are deleted, not pooled.
	var pooled int64
	d.call(func() { pooled = d.pooled })
	assert.Zero(t, pooled, "pooled bytes after releasing weights")
}

// TestUploadFillErrors: a bad shape or type fails like UploadRaw's, without
// calling fill; an OOM names the requested bytes.
func TestUploadFillErrors(t *testing.T) {
	never := func(t *testing.T) func([]byte) {
		return func([]byte) { assert.Fail(t, "fill called") }
	}
	for name, up := range map[string]func(d *Device, t *testing.T){
		"zero dim":     func(d *Device, t *testing.T) { d.UploadFill(gpu.F16, never(t), 3, 0) },
		"not blocks":   func(d *Device, t *testing.T) { d.UploadFill(gpu.Q8_0, never(t), 3, 16) },
		"unknown type": func(d *Device, t *testing.T) { d.UploadFill(gpu.DType(99), never(t), 4) },
	} {
		t.Run(name, func(t *testing.T) {
			d := fresh(t)
			up(d, t)
			require.Error(t, d.Err())
			assert.Contains(t, d.Err().Error(), "UploadFill")
		})
	}
	t.Run("out of memory", func(t *testing.T) {
		d := fresh(t)
		called := false
		x := d.UploadFill(gpu.F32, func([]byte) { called = true }, 1<<15, 1<<15) // 4 GiB
		err := d.Err()
		if err == nil {
			d.Release(x)
			t.Skip("this driver allocated a 4 GiB buffer; cannot provoke an out-of-memory error here")
		}
		var oom *gpu.OOMError
		require.ErrorAs(t, err, &oom)
		assert.Equal(t, int64(4<<30), oom.Bytes, "requested bytes")
		assert.False(t, called, "fill called without a buffer")
		d.Release(x)
		assert.Zero(t, d.Stats().Resident)
	})
	t.Run("failed device", func(t *testing.T) {
		d := fresh(t)
		d.Fail(assert.AnError)
		x := d.UploadFill(gpu.F16, never(t), 4)
		assert.Equal(t, []int(x.Shape), []int{4})
		assert.Zero(t, d.Stats().Resident)
	})
}

func TestExactSize(t *testing.T) {
	for _, n := range []int64{1, 256, 257, 1000, 4096, 65536, 65537, 1 << 20, 3<<20 + 5, 123456789} {
		c := exactSize(n)
		assert.GreaterOrEqual(t, c, n, "exactSize(%d)", n)
		assert.Zero(t, c%16, "exactSize(%d) = %d: a multiple of 16", n, c)
		assert.NotZero(t, c&(c-1), "exactSize(%d) = %d: not a power of two", n, c)
		assert.NotZero(t, (c>>8)&0xff, "exactSize(%d) = %d: a bit among bits 8-15", n, c)
		assert.LessOrEqual(t, c, max(n+16+256+15, 272), "exactSize(%d) = %d: slack", n, c)
	}
}

// TestPinnedWeightsInKernels: weights big enough for pinned memory, F16 and
// quantized, read by matmul.comp as the same weights uploaded by UploadRaw
// are (the driver sees the memory as any other buffer), on a shape that is
// not a multiple of the tiles.
func TestPinnedWeightsInKernels(t *testing.T) {
	d := fresh(t)
	rnd := rand.New(rand.NewSource(11))
	const m, n, k = 5, 301, 256 // 301x256 F16 is 154 KB, Q8_0 82 KB: both >= pinnedMin
	a := make([]float32, m*k)
	w := make([]float32, n*k)
	for i := range a {
		a[i] = float32(rnd.NormFloat64())
	}
	for i := range w {
		w[i] = float32(rnd.NormFloat64()) / 16
	}
	for _, dt := range []gpu.DType{gpu.F16, gpu.Q8_0} {
		var raw []byte
		if dt == gpu.F16 {
			raw = ref.EncodeF16(w)
		} else {
			var err error
			raw, err = ref.Quantize(dt, w)
			require.NoError(t, err)
		}
		require.GreaterOrEqual(t, len(raw), pinnedMin)
		x := d.Upload(a, m, k)
		filled := d.UploadFill(dt, func(dst []byte) { copy(dst, raw) }, n, k)
		got, err := d.Download(d.MatMul(x, filled, gpu.MatMulOpts{TransB: true}))
		require.NoError(t, err)
		want, err := d.Download(d.MatMul(x, d.UploadRaw(dt, raw, n, k), gpu.MatMulOpts{TransB: true}))
		require.NoError(t, err)
		assert.Equal(t, want, got, "%v: the same kernel on the same bytes", dt)
	}
}

// TestPinnedSlabs: pinned buffers are cut from slabs (a tensor bigger than
// half a slab gets one of its own); a slab is unmapped when its last buffer
// is deleted and no more are cut from it, and the bytes stay right across
// slabs.
func TestPinnedSlabs(t *testing.T) {
	d := fresh(t)
	var pinned bool
	d.call(func() { pinned = d.pinned })
	if !pinned {
		t.Skipf("%s offers no pinned memory", d.Name())
	}
	slabs := func() (n int) {
		d.call(func() { n = d.slabs })
		return n
	}
	sizes := []int{9<<20 + 3, 40 << 20, 1<<20 + 5, 20 << 20, 48<<20 + 1, 100 << 10} // bytes, odd
	var ts []*gpu.Tensor
	var raws [][]byte
	for i, n := range sizes {
		raw := make([]byte, n)
		for j := range raw {
			raw[j] = byte(i*7 + j%251)
		}
		raws = append(raws, raw)
		ts = append(ts, d.UploadFill(gpu.F8E4M3, func(dst []byte) { copy(dst, raw) }, n))
	}
	require.NoError(t, d.Finish())
	// 9, 40 and 1 MiB in the first slab; 20 MiB in a second, which
	// becomes the one cut from; 48 MiB (over half a slab, and not fitting)
	// in one of its own; 100 KiB in the second.
	assert.Equal(t, 3, slabs(), "slabs mapped")
	for i, x := range ts {
		assert.Equal(t, raws[i], rawBytes(t, d, x)[:len(raws[i])], "tensor %d bytes", i)
	}
	release := func(is ...int) {
		for _, i := range is {
			d.Release(ts[i])
		}
		require.NoError(t, d.Finish())
	}
	release(0, 1, 2)
	assert.Equal(t, 2, slabs(), "after releasing the first slab's tensors")
	release(4)
	assert.Equal(t, 1, slabs(), "after releasing the one of its own")
	release(3, 5)
	assert.Equal(t, 1, slabs(), "the slab still cut from stays mapped")
	assert.Zero(t, d.Stats().Resident)
}

// TestPoolCapLeavesOutWeights: the pool keeps released activations up to
// the most activation bytes ever live at once; the weights' bytes do not
// raise that mark (with them, the pool kept freed buffers of sizes never
// asked for again, such as a VAE's earlier levels', up to the model's size).
func TestPoolCapLeavesOutWeights(t *testing.T) {
	d := fresh(t)
	d.poolCap = 4 << 10
	w := d.UploadRaw(gpu.F16, make([]byte, 4<<20), 2<<20) // 4 MiB of weights
	var acts []*gpu.Tensor
	for range 3 {
		acts = append(acts, d.Upload(make([]float32, 1<<16), 1<<16)) // 256 KiB each
	}
	require.NoError(t, d.Finish())
	var three int64
	for _, a := range acts {
		three += a.Store.Handle.(*buffer).size
		d.Release(a)
	}
	other := d.Upload(make([]float32, 1<<17), 1<<17) // 512 KiB: a size not in the pool
	require.NoError(t, d.Finish())
	d.Release(other) // the pool is at the mark: deleted, not kept
	var pooled, high, act int64
	d.call(func() { pooled, high, act = d.pooled, d.highWater, d.actHigh })
	assert.Equal(t, three, pooled, "pooled bytes")
	assert.Equal(t, three, act, "activation high-water mark")
	assert.Greater(t, high, int64(4<<20), "high-water mark with the weights")
	d.Release(w)
}
