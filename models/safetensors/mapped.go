package safetensors

import (
	"github.com/edsrzf/mmap-go"
)

// FromMapped wraps tensors already located in a mapped file of another
// container (a GGUF file) as a File, so that the checkpoint loaders read
// them through the same key maps: data is the container's data section
// inside mm (offsets in tensors are relative to it), mm is unmapped by
// Close. The entries are validated like a safetensors header's (sizes,
// bounds, overlaps); the block types Q8_0, Q4_0, Q4_K and Q5_K are
// accepted here only.
func FromMapped(path string, mm mmap.MMap, data []byte, tensors []TensorInfo, meta map[string]string) (*File, error) {
	f := &File{path: path, data: data, meta: meta, tensors: tensors, index: make(map[string]int, len(tensors))}
	if err := f.check(); err != nil {
		return nil, err
	}
	f.mm = mm
	return f, nil
}
