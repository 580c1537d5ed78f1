package gpu

import (
	"errors"
	"sync/atomic"
)

// ErrInterrupted is returned by Download on a device whose work was
// interrupted (see Interrupter): the results are meaningless. It is not
// a device error: after Resume the device works as before.
var ErrInterrupted = errors.New("gpu: interrupted")

// Interrupter is implemented by devices whose long ops can be stopped from
// another goroutine (a Ctrl+C, a SIGTERM, a cancelled run). Interrupt makes
// the ops in progress return at their next check (between rows or tiles of
// the work, well under a second apart) and the queued ones do nothing;
// Download then returns ErrInterrupted until Resume.
type Interrupter interface {
	Interrupt()
	Resume()
}

// Interrupt interrupts d's work when d supports it.
func Interrupt(d Device) {
	if i, ok := d.(Interrupter); ok {
		i.Interrupt()
	}
}

// Resume undoes Interrupt.
func Resume(d Device) {
	if i, ok := d.(Interrupter); ok {
		i.Resume()
	}
}

// Stop is the interrupt flag devices embed: safe to set from any goroutine.
type Stop struct{ flag atomic.Bool }

// Interrupt sets the flag.
func (s *Stop) Interrupt() { s.flag.Store(true) }

// Resume clears it.
func (s *Stop) Resume() { s.flag.Store(false) }

// Interrupted reports whether the flag is set.
func (s *Stop) Interrupted() bool { return s.flag.Load() }
