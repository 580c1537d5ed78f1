package nets

import (
	"path/filepath"
	"testing"
)

func TestTextEncoderGolden(t *testing.T) {
	dir := goldenDir(t)
	var c TextConfig
	loadConfig(t, filepath.Join(dir, "sd15-mini/text_encoder/config.json"), &c)
	w := loadWeights(t, filepath.Join(dir, "sd15-mini/text_encoder/model.fp16.safetensors"))
	g := openGolden(t, "text_encoder.safetensors")
	ids := g.ids(t, "input_ids")

	for name, d := range testDevices(t) {
		t.Run(name, func(t *testing.T) {
			te, err := NewTextEncoder(d, c, w)
			if err != nil {
				t.Fatal(err)
			}
			defer te.Release()
			for _, tc := range []struct {
				skip int
				want string
			}{{1, "last_hidden_state"}, {2, "penultimate_final_ln"}} {
				h, err := te.EncodeSkip(ids, tc.skip)
				if err != nil {
					t.Fatal(err)
				}
				want, shape := g.f32(t, tc.want)
				worst := compare(t, d, tc.want, h, want, shape, 1e-4)
				t.Logf("%s: %s (skip %d) max |diff| %.3g", name, tc.want, tc.skip, worst)
				d.Release(h)
			}
			// Encode is EncodeSkip(ids, 1).
			h, err := te.Encode(ids[:1])
			if err != nil {
				t.Fatal(err)
			}
			want, _ := g.f32(t, "last_hidden_state")
			compare(t, d, "Encode(first prompt)", h, want[:77*c.HiddenSize], []int{1, 77, c.HiddenSize}, 1e-4)
			d.Release(h)
		})
	}
}

func TestTextEncoderRejectsBadInput(t *testing.T) {
	dir := goldenDir(t)
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
