package gen

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
)

// TestSizeRefusedBeforeWork: a size the model's VAE and U-Net cannot take
// is refused by Start with the rule, before any network runs (it used to
// surface as a GPU error at step 1).
func TestSizeRefusedBeforeWork(t *testing.T) {
	cases := []struct {
		model    string
		bad, ok  [][2]int
		multiple string
	}{
		{filepath.Join(golden.Dir(t), "sd15-mini"), [][2]int{{32, 32}, {64, 72}, {64, 520}}, [][2]int{{64, 128}}, "multiples of 64"},
		{filepath.Join(golden.Wave(t, "golden-wave2"), "sdxl-mini"), [][2]int{{48, 64}, {64, 40}}, [][2]int{{32, 96}}, "multiples of 32"},
	}
	for _, c := range cases {
		d := ref.New()
		p, err := models.Load(d, c.model, "")
		require.NoError(t, err)
		for _, sz := range c.bad {
			s := e2eSettings()
			s.Width, s.Height = sz[0], sz[1]
			_, err := Start(p, s)
			if assert.Errorf(t, err, "%dx%d accepted", sz[0], sz[1]) {
				assert.Contains(t, err.Error(), c.multiple)
			}
			assert.Zero(t, p.Timings["text_encoder"], "the text encoder ran before the size was refused")
		}
		for _, sz := range c.ok {
			s := e2eSettings()
			s.Width, s.Height = sz[0], sz[1]
			assert.NoError(t, Validate(p, s))
		}
		p.Close()
		d.Close()
	}
}
