package tui

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/internal/termsafe"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
)

// Messages of the preset screen.
type (
	presetsMsg struct {
		seq    int // of the load that made it
		list   []presets.Preset
		errs   []error
		styles []presets.Style
	}
	presetDoneMsg struct {
		text string
		err  error
	}
	// presetExistsMsg: saving would replace a preset; the user is asked.
	presetExistsMsg struct {
		name     string
		settings presets.Settings
		stamp    presets.Stamp // the file as it was when the user was asked
	}
	stylesMsg struct {
		path   string
		styles []presets.Style // every style kept
		added  int             // of them from path
		err    error
	}
)

// presetsView lists the built-in and saved presets and imported styles.
type presetsView struct {
	list      []presets.Preset
	styles    []presets.Style
	errs      []error
	sel       int
	follow    string // the name the selection goes to when it is listed
	armDelete bool
	// loads counts the listings asked for: a slow listing that answers
	// after a newer one (made before a rename, say) is dropped, so that
	// the list never goes back to names that no longer exist.
	loads int
}

func (v *presetsView) load(m *Model) tea.Cmd {
	st := m.store
	v.loads++
	seq := v.loads
	return func() tea.Msg {
		list, errs := st.List()
		styles, err := st.Styles()
		if err != nil {
			errs = append(errs, err)
		}
		return presetsMsg{seq: seq, list: list, errs: errs, styles: styles}
	}
}

func (v *presetsView) items() int { return len(v.list) + len(v.styles) }

func (v *presetsView) update(m *Model, msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case presetsMsg:
		if msg.seq != v.loads {
			return nil // a newer listing is on its way
		}
		// The selection stays on its preset by name (a listing made
		// while a rename was half done lacks it: the next one has it).
		name := v.follow
		if name == "" && v.sel < len(v.list) {
			name = v.list[v.sel].Name
		}
		v.list, v.errs, v.styles = msg.list, msg.errs, msg.styles
		for i, p := range v.list {
			if p.Name == name {
				v.sel, v.follow = i, ""
				break
			}
		}
		v.sel = min(v.sel, max(v.items()-1, 0))
		if len(msg.errs) > 0 {
			m.setError(fmt.Errorf("%d preset file(s) could not be read: %w", len(msg.errs), msg.errs[0]))
		}
	case presetExistsMsg:
		m.modal = &modal{kind: modalReplace, title: fmt.Sprintf("Preset %s exists. Replace it? (y/n)", termsafe.Escape(msg.name)),
			input: newTextEdit("", false), target: msg.name, settings: msg.settings, stamp: msg.stamp}
		return nil
	case presetDoneMsg:
		if msg.err != nil {
			m.setError(msg.err)
		} else {
			m.setStatus(msg.text)
		}
		return v.load(m)
	case stylesMsg:
		if msg.err != nil {
			m.setError(msg.err)
			return nil
		}
		v.styles = msg.styles
		m.setStatus(fmt.Sprintf("imported %d styles from %s, kept in the preset folder (enter merges one into the prompts)", msg.added, msg.path))
	}
	return nil
}

func (v *presetsView) key(m *Model, k tea.KeyMsg) tea.Cmd {
	km := m.keys
	n := v.items()
	arm := false
	defer func() { v.armDelete = arm }()
	switch {
	case key.Matches(k, km.Up):
		v.sel = max(v.sel-1, 0)
	case key.Matches(k, km.Down):
		v.sel = min(v.sel+1, max(n-1, 0))
	case key.Matches(k, km.Import):
		m.openModal(modalImport, "Import an AUTOMATIC1111 styles.csv (path)", "")
	case n == 0:
	case key.Matches(k, km.Enter):
		if v.sel < len(v.list) {
			p := v.list[v.sel]
			s := p.Settings
			typedPrompt, typedNegative := m.ed.prompt.Value(), m.ed.negative.Value()
			cur, err := m.ed.settings()
			if p.Builtin && err == nil { // built-ins carry Default's size: keep ours
				s.Width, s.Height = cur.Width, cur.Height
			}
			// A built-in preset applies settings only: the typed
			// prompts stay. A saved preset also carries its image's
			// prompts: with "{prompt}" in them they merge as an A1111
			// style does; where they would replace different typed
			// prompts, the studio asks (replace, merge or keep).
			switch {
			case p.Builtin || (s.Prompt == "" && s.NegativePrompt == ""):
				s.Prompt, s.NegativePrompt = typedPrompt, typedNegative
			case strings.Contains(s.Prompt+s.NegativePrompt, "{prompt}"):
				s.Prompt, s.NegativePrompt = mergeInto(s, typedPrompt, typedNegative)
			case strings.TrimSpace(typedPrompt+typedNegative) != "" && (s.Prompt != typedPrompt || s.NegativePrompt != typedNegative):
				m.state = stateMain
				m.modal = &modal{kind: modalPresetPrompts, target: p.Name, settings: s,
					title: "Preset " + termsafe.Escape(p.Name) + " carries its own prompts"}
				return nil
			}
			m.ed.set(s)
			m.state = stateMain
			m.setStatus("applied preset " + p.Name + " (ctrl+z undoes)")
			return nil
		}
		st := v.styles[v.sel-len(v.list)]
		cur, _ := m.ed.settings()
		m.ed.set(presets.ApplyStyle(cur, st))
		m.state = stateMain
		m.setStatus("merged style " + st.Name + " into the prompts")
	case key.Matches(k, km.Rename):
		if p, ok := v.user(); ok {
			m.openModal(modalRename, "Rename preset "+termsafe.Escape(p.Name)+" to", p.Name)
		}
	case key.Matches(k, km.Delete):
		p, ok := v.user()
		if !ok {
			if v.sel < len(v.list) && v.list[v.sel].Builtin {
				m.setError(fmt.Errorf("%s is a built-in preset: it cannot be deleted (save your own under another name)", v.list[v.sel].Name))
			} else if v.sel >= len(v.list) {
				m.setError(errors.New("styles are deleted by editing styles.csv in the preset folder"))
			}
			return nil
		}
		if !v.armDelete {
			arm = true
			m.setStatus("press d again to delete " + p.Name)
			return nil
		}
		st := m.store
		return func() tea.Msg {
			if err := st.Delete(p.Name); err != nil {
				return presetDoneMsg{err: fmt.Errorf("delete preset %s: %w", p.Name, err)}
			}
			return presetDoneMsg{text: "deleted preset " + p.Name}
		}
	}
	return nil
}

// user returns the selected preset if it is a user's (not a built-in).
func (v *presetsView) user() (presets.Preset, bool) {
	if v.sel >= len(v.list) {
		return presets.Preset{}, false
	}
	p := v.list[v.sel]
	return p, !p.Builtin
}

func (v *presetsView) view(m *Model, w, h int) string {
	var b strings.Builder
	b.WriteString(styleTitle.Render("Presets") + styleDim.Render("  in "+termsafe.Escape(m.store.Dir)) + "\n\n")
	if v.items() == 0 {
		b.WriteString(styleDim.Render("no presets (ctrl+s saves the current settings)") + "\n")
	}
	first := max(0, v.sel-(h-8))
	for i := first; i < v.items() && i-first < h-6; i++ {
		var name, desc string
		if i < len(v.list) {
			p := v.list[i]
			name = termsafe.Escape(p.Name)
			if p.Builtin {
				name += styleDim.Render(" (built-in)")
			}
			desc = fmt.Sprintf("%s, %d steps, cfg %s", p.Settings.Sampler, p.Settings.Steps, formatFloat(p.Settings.CFGScale))
			if pr := oneLine(p.Settings.Prompt); pr != "" {
				desc += " — " + pr
			}
		} else {
			st := v.styles[i-len(v.list)]
			name = "style: " + termsafe.Escape(st.Name)
			desc = oneLine(st.Prompt)
		}
		line := "  " + name + strings.Repeat(" ", max(1, 34-lipgloss.Width(name))) + styleDim.Render(desc)
		if i == v.sel {
			line = styleSelected.Render("› ") + truncate(line[2:], w-2)
		}
		b.WriteString(truncate(line, w) + "\n")
	}
	for _, err := range v.errs {
		b.WriteString(styleErr.Render(truncate("! "+oneLine(err.Error()), w)) + "\n")
	}
	return b.String()
}

// oneLine puts s on one line for display, control characters escaped.
func oneLine(s string) string {
	return termsafe.Cells(termsafe.Escape(strings.Join(strings.Fields(s), " ")))
}

// modalKind is what a one-line question is for.
type modalKind int

const (
	modalSave modalKind = iota
	modalOpen
	modalRename
	modalImport
	modalModel
	modalReplace       // y/n: replace an existing preset
	modalPresetPrompts // r/m/k: a saved preset's prompts against the typed ones
)

// modal asks for one line of text (a name or a path).
type modal struct {
	kind   modalKind
	title  string
	input  *textEdit
	target string // the preset being renamed (or replaced)
	// For modalReplace: what to save, and the file as it was when asked.
	settings presets.Settings
	stamp    presets.Stamp
}

func (m *Model) openModal(kind modalKind, title, value string) {
	md := &modal{kind: kind, title: title, input: newTextEdit(value, false)}
	if kind == modalRename {
		md.target = value
	}
	m.modal = md
}

func (md *modal) view(w int) string {
	iw := min(max(w-10, 20), 70)
	switch md.kind {
	case modalReplace:
		return styleModal.Render(styleTitle.Render(md.title) + "\n" + styleDim.Render("y replaces it · n or esc keeps it"))
	case modalPresetPrompts:
		return styleModal.Render(styleTitle.Render(md.title) + "\n" +
			styleDim.Render("r replaces yours · m merges (yours, then its) · k keeps yours · esc cancels"))
	}
	return styleModal.Render(styleTitle.Render(md.title) + "\n" +
		md.input.View(iw, 1, true, styleValue, styleCursor) + "\n" +
		styleDim.Render("enter confirms · esc cancels"))
}

// update handles a key in the modal; enter runs the action in a command.
func (md *modal) update(m *Model, k tea.KeyMsg) tea.Cmd {
	if md.kind == modalPresetPrompts {
		md.presetPrompts(m, k.String())
		return nil
	}
	if md.kind == modalReplace {
		switch k.String() {
		case "y", "Y":
			m.modal = nil
			return md.replace(m)
		case "n", "N", "esc":
			m.modal = nil
			m.setStatus("preset " + md.target + " kept; not saved")
		}
		return nil
	}
	switch k.Type {
	case tea.KeyEsc:
		m.modal = nil
		return nil
	case tea.KeyEnter:
		m.modal = nil
		return md.submit(m, strings.TrimSpace(md.input.Value()))
	}
	md.input.Update(k)
	return nil
}

func (md *modal) submit(m *Model, v string) tea.Cmd {
	st := m.store
	switch md.kind {
	case modalSave:
		s, err := m.ed.settings()
		if err == nil {
			err = presets.ValidateName(v)
		}
		if err == nil {
			err = s.Validate()
		}
		if err != nil {
			m.setError(fmt.Errorf("save preset: %w", err))
			return nil
		}
		return func() tea.Msg {
			err := st.Create(v, s)
			if errors.Is(err, fs.ErrExist) {
				stamp, serr := st.Stamp(v)
				if serr != nil {
					return presetDoneMsg{err: fmt.Errorf("save preset %s: %w", v, serr)}
				}
				return presetExistsMsg{name: v, settings: s, stamp: stamp}
			}
			if err != nil {
				return presetDoneMsg{err: fmt.Errorf("save preset %s: %w", v, err)}
			}
			return presetDoneMsg{text: fmt.Sprintf("saved preset %s in %s", v, st.Dir)}
		}
	case modalRename:
		old := md.target
		m.pv.follow = v // the selection follows the preset to its new name
		return func() tea.Msg {
			if err := st.Rename(old, v); err != nil {
				return presetDoneMsg{err: fmt.Errorf("rename preset %s: %w", old, err)}
			}
			return presetDoneMsg{text: "renamed " + old + " to " + v}
		}
	case modalOpen:
		path := unquotePath(v)
		if isModelPath(path) || strings.Contains(v, "--config") {
			return m.loadModel(v)
		}
		return func() tea.Msg { return openPNG(path) }
	case modalModel:
		return m.loadModel(v)
	case modalImport:
		path := unquotePath(v)
		return func() tea.Msg {
			f, _, err := safefile.Open(path) // a FIFO must not hang the studio
			if err != nil {
				return stylesMsg{err: fmt.Errorf("import styles: %w", err)}
			}
			defer f.Close()
			styles, err := presets.ImportStyles(f)
			if err != nil {
				return stylesMsg{err: fmt.Errorf("import styles %s: %w", path, err)}
			}
			// Kept in the preset folder, so they are there after a restart.
			all, err := m.store.AddStyles(styles)
			if err != nil {
				return stylesMsg{err: fmt.Errorf("import styles %s: %w", path, err)}
			}
			return stylesMsg{path: path, styles: all, added: len(styles)}
		}
	}
	return nil
}

// presetPrompts applies the saved preset md asked about, its prompts as the
// answer says: r replaces the typed prompts, m merges its prompts after
// them (A1111's style merge), k keeps them (settings only); esc cancels.
func (md *modal) presetPrompts(m *Model, answer string) {
	s := md.settings
	typed, typedNeg := m.ed.prompt.Value(), m.ed.negative.Value()
	verb := ""
	switch answer {
	case "r", "R":
		verb = "with its prompts"
	case "m", "M":
		s.Prompt, s.NegativePrompt = mergeInto(s, typed, typedNeg)
		verb = "merging its prompts into yours"
	case "k", "K":
		s.Prompt, s.NegativePrompt = typed, typedNeg
		verb = "keeping your prompts"
	case "esc":
		m.modal = nil
		m.setStatus("preset " + md.target + " not applied")
		return
	default:
		return
	}
	m.modal = nil
	m.ed.set(s)
	m.setStatus("applied preset " + md.target + " " + verb + " (ctrl+z undoes)")
}

// mergeInto merges the prompts of s into the typed ones as an A1111 style
// (s's text after the typed text, or in place of its "{prompt}").
func mergeInto(s presets.Settings, typed, typedNeg string) (string, string) {
	m := presets.ApplyStyle(presets.Settings{Prompt: typed, NegativePrompt: typedNeg},
		presets.Style{Prompt: s.Prompt, NegativePrompt: s.NegativePrompt})
	return m.Prompt, m.NegativePrompt
}

// replace overwrites the preset the user agreed to replace, unless its file
// changed since they were asked.
func (md *modal) replace(m *Model) tea.Cmd {
	st, name, s, stamp := m.store, md.target, md.settings, md.stamp
	return func() tea.Msg {
		if err := st.Replace(name, s, stamp); err != nil {
			return presetDoneMsg{err: err}
		}
		return presetDoneMsg{text: fmt.Sprintf("replaced preset %s in %s", name, st.Dir)}
	}
}

// unquotePath undoes what terminals add when a file is dropped in: quotes,
// backslash escapes and a file:// prefix.
func unquotePath(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && (s[0] == '\'' || s[0] == '"') && s[len(s)-1] == s[0] {
		s = s[1 : len(s)-1]
	}
	s = strings.TrimPrefix(s, "file://")
	return strings.ReplaceAll(s, `\ `, " ")
}

// droppedPNG returns the path when a paste is a PNG file dropped onto the
// terminal (one existing file ending in .png), else "".
func droppedPNG(paste string) string {
	p := unquotePath(paste)
	if strings.ContainsAny(p, "\n\r") || !strings.EqualFold(filepath.Ext(p), ".png") {
		return ""
	}
	if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
		return ""
	}
	return p
}

// openPNG reads the settings a PNG carries in its parameters chunk.
func openPNG(path string) tea.Msg {
	text, err := render.ReadPNGTextFile(path)
	if err != nil {
		return openedMsg{Err: fmt.Errorf("open: %w", err)}
	}
	params, ok := text["parameters"]
	if !ok {
		return openedMsg{Err: fmt.Errorf("open %s: the PNG has no \"parameters\" text chunk", path)}
	}
	// A missing or malformed key is an *presets.InfotextError naming it.
	s, unknown, err := presets.ParseInfotext(params)
	if err != nil {
		return openedMsg{Err: fmt.Errorf("open %s: %w", path, err)}
	}
	return openedMsg{Path: path, Settings: s, IFParams: ifParams(unknown)}
}
