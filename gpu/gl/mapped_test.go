//go:build linux

package gl

import (
	"bufio"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
)

// mappedRSS is the resident bytes of the mapping that starts at mem[0]
// (/proc/self/smaps).
func mappedRSS(t *testing.T, mem []byte) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	require.NoError(t, err)
	defer f.Close()
	start := fmt.Sprintf("%x-", uintptr(unsafe.Pointer(&mem[0])))
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) > 0 && !strings.HasSuffix(f[0], ":") { // a mapping's first line
			in = strings.HasPrefix(line, start)
			continue
		}
		if in && strings.HasPrefix(line, "Rss:") {
			kb, err := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	require.Fail(t, "mapping not in /proc/self/smaps")
	return 0
}

// TestUploadMapped: a weight read in place from a read-only file mapping
// (an F16 [257, 300] matrix at an odd offset, as safetensors places
// tensors) gives the matmul gpu/ref gives and the copied weight gives, bit
// for bit, and its pages leave the process after each dispatch that reads
// it; tensors under pinnedMin and mappings too short for the padded buffer
// are refused (nil: the caller copies).
func TestUploadMapped(t *testing.T) {
	d := fresh(t)
	if !d.pinned {
		t.Skipf("%s offers no pinned memory", d.Name())
	}
	r := ref.New()
	defer r.Close()
	const n, k, m, off = 257, 300, 7, 6
	rng := rand.New(rand.NewSource(3))
	w := make([]float32, n*k)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	wraw := ref.EncodeF16(w)
	file := make([]byte, off+len(wraw)+1000)
	copy(file[off:], wraw)
	path := filepath.Join(t.TempDir(), "w.bin")
	require.NoError(t, os.WriteFile(path, file, 0o644))
	fd, err := os.Open(path)
	require.NoError(t, err)
	defer fd.Close()
	mem, err := unix.Mmap(int(fd.Fd()), 0, len(file), unix.PROT_READ, unix.MAP_PRIVATE)
	require.NoError(t, err)
	defer unix.Munmap(mem)
	raw := mem[off : off+len(wraw)]

	x := make([]float32, m*k)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	want, err := r.Download(r.MatMul(r.Upload(x, m, k), r.UploadRaw(gpu.F16, wraw, n, k), gpu.MatMulOpts{TransB: true}))
	require.NoError(t, err)
	copied, err := d.Download(d.MatMul(d.Upload(x, m, k), d.UploadRaw(gpu.F16, wraw, n, k), gpu.MatMulOpts{TransB: true}))
	require.NoError(t, err)

	wt := d.UploadMapped(gpu.F16, raw, n, k)
	require.NotNil(t, wt, "UploadMapped on %s", d.Name())
	xt := d.Upload(x, m, k)
	for round := 0; round < 2; round++ { // the second reads the pages back from the file
		got, err := d.Download(d.MatMul(xt, wt, gpu.MatMulOpts{TransB: true}))
		require.NoError(t, err)
		assert.Equal(t, copied, got, "round %d: in place vs copied", round)
		for i := range want {
			assert.InDelta(t, want[i], got[i], 1e-3, "round %d: element %d vs gpu/ref (F32 sums of 300 products)", round, i)
		}
		// Only the two pages at the tensor's ends, which it shares with
		// the file's other bytes, may stay.
		assert.LessOrEqual(t, mappedRSS(t, mem), int64(2*hostPage), "round %d: resident bytes of the mapping after the dispatch", round)
	}
	d.Release(wt)
	require.NoError(t, d.Finish())

	assert.Nil(t, d.UploadMapped(gpu.F16, mem[off:off+2*1000], 1000), "under pinnedMin")
	assert.Nil(t, d.UploadMapped(gpu.F16, raw[:len(raw):len(raw)], n, k), "no room for the padded buffer")
	assert.Nil(t, d.UploadMapped(gpu.F16, raw[:len(raw)-2], n, k), "bytes that are not the shape's")
	assert.NoError(t, d.Err())
}
