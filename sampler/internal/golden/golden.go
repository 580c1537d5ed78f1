// Package golden reads the reference tensors in ../shared/golden for the
// sampler tests: a small safetensors reader (F32 and I64 only) and the path
// lookup relative to the module root.
package golden

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
)

// Tensor is one tensor of a golden file, widened to float64.
type Tensor struct {
	Shape []int
	Data  []float64
	F32   []float32 // the raw values for F32 tensors (nil for I64)
}

// File is a whole golden safetensors file held in memory.
type File struct {
	Path    string
	Tensors map[string]Tensor
}

// Dir returns the golden directory (the shared folder beside the module
// root), searching upwards from the working directory for go.mod.
func Dir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			g := filepath.Join(d, "..", "shared", "golden")
			if _, err := os.Stat(g); err != nil {
				return "", fmt.Errorf("golden directory %s: %w", g, err)
			}
			return g, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

// Load reads a golden safetensors file.
func Load(path string) (*File, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(raw) < 8 {
		return nil, fmt.Errorf("%s: too short", path)
	}
	n := binary.LittleEndian.Uint64(raw)
	if n > uint64(len(raw)-8) {
		return nil, fmt.Errorf("%s: header length %d beyond file", path, n)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(raw[8:8+n], &hdr); err != nil {
		return nil, fmt.Errorf("%s: header: %w", path, err)
	}
	body := raw[8+n:]
	f := &File{Path: path, Tensors: map[string]Tensor{}}
	for name, msg := range hdr {
		if name == "__metadata__" {
			continue
		}
		var info struct {
			DType   string   `json:"dtype"`
			Shape   []int    `json:"shape"`
			Offsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &info); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", path, name, err)
		}
		if info.Offsets[0] < 0 || info.Offsets[1] < info.Offsets[0] || info.Offsets[1] > int64(len(body)) {
			return nil, fmt.Errorf("%s: tensor %q: bad offsets", path, name)
		}
		b := body[info.Offsets[0]:info.Offsets[1]]
		t := Tensor{Shape: info.Shape}
		switch info.DType {
		case "F32":
			t.F32 = make([]float32, len(b)/4)
			t.Data = make([]float64, len(b)/4)
			for i := range t.F32 {
				t.F32[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
				t.Data[i] = float64(t.F32[i])
			}
		case "I64":
			t.Data = make([]float64, len(b)/8)
			for i := range t.Data {
				t.Data[i] = float64(int64(binary.LittleEndian.Uint64(b[8*i:])))
			}
		default:
			return nil, fmt.Errorf("%s: tensor %q: dtype %s not supported", path, name, info.DType)
		}
		f.Tensors[name] = t
	}
	return f, nil
}

// Names lists the tensor names in sorted order.
func (f *File) Names() []string {
	var s []string
	for k := range f.Tensors {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}
