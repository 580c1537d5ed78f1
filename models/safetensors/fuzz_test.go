package safetensors

import (
	"errors"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to FromBytes: it must return a File whose
// every tensor is consistent with its bounds, or a *FormatError; never panic.
func FuzzOpen(f *testing.F) {
	f.Add(raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := FromBytes("fuzz", data)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error is %T, not *FormatError: %v", err, err)
			}
			return
		}
		prev := ""
		for i, ti := range file.Tensors() {
			if i > 0 && ti.Name <= prev {
				t.Fatalf("not sorted/unique: %q after %q", ti.Name, prev)
			}
			prev = ti.Name
			d, err := file.Data(ti.Name)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(d)) != ti.End-ti.Begin || int64(len(d)) != ti.NumElements()*int64(ti.DType.Size()) {
				t.Fatalf("%s: %d bytes for %+v", ti.Name, len(d), ti)
			}
		}
	})
}
