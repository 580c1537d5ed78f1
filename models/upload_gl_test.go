package models_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/testdev"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/checkpoint"
)

// TestNonFiniteOnGL: on the GL device, where the upload counts NaN and Inf
// as it copies the weights into the device's buffers, every NaN/Inf case of
// the broken corpus fails with exactly the error of the reference device
// and of CheckFinite, and leaves the device clean for the next model.
func TestNonFiniteOnGL(t *testing.T) {
	m := loadMini(t)
	dev := testdev.GL(t)
	r := ref.New()
	defer r.Close()
	n := 0
	for _, c := range brokenCases() {
		if c.class != "NaN/Inf weights" && c.name != "NaN in the text encoder file" {
			continue
		}
		n++
		t.Run(c.class+"/"+c.name, func(t *testing.T) {
			path, config, _ := c.make(t, m, t.TempDir())
			_, err := models.Load(dev, path, config)
			var ne *checkpoint.NonFiniteError
			require.ErrorAs(t, err, &ne)
			_, refErr := models.Load(r, path, config)
			require.Error(t, refErr)
			assert.Equal(t, refErr.Error(), err.Error(), "GL and ref errors")
			ck, lerr := checkpoint.Load(path, config)
			require.NoError(t, lerr)
			defer ck.Close()
			assert.Equal(t, ck.CheckFinite().Error(), err.Error(), "GL and CheckFinite errors")
			assert.NoError(t, dev.Err(), "the device after the failed load")
			assert.Zero(t, dev.Stats().Resident, "bytes left on the device")
		})
	}
	assert.Equal(t, 6, n, "NaN/Inf cases run")
}
