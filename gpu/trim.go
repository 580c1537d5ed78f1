package gpu

// TrimPool gives back the memory a device keeps for reuse (released
// buffers held in a pool so that the next sampler step allocates nothing),
// on devices that keep such a pool. Call it between stages whose tensors
// differ in size (the U-Net's steps, then the VAE's decode), so the peak is
// the larger stage's, not both together. Tensors stay valid.
func TrimPool(d Device) {
	if t, ok := d.(interface{ TrimPool() }); ok {
		t.TrimPool()
	}
}

// TrimPool forwards to the wrapped device (see the function TrimPool).
func (c *Counter) TrimPool() { TrimPool(c.Device) }
