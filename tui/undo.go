package tui

// Undo of field changes: every change to the editor's fields (typing, a
// nudge, a preset or style applied, settings opened from a PNG) can be
// taken back with ctrl+z.

// editorState is everything the editor's fields hold, comparable.
type editorState struct {
	text                   [10]string
	sampler, schedule, rng int
	seedLocked             bool
	etaSet                 bool
	eta, guidanceRescale   float64
	sizeCond               [6]int
	img                    [12]string // the image page's fields
	ifUp                   [3]string  // DeepFloyd IF's stage II fields
}

// maxUndo is how many changes ctrl+z can take back.
const maxUndo = 200

func (e *editor) state() editorState {
	s := editorState{sampler: e.sampler, schedule: e.schedule, rng: e.rng, seedLocked: e.seedLocked,
		guidanceRescale: e.guidanceRescale, sizeCond: e.sizeCond}
	for i, t := range []*textEdit{e.prompt, e.negative, e.cfg, e.steps, e.seed, e.width, e.height, e.batch, e.clip, e.outDir} {
		s.text[i] = t.Value()
	}
	for i, t := range e.img.texts() {
		s.img[i] = t.Value()
	}
	for i, t := range e.ifUp.texts() {
		s.ifUp[i] = t.Value()
	}
	if e.eta != nil {
		s.etaSet, s.eta = true, *e.eta
	}
	return s
}

func (e *editor) restore(s editorState) {
	for i, t := range []*textEdit{e.prompt, e.negative, e.cfg, e.steps, e.seed, e.width, e.height, e.batch, e.clip, e.outDir} {
		t.SetValue(s.text[i])
	}
	e.sampler, e.schedule, e.rng, e.seedLocked = s.sampler, s.schedule, s.rng, s.seedLocked
	e.guidanceRescale, e.sizeCond = s.guidanceRescale, s.sizeCond
	for i, t := range e.img.texts() {
		t.SetValue(s.img[i])
	}
	for i, t := range e.ifUp.texts() {
		t.SetValue(s.ifUp[i])
	}
	e.eta = nil
	if s.etaSet {
		v := s.eta
		e.eta = &v
	}
}

// noteChange records before as an undo step when the fields changed.
func (m *Model) noteChange(before editorState) {
	if m.ed.state() == before {
		return
	}
	m.undo = append(m.undo, before)
	if len(m.undo) > maxUndo {
		m.undo = m.undo[len(m.undo)-maxUndo:]
	}
}

// undoChange takes back the last field change.
func (m *Model) undoChange() {
	if len(m.undo) == 0 {
		m.setStatus("nothing to undo")
		return
	}
	s := m.undo[len(m.undo)-1]
	m.undo = m.undo[:len(m.undo)-1]
	m.ed.restore(s)
	m.setStatus("undone")
}
