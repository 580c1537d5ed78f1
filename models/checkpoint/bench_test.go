package checkpoint

import (
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/safetensors"
)

// writeSD15 writes a full-size SD 1.5 single file (1130 F16 tensors,
// 2.13 GB, keys and shapes from sd15_keys.txt plus the training-only
// extras real files carry) whose data section is sparse zeros, so it costs
// next to nothing on disk.
func writeSD15(tb testing.TB) string {
	tb.Helper()
	g := golden.Dir(tb)
	data, err := os.ReadFile(filepath.Join(g, "sd15_keys.txt"))
	if err != nil {
		tb.Fatal(err)
	}
	var es []safetensors.Entry
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		e := safetensors.Entry{Name: f[0], DType: safetensors.F16, Shape: []int{}}
		for _, s := range strings.Split(strings.Trim(f[2], "[]"), ",") {
			if s = strings.TrimSpace(s); s != "" {
				d, err := strconv.Atoi(s)
				if err != nil {
					tb.Fatal(err)
				}
				e.Shape = append(e.Shape, d)
			}
		}
		es = append(es, e)
	}
	for _, extra := range []string{"alphas_cumprod", "betas", "model_ema.num_updates", "cond_stage_model.transformer.text_model.embeddings.position_ids"} {
		es = append(es, safetensors.Entry{Name: extra, DType: safetensors.F32, Shape: []int{1}})
	}
	sort.Slice(es, func(i, j int) bool { return es[i].Name < es[j].Name })
	hdr, size, err := safetensors.EncodeHeader(es, map[string]string{"format": "pt"})
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "sd15.safetensors")
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
	return path
}

// TestSD15Synthetic loads the full-size layout without a config: the
// inferred hyper-parameters must be SD 1.5's.
func TestSD15Synthetic(t *testing.T) {
	m := load(t, writeSD15(t), "")
	if m.Family != "SD 1.x" || !strings.Contains(m.FamilyWhy, "context dim 768, CLIP ViT-L text encoder, epsilon") {
		t.Errorf("family %q: %s", m.Family, m.FamilyWhy)
	}
	var want configs
	want.Scheduler = DefaultScheduler()
	want.validate("")
	if !reflect.DeepEqual(m.UNet, want.UNet) || !reflect.DeepEqual(m.VAE, want.VAE) {
		t.Errorf("inferred\n%+v\n%+v\nwant\n%+v\n%+v", m.UNet, m.VAE, want.UNet, want.VAE)
	}
	if m.Text != want.Text {
		t.Errorf("text %+v, want %+v", m.Text, want.Text)
	}
	var params int64
	for _, s := range m.Stats() {
		params += s.Params
	}
	if m.Tensors != 1134 || m.Ignored != 4 || params != 1066235307 {
		t.Errorf("tensors %d ignored %d params %d", m.Tensors, m.Ignored, params)
	}
}

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

// BenchmarkLoadSD15 measures Load on the synthetic 2.13 GB SD 1.5 file
// (mmap, header validation, key conversion, shape checks) and the
// resident-memory growth while it is open.
func BenchmarkLoadSD15(b *testing.B) {
	path := writeSD15(b)
	runtime.GC()
	before := rssKB()
	var grow float64
	for b.Loop() {
		m, err := Load(path, "")
		if err != nil {
			b.Fatal(err)
		}
		if g := rssKB() - before; g > grow {
			grow = g
		}
		m.Close()
	}
	b.ReportMetric(grow/1024, "MB-RSS-growth")
}
