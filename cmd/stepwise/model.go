package main

import (
	"errors"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models"
)

// defaultModel loads the model used when no --model is given: the bundled
// one, embedded in the binary.
func defaultModel(dev gpu.Device) (*models.Pipeline, error) {
	return nil, errors.New("no bundled model in this build yet; pass --model PATH (a .safetensors file or a diffusers folder)")
}
