package tui

// Switching the model from inside the studio: ctrl+n (or ctrl+o, or
// dropping a checkpoint onto the terminal) asks for a checkpoint, the worker
// loads it onto the device in use, and a failure leaves the previous model
// loaded.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/stepwise/stepwise/models/bundled"
)

// bundledPath is what the model field holds for the model built into the
// binary (typed as "bundled").
const bundledPath = "bundled:" + bundled.Name

// parseModelField reads "PATH [--config FILE]" as typed or dropped into
// the model field.
func parseModelField(v string) (path, config string, err error) {
	v = strings.TrimSpace(v)
	if strings.EqualFold(v, "bundled") {
		if _, err := os.Stat(v); err != nil { // not a file of that name
			return bundledPath, "", nil
		}
	}
	if i := strings.Index(v, "--config"); i >= 0 {
		path, config = strings.TrimSpace(v[:i]), strings.TrimSpace(strings.TrimPrefix(v[i:], "--config"))
		config = strings.TrimSpace(strings.TrimPrefix(config, "="))
		config = unquotePath(config)
		if config == "" {
			return "", "", errors.New("load model: --config needs a file")
		}
	} else {
		path = v
	}
	path = unquotePath(path)
	if path == "" {
		return "", "", errors.New("load model: no path given")
	}
	if _, err := os.Stat(path); err != nil {
		return "", "", fmt.Errorf("load model: %w", err)
	}
	if config != "" {
		if _, err := os.Stat(config); err != nil {
			return "", "", fmt.Errorf("load model: config: %w", err)
		}
	}
	return path, config, nil
}

// isModelPath reports whether p names a checkpoint: a .safetensors file or
// a diffusers folder (one holding model_index.json or a unet folder).
func isModelPath(p string) bool {
	st, err := os.Stat(p)
	if err != nil {
		return false
	}
	if st.IsDir() {
		for _, f := range []string{"model_index.json", "unet"} {
			if _, err := os.Stat(filepath.Join(p, f)); err == nil {
				return true
			}
		}
		return false
	}
	return st.Mode().IsRegular() && strings.EqualFold(filepath.Ext(p), ".safetensors")
}

// droppedModel returns the path when a paste is a checkpoint dropped onto
// the terminal (one line naming a .safetensors file or a diffusers folder),
// else "".
func droppedModel(paste string) string {
	p := unquotePath(paste)
	if p == "" || strings.ContainsAny(p, "\n\r") || !isModelPath(p) {
		return ""
	}
	return p
}

// loadModel asks the worker to switch to the checkpoint typed or dropped
// (v is "PATH [--config FILE]"); the run in progress is stopped first.
func (m *Model) loadModel(v string) tea.Cmd {
	v, upscaler, err := cutUpscaler(v)
	if err != nil {
		m.setError(err)
		return nil
	}
	path, config, err := parseModelField(v)
	if err != nil {
		m.setError(err)
		return nil
	}
	switch {
	case m.w == nil:
		m.setError(errors.New("load model: the studio has not started"))
		return nil
	case m.loading || m.switching:
		m.setError(errors.New("load model: a model is loading already; wait for it"))
		return nil
	}
	m.stopWork()
	m.switching = true
	m.switchSeq++
	m.w.submit(modelReq{Path: path, Config: config, Seq: m.switchSeq, Upscaler: upscaler})
	m.setStatus("loading model " + path + "…")
	return nil
}

// onModel takes the worker's answer to a model switch.
func (m *Model) onModel(msg modelMsg) {
	if msg.cancelled {
		return // Esc said so already
	}
	if msg.seq == m.switchSeq {
		m.switching = false
	}
	if msg.err != nil {
		keep := ""
		if m.model != nil {
			keep = "; " + m.model.Name + " stays loaded"
		}
		m.setError(fmt.Errorf("load model %s: %w%s", msg.path, msg.err, keep))
		return
	}
	m.model, m.loadErr = msg.model, nil
	m.ed.downscale = m.model.SizeMultiple
	m.modelFields()
	n := m.model.NativeSize
	m.ed.width.SetValue(fmt.Sprint(n))
	m.ed.height.SetValue(fmt.Sprint(n))
	m.setStatus(fmt.Sprintf("loaded %s in %s (size set to its native %dx%d) — earlier runs keep their images", m.model.Name, msg.took.Round(time.Millisecond), n, n))
	if len(msg.warnings) > 0 {
		m.setError(errors.New(oneLine(strings.Join(msg.warnings, "; "))))
	}
}
