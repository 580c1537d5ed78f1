package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
)

// TestStudioTAESD: `stepwise --taesd PATH` attaches the TAESD to the model
// the studio starts with (its previews and exports then decode with it); a
// TAESD that does not fit the model (other latent channels: SD3's 16) is
// named in a warning and the studio goes on without it.
func TestStudioTAESD(t *testing.T) {
	taesd := filepath.Join(golden.Wave(t, "golden-wave3"), "taesd-mini")
	var warnings []string
	warn := func(s string) { warnings = append(warnings, s) }

	dev, p, err := studioLoad("ref", filepath.Join(golden.Dir(t), "sd15-mini"), "", taesd)(warn)
	require.NoError(t, err)
	require.NotNil(t, p.TAESD(), "the TAESD is attached")
	assert.Equal(t, taesd, p.TAESD().Path)
	assert.Empty(t, warnings)
	p.Close()
	dev.Close()

	dev, p, err = studioLoad("ref", filepath.Join(golden.Wave(t, "golden-wave3"), "sd3-mini"), "", taesd)(warn)
	require.NoError(t, err)
	assert.Nil(t, p.TAESD())
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0], "--taesd: taesd "+taesd+": 4 latent channels, the model's are 16")
	p.Close()
	dev.Close()
}
