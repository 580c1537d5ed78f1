package checkpoint

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// writeSD15 writes a full-size SD 1.5 single file (1130 F16 tensors,
// 2.13 GB, sparse zero data) with the training-only extras real files
// carry.
func writeSD15(tb testing.TB) string {
	tb.Helper()
	var extras []safetensors.Entry
	for _, name := range []string{"alphas_cumprod", "betas", "model_ema.num_updates", "cond_stage_model.transformer.text_model.embeddings.position_ids"} {
		extras = append(extras, safetensors.Entry{Name: name, DType: safetensors.F32, Shape: []int{1}})
	}
	return golden.SD15File(tb, extras...)
}

// TestSD15Synthetic loads the full-size layout without a config: the
// inferred hyper-parameters must be SD 1.5's.
func TestSD15Synthetic(t *testing.T) {
	m := load(t, writeSD15(t), "")
	assert.Equal(t, "SD 1.x", m.Family)
	assert.Contains(t, m.FamilyWhy, "context dim 768, CLIP ViT-L text encoder, epsilon")
	want := newConfigs()
	want.Texts["text_encoder"] = nets.TextConfig{HiddenAct: "quick_gelu"}
	want.validate("")
	assert.Equal(t, want.UNet, m.UNet, "inferred U-Net")
	assert.Equal(t, want.VAE, m.VAE, "inferred VAE")
	assert.Equal(t, want.text1(), m.Text("text_encoder").Config, "inferred text encoder")
	var params int64
	for _, s := range m.Stats() {
		params += s.Params
	}
	assert.Equal(t, 1134, m.Tensors)
	assert.Equal(t, 4, m.Ignored)
	assert.Equal(t, int64(1066235307), params)
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
		require.NoError(b, err)
		if g := rssKB() - before; g > grow {
			grow = g
		}
		m.Close()
	}
	b.ReportMetric(grow/1024, "MB-RSS-growth")
}
