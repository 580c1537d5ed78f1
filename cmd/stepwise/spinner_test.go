package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/models/bundled"
	"github.com/stepwise/stepwise/presets"
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

// --preview draws VAE-decoded previews within the budget: some steps' x0
// decoded at full size, the first three never.
func TestPreviewUsesTheVAEBudget(t *testing.T) {
	p, err := bundled.Load(ref.New())
	require.NoError(t, err)
	sess, err := gen.SessionOn(p)
	require.NoError(t, err)
	defer sess.Close()
	st := presets.Default()
	st.Prompt, st.Steps, st.Seed, st.Width, st.Height = "red heart", 12, 1, 32, 32
	r, err := sess.Start(1, st)
	require.NoError(t, err)
	var b gen.PreviewBudget
	got := 0
	for i := 0; !r.Job.Done(); i++ {
		s, err := sess.Step(context.Background(), r)
		require.NoError(t, err)
		if img := vaePreview(sess, r, s, &b); img != nil {
			got++
			assert.GreaterOrEqual(t, i, 3)
			assert.Equal(t, 32, img.Bounds().Dx())
		}
	}
	sampled, spent, last := b.Totals()
	t.Logf("%d VAE previews of 12; %v of %v", got, spent, sampled)
	assert.Greater(t, got, 0)
	assert.LessOrEqual(t, spent, time.Duration(float64(sampled)*gen.DefaultPreviewShare)+last)
}

// set changes what the line says (the compile-ahead's progress) and keeps
// its clock running.
func TestBusyLineSet(t *testing.T) {
	var buf lockedBuffer
	b := &busyLine{w: &buf, tty: true}
	b.start(gen.CompileNote("gl: llvmpipe (LLVM 15.0.6, 256 bits)", 0, 41))
	time.Sleep(250 * time.Millisecond)
	b.set(gen.CompileNote("gl: llvmpipe (LLVM 15.0.6, 256 bits)", 12, 41))
	time.Sleep(250 * time.Millisecond)
	b.end()
	out := buf.String()
	assert.Contains(t, out, "compiling GL programs for llvmpipe, first run only: 0/41 0.")
	m := regexp.MustCompile(`first run only: 12/41 ([0-9.]+)s`).FindAllStringSubmatch(out, -1)
	require.NotEmpty(t, m, "the new text is drawn")
	last, err := strconv.ParseFloat(m[len(m)-1][1], 64)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, last, 0.3, "the clock was not restarted by set")
}
