package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/stepwise/stepwise/gpu"
)

// KV is one metadata entry to write. Value is a string, bool, uint32,
// int32, uint64, int64, float32, float64 or []string.
type KV struct {
	Key   string
	Value any
}

// WriteTensor is one tensor to write: Shape row-major (outermost first),
// Data its bytes in DType (dt.Bytes of the element count), produced on
// demand so that a converter never holds every tensor at once.
type WriteTensor struct {
	Name  string
	Shape []int
	DType gpu.DType
	Data  func() ([]byte, error)
}

// Write writes a GGUF version 3 file with the default 32-byte alignment.
func Write(w io.Writer, meta []KV, tensors []WriteTensor) error {
	cw := &counter{w: w}
	bw := bufio.NewWriterSize(cw, 1<<20)
	le := binary.LittleEndian
	var werr error
	put := func(v any) {
		if werr == nil {
			werr = binary.Write(bw, le, v)
		}
	}
	str := func(s string) {
		put(uint64(len(s)))
		if werr == nil {
			_, werr = bw.WriteString(s)
		}
	}
	bw.WriteString(Magic)
	put(uint32(3))
	put(uint64(len(tensors)))
	put(uint64(len(meta)))
	for _, kv := range meta {
		str(kv.Key)
		switch v := kv.Value.(type) {
		case string:
			put(TypeString)
			str(v)
		case bool:
			put(TypeBool)
			b := uint8(0)
			if v {
				b = 1
			}
			put(b)
		case uint32:
			put(TypeUint32)
			put(v)
		case int32:
			put(TypeInt32)
			put(v)
		case uint64:
			put(TypeUint64)
			put(v)
		case int64:
			put(TypeInt64)
			put(v)
		case float32:
			put(TypeFloat32)
			put(math.Float32bits(v))
		case float64:
			put(TypeFloat64)
			put(math.Float64bits(v))
		case []string:
			put(TypeArray)
			put(TypeString)
			put(uint64(len(v)))
			for _, s := range v {
				str(s)
			}
		default:
			return fmt.Errorf("gguf: metadata %q: unsupported value type %T", kv.Key, kv.Value)
		}
	}
	off := int64(0)
	sizes := make([]int64, len(tensors))
	for i, t := range tensors {
		typ, ok := GGMLType(t.DType)
		if !ok {
			return fmt.Errorf("gguf: tensor %q: %v has no GGUF type", t.Name, t.DType)
		}
		n := gpu.Shape(t.Shape).Numel()
		size := t.DType.Bytes(n)
		if size < 0 || len(t.Shape) == 0 || len(t.Shape) > MaxDims || t.Shape[len(t.Shape)-1]%t.DType.Block() != 0 {
			return fmt.Errorf("gguf: tensor %q: shape %v cannot be stored as %v", t.Name, t.Shape, t.DType)
		}
		sizes[i] = int64(size)
		str(t.Name)
		put(uint32(len(t.Shape)))
		for j := len(t.Shape) - 1; j >= 0; j-- {
			put(uint64(t.Shape[j]))
		}
		put(typ)
		put(uint64(off))
		off += align(int64(size))
	}
	if werr != nil {
		return fmt.Errorf("gguf: writing the header: %w", werr)
	}
	pos := cw.n + int64(bw.Buffered())
	pad := make([]byte, DefaultAlignment)
	if _, err := bw.Write(pad[:align(pos)-pos]); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	for i, t := range tensors {
		data, err := t.Data()
		if err != nil {
			return fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
		}
		if int64(len(data)) != sizes[i] {
			return fmt.Errorf("gguf: tensor %q: %d bytes of data, want %d for %v %v", t.Name, len(data), sizes[i], t.DType, t.Shape)
		}
		if _, err := bw.Write(data); err != nil {
			return fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
		}
		if _, err := bw.Write(pad[:align(sizes[i])-sizes[i]]); err != nil {
			return fmt.Errorf("gguf: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	return nil
}

func align(n int64) int64 { return (n + DefaultAlignment - 1) / DefaultAlignment * DefaultAlignment }

// counter counts the bytes written through it.
type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
