package models

import (
	"os"
	"strings"
)

// MmapEnv names the environment variable that sets how a pipeline keeps a
// checkpoint's weights (checkpoint.Model.InPlace): unset or "on", they are
// read in place from the memory-mapped file on devices that can (GL on
// llvmpipe: gpu.MappedUploader), resident one op at a time; "off" (the
// commands' --no-mmap, llama.cpp's name) copies them into the device's
// memory, where they stay resident.
const MmapEnv = "STEPWISE_MMAP"

// inPlace reports whether MmapEnv lets weights be read in place.
func inPlace() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv(MmapEnv))) {
	case "off", "0", "false", "no":
		return false
	}
	return true
}
