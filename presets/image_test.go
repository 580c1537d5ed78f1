package presets

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestImageSettingsInfotext: img2img and inpainting settings are written as
// A1111 writes them ("Denoising strength", "Mask blur") plus the files they
// came from, and read back the same; A1111's own img2img and hires-fix
// texts read as they mean.
func TestImageSettingsInfotext(t *testing.T) {
	s := Default()
	s.Prompt, s.Seed, s.Width, s.Height = "a lighthouse", 42, 64, 64
	plain := s.Infotext()
	assert.NotContains(t, plain, "Denoising strength")
	assert.NotContains(t, plain, "Mask")

	s.InitImage, s.Strength = "in/photo, 1.png", 0.6
	text := s.Infotext()
	assert.Contains(t, text, "Denoising strength: 0.6")
	assert.Contains(t, text, `Init image: "in/photo, 1.png"`)
	back, unknown, err := ParseInfotext(text)
	require.NoError(t, err)
	assert.Empty(t, unknown)
	assert.Equal(t, s, back)

	s.Mask, s.MaskBlur, s.Strength = "mask.png", 4, 1
	text = s.Infotext()
	assert.Contains(t, text, "Denoising strength: 1")
	assert.Contains(t, text, "Mask image: mask.png, Mask blur: 4")
	back, _, err = ParseInfotext(text)
	require.NoError(t, err)
	assert.Equal(t, s, back)

	// A1111 img2img: the strength and mask blur, but no file names.
	a1111 := "cat\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 6ce0161689, Model: v1-5, Denoising strength: 0.45, Mask blur: 4, Version: v1.10.1"
	back, unknown, err = ParseInfotext(a1111)
	require.NoError(t, err)
	assert.Equal(t, 0.45, back.Strength)
	assert.Equal(t, 4, back.MaskBlur)
	assert.Empty(t, back.InitImage)
	assert.NotContains(t, unknown, "Denoising strength")

	// A1111 hires fix: the strength is the hires pass's, not img2img's.
	hires := "cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Denoising strength: 0.3, Hires upscale: 2"
	back, unknown, err = ParseInfotext(hires)
	require.NoError(t, err)
	assert.Equal(t, DefaultStrength, back.Strength)
	assert.Equal(t, "0.3", unknown["Denoising strength"])

	_, _, err = ParseInfotext("cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Denoising strength: lots, Mask blur: -2")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `Denoising strength: "lots" (not a finite number)`)
	assert.Contains(t, err.Error(), `Mask blur: "-2" (not an integer >= 0)`)
}

// TestImageSettingsValidate: strength in [0, 1] (above 0 with an init
// image), mask blur in [0, 64], a mask only with an init image.
func TestImageSettingsValidate(t *testing.T) {
	s := Default()
	s.InitImage = "x.png"
	require.NoError(t, s.Validate())
	for _, c := range []struct {
		edit func(*Settings)
		want string
	}{
		{func(s *Settings) { s.Strength = 1.5 }, "strength: 1.5 is outside [0, 1]"},
		{func(s *Settings) { s.Strength = nanValue() }, "strength: NaN is outside [0, 1]"},
		{func(s *Settings) { s.Strength = 0 }, "strength: 0 would leave the init image as it is"},
		{func(s *Settings) { s.MaskBlur = 65 }, "mask blur: 65 is outside [0, 64]"},
		{func(s *Settings) { s.InitImage, s.Mask = "", "m.png" }, "mask: a mask needs an init image"},
	} {
		bad := s
		c.edit(&bad)
		err := bad.Validate()
		require.Error(t, err, c.want)
		assert.Contains(t, err.Error(), c.want)
	}
	txt := Default()
	txt.Strength = 0
	assert.NoError(t, txt.Validate(), "strength 0 is fine without an init image")
}
