package gl

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/stepwise/stepwise/gpu"
)

// Where Winograd and the direct convolution are close, the device times both
// the first time it meets a convolution shape and keeps the faster one: in
// memory, and with the program cache (STEPWISE_GL_CACHE; "tune-<driver>.json"
// beside the program binaries), so later starts decide without timing.
// Outside the band [winogradMinTiles/tuneBand, winogradMinTiles*tuneBand)
// tiles the rule of winogradMinTiles decides alone: far from it one side wins
// by a wide margin on llvmpipe, and timing a 512x512 VAE convolution twice
// each way would cost seconds. STEPWISE_GL_TUNE=off turns timing off.
const tuneBand = 4

// tuner holds the decisions. It is used from the goroutine that calls ops.
type tuner struct {
	off     bool
	path    string          // JSON file of decisions; empty: memory only
	choices map[string]bool // key -> Winograd is faster
	timed   int             // shapes timed by this device (tests)
}

// newTuner reads the decisions recorded for this driver, if any.
func newTuner(cacheDir, driver string) tuner {
	t := tuner{choices: map[string]bool{}, off: os.Getenv("STEPWISE_GL_TUNE") == "off"}
	if cacheDir == "" {
		return t
	}
	h := sha256.Sum256([]byte(driver))
	t.path = filepath.Join(cacheDir, "tune-"+hex.EncodeToString(h[:8])+".json")
	if raw, err := os.ReadFile(t.path); err == nil {
		var saved map[string]bool
		if json.Unmarshal(raw, &saved) == nil { // a damaged file is re-timed and rewritten
			t.choices = saved
		}
	}
	return t
}

// save writes the decisions (atomically; a failure only costs re-timing).
func (t *tuner) save() {
	if t.path == "" {
		return
	}
	raw, err := json.MarshalIndent(t.choices, "", "  ")
	if err == nil {
		_ = writeAtomic(t.path, raw)
	}
}

// convKey names a convolution shape for the tuner.
func convKey(g gpu.ConvGeom, w gpu.DType) string {
	return fmt.Sprintf("conv3x3 n%d c%d o%d %dx%d pad%dx%d %v", g.N, g.C, g.O, g.H, g.W, g.PH, g.PW, w)
}

// tunedWinograd decides between Winograd and the direct convolution for a
// shape both apply to, timing them when the shape is in the tuning band and
// not decided yet. Both ways are timed with the residual res (when not nil)
// so that the programs built for timing are the ones the convolution needs.
func (d *Device) tunedWinograd(x, w, bias, res *gpu.Tensor, g gpu.ConvGeom) bool {
	tiles := g.N * ceilDiv(g.OH, 4) * ceilDiv(g.OW, 4)
	rule := tiles >= winogradMinTiles
	if d.tune.off || tiles < winogradMinTiles/tuneBand || tiles >= winogradMinTiles*tuneBand {
		return rule
	}
	key := convKey(g, w.DType)
	if win, ok := d.tune.choices[key]; ok {
		return win
	}
	if d.dry {
		// The real run will time both ways: build both.
		d.Release(d.convWinograd(x, w, bias, res, g))
		d.Release(d.convDirect(x, w, bias, res, g))
		return rule
	}
	if d.Finish() != nil {
		return rule
	}
	// Each way once to compile its programs, then once timed.
	timeIt := func(f func() *gpu.Tensor) time.Duration {
		d.Release(f())
		d.Finish()
		start := time.Now()
		d.Release(f())
		d.Finish()
		return time.Since(start)
	}
	tw := timeIt(func() *gpu.Tensor { return d.convWinograd(x, w, bias, res, g) })
	td := timeIt(func() *gpu.Tensor { return d.convDirect(x, w, bias, res, g) })
	if d.Err() != nil {
		return rule
	}
	win := tw < td
	d.tune.choices[key] = win
	d.tune.timed++
	d.tune.save()
	return win
}
