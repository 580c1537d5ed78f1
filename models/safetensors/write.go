package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
)

// Entry is one tensor to write with Write or EncodeHeader.
type Entry struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte // little-endian; ignored by EncodeHeader
}

// EncodeHeader returns the 8-byte length and the JSON header for entries,
// whose data are laid out back to back in the given order, and the size of
// the data section that must follow. The header is padded with spaces to a
// multiple of 8 bytes, as the format recommends.
func EncodeHeader(entries []Entry, meta map[string]string) (header []byte, dataSize int64, err error) {
	var buf bytes.Buffer
	buf.WriteString("{")
	first := true
	sep := func() {
		if !first {
			buf.WriteString(",")
		}
		first = false
	}
	if len(meta) > 0 {
		keys := make([]string, 0, len(meta))
		for k := range meta {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		sep()
		buf.WriteString(`"__metadata__":{`)
		for i, k := range keys {
			if i > 0 {
				buf.WriteString(",")
			}
			writeJSONString(&buf, k)
			buf.WriteString(":")
			writeJSONString(&buf, meta[k])
		}
		buf.WriteString("}")
	}
	seen := map[string]bool{}
	for _, e := range entries {
		if e.Name == "" || e.Name == metadataKey || seen[e.Name] {
			return nil, 0, fmt.Errorf("safetensors: cannot write tensor named %q (empty, reserved or duplicate)", e.Name)
		}
		seen[e.Name] = true
		if e.DType.Size() == 0 {
			return nil, 0, fmt.Errorf("safetensors: tensor %q: unknown dtype %q", e.Name, e.DType)
		}
		n := int64(e.DType.Size())
		for _, d := range e.Shape {
			if d < 0 {
				return nil, 0, fmt.Errorf("safetensors: tensor %q: negative dimension in %v", e.Name, e.Shape)
			}
			n *= int64(d)
		}
		sep()
		writeJSONString(&buf, e.Name)
		buf.WriteString(`:{"dtype":"` + string(e.DType) + `","shape":[`)
		for i, d := range e.Shape {
			if i > 0 {
				buf.WriteString(",")
			}
			buf.WriteString(strconv.Itoa(d))
		}
		fmt.Fprintf(&buf, `],"data_offsets":[%d,%d]}`, dataSize, dataSize+n)
		dataSize += n
	}
	buf.WriteString("}")
	for buf.Len()%8 != 0 {
		buf.WriteByte(' ')
	}
	header = make([]byte, 8+buf.Len())
	binary.LittleEndian.PutUint64(header, uint64(buf.Len()))
	copy(header[8:], buf.Bytes())
	return header, dataSize, nil
}

// Write writes a complete safetensors file: the header from EncodeHeader and
// each entry's Data, whose length must match its dtype and shape.
func Write(w io.Writer, entries []Entry, meta map[string]string) error {
	header, _, err := EncodeHeader(entries, meta)
	if err != nil {
		return err
	}
	for _, e := range entries {
		want := e.DType.Size()
		for _, d := range e.Shape {
			want *= d
		}
		if len(e.Data) != want {
			return fmt.Errorf("safetensors: tensor %q: %d bytes of data, %s %v needs %d", e.Name, len(e.Data), e.DType, e.Shape, want)
		}
	}
	if _, err := w.Write(header); err != nil {
		return fmt.Errorf("safetensors: writing header: %w", err)
	}
	for _, e := range entries {
		if _, err := w.Write(e.Data); err != nil {
			return fmt.Errorf("safetensors: writing tensor %q: %w", e.Name, err)
		}
	}
	return nil
}

func writeJSONString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // a string always marshals
	buf.Write(b)
}
