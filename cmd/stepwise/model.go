package main

import (
	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/bundled"
)

// defaultModel loads the model used when no --model is given: the bundled
// one, embedded in the binary.
func defaultModel(dev gpu.Device) (*models.Pipeline, error) {
	return bundled.Load(dev)
}
