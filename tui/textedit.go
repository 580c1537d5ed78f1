package tui

import (
	"strings"
	"unicode"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/mattn/go-runewidth"

	"github.com/stepwise/stepwise/internal/termsafe"
)

// textEdit is a small text editor: one line, or several (Multi) that wrap
// to the width they are drawn at. (bubbles' textinput and textarea need a
// clipboard module this build does not carry, and the studio needs little.)
type textEdit struct {
	value  []rune
	pos    int // cursor, in runes
	Multi  bool
	Limit  int // max runes; 0 = none
	scroll int // first visual line shown (Multi)
}

func newTextEdit(s string, multi bool) *textEdit {
	e := &textEdit{Multi: multi}
	e.SetValue(s)
	return e
}

func (e *textEdit) Value() string { return string(e.value) }

func (e *textEdit) SetValue(s string) {
	if !e.Multi {
		s = strings.ReplaceAll(strings.ReplaceAll(s, "\r", ""), "\n", " ")
	}
	e.value = []rune(s)
	e.pos = len(e.value)
}

func (e *textEdit) insert(rs []rune) {
	var clean []rune
	for _, r := range rs {
		switch {
		case r == '\n' || r == '\r':
			if e.Multi {
				clean = append(clean, '\n')
			} else {
				clean = append(clean, ' ')
			}
		case r == '\t':
			clean = append(clean, ' ')
		case unicode.IsControl(r):
		default:
			clean = append(clean, r)
		}
	}
	if e.Limit > 0 && len(e.value)+len(clean) > e.Limit {
		clean = clean[:max(0, e.Limit-len(e.value))]
	}
	v := make([]rune, 0, len(e.value)+len(clean))
	v = append(v, e.value[:e.pos]...)
	v = append(v, clean...)
	v = append(v, e.value[e.pos:]...)
	e.value = v
	e.pos += len(clean)
}

// Update applies one key; it reports whether the key was used.
func (e *textEdit) Update(k tea.KeyMsg) bool {
	switch k.Type {
	case tea.KeySpace:
		e.insert([]rune{' '})
	case tea.KeyRunes:
		if k.Alt {
			return false
		}
		e.insert(k.Runes)
	case tea.KeyEnter:
		if !e.Multi {
			return false
		}
		e.insert([]rune{'\n'})
	case tea.KeyBackspace, tea.KeyCtrlH:
		if e.pos > 0 {
			e.value = append(e.value[:e.pos-1], e.value[e.pos:]...)
			e.pos--
		}
	case tea.KeyDelete, tea.KeyCtrlD:
		if e.pos < len(e.value) {
			e.value = append(e.value[:e.pos], e.value[e.pos+1:]...)
		}
	case tea.KeyLeft, tea.KeyCtrlB:
		if e.pos > 0 {
			e.pos--
		}
	case tea.KeyRight, tea.KeyCtrlF:
		if e.pos < len(e.value) {
			e.pos++
		}
	case tea.KeyHome, tea.KeyCtrlA:
		e.pos = e.lineStart()
	case tea.KeyEnd:
		e.pos = e.lineEnd()
	case tea.KeyCtrlK:
		e.value = append(e.value[:e.pos], e.value[e.lineEnd():]...)
	case tea.KeyCtrlU:
		s := e.lineStart()
		e.value = append(e.value[:s], e.value[e.pos:]...)
		e.pos = s
	case tea.KeyCtrlW:
		s := e.pos
		for s > 0 && e.value[s-1] == ' ' {
			s--
		}
		for s > 0 && e.value[s-1] != ' ' && e.value[s-1] != '\n' {
			s--
		}
		e.value = append(e.value[:s], e.value[e.pos:]...)
		e.pos = s
	case tea.KeyUp:
		if !e.Multi || e.lineStart() == 0 {
			return false
		}
		e.pos = e.lineStart() - 1
	case tea.KeyDown:
		if !e.Multi || e.lineEnd() == len(e.value) {
			return false
		}
		e.pos = e.lineEnd() + 1
	default:
		return false
	}
	return true
}

func (e *textEdit) lineStart() int {
	i := e.pos
	for i > 0 && e.value[i-1] != '\n' {
		i--
	}
	return i
}

func (e *textEdit) lineEnd() int {
	i := e.pos
	for i < len(e.value) && e.value[i] != '\n' {
		i++
	}
	return i
}

// wrapped splits the text into visual lines of at most width cells and
// returns them with the cursor's line and column.
func (e *textEdit) wrapped(width int) (lines [][]rune, cl, cc int) {
	width = max(width, 1)
	var cur []rune
	w := 0
	cl, cc = -1, 0
	for i, r := range e.value {
		if i == e.pos {
			cl, cc = len(lines), len(cur)
		}
		if r == '\n' {
			lines = append(lines, cur)
			cur, w = nil, 0
			continue
		}
		r = termsafe.Rune(r) // a prompt read from a file may hold ESC
		rw := runewidth.RuneWidth(r)
		if w+rw > width {
			lines = append(lines, cur)
			cur, w = nil, 0
		}
		cur = append(cur, r)
		w += rw
	}
	if cl < 0 {
		if w >= width {
			lines = append(lines, cur)
			cur = nil
		}
		cl, cc = len(lines), len(cur)
	}
	lines = append(lines, cur)
	return lines, cl, cc
}

// View draws height lines of width cells; focused shows the cursor. One
// line scrolls sideways to keep the cursor in view, with "…" where text is
// cut off.
func (e *textEdit) View(width, height int, focused bool, st lipgloss.Style, cursor lipgloss.Style) string {
	if !e.Multi {
		return e.lineView(max(width, 2), focused, st, cursor)
	}
	lines, cl, cc := e.wrapped(width)
	if height < 1 {
		height = 1
	}
	if cl < e.scroll {
		e.scroll = cl
	}
	if cl >= e.scroll+height {
		e.scroll = cl - height + 1
	}
	if e.scroll > max(0, len(lines)-1) {
		e.scroll = 0
	}
	out := make([]string, 0, height)
	for i := e.scroll; i < e.scroll+height; i++ {
		var l []rune
		if i < len(lines) {
			l = lines[i]
		}
		var s string
		if focused && i == cl {
			before, at, after := string(l[:cc]), " ", ""
			if cc < len(l) {
				at, after = string(l[cc]), string(l[cc+1:])
			}
			s = st.Render(before) + cursor.Render(at) + st.Render(after)
			s += strings.Repeat(" ", max(0, width-runewidth.StringWidth(string(l))-boolInt(cc >= len(l))))
		} else {
			s = st.Render(string(l)) + strings.Repeat(" ", max(0, width-runewidth.StringWidth(string(l))))
		}
		out = append(out, s)
	}
	return strings.Join(out, "\n")
}

func (e *textEdit) lineView(width int, focused bool, st, cursor lipgloss.Style) string {
	v := e.value
	start, end := 0, len(v)
	// The cursor takes a cell of its own only at the end of the text.
	for runewidth.StringWidth(string(v[start:end]))+boolInt(e.pos >= end) > width && start < end {
		if end > e.pos+1 {
			end--
		} else {
			start++
		}
	}
	vis := append([]rune(nil), v[start:end]...)
	for i, r := range vis {
		vis[i] = termsafe.Rune(r)
	}
	if start > 0 && len(vis) > 0 {
		vis[0] = '…'
	}
	if end < len(v) && len(vis) > 0 {
		vis[len(vis)-1] = '…'
	}
	c := e.pos - start
	var s string
	if focused {
		at, after := " ", ""
		if c < len(vis) {
			at, after = string(vis[c]), string(vis[c+1:])
		}
		s = st.Render(string(vis[:c])) + cursor.Render(at) + st.Render(after)
	} else {
		s = st.Render(string(vis))
	}
	return s + strings.Repeat(" ", max(0, width-lipgloss.Width(s)))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
