package gen

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/presets"
)

// Cost is what a generation is estimated to need, before it starts: a
// request of 4096x4096 on a model trained at 512 needs 64 times the
// latent positions and, in self-attention, 4096 times the work.
type Cost struct {
	// PeakBytes is the device memory at the peak: the weights plus the
	// largest working set (the U-Net's skip connections and its widest
	// layer, or the VAE decoder at full resolution). It is a rough
	// estimate, within a factor of about two.
	PeakBytes int64
	// StepFLOPs is the arithmetic of one sampler step (every U-Net pass
	// of CFG), DecodeFLOPs that of the VAE decode.
	StepFLOPs, DecodeFLOPs float64
}

// Total is the arithmetic of steps steps and the decode.
func (c Cost) Total(steps int) float64 { return c.StepFLOPs*float64(steps) + c.DecodeFLOPs }

// Estimate returns the cost of s on this model.
func (f *Facts) Estimate(s presets.Settings) Cost {
	ds := max(f.Downscale, 1)
	batch := float64(max(s.Batch, 1))
	rows := batch
	if s.CFGScale != 1 {
		rows *= 2
	}
	n0 := float64(s.Width/ds) * float64(s.Height/ds)
	L := float64(max(f.UNetLayers, 1))
	var skips, work, step float64
	for i, c := range f.UNetWidths {
		n := n0 / float64(int(1)<<(2*i))
		cf := float64(c)
		skips += (L + 1) * cf * n
		// Resnets: two 3x3 convolutions each, L down and L+1 up.
		step += (2*L + 1) * 2 * 2 * 9 * cf * cf * n
		if i < len(f.UNetAttention) && f.UNetAttention[i] {
			// Transformers: projections and GEGLU feed-forward (~36c^2
			// per token) and self-attention over all n positions.
			step += (2*L + 1) * (36*cf*cf*n + 4*n*n*cf)
			if i == 0 {
				work = 16 * cf * n // the GEGLU feed-forward's 8c inner width
			}
		}
		if i == 0 && work == 0 {
			work = 6 * cf * n
		}
	}
	unet := 4 * rows * (skips + work)
	hw := float64(s.Width) * float64(s.Height)
	var vae, decode float64
	if w := f.VAEWidths; len(w) > 0 {
		c0, c1 := float64(w[0]), float64(w[0])
		if len(w) > 1 {
			c1 = float64(w[1])
		}
		vae = 4 * batch * (2*c1 + 4*c0) * hw
		for j, c := range w {
			decode += batch * 6 * 2 * 9 * float64(c) * float64(c) * hw / float64(int(1)<<(2*j))
		}
	}
	peak := f.WeightBytes + int64(max(unet, vae)) + int64(4*rows*n0*float64(max(f.LatentChannels, 1))*8)
	return Cost{PeakBytes: peak, StepFLOPs: rows * step, DecodeFLOPs: decode}
}

// CheckMemory refuses settings whose estimated peak exceeds the device's
// memory (when it is known), saying both numbers.
func (f *Facts) CheckMemory(s presets.Settings) error {
	if f.DeviceMemory <= 0 {
		return nil
	}
	c := f.Estimate(s)
	if c.PeakBytes <= f.DeviceMemory {
		return nil
	}
	return &TooLargeError{Width: s.Width, Height: s.Height, Batch: max(s.Batch, 1), Need: c.PeakBytes, Have: f.DeviceMemory}
}

// TooLargeError is a request estimated not to fit the device's memory.
type TooLargeError struct {
	Width, Height, Batch int
	Need, Have           int64
}

func (e *TooLargeError) Error() string {
	b := ""
	if e.Batch > 1 {
		b = fmt.Sprintf(" x%d", e.Batch)
	}
	return fmt.Sprintf("%dx%d%s needs about %s of memory, more than the %s the device has; choose a smaller size or batch",
		e.Width, e.Height, b, GiB(e.Need), GiB(e.Have))
}

// GiB writes a byte count in GiB (MiB below 1 GiB).
func GiB(n int64) string {
	if n < 1<<30 {
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

// DeviceMemory is the memory d can use, in bytes: the device's own where it
// says (a MemoryLimit method), else the host's (the ref device, and GL on
// llvmpipe, compute in host memory): MemTotal, or the cgroup's limit when
// lower. 0 when unknown.
func DeviceMemory(d gpu.Device) int64 {
	if m, ok := d.(interface{ MemoryLimit() int64 }); ok {
		if n := m.MemoryLimit(); n > 0 {
			return n
		}
	}
	return hostMemory()
}

func hostMemory() int64 {
	var total int64
	if data, err := safefile.ReadFile("/proc/meminfo", 1<<20); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
						total = kb << 10
					}
				}
			}
		}
	}
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		if data, err := safefile.ReadFile(p, 1<<10); err == nil {
			if n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64); err == nil && n > 0 && (total == 0 || n < total) {
				total = n
			}
		}
	}
	if total == 0 {
		if _, err := os.Stat("/proc/meminfo"); err != nil {
			return 0
		}
	}
	return total
}

// Throughput measures d's arithmetic rate (FLOP/s) on a small matrix
// product, for turning a Cost into a time.
func Throughput(d gpu.Device) float64 {
	const m, k, n = 256, 512, 512
	a := d.Upload(make([]float32, m*k), m, k)
	b := d.Upload(make([]float32, k*n), k, n)
	defer d.Release(a)
	defer d.Release(b)
	var took time.Duration
	for range 2 { // the first compiles and warms up
		t0 := time.Now()
		c := d.MatMul(a, b, gpu.MatMulOpts{})
		_, err := d.Download(c)
		d.Release(c)
		if err != nil {
			return 0
		}
		took = time.Since(t0)
	}
	return 2 * m * k * n / max(took.Seconds(), 1e-6)
}
