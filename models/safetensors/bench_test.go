package safetensors

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// sd15Entries reads the full-size SD1.5 key listing (key, dtype, shape).
func sd15Entries(tb testing.TB) []Entry {
	tb.Helper()
	f, err := os.Open(filepath.Join(goldenDir(tb), "sd15_keys.txt"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, "\t")
		if len(parts) != 3 || parts[1] != "float16" {
			tb.Fatalf("unexpected line %q", line)
		}
		e := Entry{Name: parts[0], DType: F16, Shape: []int{}}
		for _, s := range strings.Split(strings.Trim(parts[2], "[]"), ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			d, err := strconv.Atoi(s)
			if err != nil {
				tb.Fatal(err)
			}
			e.Shape = append(e.Shape, d)
		}
		out = append(out, e)
	}
	return out
}

// writeSparse writes a safetensors file with the entries' header and a
// zero (sparse, so nearly free on disk) data section.
func writeSparse(tb testing.TB, path string, entries []Entry) int64 {
	tb.Helper()
	hdr, size, err := EncodeHeader(entries, map[string]string{"format": "pt"})
	if err != nil {
		tb.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(hdr); err != nil {
		tb.Fatal(err)
	}
	if err := f.Truncate(int64(len(hdr)) + size); err != nil {
		tb.Fatal(err)
	}
	return int64(len(hdr)) + size
}

// rssKB reads this process's resident set size.
func rssKB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			v, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return v
		}
	}
	return 0
}

// BenchmarkOpenSD15 opens a synthetic full-size SD1.5 file (1130 F16
// tensors, 2.13 GB) and looks up every tensor's data. It reports the
// resident memory growth while the file is open.
func BenchmarkOpenSD15(b *testing.B) {
	entries := sd15Entries(b)
	path := filepath.Join(b.TempDir(), "sd15.safetensors")
	size := writeSparse(b, path, entries)
	b.ReportMetric(float64(size)/1e9, "GB")
	runtime.GC()
	before := rssKB()
	var grow float64
	for b.Loop() {
		f, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if len(f.Tensors()) != 1130 {
			b.Fatalf("%d tensors", len(f.Tensors()))
		}
		for _, e := range entries {
			if _, err := f.Data(e.Name); err != nil {
				b.Fatal(err)
			}
		}
		if g := rssKB() - before; g > grow {
			grow = g
		}
		f.Close()
	}
	b.ReportMetric(grow/1024, "MB-RSS-growth")
}
