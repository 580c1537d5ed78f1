package tui

// Painting the inpainting mask with the mouse on the half-block preview of
// the init image. A half-block cell is one pixel column and two pixel rows
// of the picture as drawn; the picture is the init image scaled to fit, so
// a cell covers a rectangle of image pixels, and the brush paints that
// rectangle and every pixel within its radius. The mask is the init
// image's size, white where the run repaints; it is saved as a PNG in the
// export folder and its path goes in the mask field.

import (
	"errors"
	"fmt"
	"image"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
)

// brushSizes are the brush radii (image pixels) that +/- step through; 0
// paints the one cell under the pointer.
var brushSizes = []int{0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64}

// maskPaint is the mask-painting mode's state.
type maskPaint struct {
	on    bool
	mask  *image.Gray // the init image's size
	brush int         // index into brushSizes
	erase bool        // the left button erases
	dirty bool        // changed since saved
	path  string      // the file this mask was last saved to
	gen   int         // counts changes, for the caches below
	// last is the previous point of a drag, in cells of the picture.
	last   image.Point
	inDrag bool

	featherOf   *image.Gray
	featherBlur int
	featherGen  int
	feathered   *image.Gray
	tinted      *image.RGBA // the init image with the mask over it
	tintKey     tintKey
}

func (p *maskPaint) radius() int { return brushSizes[p.brush] }

// label is the mode as the preview's title and the status line show it.
func (p *maskPaint) label() string {
	tool := "paint"
	if p.erase {
		tool = "erase"
	}
	size := fmt.Sprintf("brush %dpx", p.radius())
	if p.radius() == 0 {
		size = "brush 1 cell"
	}
	return fmt.Sprintf("✎ mask: %s, %s", tool, size)
}

// togglePaint enters mask painting (on the init image, starting from the
// mask field's mask when it fits) or leaves it, saving the mask.
func (m *Model) togglePaint() tea.Cmd {
	if m.mp.on {
		m.leavePaint()
		return nil
	}
	init := m.fieldImage(focusInit)
	switch {
	case init == nil && strings.TrimSpace(m.ed.img.init.Value()) == "":
		m.setError(errors.New("paint a mask: set the init image first (alt+i, Init image: type a path or drop a file)"))
		return nil
	case init == nil:
		m.setError(errors.New("paint a mask: the init image is still being read"))
		return nil
	case init.err != nil:
		m.setError(fmt.Errorf("paint a mask: %w", init.err))
		return nil
	}
	b := init.rgb.Bounds()
	mask := image.NewGray(image.Rect(0, 0, b.Dx(), b.Dy()))
	note := ""
	if p := unquotePath(m.ed.img.mask.Value()); p != "" {
		cur := m.fieldImage(focusMask)
		switch {
		case cur == nil:
			note = "; the mask " + p + " is still being read: starting from an empty mask"
		case cur.err != nil:
			m.setError(fmt.Errorf("paint a mask: starting from an empty mask: %w", cur.err))
		case cur.gray.Bounds().Size() != b.Size():
			m.setError(fmt.Errorf("paint a mask: starting from an empty mask: %s", m.ed.img.info[focusMask].err))
		default:
			copy(mask.Pix, cur.gray.Pix)
			note = "; starting from " + p
		}
	}
	m.mp.on, m.mp.mask, m.mp.dirty, m.mp.inDrag = true, mask, false, false
	m.mp.gen++
	if !m.statusErr {
		m.setStatus("mask painting: left-drag paints, right-drag erases, +/- brush, e eraser, c clear, i invert, f/F feather, esc done" + note)
	}
	return nil
}

// leavePaint leaves the mode, saving a changed mask.
func (m *Model) leavePaint() {
	if m.mp.dirty {
		if err := m.saveMask(); err != nil {
			m.setError(err) // the mode stays: nothing painted is lost
			return
		}
		m.setStatus("mask saved as " + m.mp.path + " (the Mask field)")
	} else {
		m.setStatus("mask painting done")
	}
	m.mp.on, m.mp.inDrag = false, false
}

// saveMask writes the mask as a grey PNG in the export folder (atomically;
// the file this painting was saved to before is replaced, an existing
// file of the user's never) and puts its path in the mask field.
func (m *Model) saveMask() error {
	dir := strings.TrimSpace(m.ed.outDir.Value())
	if dir == "" {
		dir = "."
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("save the mask: folder %q does not exist", dir)
	}
	mask := image.NewGray(m.mp.mask.Bounds())
	copy(mask.Pix, m.mp.mask.Pix)
	path := m.mp.path
	if path != "" && filepath.Dir(path) == filepath.Clean(dir) && unquotePath(m.ed.img.mask.Value()) == path {
		if err := render.WritePNG(path, mask, nil, true); err != nil {
			return fmt.Errorf("save the mask: %w", err)
		}
	} else {
		stem := strings.TrimSuffix(filepath.Base(unquotePath(m.ed.img.init.Value())), filepath.Ext(unquotePath(m.ed.img.init.Value())))
		for n := 1; ; n++ {
			path = filepath.Join(dir, fmt.Sprintf("%s_mask_%04d.png", stem, n))
			err := render.WritePNG(path, mask, nil, false)
			if err == nil {
				break
			}
			if !errors.Is(err, fs.ErrExist) || n >= 9999 {
				return fmt.Errorf("save the mask: %w", err)
			}
		}
	}
	m.mp.path, m.mp.dirty = path, false
	m.ed.img.mask.SetValue(path)
	m.in.cache[inputKey{"mask", path}] = &inputImage{gray: mask}
	return nil
}

// paintKey handles a key in the mode; false leaves it to the studio.
func (m *Model) paintKey(k tea.KeyMsg) (tea.Cmd, bool) {
	p := &m.mp
	switch k.String() {
	case "esc", "alt+m":
		m.leavePaint()
	case "+", "=":
		p.brush = min(p.brush+1, len(brushSizes)-1)
	case "-", "_":
		p.brush = max(p.brush-1, 0)
	case "e":
		p.erase = !p.erase
	case "c":
		clear(p.mask.Pix)
		p.changed()
	case "i":
		for i, v := range p.mask.Pix {
			p.mask.Pix[i] = 255 - v
		}
		p.changed()
	case "f", "F":
		d := 1
		if k.String() == "F" {
			d = -1
		}
		m.ed.img.nudge(focusMaskBlur, float64(d))
	case "enter", "s":
		if err := m.saveMask(); err != nil {
			m.setError(err)
		} else {
			m.setStatus("mask saved as " + m.mp.path)
		}
	case "?":
		m.help.ShowAll, m.helpScroll = true, 0
	default:
		// Other letters would type into the focused field unseen.
		return nil, k.Type == tea.KeyRunes && !k.Alt && !k.Paste
	}
	return nil, true
}

func (p *maskPaint) changed() { p.dirty, p.gen = true, p.gen+1 }

// paintMouse paints or erases under the pointer; false when the event is
// not on the picture (the studio handles it as usual).
func (m *Model) paintMouse(msg tea.MouseMsg) bool {
	g, at := m.paintArea()
	if len(g.main) == 0 || g.main[0] != focusInit || g.src != m.mp.mask.Bounds().Size() {
		return false
	}
	c := image.Pt(msg.X, msg.Y).Sub(at)
	in := c.X >= 0 && c.Y >= 0 && c.X < g.cols && c.Y < g.rows()
	switch {
	case msg.Action == tea.MouseActionRelease:
		m.mp.inDrag = false
		return in
	case msg.Button == tea.MouseButtonWheelUp || msg.Button == tea.MouseButtonWheelDown:
		if !in {
			return false
		}
		if msg.Button == tea.MouseButtonWheelUp {
			m.mp.brush = min(m.mp.brush+1, len(brushSizes)-1)
		} else {
			m.mp.brush = max(m.mp.brush-1, 0)
		}
		return true
	case msg.Button != tea.MouseButtonLeft && msg.Button != tea.MouseButtonRight:
		return false
	}
	if !in && !m.mp.inDrag {
		return false
	}
	v := uint8(255)
	if msg.Button == tea.MouseButtonRight || m.mp.erase || msg.Ctrl {
		v = 0
	}
	from := c
	if m.mp.inDrag && msg.Action == tea.MouseActionMotion {
		from = m.mp.last
	}
	m.strokeCells(g, from, c, v)
	m.mp.last, m.mp.inDrag = c, true
	return true
}

// paintArea is the geometry of the input picture and the screen cell of
// its top-left corner: past the form, the gap and the pane's border; below
// the header, the border and the pane's title.
func (m *Model) paintArea() (inputGeom, image.Point) {
	header := m.headerView()
	bodyH := m.bodyHeight(header, m.footerView())
	l := m.layoutMain(bodyH)
	g := m.inputGeom(max(l.paneW-2, 1), max(bodyH-2-4, 1))
	return g, image.Pt(l.formW+1+1+g.x, lipgloss.Height(header)+1+1+g.y)
}

// strokeCells stamps the brush from cell a to cell b (one stamp a cell).
func (m *Model) strokeCells(g inputGeom, a, b image.Point, v uint8) {
	n := max(abs(b.X-a.X), abs(b.Y-a.Y), 1)
	for i := 0; i <= n; i++ {
		t := float64(i) / float64(n)
		cx := float64(a.X) + t*float64(b.X-a.X)
		cy := float64(a.Y) + t*float64(b.Y-a.Y)
		stampCell(m.mp.mask, g, cx, cy, m.mp.radius(), v)
	}
	m.mp.changed()
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// stampCell sets to v every mask pixel whose centre lies in the cell
// (cx, cy) of the picture (cells may be fractional along a stroke) or
// within r image pixels of the cell's centre, and the pixel under the
// centre (a picture larger than its image covers a pixel with several
// cells). A cell is one pixel column and two pixel rows of the picture as
// drawn (g.cols x g.pixH pixels for the image's g.src).
func stampCell(mask *image.Gray, g inputGeom, cx, cy float64, r int, v uint8) {
	sx := float64(g.src.X) / float64(g.cols) // image pixels per drawn pixel
	sy := float64(g.src.Y) / float64(g.pixH)
	x0, x1 := cx*sx, (cx+1)*sx
	y0, y1 := 2*cy*sy, math.Min(2*cy+2, float64(g.pixH))*sy
	mx, my := (x0+x1)/2, (y0+y1)/2
	rf := float64(r)
	b := mask.Bounds()
	lo := func(a float64) int { return max(int(math.Floor(a)), 0) }
	for py := lo(math.Min(y0, my-rf)); py < min(int(math.Ceil(math.Max(y1, my+rf)))+1, b.Dy()); py++ {
		for px := lo(math.Min(x0, mx-rf)); px < min(int(math.Ceil(math.Max(x1, mx+rf)))+1, b.Dx()); px++ {
			fx, fy := float64(px)+0.5, float64(py)+0.5
			inCell := fx >= x0 && fx < x1 && fy >= y0 && fy < y1
			dx, dy := fx-mx, fy-my
			if inCell || dx*dx+dy*dy <= rf*rf || (px == int(mx) && py == int(my)) {
				mask.Pix[py*mask.Stride+px] = v
			}
		}
	}
}

// paintStatus is the mode shown at the start of the status line.
func (m *Model) paintStatus() string {
	if !m.mp.on {
		return ""
	}
	blur, _ := strconv.Atoi(strings.TrimSpace(m.ed.img.maskBlur.Value()))
	return m.mp.label() + fmt.Sprintf(", feather %d", min(max(blur, 0), presets.MaxMaskBlur))
}
