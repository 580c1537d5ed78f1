package gpu

// AheadCompiler is a device that builds the programs (compute shaders) a
// piece of work will need before the work runs, so a first step does not
// stall on the driver's compiler, and can say how far it has got.
// CompileAhead runs work in a dry mode (ops record the programs they would
// dispatch and compute nothing: their results must not be used after it
// returns), then builds each recorded program not built yet, calling
// progress (when not nil) with the number built so far and the total after
// each. It returns the device's error.
type AheadCompiler interface {
	CompileAhead(work func(), progress func(done, total int)) error
}

// CompileAhead calls d's CompileAhead when d has one (wrappers such as
// Counter forward theirs) and does nothing otherwise.
func CompileAhead(d Device, work func(), progress func(done, total int)) error {
	if a, ok := d.(AheadCompiler); ok {
		return a.CompileAhead(work, progress)
	}
	return nil
}

// CompileAhead forwards the wrapped device's (see AheadCompiler).
func (c *Counter) CompileAhead(work func(), progress func(done, total int)) error {
	return CompileAhead(c.Device, work, progress)
}
