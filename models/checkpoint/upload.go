package checkpoint

import (
	"math"
	"unsafe"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// Upload streams one component's weights to a device with one copy of each
// byte: from the mapped file straight into the device's storage (see
// gpu.Device.UploadFill), in Go code that guards the read, counting NaN and
// Inf values in the same pass, and letting the file's pages go as each
// tensor is copied. With Model.InPlace, a device that can
// (gpu.MappedUploader) takes the mapped bytes themselves instead, and
// nothing is copied; the count still reads them under the guard. Make one with StartUpload, build the network with its
// Device and the Upload as the weights, then call Finish:
//
//	u, err := m.StartUpload("unet")
//	net, err := nets.NewUNet(u.Device(dev), m.UNet, u)
//	if ferr := u.Finish(); ferr != nil { ... }
//
// The networks keep the Device, which after Finish forwards every call
// unchanged.
type Upload struct {
	m    *Model
	comp string
	w    nets.Weights
	// mw is w when it is a nets.MapWeights: only those are checked for
	// NaN and Inf, as CheckFinite checks them.
	mw nets.MapWeights
	// live is true until Finish: UploadRaw of the Device copies through
	// UploadFill.
	live bool
	// got maps the first byte of each Raw of mw that Get handed out to the
	// parameter's name and bytes.
	got map[*byte]fetched
	// counts holds the non-finite values of each parameter copied so far.
	counts map[string]int64
	// err is the first read that faulted (a *safefile.ChangedError).
	err error
}

type fetched struct {
	name string
	raw  []byte
}

// StartUpload begins uploading a component's weights ("unet", "vae",
// "text_encoder", ...; see Components).
func (m *Model) StartUpload(component string) (*Upload, error) {
	w, err := m.weightsOf(component)
	if err != nil {
		return nil, err
	}
	u := &Upload{m: m, comp: component, w: w, live: true, got: map[*byte]fetched{}, counts: map[string]int64{}}
	u.mw, _ = w.(nets.MapWeights)
	return u, nil
}

// Get implements nets.Weights. For a checkpoint's weights (a
// nets.MapWeights over mapped files), an unquantized parameter's Raw is the
// mapped bytes themselves, which only the Device's UploadRaw may read (it
// copies them under a guard); a quantized one, which a network may widen
// on the host, is a guarded copy (zeros after a fault, which Finish
// reports). Other Weights (made on demand, in host memory) are passed on.
func (u *Upload) Get(name string) (nets.Param, bool) {
	if u.w == nil {
		return nets.Param{}, false
	}
	p, ok := u.w.Get(name)
	if !ok || len(p.Raw) == 0 || u.mw == nil {
		return p, ok
	}
	if p.DType.Quantized() {
		raw := make([]byte, len(p.Raw))
		if u.err == nil {
			u.err = safefile.Guard(u.m.fileOf(u.comp, name), func() { copy(raw, p.Raw) })
		}
		u.m.dropData(p.Raw)
		p.Raw = raw
		return p, true
	}
	if u.live {
		u.got[unsafe.SliceData(p.Raw)] = fetched{name, p.Raw}
	}
	return p, true
}

// Device returns d with UploadRaw replaced, until Finish, by a guarded copy
// through d.UploadFill (counting the non-finite values of the parameters
// Get handed out). Every other call goes to d.
func (u *Upload) Device(d gpu.Device) gpu.Device { return uploadDevice{Device: d, u: u} }

// Finish ends the upload. It returns a *safefile.ChangedError naming the
// file when a read faulted (the file was truncated while mapped), else a
// *NonFiniteError, exactly as CheckFinite would have returned it, when any
// of the component's tensors holds NaN or Inf (the ones the upload did not
// copy, such as a network's unused or quantized tensors or all of them
// after a failed build, are scanned now), else nil. On an error the caller
// releases the network, if it was built.
func (u *Upload) Finish() error {
	u.live = false
	u.got = nil
	if u.err != nil {
		return u.err
	}
	if u.mw == nil {
		return nil
	}
	var jobs, rest []finiteJob
	var counts []int64
	for name, p := range u.mw {
		j := finiteJob{u.comp, name, p}
		if n, ok := u.counts[name]; ok {
			jobs, counts = append(jobs, j), append(counts, n)
		} else {
			rest = append(rest, j)
		}
	}
	more, err := u.m.countFinite(rest)
	if err != nil {
		return err
	}
	return u.m.nonFinite(append(jobs, rest...), append(counts, more...))
}

// fill is the UploadFill callback for raw, given to UploadRaw as dt.
func (u *Upload) fill(dt gpu.DType, dst, raw []byte) {
	if u.err != nil {
		return // a read faulted already: Finish fails the component
	}
	f, known := u.got[unsafe.SliceData(raw)]
	known = known && len(f.raw) == len(raw)
	file := u.m.Path
	if known {
		file = u.m.fileOf(u.comp, f.name)
	} else if h := u.m.fileHolding(raw); h != "" {
		file = h
	}
	u.m.prefault(raw)
	var n int64
	count := known && u.mw != nil
	u.err = safefile.Guard(file, func() {
		if count {
			n = copyCounting(dt, dst, raw)
		} else {
			copy(dst, raw)
		}
	})
	if u.err != nil {
		return
	}
	if count {
		u.counts[f.name] = n
	}
	// The device holds the bytes now: the file's pages need not stay
	// resident beside them.
	u.m.dropData(raw)
}

// inPlace gives dev the mapped bytes of raw to read in place (Model.InPlace)
// and counts their non-finite values under the guard; nil when raw is not
// in a mapped file or dev cannot (the caller copies).
func (u *Upload) inPlace(dev gpu.Device, dt gpu.DType, raw []byte, shape []int) *gpu.Tensor {
	if u.err != nil {
		return nil
	}
	var file *safetensors.File
	for _, f := range u.m.files {
		if f.Holds(raw) {
			file = f
			break
		}
	}
	if file == nil {
		return nil
	}
	t := gpu.UploadMapped(dev, dt, file.Reach(raw), shape...)
	if t == nil {
		return nil
	}
	u.m.inPlace++
	// The device has not read a byte yet: a file truncated meanwhile
	// faults here, in Go, and Finish fails the component.
	if f, known := u.got[unsafe.SliceData(raw)]; known && len(f.raw) == len(raw) && u.mw != nil {
		u.m.prefault(raw)
		var n int64
		u.err = safefile.Guard(file.Path(), func() { n = CountNonFinite(dt, raw) })
		if u.err == nil {
			u.counts[f.name] = n
		}
	}
	u.m.dropData(raw)
	return t
}

// copyCounting copies src to dst and returns CountNonFinite(dt, src),
// counting each chunk just before copying it, while it is in the cache.
// (dst may be device memory that is slow to read back.)
func copyCounting(dt gpu.DType, dst, src []byte) int64 {
	const chunk = 64 << 10 // a multiple of CountNonFinite's 32-byte stride
	var n int64
	for i := 0; i < len(src); i += chunk {
		j := min(i+chunk, len(src))
		n += CountNonFinite(dt, src[i:j])
		copy(dst[i:j], src[i:j])
	}
	return n
}

// uploadDevice is the Device of an Upload.
type uploadDevice struct {
	gpu.Device
	u *Upload
}

// UploadRaw implements gpu.Device: while the upload is live, raw (mapped
// bytes, usually) is copied by Upload.fill under a guard.
func (d uploadDevice) UploadRaw(dt gpu.DType, raw []byte, shape ...int) *gpu.Tensor {
	if !d.u.live || !rawFits(dt, raw, shape) {
		return d.Device.UploadRaw(dt, raw, shape...) // which reports a misfit before reading
	}
	if d.u.m.InPlace {
		if t := d.u.inPlace(d.Device, dt, raw, shape); t != nil {
			return t
		}
	}
	return d.Device.UploadFill(dt, func(dst []byte) { d.u.fill(dt, dst, raw) }, shape...)
}

// MaxTensorBytes forwards the device's limit (see gpu.MaxTensorBytes).
func (d uploadDevice) MaxTensorBytes() int64 { return gpu.MaxTensorBytes(d.Device) }

// TrimPool forwards to the device (see gpu.TrimPool).
func (d uploadDevice) TrimPool() { gpu.TrimPool(d.Device) }

// rawFits reports whether raw holds exactly the bytes of a tensor of type
// dt and the given shape.
func rawFits(dt gpu.DType, raw []byte, shape []int) bool {
	n := 1
	for _, s := range shape {
		if s <= 0 || n > math.MaxInt32/s {
			return false // the device reports the bad shape
		}
		n *= s
	}
	return dt.Valid() && dt.Bytes(n) == len(raw)
}

// fileHolding names the mapped file b lies in ("" for none).
func (m *Model) fileHolding(b []byte) string {
	for _, f := range m.files {
		if f.Holds(b) {
			return f.Path()
		}
	}
	return ""
}

// prefault maps the pages of the mapped files that b covers in one call.
func (m *Model) prefault(b []byte) {
	for _, f := range m.files {
		f.Prefault(b)
	}
}

// dropData lets the pages of the mapped files that b covers go.
func (m *Model) dropData(b []byte) {
	for _, f := range m.files {
		f.DropData(b)
	}
}
