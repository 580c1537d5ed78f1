package tui

import (
	"context"
	"sync"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/presets"
)

// compiling is what the worker's compile-ahead tells the busy line: the
// note ("compiling GL programs for llvmpipe, first run only: 12/41"), empty
// when it is not compiling. The worker writes it, View reads it.
type compiling struct {
	mu   sync.Mutex
	note string
}

func (c *compiling) set(note string) {
	c.mu.Lock()
	c.note = note
	c.mu.Unlock()
}

func (c *compiling) get() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.note
}

// announceAhead reports whether the loaded model's device compiles
// programs ahead, and if so shows that on the busy line from the moment the
// studio learns the model is loaded.
func (w *worker) announceAhead() bool {
	dev := w.sess.Device()
	if _, ok := dev.(gpu.AheadCompiler); !ok || w.sess.Facts() == nil {
		return false
	}
	w.compiling.set(gen.CompileNote(dev.Name(), 0, 0))
	return true
}

// prepare builds ahead, after a model is loaded and while the user types,
// the device programs a run of the model's native size needs (see
// gen.Session.Prepare): a Ctrl+G queued meanwhile waits for it, and its
// first step then compiles nothing. Closing the studio stops it.
func (w *worker) prepare() {
	f := w.sess.Facts()
	dev := w.sess.Device()
	if f == nil || dev == nil {
		return
	}
	st := presets.Default()
	st.Width, st.Height = f.NativeSize, f.NativeSize
	ctx, cancel := context.WithCancel(context.Background())
	w.setRunCancel(cancel)
	defer func() {
		w.setRunCancel(nil)
		cancel()
		w.compiling.set("")
	}()
	name := dev.Name()
	_ = w.sess.Prepare(ctx, st, nil, func(done, total int) { // an error is the first run's to report
		w.compiling.set(gen.CompileNote(name, done, total))
	})
}

// compileStage is the busy line's text while the worker compiles ahead.
func (m *Model) compileStage() string {
	if m.w == nil {
		return ""
	}
	return m.w.compiling.get()
}
