package gl

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// hostMemory: mapHost works in this build.
const hostMemory = true

// hostPage is the size of a memory page.
var hostPage = unix.Getpagesize()

// mapHost maps size bytes of zeroed anonymous memory, aligned to align (a
// power of two, at least a page), asking for transparent huge pages (fewer
// page faults when it is first written).
func mapHost(size, align int64) ([]byte, error) {
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(size+align), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	// Trim the mapping to an aligned start and size bytes.
	skip := uintptr((align - int64(uintptr(p))%align) % align)
	if skip > 0 {
		_ = unix.MunmapPtr(p, skip)
	}
	_ = unix.MunmapPtr(unsafe.Add(p, skip+uintptr(size)), uintptr(align)-skip)
	mem := unsafe.Slice((*byte)(unsafe.Add(p, skip)), size)
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE) // advice only
	return mem, nil
}

// unmapHost unmaps memory from mapHost.
func unmapHost(mem []byte) { _ = unix.MunmapPtr(unsafe.Pointer(&mem[0]), uintptr(len(mem))) }

// dropHost gives back the pages of mem (part of a mapHost mapping): they
// read as zeros if touched again.
func dropHost(mem []byte) {
	if len(mem) > 0 {
		_ = unix.Madvise(mem, unix.MADV_DONTNEED) // advice only
	}
}
