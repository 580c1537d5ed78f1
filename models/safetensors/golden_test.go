package safetensors_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/safetensors"
)

// These tests read the golden files through internal/golden, which imports
// this package; they live in the external test package to avoid a cycle.

func TestGoldenSingleFile(t *testing.T) {
	f, err := safetensors.Open(golden.Path(t, "sd15-mini.fp16.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ts := f.Tensors()
	if len(ts) != 986 {
		t.Fatalf("got %d tensors, want 986", len(ts))
	}
	// Every key and shape of the keys listing.
	kf, err := os.Open(golden.Path(t, "sd15_mini_keys.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	sc := bufio.NewScanner(kf)
	n := 0
	var total int64
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		name, shape, _ := strings.Cut(line, "\t")
		info, ok := f.Lookup(name)
		if !ok {
			t.Fatalf("tensor %q missing", name)
		}
		if got := strings.ReplaceAll(shape, ",", ""); got != fmt.Sprint(info.Shape) {
			t.Errorf("%s: shape %v, listing says %s", name, info.Shape, shape)
		}
		if info.DType != safetensors.F16 {
			t.Errorf("%s: dtype %s, want F16", name, info.DType)
		}
		d, err := f.Data(name)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(d)) != info.NumElements()*2 {
			t.Errorf("%s: %d bytes for %v", name, len(d), info.Shape)
		}
		total += int64(len(d))
		n++
	}
	if n != 986 {
		t.Fatalf("listing has %d keys", n)
	}
	st, _ := os.Stat(f.Path())
	// The data sections are packed: header + tensors = file size.
	raw, err := os.ReadFile(f.Path())
	if err != nil {
		t.Fatal(err)
	}
	hdr := int64(binary.LittleEndian.Uint64(raw[:8]))
	if 8+hdr+total != st.Size() {
		t.Errorf("8+%d+%d != file size %d", hdr, total, st.Size())
	}
	for i := 1; i < len(ts); i++ {
		if ts[i-1].Name >= ts[i].Name {
			t.Fatalf("Tensors not sorted: %q before %q", ts[i-1].Name, ts[i].Name)
		}
	}
	pe, _ := f.Lookup("cond_stage_model.transformer.text_model.embeddings.position_embedding.weight")
	if pe.Begin != 0 || pe.End != 9856 || len(pe.Shape) != 2 || pe.Shape[0] != 77 || pe.Shape[1] != 64 {
		t.Errorf("position_embedding: %+v", pe)
	}
	if gt, ok := safetensors.F16.GPU(); !ok || gt.Size() != 2 {
		t.Errorf("F16.GPU() = %v, %v", gt, ok)
	}
	if _, ok := safetensors.I64.GPU(); ok {
		t.Error("I64 has no gpu type")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Data(pe.Name); !errors.Is(err, safetensors.ErrClosed) {
		t.Errorf("Data after Close: %v", err)
	}
}

func TestGoldenDiffusersI64(t *testing.T) {
	f, err := safetensors.Open(golden.Path(t, "tokenizer.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, ok := f.Lookup("input_ids")
	if !ok || info.DType != safetensors.I64 || len(info.Shape) != 2 || info.Shape[0] != 32 || info.Shape[1] != 77 {
		t.Fatalf("input_ids: %+v", info)
	}
	d, _ := f.Data("input_ids")
	// README: each row is [49406] + ids + [49407] padding.
	if got := binary.LittleEndian.Uint64(d); got != 49406 {
		t.Errorf("input_ids[0][0] = %d, want 49406 (BOS)", got)
	}
	if got := binary.LittleEndian.Uint64(d[76*8:]); got != 49407 {
		t.Errorf("input_ids[0][76] = %d, want 49407", got)
	}
}
