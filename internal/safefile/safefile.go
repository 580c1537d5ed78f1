// Package safefile opens and reads files that a user or a download handed
// to Stepwise, which may be anything: a FIFO that blocks forever, a symlink
// to /dev/zero that never ends, a 50 GB "config", a checkpoint truncated
// while it is mapped. Every reader of a model, config, preset, style file or
// PNG goes through it:
//
//   - Open opens regular files only (non-blocking, so a FIFO cannot hang it)
//     and says what the path is otherwise; Dir checks a folder.
//   - ReadFile and ReadAll cap what they read and name what exceeded the cap.
//   - Guard turns a fault reading a mapped file (SIGBUS after truncation)
//     into an error naming the file.
package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"runtime/debug"
)

// NotRegularError reports a path that is not what the reader wanted: a
// folder, a named pipe, a device or a socket where a file was expected, or a
// file where a folder was.
type NotRegularError struct {
	Path string
	Kind string // "a folder", "a named pipe (FIFO)", ...
	Want string // "a regular file" or "a folder"
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("%s is %s, not %s", e.Path, e.Kind, e.Want)
}

// TooLargeError reports a file (or stream) longer than its reader's cap.
type TooLargeError struct {
	Path  string // the file, or a description such as "stdin"
	Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s is larger than the %s limit for it", e.Path, Bytes(e.Limit))
}

// ErrChanged is wrapped by a ChangedError.
var ErrChanged = errors.New("file changed while reading")

// ChangedError reports a mapped file that faulted while it was read: another
// program truncated or replaced it.
type ChangedError struct{ Path string }

func (e *ChangedError) Error() string {
	return fmt.Sprintf("%s: file changed while reading (truncated or rewritten by another program?); load it again once it is complete", e.Path)
}

func (e *ChangedError) Unwrap() error { return ErrChanged }

// Kind says in words what a file mode is: "a regular file", "a folder",
// "a named pipe (FIFO)", "a character device", "a block device", "a socket",
// "a symbolic link" or "an irregular file".
func Kind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a folder"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "an irregular file"
}

// Open opens path for reading when it is a regular file (symbolic links
// followed) and returns it with its FileInfo. Anything else gives a
// *NotRegularError; the open never blocks, even on a FIFO with no writer.
func Open(path string) (*os.File, fs.FileInfo, error) {
	f, err := openNonBlocking(path)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, &NotRegularError{Path: path, Kind: Kind(st.Mode()), Want: "a regular file"}
	}
	return f, st, nil
}

// Check reports, without opening it, whether path is a regular file (or
// an error naming what it is).
func Check(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return &NotRegularError{Path: path, Kind: Kind(st.Mode()), Want: "a regular file"}
	}
	return nil
}

// Dir reports whether path is a folder (or an error naming what it is).
func Dir(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return &NotRegularError{Path: path, Kind: Kind(st.Mode()), Want: "a folder"}
	}
	return nil
}

// ReadFile reads the regular file at path, refusing one longer than limit
// bytes with a *TooLargeError (whatever its size said when it was opened:
// at most limit+1 bytes are ever read).
func ReadFile(path string, limit int64) ([]byte, error) {
	f, st, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st.Size() > limit {
		return nil, &TooLargeError{Path: path, Limit: limit}
	}
	return ReadAll(f, path, limit)
}

// ReadAll reads r to its end, refusing more than limit bytes with a
// *TooLargeError naming name.
func ReadAll(r io.Reader, name string, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, &TooLargeError{Path: name, Limit: limit}
	}
	return data, nil
}

// Bytes writes a byte count for messages: "16 MiB", "512 KiB", "100 bytes".
func Bytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Guard runs f, which reads memory mapped from the file at path, with page
// faults turned into panics (debug.SetPanicOnFault) for the calling
// goroutine, and returns a *ChangedError when one happened: the file was
// truncated while mapped, and the read hit a page that no longer exists
// (SIGBUS). Other panics are passed on. Goroutines that f starts must guard
// their own reads.
func Guard(path string, f func()) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if p := recover(); p != nil {
			if isFault(p) {
				err = &ChangedError{Path: path}
				return
			}
			panic(p)
		}
	}()
	f()
	return nil
}

// isFault reports a panic made from a memory fault by SetPanicOnFault: a
// runtime.Error carrying the faulting address.
func isFault(p any) bool {
	re, ok := p.(runtime.Error)
	if !ok {
		return false
	}
	_, hasAddr := re.(interface{ Addr() uintptr })
	return hasAddr
}
