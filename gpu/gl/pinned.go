package gl

import (
	"os"
	"strings"
	"unsafe"

	"github.com/stepwise/stepwise/gpu"

	gogl "github.com/go-gl/gl/v4.3-core/gl"
)

// Weights in host memory of the device's own (GL_AMD_pinned_memory).
//
// llvmpipe's buffers are host memory that it allocates and zeroes when the
// buffer is made (glBufferData), before any byte is uploaded: for SD 1.5's
// 2 GB of weights the zeroing, in 4 KiB page faults, cost more CPU than
// everything else in a load. With GL_AMD_pinned_memory a buffer is made
// over memory the caller owns instead, so UploadFill maps that memory
// itself (see slab), hands it to the driver untouched and lets fill write
// it: one write of each byte, no zeroing. The memory is unmapped when the buffer is deleted (weights
// are never pooled). Only on llvmpipe (and softpipe), where host memory is
// what buffers are anyway; a GPU would read such a buffer over the bus.
// STEPWISE_GL_PINNED=off turns it off.

// pinnedTarget is GL_EXTERNAL_VIRTUAL_MEMORY_BUFFER_AMD.
const pinnedTarget = 0x9160

// pinnedMin is the smallest UploadFill made in pinned memory: smaller ones
// would take a page each for little gain; UploadFill queues them instead
// of waiting for the GL thread.
const pinnedMin = 64 << 10

// glDetectPinned reports whether UploadFill should use pinned memory: a
// software rasteriser that offers GL_AMD_pinned_memory, and host memory
// that this build can map (GL thread, at start).
func (d *Device) glDetectPinned() bool {
	if os.Getenv("STEPWISE_GL_PINNED") == "off" || !hostMemory {
		return false
	}
	r := glString(gogl.RENDERER)
	if !strings.Contains(r, "llvmpipe") && !strings.Contains(r, "softpipe") {
		return false
	}
	var n int32
	gogl.GetIntegerv(gogl.NUM_EXTENSIONS, &n)
	for i := int32(0); i < n; i++ {
		if p := gogl.GetStringi(gogl.EXTENSIONS, uint32(i)); p != nil && gogl.GoStr(p) == "GL_AMD_pinned_memory" {
			return true
		}
	}
	return false
}

// glPinnedFill makes b (of b.size bytes, n of them the tensor's) over new
// host memory, lets fill write its first n bytes, and records it live. It
// reports false, having done nothing, when the memory cannot be mapped or
// the driver refuses it (a buffer too big, say): the caller then makes the
// buffer the usual way, which reports what is wrong.
func (d *Device) glPinnedFill(b *buffer, n int64, fill func(dst []byte)) bool {
	host, sl, ok := d.glHostAlloc(b.size)
	if !ok {
		return false
	}
	b.host, b.slab = host, sl
	// The driver takes the memory as it is: the pages are not touched
	// until fill writes them.
	if !d.glPinnedOver(b, host) {
		d.glHostFree(b)
		return false
	}
	fill(host[:n])
	return true
}

// UploadMapped implements gpu.MappedUploader on llvmpipe with
// GL_AMD_pinned_memory: the buffer is made over raw itself (a read-only
// file mapping), so loading copies nothing and the weights' pages are the
// file's, which the kernel can take back under memory pressure; after each
// dispatch that reads the buffer its whole pages are let go (MADV_DONTNEED
// on the mapping), so a model's weights are resident one op at a time.
// Elsewhere, for tensors under pinnedMin and when the padded buffer would
// reach past cap(raw), it returns nil.
func (d *Device) UploadMapped(dt gpu.DType, raw []byte, shape ...int) *gpu.Tensor {
	s := gpu.Shape(shape)
	if !d.usable() || d.dry || !d.pinned || !dt.Valid() || checkShape(s) != nil || dt.Bytes(s.Numel()) != len(raw) ||
		len(raw) < pinnedMin {
		return nil
	}
	bytes := int64(len(raw))
	buf := &buffer{size: exactSize(bytes), exact: true}
	if int64(cap(raw)) < buf.size {
		return nil
	}
	over := raw[:buf.size]
	ok := false
	d.call(func() { ok = d.glPinnedOver(buf, over) })
	if !ok {
		return nil
	}
	// The whole pages inside the tensor's bytes: those at its ends may
	// hold a neighbour's bytes too, and stay.
	page := uintptr(hostPage)
	start := uintptr(unsafe.Pointer(unsafe.SliceData(raw)))
	lo := (start+page-1)/page*page - start
	hi := (start+uintptr(len(raw)))/page*page - start
	if hi > lo {
		buf.drop = raw[lo:hi:hi]
	}
	st, _ := d.track(buf, bytes)
	return gpu.NewTensor(&d.Tracker, s, dt, st)
}

// glPinnedOver makes b over mem (b.size bytes of memory the caller keeps
// mapped) and records it live; false when the driver refuses it.
func (d *Device) glPinnedOver(b *buffer, mem []byte) bool {
	d.glDrainErrors()
	gogl.GenBuffers(1, &b.id)
	gogl.BindBuffer(pinnedTarget, b.id)
	gogl.BufferData(pinnedTarget, int(b.size), unsafe.Pointer(&mem[0]), gogl.STATIC_DRAW)
	gogl.BindBuffer(pinnedTarget, 0)
	if gogl.GetError() != gogl.NO_ERROR {
		gogl.DeleteBuffers(1, &b.id)
		b.id = 0
		return false
	}
	d.created++
	d.glLive(b)
	return true
}

// A slab is host memory that pinned buffers are cut from, in whole pages:
// mapped in big pieces aligned to huge pages, so that the kernel can back
// them with 2 MiB pages (one page fault where 4 KiB pages take 512; page
// faults were most of a load's CPU time, and in a virtual machine each
// costs more). Tensors are cut one after another and never reused: a
// deleted buffer's pages are given back (MADV_DONTNEED), and a slab is
// unmapped when its last buffer goes and no more are cut from it.
type slab struct {
	mem  []byte
	used int  // bytes cut so far
	live int  // buffers cut from it not yet deleted
	cut  bool // still cut from (the device's current slab)
}

const (
	slabBytes = 64 << 20 // a slab, unless one tensor needs more
	hugePage  = 2 << 20
)

// glHostAlloc cuts size bytes (rounded up to pages) from the current slab,
// or from a new one.
func (d *Device) glHostAlloc(size int64) ([]byte, *slab, bool) {
	page := int64(hostPage)
	size = (size + page - 1) / page * page
	s := d.slab
	if s == nil || int64(s.used)+size > int64(len(s.mem)) {
		mem, err := mapHost(max(slabBytes, (size+hugePage-1)/hugePage*hugePage), hugePage)
		if err != nil {
			return nil, nil, false
		}
		s = &slab{mem: mem}
		d.slabs++
		if size <= slabBytes/2 || d.slab == nil { // a big one-off leaves the current slab current
			if old := d.slab; old != nil {
				old.cut = false
				if old.live == 0 {
					d.unmapSlab(old)
				}
			}
			s.cut = true
			d.slab = s
		}
	}
	mem := s.mem[s.used : s.used+int(size) : s.used+int(size)]
	s.used += int(size)
	s.live++
	return mem, s, true
}

// glHostFree gives back a deleted pinned buffer's memory.
func (d *Device) glHostFree(b *buffer) {
	s := b.slab
	s.live--
	if s.live == 0 && !s.cut {
		d.unmapSlab(s)
	} else {
		dropHost(b.host)
	}
	b.host, b.slab = nil, nil
}

// glFreeSlab unmaps the current slab once every buffer is deleted
// (shutdown).
func (d *Device) glFreeSlab() {
	if s := d.slab; s != nil && s.live == 0 {
		d.unmapSlab(s)
	}
	d.slab = nil
}

func (d *Device) unmapSlab(s *slab) {
	unmapHost(s.mem)
	s.mem = nil
	d.slabs--
}
