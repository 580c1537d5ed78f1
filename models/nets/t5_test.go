package nets

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
)

// sd3Mini returns golden-wave3's sd3-mini folder.
func sd3Mini(t *testing.T) string {
	return filepath.Join(golden.Wave(t, "golden-wave3"), "sd3-mini")
}

// The bucket function against values worked out from transformers'
// formula by hand (32 buckets, max distance 128): small distances are
// exact, keys after the query take the upper 16 buckets, large distances
// go logarithmically and saturate at 15.
func TestT5RelativeBucket(t *testing.T) {
	for rel, want := range map[int]int{0: 0, 1: 17, -1: 1, 7: 23, -7: 7, 8: 24, -8: 8, 12: 25, -16: 10, 16: 26,
		-32: 12, -64: 14, -127: 15, -128: 15, -1000: 15, 1000: 31, 31: 27, -63: 13} {
		assert.Equal(t, want, T5RelativeBucket(rel, 32, 128), "relative position %d", rel)
	}
}

// sd3-mini's T5 encoder on the golden ids reproduces transformers' last
// hidden state (4 prompts x 256 tokens, the empty one included) and, for
// prompt 0, transformers' hidden_states: the embeddings, layer 0's output
// and (transformers appends the last one after the final norm; the
// golden README's "no final norm" is not what the file holds) the output.
func TestT5Golden(t *testing.T) {
	dir := sd3Mini(t)
	g := golden.Open(t, filepath.Join(golden.Wave(t, "golden-wave3"), "sd3_text_encoders.safetensors"))
	var c T5Config
	loadConfig(t, filepath.Join(dir, "text_encoder_3", "config.json"), &c)
	w := loadWeights(t, filepath.Join(dir, "text_encoder_3", "model.fp16.safetensors"))
	rows := ids(t, g, "input_ids_3")
	want, shape := g.F32("te3.last_hidden_state")
	states, sshape := g.F32("te3.hidden_states")
	for name, d := range testDevices(t) {
		t.Run(name, func(t *testing.T) {
			te, err := NewT5Encoder(d, c, w)
			require.NoError(t, err)
			defer te.Release()
			out, err := te.Encode(rows)
			require.NoError(t, err)
			// README: text encoders max abs <= 1e-4 (values O(1)).
			worst := compare(t, d, "t5 last_hidden_state", out, want, shape, 1e-4)
			t.Logf("%s: t5 last_hidden_state worst |diff| %.3g", name, worst)
			d.Release(out)

			out, hs, err := te.EncodeHidden(rows[:1], true)
			require.NoError(t, err)
			require.Len(t, hs, sshape[0])
			per := sshape[2] * sshape[3]
			for i, h := range append(append([]*gpu.Tensor(nil), hs[:len(hs)-1]...), out) {
				compare(t, d, "t5 hidden_states", h, states[i*per:(i+1)*per], []int{1, sshape[2], sshape[3]}, 1e-4)
			}
			for _, h := range hs {
				d.Release(h)
			}
			d.Release(out)
		})
	}
}

// A T5 file that does not fit the config is refused with every problem
// named, before anything is uploaded.
func TestT5WrongWeights(t *testing.T) {
	dir := sd3Mini(t)
	var c T5Config
	loadConfig(t, filepath.Join(dir, "text_encoder_3", "config.json"), &c)
	w := loadWeights(t, filepath.Join(dir, "text_encoder_3", "model.fp16.safetensors"))
	c.DModel = 128
	d := testDevices(t)["ref"]
	_, err := NewT5Encoder(d, c, w)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "shared.weight: shape [342,96], want [342,128]")
	assert.Equal(t, int64(0), d.Stats().Resident)
}
