//go:build !unix

package safefile

import "os"

// openNonBlocking checks the path before opening it where O_NONBLOCK does
// not exist (a FIFO swapped in between can still block there).
func openNonBlocking(path string) (*os.File, error) {
	if err := Check(path); err != nil {
		return nil, err
	}
	return os.Open(path)
}
