package gen

import (
	"context"
	"fmt"
	"strings"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
)

// Prepare builds ahead the device programs that a run with settings st and
// inputs in (nil for none) needs for its first step, that step's preview
// and its final VAE decode, on a device that compiles programs
// (gpu.AheadCompiler; other devices return at once). progress, when not
// nil, is called with the programs built so far and the total, from 0. On a
// fresh machine this is where the time of a first run goes (the GL
// programs for llvmpipe); the studio does it while the user types, and the
// first step then compiles nothing. The dry run it takes computes nothing,
// and any error of it is the real run's to report. Cancelling ctx stops it
// between two programs (and returns ctx's error).
func (s *Session) Prepare(ctx context.Context, st presets.Settings, in *Inputs, progress func(done, total int)) error {
	if s.pipe == nil || s.dev == nil || !dryRunSafe(s.pipe, st) {
		return nil
	}
	p := s.pipe
	dry := func() {
		j, err := StartInputs(p, st, in)
		if err != nil {
			return
		}
		defer j.Close()
		f, err := j.Step(context.Background())
		if err != nil {
			return
		}
		PreviewFor(p, f.Denoised, 0)
		j.ImagesContext(context.Background())
	}
	err := interruptible(ctx, s.dev, func() error { return gpu.CompileAhead(s.dev, dry, progress) })
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("compiling the device's programs ahead: %w", s.recover(err))
	}
	return err
}

// dryRunSafe reports whether a dry run of st leaves the pipeline as it
// was. Adapters are not: a dry run would record a LoRA as merged (or
// unmerged) without changing the device's weights, and keep a ControlNet or
// an IP-Adapter whose weights were never uploaded. Runs with any of them,
// or on a pipeline holding one, compile their programs as they go.
func dryRunSafe(p *models.Pipeline, st presets.Settings) bool {
	for _, text := range []string{st.Prompt, st.NegativePrompt} {
		if tags, err := models.ParseLoRATags(text); err != nil || len(tags) > 0 {
			return false
		}
	}
	return st.ControlNet == "" && st.IPAdapter == "" && len(p.LoRAs()) == 0 && p.ControlNet() == nil && p.IPAdapter() == nil
}

// CompileNote is the line that tells a user what a first run is waiting
// for: "compiling GL programs for llvmpipe, first run only: 12/41", from
// the device's name.
func CompileNote(device string, done, total int) string {
	return fmt.Sprintf("compiling GL programs for %s, first run only: %d/%d", renderer(device), done, total)
}

// renderer is the short name of a device's renderer: "llvmpipe" from "gl:
// llvmpipe (LLVM 15.0.6, 256 bits), 4.5 (Core Profile) Mesa 22.3.6".
func renderer(device string) string {
	name := strings.TrimPrefix(device, "gl: ")
	if i := strings.IndexAny(name, "(,"); i > 0 {
		name = name[:i]
	}
	if name = strings.TrimSpace(name); name == "" {
		return "this device"
	}
	return name
}
