package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func joinInts(v []int) string {
	var b strings.Builder
	for i, x := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(x))
	}
	return b.String()
}

func TestRoundTrip(t *testing.T) {
	entries := []Entry{
		{Name: "b", DType: F32, Shape: []int{2}, Data: []byte{0, 0, 128, 63, 0, 0, 0, 64}},
		{Name: "a", DType: F16, Shape: []int{1, 3}, Data: []byte{1, 2, 3, 4, 5, 6}},
		{Name: "scalar", DType: I64, Shape: []int{}, Data: []byte{7, 0, 0, 0, 0, 0, 0, 0}},
		{Name: "empty", DType: BF16, Shape: []int{0, 5}},
		{Name: `we"ird/\name`, DType: Bool, Shape: []int{1}, Data: []byte{1}},
	}
	var buf bytes.Buffer
	if err := Write(&buf, entries, map[string]string{"format": "pt", "k": "v\n"}); err != nil {
		t.Fatal(err)
	}
	if (binary.LittleEndian.Uint64(buf.Bytes()))%8 != 0 {
		t.Error("header not padded to 8 bytes")
	}
	f, err := FromBytes("mem", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, ti := range f.Tensors() {
		names = append(names, ti.Name)
	}
	if got := strings.Join(names, " "); got != `a b empty scalar we"ird/\name` {
		t.Errorf("names %q", got)
	}
	for _, e := range entries {
		d, err := f.Data(e.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(d, e.Data) {
			t.Errorf("%s: data %v, want %v", e.Name, d, e.Data)
		}
		info, _ := f.Lookup(e.Name)
		if info.DType != e.DType || joinInts(info.Shape) != joinInts(e.Shape) {
			t.Errorf("%s: %+v", e.Name, info)
		}
	}
	if m := f.Metadata(); len(m) != 2 || m["format"] != "pt" || m["k"] != "v\n" {
		t.Errorf("metadata %v", m)
	}
	if _, err := f.Data("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("missing tensor: %v", err)
	}
	if f.Path() != "mem" {
		t.Errorf("Path %q", f.Path())
	}
}

// raw builds a file from a header string and a data section of n bytes.
func raw(header string, n int) []byte {
	b := make([]byte, 8+len(header)+n)
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	copy(b[8:], header)
	return b
}

func TestBroken(t *testing.T) {
	ok := `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	if _, err := FromBytes("ok", raw(ok, 8)); err != nil {
		t.Fatalf("valid file rejected: %v", err)
	}
	long := make([]byte, 8)
	binary.LittleEndian.PutUint64(long, 1<<40)
	cases := []struct {
		name   string
		data   []byte
		tensor string
		msg    string
	}{
		{"short", []byte{1, 2, 3}, "", "too short"},
		{"huge header", long, "", "exceeds the"},
		{"truncated header", raw(ok, 8)[:20], "", "truncated"},
		{"truncated data", raw(ok, 4), "a", "run past"},
		{"not json", raw(`hello`, 0), "", "header"},
		{"array", raw(`[1,2]`, 0), "", "want the header"},
		{"trailing", raw(`{} {}`, 0), "", "after the header"},
		{"unterminated", raw(`{"a":{"dtype":"F32"`, 0), "a", ""},
		{"dup tensor", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), "a", "duplicate"},
		{"dup field", raw(`{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}`, 4), "a", "duplicate field dtype"},
		{"unknown dtype", raw(`{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}`, 4), "a", `unknown dtype "F33"`},
		{"dtype number", raw(`{"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}`, 4), "a", "dtype to be a string"},
		{"negative dim", raw(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4), "a", "negative"},
		{"float dim", raw(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, 4), "a", "not an integer"},
		{"big dim", raw(`{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}}`, 4), "a", "out of range"},
		{"overflow", raw(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, 4), "a", "overflows"},
		{"overflow size", raw(`{"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,4]}}`, 4), "a", "overflows"},
		{"wrong size", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 8), "a", "needs 8"},
		{"reversed", raw(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, 8), "a", "bad data_offsets"},
		{"three offsets", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, 8), "a", "3 values"},
		{"missing shape", raw(`{"a":{"dtype":"F32","data_offsets":[0,4]}}`, 4), "a", "missing shape"},
		{"missing offsets", raw(`{"a":{"dtype":"F32","shape":[1]}}`, 4), "a", "missing data_offsets"},
		{"missing dtype", raw(`{"a":{"shape":[1],"data_offsets":[0,4]}}`, 4), "a", "missing dtype"},
		{"extra field", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, 4), "a", `unknown field "x"`},
		{"entry not object", raw(`{"a":[1]}`, 0), "a", "want an object"},
		{"overlap", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), "b", `overlap tensor "a"`},
		{"empty name", raw(`{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 4), "", "empty name"},
		{"metadata not object", raw(`{"__metadata__":"x"}`, 0), "", "__metadata__ to be an object"},
		{"metadata number", raw(`{"__metadata__":{"a":1}}`, 0), "", `__metadata__["a"] to be a string`},
		{"metadata dup", raw(`{"__metadata__":{"a":"1","a":"2"}}`, 0), "", `duplicate __metadata__ key "a"`},
		{"metadata twice", raw(`{"__metadata__":{},"__metadata__":{}}`, 0), "__metadata__", "duplicate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := FromBytes("bad.safetensors", c.data)
			if err == nil {
				t.Fatalf("accepted: %+v", f.Tensors())
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T %v is not a *FormatError", err, err)
			}
			if fe.Path != "bad.safetensors" || fe.Tensor != c.tensor || !strings.Contains(fe.Msg, c.msg) {
				t.Errorf("got %q (tensor %q), want tensor %q and %q", err, fe.Tensor, c.tensor, c.msg)
			}
			if !strings.Contains(err.Error(), "bad.safetensors") {
				t.Errorf("error does not name the file: %v", err)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing.safetensors")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	empty := filepath.Join(dir, "empty.safetensors")
	os.WriteFile(empty, nil, 0o644)
	var fe *FormatError
	if _, err := Open(empty); !errors.As(err, &fe) || fe.Path != empty {
		t.Errorf("empty file: %v", err)
	}
	if _, err := Open(dir); !errors.As(err, &fe) || !strings.Contains(err.Error(), "regular") {
		t.Errorf("directory: %v", err)
	}
	// A truncated copy of a valid file.
	var buf bytes.Buffer
	Write(&buf, []Entry{{Name: "w", DType: F32, Shape: []int{4}, Data: make([]byte, 16)}}, nil)
	cut := filepath.Join(dir, "cut.safetensors")
	os.WriteFile(cut, buf.Bytes()[:buf.Len()-3], 0o644)
	if _, err := Open(cut); !errors.As(err, &fe) || fe.Tensor != "w" || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated file: %v", err)
	}
	whole := filepath.Join(dir, "whole.safetensors")
	os.WriteFile(whole, buf.Bytes(), 0o644)
	f, err := Open(whole)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := f.Data("w"); err != nil || len(d) != 16 {
		t.Errorf("Data: %d bytes, %v", len(d), err)
	}
	if err := f.Close(); err != nil {
		t.Error(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestWriteErrors(t *testing.T) {
	var buf bytes.Buffer
	for _, es := range [][]Entry{
		{{Name: "a", DType: F32, Shape: []int{2}, Data: make([]byte, 4)}},
		{{Name: "a", DType: "X", Shape: []int{1}}},
		{{Name: "a", DType: F32, Shape: []int{1}, Data: make([]byte, 4)}, {Name: "a", DType: F32, Shape: []int{1}, Data: make([]byte, 4)}},
		{{Name: "__metadata__", DType: F32, Shape: []int{}, Data: make([]byte, 4)}},
	} {
		if err := Write(&buf, es, nil); err == nil {
			t.Errorf("Write accepted %+v", es)
		}
	}
}
