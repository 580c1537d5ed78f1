package checkpoint

import (
	"errors"
	"fmt"
	"io"

	"github.com/edsrzf/mmap-go"

	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/models/gguf"
	"github.com/stepwise/stepwise/models/safetensors"
)

// OpenWeights opens a weights file: a safetensors file, or a GGUF file (as
// stable-diffusion.cpp's convert, ComfyUI-GGUF and `stepwise convert`
// write them) by its magic. A GGUF file's tensors keep their names, so the
// single-file key maps read it like a safetensors file with the same
// names; its quantized tensors (Q8_0, Q4_0, Q4_K, Q5_K) keep their type.
// GGUF's string metadata is the File's metadata.
func OpenWeights(path string) (*safetensors.File, error) {
	fd, st, err := safefile.Open(path)
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	head := make([]byte, 4)
	n, _ := io.ReadFull(fd, head)
	if n < 4 || string(head) != gguf.Magic {
		fd.Close()
		return safetensors.Open(path)
	}
	defer fd.Close()
	if st.Size() > int64(^uint(0)>>1) {
		return nil, &gguf.FormatError{Path: path, Msg: "file too large to map"}
	}
	mm, err := mmap.Map(fd, mmap.RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("gguf %s: mapping: %w", path, err)
	}
	var g *gguf.File
	if ferr := safefile.Guard(path, func() { g, err = gguf.Parse(path, mm) }); ferr != nil {
		err = ferr
	}
	if err != nil {
		mm.Unmap()
		return nil, err
	}
	infos := make([]safetensors.TensorInfo, 0, len(g.Tensors))
	for _, t := range g.Tensors {
		dt, ok := safetensors.FromGPU(t.DType)
		if !ok { // gguf maps only types that safetensors names
			mm.Unmap()
			return nil, &gguf.FormatError{Path: path, Tensor: t.Name, Msg: fmt.Sprintf("type %v has no storage type here", t.DType)}
		}
		infos = append(infos, safetensors.TensorInfo{Name: t.Name, DType: dt, Shape: t.Shape, Begin: t.Offset, End: t.Offset + t.Size})
	}
	meta := map[string]string{}
	for k, v := range g.Meta {
		if s, ok := v.(string); ok {
			meta[k] = s
		}
	}
	f, err := safetensors.FromMapped(path, mm, mm[g.DataStart:], infos, meta)
	if err != nil {
		mm.Unmap()
		var fe *safetensors.FormatError
		if errors.As(err, &fe) {
			return nil, &gguf.FormatError{Path: path, Tensor: fe.Tensor, Msg: fe.Msg}
		}
		return nil, err
	}
	return f, nil
}
