package presets

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The sampler labels and schedule names come from the one registry: every
// alias maps to A1111's label, and an unknown schedule's error lists the
// default as words, not as `""`.
func TestNamesFromTheRegistry(t *testing.T) {
	for alias, want := range map[string]string{
		"euler_ancestral": "Euler a", "k_euler_a": "Euler a", "dpmpp_2m": "DPM++ 2M", "DPMSolverMultistepScheduler": "DPM++ 2M",
		"uni_pc": "UniPC", "pndm": "PLMS", "ddim_trailing": "ddim_trailing", "dpmpp_3m_sde": "DPM++ 3M SDE",
	} {
		got, ok := SamplerLabel(alias)
		require.True(t, ok, alias)
		assert.Equal(t, want, got, alias)
	}
	for label, want := range map[string]string{"Karras": "karras", "SGM Uniform": "sgm_uniform", "Uniform": "normal", "DDIM": "ddim_uniform", "Automatic": ""} {
		got, ok := ScheduleFromLabel(label)
		require.True(t, ok, label)
		assert.Equal(t, want, got, label)
	}
	assert.Equal(t, []string{"", "karras", "exponential", "normal", "simple", "sgm_uniform", "ddim_uniform", "leading", "linspace", "trailing"}, Schedules)
	s := Default()
	s.Schedule = "bogus"
	err := s.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"" (the sampler's default), "karras"`)
	assert.NotContains(t, err.Error(), `"", `)
}
