package tui

// The TAESD field of the image page: a tiny autoencoder (diffusers'
// AutoencoderTiny) put on the running pipeline without reloading the
// model, so that every step's preview (its predicted x0; x_t stays the
// latent projection, one decode a step) is its decode, and the final image
// too, as stable-diffusion.cpp's --taesd and the studio's flag do. An
// empty field takes it off: previews go back to the VAE budget or the
// latent projection. The worker loads it (it owns the pipeline and the
// device); the field shows what is loaded, or why not.

import (
	"fmt"
	"image"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/sampler"
)

// taesdDelay is how long the field waits after the last key before the
// worker loads the path typed (a paste or a drop waits as long).
const taesdDelay = 300 * time.Millisecond

// taesdState is the UI's side of the field.
type taesdState struct {
	typed  string // the field's path when last looked at
	seq    int64  // counts changes of typed
	sent   int64  // the seq of the last request sent to the worker
	got    int64  // the seq of the last answer taken
	want   string // the path of that request
	loaded string // the TAESD on the pipeline ("" none)
	detail string // what it is ("4 latent channels, diffusers folder")
	err    string // why want could not be loaded
}

// taesdReq asks the worker to put the TAESD at Path on the pipeline (""
// takes it off), now and on every pipeline it loads later.
type taesdReq struct {
	Path string
	Seq  int64
}

// taesdMsg answers a taesdReq (and is sent again when a model switch or a
// device recovery loads another pipeline).
type taesdMsg struct {
	Path   string
	Seq    int64
	Detail string
	Err    error
}

// taesdTickMsg: the field has not changed for taesdDelay since change Seq.
type taesdTickMsg struct{ Seq int64 }

func (taesdReq) isRequest() {}

// mark is what follows the field's path: ✓ when it is loaded, ✗ when it
// could not be, … while the worker loads it.
func (s *taesdState) mark(path string) string {
	switch {
	case path == "":
		return ""
	case path != s.want || s.sent != s.seq:
		return styleDim.Render(" …")
	case s.err != "":
		return styleErr.Render(" ✗")
	case s.loaded == path:
		return styleOK.Render(" ✓")
	}
	return styleDim.Render(" …")
}

// hint is the line under the form while the field has focus.
func (s *taesdState) hint(path string) string {
	switch {
	case path != "" && path == s.want && s.sent == s.seq && s.err != "":
		return s.err + "; previews use the VAE or the latent projection"
	case path != "" && path == s.loaded:
		return "TAESD loaded (" + s.detail + "): every step's preview and the final image decode with it"
	}
	return "a TAESD (tiny autoencoder) for fast step previews; empty: the VAE"
}

// syncTAESD notes a change of the field and starts the wait after which
// the worker loads it.
func (m *Model) syncTAESD() tea.Cmd {
	s := &m.ed.img.tz
	p := unquotePath(m.ed.img.taesd.Value())
	if p == s.typed {
		return nil
	}
	s.typed = p
	s.seq++
	seq := s.seq
	return tea.Tick(taesdDelay, func(time.Time) tea.Msg { return taesdTickMsg{Seq: seq} })
}

// flushTAESD sends the field's path to the worker now if it has not been
// (a run about to start previews with what the field says).
func (m *Model) flushTAESD() {
	if s := &m.ed.img.tz; s.sent != s.seq && m.w != nil {
		s.sent, s.want, s.err = s.seq, s.typed, ""
		m.w.submit(taesdReq{Path: s.typed, Seq: s.seq})
	}
}

// onTAESDMsg handles the field's wait and the worker's answers.
func (m *Model) onTAESDMsg(msg tea.Msg) tea.Cmd {
	s := &m.ed.img.tz
	switch msg := msg.(type) {
	case taesdTickMsg:
		if msg.Seq != s.seq {
			return nil // typed on since
		}
		if m.w == nil {
			return tea.Tick(taesdDelay, func(time.Time) tea.Msg { return msg })
		}
		m.flushTAESD()
	case taesdMsg:
		if msg.Seq != s.sent {
			return nil // a later request is on its way
		}
		s.got, s.loaded, s.detail, s.err = msg.Seq, "", "", ""
		switch {
		case msg.Err != nil:
			s.err = oneLine(msg.Err.Error())
			m.setError(fmt.Errorf("TAESD: %w", msg.Err))
		case msg.Path != "":
			s.loaded, s.detail = msg.Path, msg.Detail
			m.setStatus("TAESD " + msg.Path + " loaded: step previews decode with it")
		default:
			m.setStatus("TAESD off: previews use the VAE or the latent projection")
		}
	}
	return nil
}

// setTAESD handles a taesdReq on the worker: the TAESD goes on the
// pipeline loaded now and, through the session's Configure, on every one
// loaded later (a model switch, a device recovery).
func (w *worker) setTAESD(r taesdReq) {
	attach := func(p *models.Pipeline) {
		detail, err := attachTAESD(p, r.Path)
		w.send(taesdMsg{Path: r.Path, Seq: r.Seq, Detail: detail, Err: err})
	}
	w.sess.Configure = func(p *models.Pipeline) error {
		attach(p) // a TAESD that does not fit is reported, not fatal
		return nil
	}
	p := w.sess.Pipeline()
	if p == nil {
		err := fmt.Errorf("taesd %s: no model is loaded", r.Path)
		if r.Path == "" {
			err = nil
		}
		w.send(taesdMsg{Path: r.Path, Seq: r.Seq, Err: err})
		return
	}
	attach(p)
}

// attachTAESD puts the TAESD at path on p ("" takes it off; the one
// already there is kept). On an error p has no TAESD.
func attachTAESD(p *models.Pipeline, path string) (string, error) {
	if path == "" {
		return "", p.SetTAESD(nil)
	}
	if t := p.TAESD(); t != nil && t.Path == path {
		return describeTAESD(t), nil
	}
	t, err := checkpoint.LoadTiny(path)
	if err == nil {
		if err = p.SetTAESD(t); err != nil {
			t.Close()
		}
	}
	if err != nil {
		if serr := p.SetTAESD(nil); serr != nil {
			err = fmt.Errorf("%w (and taking the previous TAESD off: %v)", err, serr)
		}
		return "", err
	}
	return describeTAESD(t), nil
}

func describeTAESD(t *checkpoint.Tiny) string {
	layout := t.Layout
	if layout == "" {
		layout = "single file"
	}
	return fmt.Sprintf("%d latent channels, %s", t.Config.LatentChannels, layout)
}

// previews projects every image of a latent batch (a step's predicted x0)
// to RGB for the step's preview: with the pipeline's TAESD when one is
// loaded (gen.PreviewFor, as generate --preview), else the model's latent
// projection. It reports whether the TAESD drew it.
func (w *worker) previews(l sampler.Latent) (*image.RGBA, bool) {
	p := w.sess.Pipeline()
	if p == nil || p.TAESD() == nil {
		return previewAll(w.sess.Facts(), l), false
	}
	imgs := make([]*image.RGBA, l.Shape[0])
	for i := range imgs {
		imgs[i] = gen.PreviewFor(p, l, i)
	}
	return tile(imgs), true
}
