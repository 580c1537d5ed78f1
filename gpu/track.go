package gpu

// Tracker is the bookkeeping every Device shares: scopes of live storages and
// memory statistics. Devices embed one and call Alloc/Free around their own
// buffer management.
type Tracker struct {
	scopes   [][]*Storage
	resident int64
	peak     int64
	buffers  int
	err      error
}

func (tr *Tracker) track(st *Storage) {
	if tr == nil || st == nil || len(tr.scopes) == 0 {
		return
	}
	top := len(tr.scopes) - 1
	tr.scopes[top] = append(tr.scopes[top], st)
}

// Alloc records that a storage of n bytes was allocated.
func (tr *Tracker) Alloc(n int64) {
	tr.resident += n
	tr.buffers++
	if tr.resident > tr.peak {
		tr.peak = tr.resident
	}
}

// Freed records that a storage of n bytes was released.
func (tr *Tracker) Freed(n int64) {
	tr.resident -= n
	tr.buffers--
}

// Stats reports the tracked memory.
func (tr *Tracker) Stats() MemStats {
	return MemStats{Resident: tr.resident, Peak: tr.peak, Buffers: tr.buffers}
}

// ResetPeak sets the peak to the current resident size.
func (tr *Tracker) ResetPeak() { tr.peak = tr.resident }

// Err returns the first recorded error.
func (tr *Tracker) Err() error { return tr.err }

// Fail records err if no error is recorded yet.
func (tr *Tracker) Fail(err error) {
	if tr.err == nil && err != nil {
		tr.err = err
	}
}

// PushScope opens a scope.
func (tr *Tracker) PushScope() { tr.scopes = append(tr.scopes, nil) }

// PopScope closes the innermost scope and returns the storages to release:
// all it tracked except those of keep, which move to the enclosing scope.
// The caller (the device) frees the returned storages.
func (tr *Tracker) PopScope(keep ...*Tensor) []*Storage {
	if len(tr.scopes) == 0 {
		return nil
	}
	top := tr.scopes[len(tr.scopes)-1]
	tr.scopes = tr.scopes[:len(tr.scopes)-1]
	kept := map[*Storage]bool{}
	for _, t := range keep {
		if t != nil && t.Store != nil {
			kept[t.Store] = true
		}
	}
	var drop []*Storage
	for _, st := range top {
		if kept[st] {
			tr.track(st)
			continue
		}
		drop = append(drop, st)
	}
	return drop
}

// MarkFreed flags st as released and reports whether it was live; devices
// call it so that double releases are harmless.
func MarkFreed(st *Storage) bool {
	if st == nil || st.freed {
		return false
	}
	st.freed = true
	return true
}

// Freed reports whether st was released.
func (st *Storage) Freed() bool { return st == nil || st.freed }

// Scoped runs f inside a scope on d and keeps only its result.
func Scoped(d Device, f func() *Tensor) *Tensor {
	d.PushScope()
	out := f()
	d.PopScope(out)
	return out
}
