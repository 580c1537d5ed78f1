package tui

import (
	"strings"
	"unicode"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/rivo/uniseg"

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

// clusterLen is the number of runes of each grapheme cluster of v (an
// emoji with a variation selector, a skin tone or joiners is one cluster,
// as terminals and lipgloss draw it).
func clusterLen(v []rune) []int {
	var out []int
	g := uniseg.NewGraphemes(string(v))
	for g.Next() {
		out = append(out, len(g.Runes()))
	}
	return out
}

// clusterWidth is the cells a cluster takes, as lipgloss measures it.
func clusterWidth(c []rune) int { return ansi.StringWidth(string(c)) }

// prevBoundary and nextBoundary are the cluster boundaries around pos.
func (e *textEdit) prevBoundary(pos int) int {
	at := 0
	for _, n := range clusterLen(e.value) {
		if at+n >= pos {
			return at
		}
		at += n
	}
	return at
}

func (e *textEdit) nextBoundary(pos int) int {
	at := 0
	for _, n := range clusterLen(e.value) {
		at += n
		if at > pos {
			return at
		}
	}
	return len(e.value)
}

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

// wordLeft is where alt+b goes: the start of the word before pos.
func (e *textEdit) wordLeft() int {
	i := e.pos
	for i > 0 && !isWordRune(e.value[i-1]) {
		i--
	}
	for i > 0 && isWordRune(e.value[i-1]) {
		i--
	}
	return i
}

// wordRight is where alt+f goes: the end of the word after pos.
func (e *textEdit) wordRight() int {
	i := e.pos
	for i < len(e.value) && !isWordRune(e.value[i]) {
		i++
	}
	for i < len(e.value) && isWordRune(e.value[i]) {
		i++
	}
	return i
}

// Update applies one key; it reports whether the key was used. The keys
// are readline's: ctrl+a/ctrl+e line start/end, ctrl+b/ctrl+f and the
// arrows a character, alt+b/alt+f a word, ctrl+k/ctrl+u kill to the line's
// end/start, ctrl+w and alt+backspace the word before, ctrl+d delete.
func (e *textEdit) Update(k tea.KeyMsg) bool {
	if k.Alt {
		switch {
		case k.Type == tea.KeyRunes && string(k.Runes) == "b":
			e.pos = e.wordLeft()
		case k.Type == tea.KeyRunes && string(k.Runes) == "f":
			e.pos = e.wordRight()
		case k.Type == tea.KeyRunes && string(k.Runes) == "d":
			e.value = append(e.value[:e.pos], e.value[e.wordRight():]...)
		case k.Type == tea.KeyBackspace || k.Type == tea.KeyCtrlH:
			s := e.wordLeft()
			e.value = append(e.value[:s], e.value[e.pos:]...)
			e.pos = s
		default:
			return false
		}
		return true
	}
	switch k.Type {
	case tea.KeySpace:
		e.insert([]rune{' '})
	case tea.KeyRunes:
		e.insert(k.Runes)
	case tea.KeyEnter:
		if !e.Multi {
			return false
		}
		e.insert([]rune{'\n'})
	case tea.KeyBackspace, tea.KeyCtrlH:
		if e.pos > 0 {
			s := e.prevBoundary(e.pos)
			e.value = append(e.value[:s], e.value[e.pos:]...)
			e.pos = s
		}
	case tea.KeyDelete, tea.KeyCtrlD:
		if e.pos < len(e.value) {
			e.value = append(e.value[:e.pos], e.value[e.nextBoundary(e.pos):]...)
		}
	case tea.KeyLeft, tea.KeyCtrlB:
		if e.pos > 0 {
			e.pos = e.prevBoundary(e.pos)
		}
	case tea.KeyRight, tea.KeyCtrlF:
		if e.pos < len(e.value) {
			e.pos = e.nextBoundary(e.pos)
		}
	case tea.KeyHome, tea.KeyCtrlA:
		e.pos = e.lineStart()
	case tea.KeyEnd, tea.KeyCtrlE:
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
	i := 0
	for _, n := range clusterLen(e.value) {
		c := e.value[i : i+n]
		if i <= e.pos && e.pos < i+n && cl < 0 {
			cl, cc = len(lines), len(cur)
		}
		i += n
		if c[0] == '\n' {
			lines = append(lines, cur)
			cur, w = nil, 0
			continue
		}
		c = safeCluster(c) // a prompt read from a file may hold ESC
		rw := clusterWidth(c)
		if w+rw > width {
			lines = append(lines, cur)
			cur, w = nil, 0
		}
		cur = append(cur, c...)
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
				n := clusterLen(l[cc:])[0]
				at, after = string(l[cc:cc+n]), string(l[cc+n:])
			}
			s = st.Render(before) + cursor.Render(at) + st.Render(after)
			s += strings.Repeat(" ", max(0, width-clusterWidth(l)-boolInt(cc >= len(l))))
		} else {
			s = st.Render(string(l)) + strings.Repeat(" ", max(0, width-clusterWidth(l)))
		}
		out = append(out, s)
	}
	return strings.Join(out, "\n")
}

func (e *textEdit) lineView(width int, focused bool, st, cursor lipgloss.Style) string {
	v := e.value
	// Clusters as [start, end) rune ranges; the cursor is at a boundary.
	var bounds []int
	at := 0
	for _, n := range clusterLen(v) {
		bounds = append(bounds, at)
		at += n
	}
	bounds = append(bounds, len(v))
	cur := 0
	for cur < len(bounds)-1 && bounds[cur] < e.pos {
		cur++
	}
	first, last := 0, len(bounds)-1 // clusters shown: [first, last)
	shown := func() int {
		w := 0
		for i := first; i < last; i++ {
			w += clusterWidth(safeCluster(v[bounds[i]:bounds[i+1]]))
		}
		return w
	}
	// The cursor takes a cell of its own only at the end of the text.
	for first < last && shown()+boolInt(cur >= last) > width {
		if last > cur+1 {
			last--
		} else {
			first++
		}
	}
	var parts []string
	for i := first; i < last; i++ {
		c := string(safeCluster(v[bounds[i]:bounds[i+1]]))
		if (i == first && first > 0) || (i == last-1 && last < len(bounds)-1) {
			c = "…" + strings.Repeat(" ", max(0, ansi.StringWidth(c)-1))
		}
		parts = append(parts, c)
	}
	c := cur - first
	var s string
	if focused {
		at, after := " ", ""
		if c < len(parts) {
			at, after = parts[c], strings.Join(parts[c+1:], "")
		}
		s = st.Render(strings.Join(parts[:c], "")) + cursor.Render(at) + st.Render(after)
	} else {
		s = st.Render(strings.Join(parts, ""))
	}
	return s + strings.Repeat(" ", max(0, width-lipgloss.Width(s)))
}

// safeCluster escapes control runes of a cluster (see termsafe.Rune) and
// reduces emoji sequences terminals measure differently (termsafe.Cells).
func safeCluster(c []rune) []rune {
	c = termsafe.CellsCluster(c)
	out := make([]rune, len(c))
	for i, r := range c {
		out[i] = termsafe.Rune(r)
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
