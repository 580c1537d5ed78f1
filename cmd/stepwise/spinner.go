package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// busyLine shows, on a terminal, a spinner with the name of a long stage
// and its elapsed time (loading the model, encoding the prompt, the first
// step that compiles the shaders, the VAE decode), redrawn in place; off a
// terminal it draws nothing, the log lines say what happened.
type busyLine struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	stop  chan struct{}
	done  chan struct{}
	stage string // what the line says; set shows another without restarting the clock
}

var spinFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// start shows stage until the next start or end.
func (b *busyLine) start(stage string) {
	b.end()
	if !b.tty {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stop, b.done, b.stage = make(chan struct{}), make(chan struct{}), stage
	go func(stop, done chan struct{}) {
		defer close(done)
		t0 := time.Now()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			b.mu.Lock()
			fmt.Fprintf(b.w, "\r\x1b[2K%s %s %.1fs", spinFrames[i%len(spinFrames)], b.stage, time.Since(t0).Seconds())
			b.mu.Unlock()
			select {
			case <-stop:
				io.WriteString(b.w, "\r\x1b[2K")
				return
			case <-tick.C:
			}
		}
	}(b.stop, b.done)
}

// set changes what the line says (a stage's progress) and keeps its clock.
func (b *busyLine) set(stage string) {
	b.mu.Lock()
	b.stage = stage
	b.mu.Unlock()
}

// end clears the line and waits for the drawing to stop.
func (b *busyLine) end() {
	b.mu.Lock()
	stop, done := b.stop, b.done
	b.stop, b.done = nil, nil
	b.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// quiet wraps a warning printer so that the spinner's line is cleared
// before a warning is printed and redrawn after it.
func (b *busyLine) quiet(warn func(string)) func(string) {
	return func(s string) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.tty && b.stop != nil {
			io.WriteString(b.w, "\r\x1b[2K")
		}
		warn(s)
	}
}
