package gpu

// MappedUploader is a Device that can read weights in place from a
// read-only file mapping instead of copying them (see UploadMapped).
type MappedUploader interface {
	// UploadMapped returns a tensor of type dt and the given shape over
	// raw itself, or nil when the device cannot (the caller then copies
	// with UploadRaw). raw holds the tensor's bytes; cap(raw) reaches as
	// far into the mapping as the device may read past them. The mapping
	// must stay readable, unchanged, until the tensor is released and the
	// device has finished. The device lets the pages of raw go from the
	// process after each op that reads them (they are read from the file,
	// or the page cache, again when next needed), so that the weights of
	// a model do not all stay resident at once.
	UploadMapped(dt DType, raw []byte, shape ...int) *Tensor
}

// UploadMapped is d's UploadMapped where d has one, else nil.
func UploadMapped(d Device, dt DType, raw []byte, shape ...int) *Tensor {
	if m, ok := d.(MappedUploader); ok {
		return m.UploadMapped(dt, raw, shape...)
	}
	return nil
}

// UploadMapped forwards to the wrapped device (nil where it has none).
func (c *Counter) UploadMapped(dt DType, raw []byte, shape ...int) *Tensor {
	return UploadMapped(c.Device, dt, raw, shape...)
}
