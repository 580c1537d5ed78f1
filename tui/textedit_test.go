package tui

import (
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTextEditKeys(t *testing.T) {
	e := newTextEdit("", true)
	press := func(ks ...tea.KeyMsg) {
		for _, k := range ks {
			e.Update(k)
		}
	}
	runes := func(s string) tea.KeyMsg { return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)} }
	press(runes("héllo"), tea.KeyMsg{Type: tea.KeySpace}, runes("wörld"), tea.KeyMsg{Type: tea.KeyEnter}, runes("two"))
	require.Equal(t, "héllo wörld\ntwo", e.Value(), "value")
	press(tea.KeyMsg{Type: tea.KeyUp}, tea.KeyMsg{Type: tea.KeyCtrlW})
	require.Equal(t, "héllo \ntwo", e.Value(), "after ctrl+w on line 1")
	press(tea.KeyMsg{Type: tea.KeyHome}, tea.KeyMsg{Type: tea.KeyDelete}, tea.KeyMsg{Type: tea.KeyEnd}, tea.KeyMsg{Type: tea.KeyBackspace})
	require.Equal(t, "éllo\ntwo", e.Value(), "after home, delete, end, backspace")
	one := newTextEdit("a\nb", false)
	require.Equal(t, "a b", one.Value(), "one-line editor")
	require.False(t, one.Update(tea.KeyMsg{Type: tea.KeyEnter}), "one-line editor used enter")
	require.False(t, one.Update(tea.KeyMsg{Type: tea.KeyUp}), "one-line editor used up")
	one.Limit = 5
	one.Update(runes("cdefg"))
	require.Equal(t, "a bcd", one.Value(), "limit 5")
}

func TestTextEditView(t *testing.T) {
	e := newTextEdit("the quick brown fox jumps", true)
	v := ansi.Strip(e.View(10, 3, false, lipgloss.NewStyle(), lipgloss.NewStyle()))
	lines := strings.Split(v, "\n")
	want := []string{"the quick ", "brown fox ", "jumps     "}
	assert.Equal(t, strings.Join(want, "|"), strings.Join(lines, "|"), "wrapped to 10x3")
	// Two lines high, the cursor's (last) line stays in view.
	v = ansi.Strip(e.View(10, 2, true, lipgloss.NewStyle(), lipgloss.NewStyle()))
	assert.Equal(t, "brown fox \njumps     ", v, "10x2 with the cursor at the end")
	path := newTextEdit("/a/very/long/path/to/the/out/folder", false)
	got := ansi.Strip(path.View(12, 1, false, lipgloss.NewStyle(), lipgloss.NewStyle()))
	assert.Equal(t, "…out/folder ", got, "one line cut to 12")
	assert.Equal(t, 12, lipgloss.Width(got), "one line cut to 12: %q", got)
	path.Update(tea.KeyMsg{Type: tea.KeyHome})
	got = ansi.Strip(path.View(12, 1, true, lipgloss.NewStyle(), lipgloss.NewStyle()))
	assert.Equal(t, "/a/very/lon…", got, "one line with the cursor at the start")
	assert.Equal(t, 12, lipgloss.Width(got), "one line with the cursor at the start: %q", got)
}

// Emoji with a variation selector or a skin-tone modifier are one cluster
// two cells wide, as terminals and lipgloss draw them: every line the
// editor draws is exactly its width, and the cursor steps over a cluster.
func TestTextEditGraphemeClusters(t *testing.T) {
	for _, v := range []string{"I ❤️ you", "👍🏽👍🏿 ok", "a👨‍👩‍👧b", "❤️❤️❤️❤️❤️❤️❤️❤️❤️❤️❤️"} {
		e := newTextEdit(v, true)
		for _, w := range []int{5, 8, 13} {
			for i, l := range strings.Split(e.View(w, 4, true, lipgloss.NewStyle(), lipgloss.NewStyle()), "\n") {
				assert.Equal(t, w, ansi.StringWidth(l), "%q at width %d, line %d: %q", v, w, i, l)
			}
		}
		one := newTextEdit(v, false)
		for _, w := range []int{4, 7, 20} {
			assert.Equal(t, w, ansi.StringWidth(one.View(w, 1, true, lipgloss.NewStyle(), lipgloss.NewStyle())), "%q one line at width %d", v, w)
		}
	}
	e := newTextEdit("ok 👍🏽", false)
	e.Update(tea.KeyMsg{Type: tea.KeyLeft})
	assert.Equal(t, len([]rune("ok ")), e.pos, "left steps over the whole cluster")
	e.Update(tea.KeyMsg{Type: tea.KeyRight})
	e.Update(tea.KeyMsg{Type: tea.KeyBackspace})
	assert.Equal(t, "ok ", e.Value(), "backspace deletes the whole cluster")
}

// Readline's keys in a text field: ctrl+e end of line, ctrl+a start,
// alt+b / alt+f a word back / on, alt+backspace deletes the word before.
func TestTextEditReadlineKeys(t *testing.T) {
	e := newTextEdit("red heart emoji", false)
	alt := func(r rune) tea.KeyMsg { return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}, Alt: true} }
	require.True(t, e.Update(tea.KeyMsg{Type: tea.KeyCtrlA}))
	assert.Equal(t, 0, e.pos)
	require.True(t, e.Update(tea.KeyMsg{Type: tea.KeyCtrlE}), "ctrl+e is end of line")
	assert.Equal(t, len(e.value), e.pos)
	require.True(t, e.Update(alt('b')))
	assert.Equal(t, len("red heart "), e.pos)
	require.True(t, e.Update(alt('b')))
	assert.Equal(t, len("red "), e.pos)
	require.True(t, e.Update(alt('f')))
	assert.Equal(t, len("red heart"), e.pos)
	require.True(t, e.Update(tea.KeyMsg{Type: tea.KeyBackspace, Alt: true}))
	assert.Equal(t, "red  emoji", e.Value())
	assert.Equal(t, len("red "), e.pos)
}
