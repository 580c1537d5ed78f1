package tui

import (
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
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
	if got := e.Value(); got != "héllo wörld\ntwo" {
		t.Fatalf("value %q", got)
	}
	press(tea.KeyMsg{Type: tea.KeyUp}, tea.KeyMsg{Type: tea.KeyCtrlW})
	if got := e.Value(); got != "héllo \ntwo" {
		t.Fatalf("after ctrl+w on line 1: %q", got)
	}
	press(tea.KeyMsg{Type: tea.KeyHome}, tea.KeyMsg{Type: tea.KeyDelete}, tea.KeyMsg{Type: tea.KeyEnd}, tea.KeyMsg{Type: tea.KeyBackspace})
	if got := e.Value(); got != "éllo\ntwo" {
		t.Fatalf("after home, delete, end, backspace: %q", got)
	}
	one := newTextEdit("a\nb", false)
	if one.Value() != "a b" || one.Update(tea.KeyMsg{Type: tea.KeyEnter}) || one.Update(tea.KeyMsg{Type: tea.KeyUp}) {
		t.Fatalf("one-line editor: %q, or it used enter/up", one.Value())
	}
	one.Limit = 5
	one.Update(runes("cdefg"))
	if one.Value() != "a bcd" {
		t.Fatalf("limit 5: %q", one.Value())
	}
}

func TestTextEditView(t *testing.T) {
	e := newTextEdit("the quick brown fox jumps", true)
	v := ansi.Strip(e.View(10, 3, false, lipgloss.NewStyle(), lipgloss.NewStyle()))
	lines := strings.Split(v, "\n")
	want := []string{"the quick ", "brown fox ", "jumps     "}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("wrapped to 10x3: %q, want %q", lines, want)
	}
	// Two lines high, the cursor's (last) line stays in view.
	v = ansi.Strip(e.View(10, 2, true, lipgloss.NewStyle(), lipgloss.NewStyle()))
	if v != "brown fox \njumps     " {
		t.Errorf("10x2 with the cursor at the end: %q", v)
	}
	path := newTextEdit("/a/very/long/path/to/the/out/folder", false)
	got := ansi.Strip(path.View(12, 1, false, lipgloss.NewStyle(), lipgloss.NewStyle()))
	if got != "…out/folder " || lipgloss.Width(got) != 12 {
		t.Errorf("one line cut to 12: %q", got)
	}
	path.Update(tea.KeyMsg{Type: tea.KeyHome})
	got = ansi.Strip(path.View(12, 1, true, lipgloss.NewStyle(), lipgloss.NewStyle()))
	if got != "/a/very/lon…" || lipgloss.Width(got) != 12 {
		t.Errorf("one line with the cursor at the start: %q", got)
	}
}
