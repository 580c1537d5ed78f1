package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/lipgloss"
)

// keyMap is the studio's one key map: Update matches keys against it and the
// help bubble draws it.
type keyMap struct {
	// Global: work from any field.
	Generate, Live, Cancel, Quit, Save, Export, Open, LoadModel, Presets, Help, Redraw, Undo key.Binding
	// Edits only documents what an edit during a run does.
	Edits                                                     key.Binding
	NextField, PrevField                                      key.Binding
	ViewMain, ViewSchedule, ViewForward, ViewSweep, ViewTrace key.Binding

	// Fields.
	Nudge, RollSeed, LockSeed, Cycle key.Binding

	// Timeline (focus on the timeline).
	Pause, StepFwd, StepBack, First, Last, ToggleX0, Branch, Decode, PrevRun, NextRun key.Binding

	// Lists and views.
	Up, Down, Enter, Rename, Delete, Import, Toggle, Play, Resweep key.Binding

	// The image page and mask painting (maskpaint.go).
	ImagePage, PaintMask                                                                            key.Binding
	PaintDrag, EraseDrag, BrushSize, EraseTool, MaskClear, MaskInvert, Feather, MaskSave, PaintDone key.Binding
	painting                                                                                        bool

	focus  focus
	state  state
	inText bool
}

func newKeyMap() keyMap {
	b := key.NewBinding
	k, h := key.WithKeys, key.WithHelp
	return keyMap{
		Generate:  b(k("ctrl+g"), h("ctrl+g", "generate (restarts a run)")),
		Live:      b(k("ctrl+t", "f8"), h("ctrl+t/f8", "live mode: regenerate as you type (4 steps)")),
		Edits:     b(k("ctrl+g"), h("edits", "apply at the next ctrl+g (mid-run: restarts)")),
		Cancel:    b(k("esc"), h("esc", "cancel run / back")),
		Quit:      b(k("ctrl+c"), h("ctrl+c", "quit")),
		Save:      b(k("ctrl+s"), h("ctrl+s", "save preset")),
		Export:    b(k("ctrl+x", "f9"), h("ctrl+x", "export PNG")),
		Redraw:    b(k("ctrl+l"), h("ctrl+l", "redraw the screen")),
		Undo:      b(k("ctrl+z"), h("ctrl+z", "undo a field change (presets too)")),
		Open:      b(k("ctrl+o"), h("ctrl+o", "open PNG settings (or drop a PNG)")),
		LoadModel: b(k("ctrl+n"), h("ctrl+n", "load another model (or drop a .safetensors / diffusers folder)")),
		Presets:   b(k("ctrl+p", "f6"), h("ctrl+p/f6", "presets")),
		Help:      b(k("?", "f1"), h("?/f1", "full help")),
		NextField: b(k("tab"), h("tab", "next field")),
		PrevField: b(k("shift+tab"), h("shift+tab", "previous field")),

		ViewMain:     b(k("alt+1", "f2"), h("alt+1/f2", "studio (or 1 outside a text field)")),
		ViewSchedule: b(k("alt+2", "f3"), h("alt+2/f3", "noise schedule (or 2 outside a text field)")),
		ViewForward:  b(k("alt+3", "f4"), h("alt+3/f4", "forward/reverse (or 3 outside a text field)")),
		ViewSweep:    b(k("alt+4", "f5"), h("alt+4/f5", "guidance sweep (or 4 outside a text field)")),
		ViewTrace:    b(k("alt+5", "f7"), h("alt+5/f7", "pipeline trace (or 5 outside a text field)")),

		Nudge:    b(k("up", "down"), h("↑/↓", "nudge value")),
		Cycle:    b(k("left", "right"), h("←/→", "choose / sliders (CFG, strength, scales)")),
		RollSeed: b(k("ctrl+r"), h("ctrl+r", "random seed")),
		LockSeed: b(k("alt+l"), h("alt+l", "lock seed")),

		Pause:    b(k(" "), h("space", "pause/resume")),
		StepFwd:  b(k(".", "right"), h("./→", "step / scrub on")),
		StepBack: b(k(",", "left"), h(",/←", "scrub back")),
		First:    b(k("home"), h("home", "first frame")),
		Last:     b(k("end"), h("end", "last frame")),
		ToggleX0: b(k("x"), h("x", "x_t / predicted x0")),
		Branch:   b(k("b"), h("b", "branch here with edits")),
		Decode:   b(k("v"), h("v", "VAE-decode frame")),
		PrevRun:  b(k("["), h("[", "previous run")),
		NextRun:  b(k("]"), h("]", "next run")),

		Up:      b(k("up", "k"), h("↑", "up")),
		Down:    b(k("down", "j"), h("↓", "down")),
		Enter:   b(k("enter"), h("enter", "load / apply")),
		Rename:  b(k("r"), h("r", "rename")),
		Delete:  b(k("d"), h("d", "delete (twice)")),
		Import:  b(k("i"), h("i", "import styles.csv")),
		Toggle:  b(k("1", "2", "3", "s"), h("1/2/3 s", "toggle schedules, SNR")),
		Play:    b(k(" "), h("space", "play/pause")),
		Resweep: b(k("r"), h("r", "recompute")),

		ImagePage:  b(k("alt+i"), h("alt+i", "image page: init, mask, ControlNet, IP-Adapter, LoRA dir, TAESD")),
		PaintMask:  b(k("alt+m"), h("alt+m", "paint the mask on the init image (again: done)")),
		PaintDrag:  b(k("left-drag"), h("left-drag", "paint (white: repaint)")),
		EraseDrag:  b(k("right-drag"), h("right-drag", "erase (or ctrl+drag)")),
		BrushSize:  b(k("+", "-"), h("+/-", "brush size (or the wheel)")),
		EraseTool:  b(k("e"), h("e", "left button erases / paints")),
		MaskClear:  b(k("c"), h("c", "clear the mask")),
		MaskInvert: b(k("i"), h("i", "invert the mask")),
		Feather:    b(k("f", "F"), h("f/F", "feather (mask blur) +/-")),
		MaskSave:   b(k("s", "enter"), h("s", "save the mask PNG now")),
		PaintDone:  b(k("esc"), h("esc", "done: save, fill the Mask field")),
	}
}

// ShortHelp implements help.KeyMap: the keys of what has focus, then the
// global ones.
func (k keyMap) ShortHelp() []key.Binding {
	var local []key.Binding
	switch k.state {
	case statePresets:
		local = []key.Binding{k.Enter, k.Rename, k.Delete, k.Import}
	case stateSchedule:
		local = []key.Binding{k.Toggle}
	case stateForward:
		local = []key.Binding{k.Play, k.StepBack, k.StepFwd}
	case stateSweep:
		local = []key.Binding{k.Nudge, k.Resweep}
	case stateMain:
		switch {
		case k.painting:
			local = []key.Binding{k.PaintDrag, k.EraseDrag, k.BrushSize, k.MaskClear, k.MaskInvert, k.Feather, k.PaintDone}
		case k.focus == focusTimeline:
			local = []key.Binding{k.Pause, k.StepFwd, k.StepBack, k.ToggleX0, k.Branch}
		case k.focus == focusSeed:
			local = []key.Binding{k.Nudge, k.RollSeed, k.LockSeed}
		case k.focus.isList():
			local = []key.Binding{k.Cycle}
		case k.focus.isSlider():
			local = []key.Binding{k.Nudge, k.Cycle}
		case k.focus.page() == 1:
			local = []key.Binding{k.ImagePage, k.PaintMask}
		case !k.inText:
			local = []key.Binding{k.Nudge}
		}
	}
	return append(local, k.Generate, k.Cancel, k.NextField, k.Help, k.Quit)
}

// FullHelp implements help.KeyMap.
func (k keyMap) FullHelp() [][]key.Binding {
	return [][]key.Binding{
		{k.Generate, k.Live, k.Edits, k.Cancel, k.Quit, k.Save, k.Export, k.Open, k.LoadModel, k.Presets, k.Help, k.Redraw, k.Undo},
		{k.NextField, k.PrevField, k.Nudge, k.Cycle, k.RollSeed, k.LockSeed},
		{k.Pause, k.StepFwd, k.StepBack, k.First, k.Last, k.ToggleX0, k.Branch, k.Decode, k.PrevRun, k.NextRun},
		{k.ViewMain, k.ViewSchedule, k.ViewForward, k.ViewSweep, k.ViewTrace},
		{k.Enter, k.Rename, k.Delete, k.Import, k.Toggle, k.Play, k.Resweep},
		{k.ImagePage, k.PaintMask, k.PaintDrag, k.EraseDrag, k.BrushSize, k.EraseTool, k.MaskClear, k.MaskInvert, k.Feather, k.MaskSave, k.PaintDone},
	}
}

var helpTitles = []string{"everywhere", "fields", "timeline", "views", "presets and views", "image inputs and mask painting"}

// fullHelpView draws every group of the key map, as many side by side as
// the width allows.
func fullHelpView(k keyMap, w int) string {
	var boxes []string
	for i, g := range k.FullHelp() {
		var b strings.Builder
		b.WriteString(styleTitle.Render(helpTitles[i]) + "\n")
		for _, kb := range g {
			h := kb.Help()
			b.WriteString(fmt.Sprintf("%s %s\n", styleSelected.Render(fmt.Sprintf("%-10s", h.Key)), styleDim.Render(h.Desc)))
		}
		boxes = append(boxes, lipgloss.NewStyle().PaddingRight(3).Render(strings.TrimSuffix(b.String(), "\n")))
	}
	var rows []string
	var row []string
	used := 0
	for _, bx := range boxes {
		bw := lipgloss.Width(bx)
		if used > 0 && used+bw > w {
			rows = append(rows, lipgloss.JoinHorizontal(lipgloss.Top, row...))
			row, used = nil, 0
		}
		row = append(row, bx)
		used += bw
	}
	rows = append(rows, lipgloss.JoinHorizontal(lipgloss.Top, row...))
	return strings.Join(rows, "\n\n")
}
