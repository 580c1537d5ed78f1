package golden

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/models/safetensors"
)

// SD15Keys returns the tensors of a full-size SD 1.5 single-file checkpoint
// as sd15_keys.txt lists them (name, F16, shape), in the listing's order.
func SD15Keys(t testing.TB) []safetensors.Entry {
	t.Helper()
	path := Path(t, "sd15_keys.txt")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []safetensors.Entry
	for i, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 3 || f[1] != "float16" {
			t.Fatalf("%s:%d: want key<TAB>float16<TAB>[shape], got %q", path, i+1, line)
		}
		e := safetensors.Entry{Name: f[0], DType: safetensors.F16, Shape: []int{}}
		for _, s := range strings.Split(strings.Trim(f[2], "[]"), ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			d, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("%s:%d: bad shape %q", path, i+1, f[2])
			}
			e.Shape = append(e.Shape, d)
		}
		out = append(out, e)
	}
	return out
}

// SD15File writes a full-size SD 1.5 single file (SD15Keys plus extra,
// sorted by name; 2.13 GB) into t.TempDir() and returns its path. Its data
// section is sparse zeros, so it costs next to nothing on disk.
func SD15File(t testing.TB, extra ...safetensors.Entry) string {
	t.Helper()
	es := append(SD15Keys(t), extra...)
	sort.Slice(es, func(i, j int) bool { return es[i].Name < es[j].Name })
	hdr, size, err := safetensors.EncodeHeader(es, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sd15.safetensors")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(hdr); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(len(hdr)) + size); err != nil {
		t.Fatal(err)
	}
	return path
}
