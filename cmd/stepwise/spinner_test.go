package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// On a terminal a long stage shows a spinner, its name and elapsed time,
// redrawn in place on one line and cleared at the end; off a terminal
// nothing is drawn.
func TestBusyLine(t *testing.T) {
	var buf lockedBuffer
	b := &busyLine{w: &buf, tty: true}
	b.start("loading the model")
	time.Sleep(250 * time.Millisecond)
	b.start("encoding the prompt")
	time.Sleep(150 * time.Millisecond)
	b.end()
	out := buf.String()
	assert.Contains(t, out, "loading the model 0.2s")
	assert.Contains(t, out, "encoding the prompt 0.1s")
	assert.NotContains(t, out, "\n", "redrawn in place")
	assert.True(t, strings.HasSuffix(out, "\r\x1b[2K"), "the line is cleared at the end")

	var plain lockedBuffer
	p := &busyLine{w: &plain}
	p.start("loading the model")
	p.end()
	assert.Empty(t, plain.String())
}
