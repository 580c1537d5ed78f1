package gen

import "time"

// PreviewBudget decides when a step's preview may be decoded by the VAE
// (true colours, full size) instead of the latent projection: while the
// decodes stay within Share of the sampling time. The first step (which
// compiles the shaders) is not counted, and two more measure a step
// before any decode. The studio and `generate --preview` share it.
type PreviewBudget struct {
	Share   float64 // 0 means DefaultPreviewShare
	steps   int
	sampled time.Duration
	spent   time.Duration
	last    time.Duration
}

// DefaultPreviewShare is the share of the sampling time VAE previews may
// take.
const DefaultPreviewShare = 0.2

// Stepped records a step that took d.
func (b *PreviewBudget) Stepped(d time.Duration) {
	if b.steps++; b.steps > 1 {
		b.sampled += d
	}
}

// Allows reports whether one more decode (costing about the last one)
// stays within the budget.
func (b *PreviewBudget) Allows() bool {
	share := b.Share
	if share == 0 {
		share = DefaultPreviewShare
	}
	return b.steps >= 4 && b.spent+b.last <= time.Duration(float64(b.sampled)*share)
}

// Spent records a decode that took d (a failed one: pass a large d to stop
// VAE previews).
func (b *PreviewBudget) Spent(d time.Duration) { b.last, b.spent = d, b.spent+d }

// Totals are the sampling time counted and the decode time spent.
func (b *PreviewBudget) Totals() (sampled, spent, last time.Duration) {
	return b.sampled, b.spent, b.last
}
