// Package bundled holds Stepwise's default model, embedded in the binary so
// that the studio draws something real on a fresh machine with no download:
// a small text-to-emoji latent diffusion model with Stable Diffusion 1.x's
// architecture, trained from scratch by tools/train (see its README for the
// data, the recipe and the licences).
package bundled

import (
	_ "embed"
	"fmt"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/checkpoint"
)

// Name is the bundled model's name, as written in PNG parameters.
const Name = "stepwise-emoji"

//go:embed stepwise-emoji.fp16.safetensors
var weights []byte

//go:embed stepwise-emoji.json
var config []byte

// Checkpoint parses the embedded weights and config (no copy: the weights
// are read in place from the binary).
func Checkpoint() (*checkpoint.Model, error) {
	m, err := checkpoint.LoadBytes(Name+".fp16.safetensors", weights, config)
	if err != nil {
		return nil, fmt.Errorf("bundled model: %w", err)
	}
	m.Path = "bundled:" + Name
	return m, nil
}

// Load uploads the bundled model to dev.
func Load(dev gpu.Device) (*models.Pipeline, error) {
	m, err := Checkpoint()
	if err != nil {
		return nil, err
	}
	return models.New(dev, m, Name)
}

// Size is the size of the embedded weights in bytes.
func Size() int { return len(weights) }
