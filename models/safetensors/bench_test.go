package safetensors_test

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/safetensors"
)

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
	entries := golden.SD15Keys(b)
	path := golden.SD15File(b)
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.Size())/1e9, "GB")
	runtime.GC()
	before := rssKB()
	var grow float64
	for b.Loop() {
		f, err := safetensors.Open(path)
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
