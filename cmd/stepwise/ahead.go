package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/presets"
)

// compileAhead builds the device programs the run's first step needs before
// it starts, saying so with its progress on the busy line ("compiling GL
// programs for llvmpipe, first run only: 12/41"), and with one log line
// when that took a while (a warm start loads them from the caches in a
// fraction of a second). A failure is left to the run to report.
func compileAhead(ctx context.Context, sess *gen.Session, s presets.Settings, in *gen.Inputs, busy *busyLine, stderr io.Writer) {
	name := sess.Device().Name()
	t0 := time.Now()
	built := 0
	busy.start(gen.CompileNote(name, 0, 0))
	err := sess.Prepare(ctx, s, in, func(done, total int) {
		built = total
		busy.set(gen.CompileNote(name, done, total))
	})
	busy.end()
	if took := time.Since(t0); err == nil && built > 0 && took > time.Second {
		fmt.Fprintf(stderr, "compiled %d GL programs in %.1fs (first run on this device only)\n", built, took.Seconds())
	}
}
