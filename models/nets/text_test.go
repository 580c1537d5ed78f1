package nets

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stepwise/stepwise/internal/golden"
)

func TestTextEncoderGolden(t *testing.T) {
	dir := golden.Dir(t)
	var c TextConfig
	loadConfig(t, filepath.Join(dir, "sd15-mini/text_encoder/config.json"), &c)
	w := loadWeights(t, filepath.Join(dir, "sd15-mini/text_encoder/model.fp16.safetensors"))
	g := golden.Open(t, "text_encoder.safetensors")
	ids := ids(t, g, "input_ids")

	for name, d := range testDevices(t) {
		t.Run(name, func(t *testing.T) {
			g := g.For(t)
			base := d.Stats().Buffers
			te, err := NewTextEncoder(d, c, w)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := te.ParamBytes(), int64(2*textParams(49408, 77, 64, 256, 3)); got != want {
				t.Errorf("ParamBytes %d, want %d (fp16 kept as fp16)", got, want)
			}
			defer func() {
				te.Release()
				if got := d.Stats().Buffers; got != base {
					t.Errorf("%d buffers live after Release, want %d", got, base)
				}
			}()
			for _, tc := range []struct {
				skip int
				want string
			}{{1, "last_hidden_state"}, {2, "penultimate_final_ln"}} {
				live := d.Stats().Buffers
				h, err := te.EncodeSkip(ids, tc.skip)
				if err != nil {
					t.Fatal(err)
				}
				if got := d.Stats().Buffers; got != live+1 {
					t.Errorf("skip %d: %d buffers live after EncodeSkip, want %d", tc.skip, got, live+1)
				}
				want, shape := g.F32(tc.want)
				worst := compare(t, d, tc.want, h, want, shape, 1e-4)
				t.Logf("%s: %s (skip %d) max |diff| %.3g", name, tc.want, tc.skip, worst)
				d.Release(h)
			}
			// Every skip picks hidden_states[-skip] (golden, without the final
			// LayerNorm) and then applies the final LayerNorm.
			hs, hsShape := g.F32("hidden_states")
			per := hs[:len(hs)/hsShape[0]]
			for skip := 1; skip <= c.NumHiddenLayers; skip++ {
				layer := hsShape[0] - skip
				raw := d.Upload(hs[layer*len(per):(layer+1)*len(per)], hsShape[1:]...)
				ln := te.finalNorm.apply(d, raw)
				want, err := d.Download(ln)
				if err != nil {
					t.Fatal(err)
				}
				d.Release(raw)
				d.Release(ln)
				h, err := te.EncodeSkip(ids, skip)
				if err != nil {
					t.Fatal(err)
				}
				compare(t, d, fmt.Sprintf("final_layer_norm(hidden_states[%d]) (skip %d)", layer, skip), h, want, hsShape[1:], 1e-4)
				d.Release(h)
			}

			// Encode is EncodeSkip(ids, 1).
			h, err := te.Encode(ids[:1])
			if err != nil {
				t.Fatal(err)
			}
			want, _ := g.F32("last_hidden_state")
			compare(t, d, "Encode(first prompt)", h, want[:77*c.HiddenSize], []int{1, 77, c.HiddenSize}, 1e-4)
			d.Release(h)
		})
	}
}

func TestTextEncoderRejectsBadInput(t *testing.T) {
	dir := golden.Dir(t)
	var c TextConfig
	loadConfig(t, filepath.Join(dir, "sd15-mini/text_encoder/config.json"), &c)
	w := loadWeights(t, filepath.Join(dir, "sd15-mini/text_encoder/model.fp16.safetensors"))
	for name, d := range testDevices(t) {
		te, err := NewTextEncoder(d, c, w)
		if err != nil {
			t.Fatal(err)
		}
		row := make([]int32, 77)
		for _, bad := range []struct {
			ids  [][]int32
			skip int
		}{
			{nil, 1},
			{[][]int32{row, row[:76]}, 1},
			{[][]int32{make([]int32, 78)}, 1},
			{[][]int32{append([]int32{49408}, row[1:]...)}, 1},
			{[][]int32{row}, 0},
			{[][]int32{row}, c.NumHiddenLayers + 1},
		} {
			if _, err := te.EncodeSkip(bad.ids, bad.skip); err == nil {
				t.Errorf("%s: EncodeSkip(%d rows, skip %d) accepted bad input", name, len(bad.ids), bad.skip)
			}
		}
		if err := d.Err(); err != nil {
			t.Errorf("%s: bad input reached the device: %v", name, err)
		}
	}
}

// textParams counts a CLIP text model's parameters.
func textParams(vocab, pos, width, mlp, layers int) int {
	attn := 4 * (width*width + width)
	norms := 2 * 2 * width
	ff := width*mlp + mlp + mlp*width + width
	return (vocab+pos)*width + layers*(attn+norms+ff) + 2*width
}
