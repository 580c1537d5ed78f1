package tui

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
)

// TestImg2ImgFromTheInitField: the init image and strength typed in the
// image page give the run gen gives with those settings: its first latent
// is the noised init image (not pure noise), it takes int(steps*strength)
// steps, and its final image is gen.Session's, pixel for pixel.
func TestImg2ImgFromTheInitField(t *testing.T) {
	init := filepath.Join(golden.Wave(t, "golden-wave3"), "inputs", "init_64.png")
	h := newMini(t)
	m := h.m
	h.setField(focusSteps, "5")
	h.setField(focusInit, init)
	h.setField(focusStrength, "0.6")
	h.waitFor("the init image", func() bool { return m.fieldImage(focusInit) != nil })
	h.mustView("init image · init_64.png", "64x64")
	h.keys("ctrl+g")
	h.waitFor("the run", func() bool { return len(m.runs) == 1 || m.statusErr })
	require.False(t, m.statusErr, m.status)
	r := h.last()
	h.waitRun(r)
	require.Equal(t, runDone, r.Status, m.status)
	assert.Len(t, r.Frames, 3, "int(5 * 0.6) steps")
	h.mustView("final image (VAE)") // the timeline has focus: the run, not the inputs
	assert.Equal(t, init, r.Settings.InitImage)
	assert.InDelta(t, 0.6, r.Settings.Strength, 0, "strength as typed")

	// gen.Session directly, with the run's settings.
	p, err := models.Load(ref.New(), filepath.Join(golden.Dir(t), "sd15-mini.fp16.safetensors"), filepath.Join(golden.Dir(t), "sd15_mini_config.json"))
	require.NoError(t, err)
	sess, err := gen.SessionOn(p)
	require.NoError(t, err)
	defer sess.Close()
	run, err := sess.Start(1, r.Settings)
	require.NoError(t, err)
	require.Len(t, h.started, 1)
	first := previewAll(sess.Facts(), run.InitialXT())
	assert.Equal(t, first.Pix, h.started[0].Noise.Pix, "the first latent is gen's noised init image")
	pure := noisePreview(m.model, 0, r.Settings)().(noiseMsg).Noise
	assert.NotEqual(t, pure.Pix, h.started[0].Noise.Pix, "not pure noise")
	imgs, err := sess.Finish(context.Background(), run, nil)
	require.NoError(t, err)
	require.Len(t, r.Images, 1)
	assert.Equal(t, imgs[0].Pix, r.Images[0].Pix, "the final image is gen.Session's")
}

// TestLoRAWeightChangeWithoutReload: a LoRA in the prompt, looked up in
// the LoRA folder field, is listed under the prompt; changing its weight
// between runs changes the image but never loads the model again (one
// call of the load function, the same pipeline and checkpoint).
func TestLoRAWeightChangeWithoutReload(t *testing.T) {
	dir := filepath.Join(golden.Wave(t, "golden-wave3"), "lora")
	var loads atomic.Int32
	load := miniLoad(t)
	h := newHarness(t, testSettings(), func(warn func(string)) (gpu.Device, *models.Pipeline, error) {
		loads.Add(1)
		return load(warn)
	})
	m := h.m
	require.NotNil(t, m.model, m.status)
	h.setField(focusSteps, "2")
	h.setField(focusLoRADir, dir)
	const name = "sd15-mini-lora.kohya.fp16"
	h.setField(focusPrompt, "a cat <lora:"+name+":0.8>")
	h.waitFor("the LoRA lookup", func() bool { return len(m.ed.img.loras) == 1 })
	assert.Empty(t, m.ed.img.loras[0].err)
	h.mustView(name + " 0.8 ✓")

	runOnce := func() *runRec {
		h.keys("ctrl+g")
		r := h.last()
		h.waitRun(r)
		require.Equal(t, runDone, r.Status, m.status)
		return r
	}
	r1 := runOnce()
	pipe, model := m.w.sess.Pipeline(), m.w.sess.Pipeline().Model // the worker is idle
	require.Len(t, pipe.LoRAs(), 1)
	assert.InDelta(t, 0.8, pipe.LoRAs()[0].UNet, 0, "the prompt's weight")
	assert.Contains(t, r1.Settings.LoraHashes, name+": ")

	h.setField(focusPrompt, "a cat <lora:"+name+":0.3>")
	r2 := runOnce()
	assert.Equal(t, int32(1), loads.Load(), "the model was loaded once")
	assert.Same(t, pipe, m.w.sess.Pipeline(), "the same pipeline")
	assert.Same(t, model, m.w.sess.Pipeline().Model, "the same checkpoint")
	require.Len(t, pipe.LoRAs(), 1)
	assert.InDelta(t, 0.3, pipe.LoRAs()[0].UNet, 0)
	assert.NotEqual(t, r1.Images[0].Pix, r2.Images[0].Pix, "the weight changes the image")

	// A LoRA the folder does not have is named under the prompt.
	h.setField(focusPrompt, "a cat <lora:nope:1>")
	h.waitFor("the LoRA lookup", func() bool { return len(m.ed.img.loras) == 1 && m.ed.img.loras[0].name == "nope" })
	assert.Contains(t, m.ed.img.loras[0].err, "no nope.safetensors")
	h.mustView("nope 1 ✗")
}

// TestBranchKeepsImageFields: a branch from a frame of an img2img run
// keeps its init image, strength, mask blur and IP/ControlNet settings
// whatever the fields say now.
func TestBranchKeepsImageFields(t *testing.T) {
	init := filepath.Join(golden.Wave(t, "golden-wave3"), "inputs", "init_64.png")
	h := newMini(t)
	m := h.m
	h.setField(focusSteps, "5")
	h.setField(focusInit, init)
	h.setField(focusStrength, "0.8")
	h.setField(focusMaskBlur, "3")
	h.keys("ctrl+g")
	h.waitFor("the run", func() bool { return len(m.runs) == 1 || m.statusErr })
	r := h.last()
	h.waitRun(r)
	require.Equal(t, runDone, r.Status, m.status)

	other := writeTestImage(t, t.TempDir(), "other.png", 64, 64)
	h.setField(focusInit, other)
	h.setField(focusStrength, "0.3")
	h.setField(focusMaskBlur, "9")
	h.setField(focusPrompt, "a branch")
	m.focus = focusTimeline
	h.keys("home", ".", "b")
	b := h.last()
	require.NotSame(t, r, b, m.status)
	h.waitRun(b)
	require.Equal(t, runDone, b.Status, m.status)
	assert.Equal(t, r.ID, b.Parent)
	assert.Equal(t, "a branch", b.Settings.Prompt)
	assert.Equal(t, init, b.Settings.InitImage, "the parent's init image")
	assert.InDelta(t, 0.8, b.Settings.Strength, 0, "the parent's strength")
	assert.Equal(t, 3, b.Settings.MaskBlur)
	assert.Equal(t, other, m.ed.img.init.Value(), "the field keeps what was typed")
}

// TestBadImageInputs: an init image that is not an image, a missing one
// and a mask of another size are refused at ctrl+g naming the file; no run
// starts, the fields stay and nothing is written.
func TestBadImageInputs(t *testing.T) {
	h := newHarness(t, testSettings(), bundledLoad)
	m := h.m
	require.NotNil(t, m.model, m.status)
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.png")
	require.NoError(t, os.WriteFile(text, []byte("not a picture"), 0o644))
	good := writeTestImage(t, dir, "init.png", 64, 64)
	small := writeTestImage(t, dir, "small.png", 32, 32)
	for _, c := range []struct {
		init, mask, want string
	}{
		{text, "", "init image " + text + ": not a PNG or JPEG image"},
		{filepath.Join(dir, "missing.png"), "", "init image " + filepath.Join(dir, "missing.png") + ": no such file"},
		{good, small, "mask " + small + ": is 32x32 but the init image " + good + " is 64x64"},
		{good, text, "mask " + text + ": not a PNG or JPEG image"},
	} {
		h.setField(focusInit, c.init)
		h.setField(focusMask, c.mask)
		m.statusErr = false
		h.keys("ctrl+g")
		// The field's own check of the previous value may report first:
		// wait for this refusal's text (the wait fails if it never comes).
		h.waitFor("the refusal: "+c.want, func() bool { return m.statusErr && strings.Contains(m.status, c.want) })
		assert.Empty(t, m.runs, "no run started")
		assert.Equal(t, c.init, m.ed.img.init.Value(), "the fields stay")
		assert.Equal(t, c.mask, m.ed.img.mask.Value())
	}
	// The field shows the mask's problem before any ctrl+g.
	h.setField(focusMask, small)
	h.waitFor("the mask", func() bool { return m.ed.img.info[focusMask].err != "" })
	assert.Contains(t, m.hint(), "they must be the same size")
	entries, err := os.ReadDir(h.out)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing written")
}

// TestImageFieldsToSettings: the image page's fields become the run's
// settings (IP-Adapter with its scale slider, ControlNet), the reference
// image shows as a thumbnail beside the init image, and a dropped image
// goes to the focused image field.
func TestImageFieldsToSettings(t *testing.T) {
	h := newHarness(t, testSettings(), bundledLoad)
	m := h.m
	dir := t.TempDir()
	init := writeTestImage(t, dir, "init.png", 64, 64)
	ref := writeTestImage(t, dir, "face.png", 48, 48)
	h.setField(focusInit, init)
	h.setField(focusIPAdapter, filepath.Join(dir, "ip.safetensors"))
	// A drop (a quoted path pasted) on the focused field fills it.
	h.setField(focusIPImage, "")
	h.typeText("'" + ref + "'")
	assert.Equal(t, ref, m.ed.img.ipImage.Value())
	h.setField(focusIPScale, "0.5")
	h.keys("right", "right", "left")
	assert.Equal(t, "0.55", m.ed.img.ipScale.Value(), "the slider moves by 0.05")
	h.setField(focusControlStrength, "1.5")
	h.setField(focusControlNet, filepath.Join(dir, "cn"))
	s, err := m.ed.settings()
	require.NoError(t, err)
	assert.Equal(t, init, s.InitImage)
	assert.Equal(t, ref, s.IPAdapterImage)
	assert.InDelta(t, 0.55, s.IPAdapterScale, 1e-12)
	assert.InDelta(t, 1.5, s.ControlStrength, 0)
	assert.Equal(t, filepath.Join(dir, "cn"), s.ControlNet)
	h.waitFor("the images", func() bool { return m.fieldImage(focusInit) != nil && m.fieldImage(focusIPImage) != nil })
	h.mustView("Image inputs", "IP image", "init image · init.png")
	g, _ := m.paintArea()
	assert.Equal(t, []focus{focusIPImage}, g.thumbs)

	// Back on the basic page the summary lists what is set; settings
	// opened from a preset fill the image page.
	h.keys("alt+i")
	assert.Equal(t, focusPrompt, m.focus)
	h.mustView("Image ▸", "init, control, ip-adapter")
	o := testSettings()
	o.InitImage, o.Strength, o.Mask, o.MaskBlur = init, 0.4, init, 5
	m.ed.set(o)
	assert.Equal(t, "0.4", m.ed.img.strength.Value())
	assert.Equal(t, "5", m.ed.img.maskBlur.Value())
	s, err = m.ed.settings()
	require.NoError(t, err)
	assert.Equal(t, presets.Settings{}.ImageEncoder, s.ImageEncoder)
	assert.Equal(t, o.Mask, s.Mask)
}

// TestDropImageOutsideTheImagePage: a PNG without parameters (or a JPEG)
// dropped while a basic field has focus becomes the init image; one that
// carries parameters still opens them.
func TestDropImageOutsideTheImagePage(t *testing.T) {
	h := newHarness(t, testSettings(), bundledLoad)
	m := h.m
	plain := writeTestImage(t, t.TempDir(), "photo.png", 64, 64)
	require.Equal(t, focusPrompt, m.focus)
	h.typeText("'" + plain + "'")
	h.waitFor("the drop", func() bool { return m.ed.img.init.Value() != "" || m.statusErr })
	assert.Equal(t, plain, m.ed.img.init.Value())
	assert.Empty(t, m.ed.prompt.Value(), "the path was not typed into the prompt")
	assert.Contains(t, m.status, "init image: "+plain)
	h.waitFor("the init image", func() bool { return m.fieldImage(focusInit) != nil })
	h.mustView("init image · photo.png")

	withParams := filepath.Join(t.TempDir(), "made.png")
	s := testSettings()
	s.Prompt = "from the png"
	im, err := gen.ReadImage("init image", plain)
	require.NoError(t, err)
	require.NoError(t, render.WritePNG(withParams, im, map[string]string{"parameters": s.Infotext()}, false))
	h.typeText(withParams)
	h.waitFor("the open", func() bool { return m.ed.prompt.Value() == "from the png" || m.statusErr })
	assert.False(t, m.statusErr, m.status)
}

// TestImagePageMouse: a click on the form's image line opens the image
// page, a click on the strength slider sets it, a click on the page's
// title goes back.
func TestImagePageMouse(t *testing.T) {
	h := newHarness(t, testSettings(), bundledLoad)
	m := h.m
	l := m.layoutMain(m.bodyHeight(m.headerView(), m.footerView()))
	h.update(tea.MouseMsg{X: 2, Y: 1 + l.form.toggleRow, Button: tea.MouseButtonLeft, Action: tea.MouseActionPress})
	require.Equal(t, focusInit, m.focus)
	require.Equal(t, 1, m.ed.page)
	l = m.layoutMain(m.bodyHeight(m.headerView(), m.footerView()))
	x0, sw := cfgSlider(l.formW)
	h.update(tea.MouseMsg{X: x0 + sw - 1, Y: 1 + l.form.rows[focusStrength], Button: tea.MouseButtonLeft, Action: tea.MouseActionPress})
	assert.Equal(t, focusStrength, m.focus)
	assert.Equal(t, "1", m.ed.img.strength.Value(), "the slider's right end")
	h.update(tea.MouseMsg{X: x0, Y: 1 + l.form.rows[focusIPScale], Button: tea.MouseButtonLeft, Action: tea.MouseActionPress})
	assert.Equal(t, "0", m.ed.img.ipScale.Value(), "the slider's left end")
	h.update(tea.MouseMsg{X: 2, Y: 1 + l.form.toggleRow, Button: tea.MouseButtonLeft, Action: tea.MouseActionPress})
	assert.Equal(t, focusPrompt, m.focus)
	assert.Equal(t, 0, m.ed.page)
}
