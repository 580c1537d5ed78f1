//go:build !linux

package gl

import "errors"

const hostMemory = false

var hostPage = 4096

func mapHost(int64, int64) ([]byte, error) {
	return nil, errors.New("gl: no host memory mapping in this build")
}

func unmapHost([]byte) {}

func dropHost([]byte) {}
