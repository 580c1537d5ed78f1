package tui

// The image page of the form: init image and strength (img2img), mask and
// mask blur (inpainting), ControlNet, IP-Adapter and the LoRA folder. Paths
// are typed or dropped on the terminal; each image named is read in a
// command (never in Update) and shown in the preview pane until a run
// starts, the mask as a tint over the init image.

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
)

// page is the form page a field is drawn on: 0 the basic fields, 1 the
// image inputs.
func (f focus) page() int {
	if f >= focusInit && f <= focusTAESD {
		return 1
	}
	return 0
}

// isSlider reports whether ←/→ move the field on a slider.
func (f focus) isSlider() bool {
	_, _, ok := sliderRange(f)
	return ok
}

// sliderRange is the range a slider field's bar shows (typed values may
// go beyond it, up to what presets.Validate allows) and its nudge step.
func sliderRange(f focus) (step, hi float64, ok bool) {
	switch f {
	case focusCFG, focusUpCFG:
		return 0.5, cfgMax, true
	case focusStrength:
		return 0.05, 1, true
	case focusControlStrength, focusIPScale:
		return 0.05, 2, true
	}
	return 0, 0, false
}

// isPath reports whether the field holds a file or folder path (a drop
// on the terminal fills it).
func (f focus) isPath() bool {
	switch f {
	case focusInit, focusMask, focusControlNet, focusControlImage, focusIPAdapter, focusIPImage, focusLoRADir, focusTAESD, focusOutDir:
		return true
	}
	return false
}

// fieldNames are the image page's fields in words (the labels are short).
var fieldNames = map[focus]string{
	focusInit: "init image", focusStrength: "strength", focusMask: "mask", focusMaskBlur: "mask blur",
	focusControlNet: "ControlNet", focusControlImage: "control image", focusControlStrength: "control strength",
	focusIPAdapter: "IP-Adapter", focusIPImage: "IP-Adapter image", focusIPScale: "IP-Adapter scale", focusLoRADir: "LoRA folder",
	focusTAESD: "TAESD", focusOutDir: "export folder",
}

// imageRole is what an image field's file is, as gen names it in errors.
var imageRole = map[focus]string{
	focusInit: "init image", focusMask: "mask", focusControlImage: "control image", focusIPImage: "ip-adapter image",
}

// imageFields holds the image page's fields, and the settings of image
// conditioning that have no field (carried from presets and PNGs).
type imageFields struct {
	init, strength, mask, maskBlur         *textEdit
	controlNet, controlImage, controlScale *textEdit
	ipAdapter, ipImage, ipScale, loraDir   *textEdit
	// taesd is the TAESD the previews decode with (taesd.go); tz is
	// what the worker made of it.
	taesd *textEdit
	tz    taesdState

	imageEncoder            string
	controlStart, controlEd float64
	canny                   bool
	cannyLow, cannyHigh     int

	// info is what reading each image field's file gave: its size, or
	// the error (set by Model.syncInputs).
	info map[focus]inputInfo
	// loras are the prompt's <lora:...> tags as they resolve in loraDir.
	loras   []loraItem
	loraErr string
}

type inputInfo struct {
	size string // "64x64"
	err  string
}

// loraItem is one LoRA tag of the prompt and the file it resolves to.
type loraItem struct {
	name string
	w    float64
	path string
	err  string
}

func newImageFields() imageFields {
	t := func() *textEdit { return newTextEdit("", false) }
	f := imageFields{init: t(), strength: t(), mask: t(), maskBlur: t(), controlNet: t(), controlImage: t(),
		controlScale: t(), ipAdapter: t(), ipImage: t(), ipScale: t(), loraDir: newTextEdit(os.Getenv(models.LoRADirEnv), false),
		taesd: t(), info: map[focus]inputInfo{}}
	for _, n := range []*textEdit{f.strength, f.maskBlur, f.controlScale, f.ipScale} {
		n.Limit = 24
	}
	return f
}

// texts lists the fields in focus order, for undo.
func (f *imageFields) texts() []*textEdit {
	return []*textEdit{f.init, f.strength, f.mask, f.maskBlur, f.controlNet, f.controlImage, f.controlScale, f.ipAdapter, f.ipImage, f.ipScale, f.loraDir, f.taesd}
}

func (f *imageFields) field(ff focus) *textEdit {
	if ff.page() != 1 {
		return nil
	}
	return f.texts()[ff-focusInit]
}

// set shows settings s (the LoRA folder is the session's, not a setting).
func (f *imageFields) set(s presets.Settings) {
	f.init.SetValue(s.InitImage)
	f.strength.SetValue(formatFloat(s.Strength))
	f.mask.SetValue(s.Mask)
	f.maskBlur.SetValue(strconv.Itoa(s.MaskBlur))
	f.controlNet.SetValue(s.ControlNet)
	f.controlImage.SetValue(s.ControlImage)
	f.controlScale.SetValue(formatFloat(s.ControlStrength))
	f.ipAdapter.SetValue(s.IPAdapter)
	f.ipImage.SetValue(s.IPAdapterImage)
	f.ipScale.SetValue(formatFloat(s.IPAdapterScale))
	f.imageEncoder = s.ImageEncoder
	f.controlStart, f.controlEd = s.ControlStart, s.ControlEnd
	f.canny, f.cannyLow, f.cannyHigh = s.Canny, s.CannyLow, s.CannyHigh
}

// apply parses the fields into s; the first field that does not parse is
// the error (s keeps its default there).
func (f *imageFields) apply(s *presets.Settings) error {
	var err error
	num := func(t *textEdit, name string, v *float64) {
		x, perr := strconv.ParseFloat(strings.TrimSpace(t.Value()), 64)
		if perr != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			if err == nil {
				err = fmt.Errorf("%s: %q is not a finite number", name, t.Value())
			}
			return
		}
		*v = x
	}
	path := func(t *textEdit) string { return unquotePath(t.Value()) }
	s.InitImage, s.Mask = path(f.init), path(f.mask)
	num(f.strength, "strength", &s.Strength)
	if v := strings.TrimSpace(f.maskBlur.Value()); v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil && err == nil {
			err = fmt.Errorf("mask blur: %q is not a whole number", v)
		}
		s.MaskBlur = n
	}
	s.ControlNet, s.ControlImage = path(f.controlNet), path(f.controlImage)
	num(f.controlScale, "control strength", &s.ControlStrength)
	s.IPAdapter, s.IPAdapterImage = path(f.ipAdapter), path(f.ipImage)
	num(f.ipScale, "ip-adapter scale", &s.IPAdapterScale)
	s.ImageEncoder = f.imageEncoder
	s.ControlStart, s.ControlEnd = f.controlStart, f.controlEd
	s.Canny, s.CannyLow, s.CannyHigh = f.canny, f.cannyLow, f.cannyHigh
	return err
}

// nudge moves a numeric image field by d steps; false for the others.
func (f *imageFields) nudge(ff focus, d float64) bool {
	if ff == focusMaskBlur {
		v, _ := strconv.Atoi(strings.TrimSpace(f.maskBlur.Value()))
		f.maskBlur.SetValue(strconv.Itoa(min(max(v+int(d), 0), presets.MaxMaskBlur)))
		return true
	}
	step, _, ok := sliderRange(ff)
	if !ok {
		return false
	}
	t := f.field(ff)
	v, err := strconv.ParseFloat(strings.TrimSpace(t.Value()), 64)
	if err != nil || math.IsNaN(v) {
		v = 0
	}
	v = math.Round((v+d*step)/step) * step
	lo, hi := 0.0, math.Inf(1)
	switch ff {
	case focusStrength:
		hi = 1
	case focusControlStrength:
		hi = presets.MaxControlStrength
	case focusIPScale:
		lo, hi = -1, presets.MaxIPAdapterScale
	}
	t.SetValue(formatStep(math.Min(math.Max(v, lo), hi)))
	return true
}

// formatStep writes a slider value to two decimals, without trailing
// zeros ("0.35", not "0.35000000000000003").
func formatStep(v float64) string { return formatFloat(math.Round(v*100) / 100) }

// title is the image page's first line.
func (f *imageFields) title(width int) string {
	return truncate(styleTitle.Render("Image inputs")+styleDim.Render(" · alt+i back · alt+m mask"), width)
}

// summary is page 0's last line: what the image page holds.
func (f *imageFields) summary(width int) string {
	var set []string
	for _, x := range []struct {
		name string
		t    *textEdit
	}{{"init", f.init}, {"mask", f.mask}, {"control", f.controlNet}, {"ip-adapter", f.ipAdapter}} {
		if strings.TrimSpace(x.t.Value()) != "" {
			set = append(set, x.name)
		}
	}
	what := "none"
	if len(set) > 0 {
		what = strings.Join(set, ", ")
	}
	return truncate(styleLabel.Render(fmt.Sprintf("%-10s", "Image ▸"))+styleValue.Render(what)+styleDim.Render(" · alt+i"), width)
}

// mark is what follows an image field's path: its size, or ✗ when it
// cannot be used (the hint line says why).
func (f *imageFields) mark(ff focus) string {
	if strings.TrimSpace(f.field(ff).Value()) == "" {
		return ""
	}
	in, ok := f.info[ff]
	switch {
	case !ok:
		return styleDim.Render(" …")
	case in.err != "":
		return styleErr.Render(" ✗")
	}
	return styleDim.Render(" " + in.size)
}

// hint is the image page's line under the form for the focused field.
func (f *imageFields) hint(ff focus) string {
	if in, ok := f.info[ff]; ok && in.err != "" && strings.TrimSpace(f.field(ff).Value()) != "" {
		return in.err
	}
	switch ff {
	case focusInit:
		return "img2img: the image the run starts from (type a path or drop a file)"
	case focusStrength:
		return "denoising strength: 0 keeps the init image, 1 repaints it all (←/→)"
	case focusMask:
		return "inpainting: white repaints, black keeps; alt+m paints one on the preview"
	case focusMaskBlur:
		return "A1111's mask blur (feather) in pixels"
	case focusControlNet:
		return "a ControlNet (.safetensors or diffusers folder)"
	case focusControlImage:
		return "the control image (an edge map, pose, depth…)"
	case focusControlStrength:
		return "ControlNet weight (←/→)"
	case focusIPAdapter:
		return "an IP-Adapter file (image_encoder/ beside it)"
	case focusIPImage:
		return "the IP-Adapter's reference image"
	case focusIPScale:
		return "IP-Adapter weight (←/→)"
	case focusLoRADir:
		if f.loraErr != "" {
			return f.loraErr
		}
		return "the folder the prompt's <lora:NAME:W> tags are looked up in"
	case focusTAESD:
		return f.tz.hint(unquotePath(f.taesd.Value()))
	}
	return ""
}

// hasLoRATags reports whether a prompt holds <lora:...> tags (cheap).
func hasLoRATags(prompt string) bool {
	if !strings.Contains(prompt, "<") {
		return false
	}
	tags, err := models.ParseLoRATags(prompt)
	return err != nil || len(tags) > 0
}

// loraLine lists the prompt's LoRAs as they resolve, under the prompt.
func (f *imageFields) loraLine(width int) string {
	var parts []string
	for _, l := range f.loras {
		s := fmt.Sprintf("%s %s", termsafeName(l.name), formatFloat(l.w))
		if l.err != "" {
			parts = append(parts, styleErr.Render(s+" ✗"))
		} else {
			parts = append(parts, styleOK.Render(s+" ✓"))
		}
	}
	line := strings.Join(parts, styleDim.Render(", "))
	if f.loraErr != "" && len(f.loras) == 0 {
		line = styleErr.Render("✗ " + f.loraErr)
	}
	return truncate(styleLabel.Render(fmt.Sprintf("%-10s", "  LoRA"))+line, width)
}

func termsafeName(s string) string { return oneLine(s) }

// hint is the line under the form for the focused field.
func (m *Model) hint() string {
	if m.focus.page() == 1 {
		return m.ed.img.hint(m.focus)
	}
	if m.focus == focusPrompt && m.ed.img.loraErr != "" && hasLoRATags(m.ed.prompt.Value()) {
		return m.ed.img.loraErr
	}
	return m.ed.hint(m.focus)
}

// Reading the images the fields name.

// inputKey names one read: the field's role and the path.
type inputKey struct {
	role string
	path string
}

// inputImage is one image read for a field.
type inputImage struct {
	rgb  *image.NRGBA // init, control and reference images
	gray *image.Gray  // masks
	err  error
}

// inputLoadedMsg answers a read started by syncInputs.
type inputLoadedMsg struct {
	key  inputKey
	img  inputImage
	drop bool // the path was dropped: an error goes to the status line
}

// loraResolvedMsg answers a LoRA lookup started by syncInputs.
type loraResolvedMsg struct {
	key   string
	items []loraItem
	err   string
}

// inputState is the Model's cache of read images and LoRA lookups.
type inputState struct {
	cache   map[inputKey]*inputImage
	pending map[inputKey]bool
	dropped map[inputKey]bool
	loraKey string
}

// fieldImage returns the image read for field f's path (nil while it is
// read, or without a path).
func (m *Model) fieldImage(f focus) *inputImage {
	p := unquotePath(m.ed.field(f).Value())
	if p == "" {
		return nil
	}
	return m.in.cache[inputKey{imageRole[f], p}]
}

// syncInputs starts reading the files the image fields name that were not
// read yet, resolves the prompt's LoRAs when the prompt or the folder
// changed, and updates what the fields show.
func (m *Model) syncInputs() tea.Cmd {
	if m.in.cache == nil || len(m.in.cache) > 64 {
		m.in.cache, m.in.pending = map[inputKey]*inputImage{}, map[inputKey]bool{}
	}
	if m.in.dropped == nil {
		m.in.dropped = map[inputKey]bool{}
	}
	var cmds []tea.Cmd
	for _, f := range []focus{focusInit, focusMask, focusControlImage, focusIPImage} {
		p := unquotePath(m.ed.field(f).Value())
		if p == "" {
			delete(m.ed.img.info, f)
			continue
		}
		k := inputKey{imageRole[f], p}
		if im := m.in.cache[k]; im != nil {
			m.ed.img.info[f] = m.describe(f, im)
			continue
		}
		delete(m.ed.img.info, f)
		if m.in.pending[k] {
			continue
		}
		m.in.pending[k] = true
		drop := m.in.dropped[k]
		cmds = append(cmds, func() tea.Msg { return readInput(k, drop) })
	}
	dir := unquotePath(m.ed.img.loraDir.Value())
	prompt := m.ed.prompt.Value()
	if key := dir + "\x00" + prompt; key != m.in.loraKey {
		m.in.loraKey = key
		if !hasLoRATags(prompt) {
			m.ed.img.loras, m.ed.img.loraErr = nil, ""
		} else {
			cmds = append(cmds, func() tea.Msg { return resolveLoRAs(key, prompt, dir) })
		}
	}
	cmds = append(cmds, m.syncTAESD())
	return tea.Batch(cmds...)
}

// describe is what field f shows of its image: its size, or why it
// cannot be used (a mask of another size than the init image).
func (m *Model) describe(f focus, im *inputImage) inputInfo {
	if im.err != nil {
		return inputInfo{err: oneLine(im.err.Error())}
	}
	b := image.Rectangle{}
	if im.rgb != nil {
		b = im.rgb.Bounds()
	} else if im.gray != nil {
		b = im.gray.Bounds()
	}
	info := inputInfo{size: fmt.Sprintf("%dx%d", b.Dx(), b.Dy())}
	if f == focusMask {
		if init := m.fieldImage(focusInit); init != nil && init.rgb != nil && init.rgb.Bounds().Size() != b.Size() {
			s := init.rgb.Bounds().Size()
			info.err = oneLine(fmt.Sprintf("mask %s: is %dx%d but the init image %s is %dx%d; they must be the same size",
				unquotePath(m.ed.img.mask.Value()), b.Dx(), b.Dy(), unquotePath(m.ed.img.init.Value()), s.X, s.Y))
		}
	}
	return info
}

// readInput reads one image as gen will (the same checks and messages).
func readInput(k inputKey, drop bool) tea.Msg {
	var im inputImage
	if k.role == "mask" {
		im.gray, im.err = gen.ReadMask(k.path)
	} else {
		im.rgb, im.err = gen.ReadImage(k.role, k.path)
	}
	return inputLoadedMsg{key: k, img: im, drop: drop}
}

// resolveLoRAs finds the files of the prompt's LoRA tags in dir.
func resolveLoRAs(key, prompt, dir string) tea.Msg {
	tags, err := models.ParseLoRATags(prompt)
	if err != nil {
		return loraResolvedMsg{key: key, err: oneLine(err.Error())}
	}
	if dir == "" && len(tags) > 0 {
		e := "no LoRA folder: set LoRA dir on the image page (alt+i)"
		msg := loraResolvedMsg{key: key, err: e}
		for _, t := range tags {
			msg.items = append(msg.items, loraItem{name: t.Name, w: t.UNet, err: e})
		}
		return msg
	}
	msg := loraResolvedMsg{key: key}
	for _, t := range tags {
		it := loraItem{name: t.Name, w: t.UNet}
		if p, err := models.ResolveLoRA(dir, t.Name); err != nil {
			it.err = oneLine(err.Error())
			if msg.err == "" {
				msg.err = it.err
			}
		} else {
			it.path = p
		}
		msg.items = append(msg.items, it)
	}
	return msg
}

// onInputMsg handles the answers of syncInputs.
func (m *Model) onInputMsg(msg tea.Msg) {
	switch msg := msg.(type) {
	case inputLoadedMsg:
		delete(m.in.pending, msg.key)
		im := msg.img
		m.in.cache[msg.key] = &im
		if msg.drop && im.err != nil {
			m.setError(im.err)
		}
		delete(m.in.dropped, msg.key)
	case loraResolvedMsg:
		if msg.key == m.in.loraKey {
			m.ed.img.loras, m.ed.img.loraErr = msg.items, msg.err
		}
	}
}

// dropPath routes a path dropped on the terminal (a bracketed paste of one
// path): a focused path field of the image page takes it; elsewhere a PNG
// that carries generation parameters opens them (as before), and any
// other PNG or JPEG becomes the init image. It reports false when the
// paste is not an existing file or folder (then it is typed as text).
func (m *Model) dropPath(paste string) (tea.Cmd, bool) {
	p := unquotePath(paste)
	if p == "" || strings.ContainsAny(p, "\n\r") {
		return nil, false
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, false
	}
	if m.state == stateMain && m.focus.page() == 1 && m.focus.isPath() {
		m.setPathField(m.focus, p)
		return nil, true
	}
	if !st.Mode().IsRegular() || !isImagePath(p) {
		return nil, false
	}
	return func() tea.Msg {
		if strings.EqualFold(filepath.Ext(p), ".png") {
			if text, err := render.ReadPNGTextFile(p); err == nil && text["parameters"] != "" {
				return openPNG(p)
			}
		}
		return dropInitMsg{path: p}
	}, true
}

// dropInitMsg: an image without parameters was dropped: the init image.
type dropInitMsg struct{ path string }

func isImagePath(p string) bool {
	switch strings.ToLower(filepath.Ext(p)) {
	case ".png", ".jpg", ".jpeg":
		return true
	}
	return false
}

// setPathField puts a dropped path in field f and says so; a read error
// of an image goes to the status line.
func (m *Model) setPathField(f focus, p string) {
	m.ed.field(f).SetValue(p)
	if role, ok := imageRole[f]; ok {
		k := inputKey{role, p}
		delete(m.in.cache, k) // read it again: the file may have changed
		m.in.dropped[k] = true
	}
	m.setStatus(fmt.Sprintf("%s: %s", fieldNames[f], p))
}

// Preview of the inputs.

// showInputs reports whether the preview pane shows the input images
// instead of a run: before the first run, while painting a mask, and
// while a field of the image page has focus and no run is in progress.
func (m *Model) showInputs() bool {
	if m.mp.on {
		return true
	}
	if m.fieldImage(focusInit) == nil && m.fieldImage(focusControlImage) == nil && m.fieldImage(focusIPImage) == nil {
		return false
	}
	return len(m.runs) == 0 || (m.focus.page() == 1 && m.active() == nil)
}

// inputGeom is where the main input picture is drawn in the pane's
// picture area (iw x rows cells): its source size, its offset and its
// size in cells and in half-block pixels, and the thumbnail column.
type inputGeom struct {
	src          image.Point // the image's size
	x, y         int         // offset of the picture in the area
	cols, pixH   int         // the picture's cells across and pixel rows (2 a cell)
	thumbX, thW  int         // the thumbnail column (thW 0: none)
	main, thumbs []focus
}

func (g inputGeom) rows() int { return (g.pixH + 1) / 2 }

func (m *Model) inputGeom(iw, rows int) inputGeom {
	var g inputGeom
	var main focus = -1
	for _, f := range []focus{focusInit, focusControlImage, focusIPImage} {
		if im := m.fieldImage(f); im != nil && im.rgb != nil {
			if main < 0 {
				main = f
			} else {
				g.thumbs = append(g.thumbs, f)
			}
		}
	}
	if main < 0 {
		return g
	}
	g.main = []focus{main}
	mainW := iw
	if len(g.thumbs) > 0 {
		g.thW = max(iw/4, 4)
		mainW = max(iw-g.thW-1, 1)
		g.thumbX = mainW + 1
	}
	g.src = m.fieldImage(main).rgb.Bounds().Size()
	g.cols, g.pixH = render.FitSize(g.src.X, g.src.Y, mainW, 2*rows)
	g.x, g.y = (mainW-g.cols)/2, (rows-g.rows())/2
	return g
}

// inputPane draws the input pictures in iw x rows cells: the init image
// (tinted where the mask repaints) or the control image, with the other
// inputs as thumbnails beside it.
func (m *Model) inputPane(iw, rows int) (title, body string) {
	g := m.inputGeom(iw, rows)
	if len(g.main) == 0 {
		return "inputs", lipgloss.Place(iw, rows, lipgloss.Center, lipgloss.Center, styleDim.Render("no input image yet"))
	}
	main := g.main[0]
	var pic image.Image = m.fieldImage(main).rgb
	title = fieldNames[main] + " · " + oneLine(filepath.Base(unquotePath(m.ed.field(main).Value())))
	if mask := m.shownMask(); mask != nil && main == focusInit {
		k := tintKey{m.fieldImage(main).rgb, mask, m.mp.gen, m.mp.featherBlur}
		if m.mp.tintKey != k || m.mp.tinted == nil {
			m.mp.tinted, m.mp.tintKey = tintMask(k.init, mask), k
		}
		pic = m.mp.tinted
		title += " · mask"
	}
	picText := m.cache.halfBlockRGBA(pic, g.cols, g.rows(), m.opts.Color)
	lines := make([]string, rows)
	pl := strings.Split(picText, "\n")
	for i := range lines {
		if j := i - g.y; j >= 0 && j < len(pl) {
			lines[i] = strings.Repeat(" ", g.x) + pl[j]
		}
	}
	if g.thW == 0 {
		return title, fitBlock(strings.Join(lines, "\n"), iw, rows)
	}
	left := fitBlock(strings.Join(lines, "\n"), g.thumbX-1, rows)
	var thumbs []string
	each := max(rows/len(g.thumbs), 2)
	for _, f := range g.thumbs {
		name := "IP image"
		if f == focusControlImage {
			name = "control"
		}
		im := m.fieldImage(f).rgb
		thumbs = append(thumbs, styleDim.Render(truncate(name, g.thW)), m.cache.halfBlockRGBA(im, g.thW, each-1, m.opts.Color))
	}
	right := fitBlock(strings.Join(thumbs, "\n"), g.thW, rows)
	return title, lipgloss.JoinHorizontal(lipgloss.Top, left, " ", right)
}

// halfBlockRGBA is halfBlock for an image of any type (converted once
// per image).
func (c *renderCache) halfBlockRGBA(img image.Image, cols, rows int, mode render.ColorMode) string {
	if rgba, ok := img.(*image.RGBA); ok {
		return c.halfBlock(rgba, cols, rows, mode)
	}
	if c.conv == nil || len(c.conv) > 16 {
		c.conv = map[image.Image]*image.RGBA{}
	}
	rgba := c.conv[img]
	if rgba == nil {
		b := img.Bounds()
		rgba = image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
		for y := 0; y < b.Dy(); y++ {
			for x := 0; x < b.Dx(); x++ {
				rgba.Set(x, y, img.At(b.Min.X+x, b.Min.Y+y))
			}
		}
		c.conv[img] = rgba
	}
	return c.halfBlock(rgba, cols, rows, mode)
}

// shownMask is the mask drawn over the init image: the one being painted,
// or the mask field's file, feathered by the mask blur as the run will.
func (m *Model) shownMask() *image.Gray {
	var g *image.Gray
	if m.mp.on && m.mp.mask != nil {
		g = m.mp.mask
	} else if im := m.fieldImage(focusMask); im != nil && im.gray != nil && m.ed.img.info[focusMask].err == "" {
		g = im.gray
	}
	if g == nil {
		return nil
	}
	blur, _ := strconv.Atoi(strings.TrimSpace(m.ed.img.maskBlur.Value()))
	blur = min(max(blur, 0), presets.MaxMaskBlur)
	if m.mp.featherOf != g || m.mp.featherBlur != blur || m.mp.featherGen != m.mp.gen {
		m.mp.feathered = gen.BlurMask(g, blur)
		m.mp.featherOf, m.mp.featherBlur, m.mp.featherGen = g, blur, m.mp.gen
	}
	return m.mp.feathered
}

// tintKey is what a tinted picture was made from.
type tintKey struct {
	init *image.NRGBA
	mask *image.Gray
	gen  int
	blur int
}

// tintMask returns im with the mask's repainted pixels tinted (alpha the
// mask's value).
func tintMask(im *image.NRGBA, mask *image.Gray) *image.RGBA {
	b := im.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	tint := maskTint
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			p := im.Pix[y*im.Stride+4*x:]
			a := 0.0
			if x < mask.Bounds().Dx() && y < mask.Bounds().Dy() {
				a = float64(mask.Pix[y*mask.Stride+x]) / 255 * 0.6
			}
			mix := func(v, t uint8) uint8 { return uint8(math.Round(float64(v)*(1-a) + float64(t)*a)) }
			out.SetRGBA(x, y, color.RGBA{mix(p[0], tint.R), mix(p[1], tint.G), mix(p[2], tint.B), 255})
		}
	}
	return out
}
