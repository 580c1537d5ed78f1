package models

// ControlNet on a loaded pipeline: the network is uploaded beside the
// U-Net (SetControlNet, or UseControlNet by path), and every U-Net call
// given a Control first runs the ControlNet on the same latents, timestep
// and text context with the control image, and adds its residuals to the
// U-Net's skip connections and mid block (diffusers'
// StableDiffusionControlNetPipeline with guess_mode off).

import (
	"fmt"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
)

// controlState is a pipeline's loaded ControlNet.
type controlState struct {
	net *nets.ControlNet
	m   *checkpoint.ControlNet
	id  string // the file's identity when loaded by UseControlNet
}

// SetControlNet uploads c to the pipeline's device and makes it the
// ControlNet that PredictNoiseControl runs; nil removes the current one.
// A ControlNet made for another family (other context width, added
// conditioning or block widths) is refused before the device is touched.
// The pipeline owns c from then on (also when it is refused: c is closed).
func (p *Pipeline) SetControlNet(c *checkpoint.ControlNet) error {
	if c == nil {
		p.releaseControlNet()
		return nil
	}
	if p.unet == nil {
		c.Close()
		return fmt.Errorf("controlnet %s: %s is a %s transformer, not a U-Net; ControlNets for it are not supported", c.Path, p.Name, p.Model.Family)
	}
	if err := c.Fits(&p.unet.Config, p.Model.Family); err != nil {
		c.Close()
		return err
	}
	if ds := c.Config.Downscale(); ds != p.Downscale() {
		c.Close()
		return fmt.Errorf("controlnet %s: its conditioning embedding shrinks the control image %dx, the model's latents are 1/%d of the image", c.Path, ds, p.Downscale())
	}
	var net *nets.ControlNet
	err := p.uploadSide(c.Source(), "controlnet", func(d gpu.Device, w nets.Weights) (err error) {
		net, err = nets.NewControlNet(d, c.Config, w)
		return err
	})
	if err == nil {
		err = p.dev.Finish()
	}
	if err != nil {
		if net != nil {
			net.Release()
		}
		p.doneReading(c.Source())
		c.Close()
		return fmt.Errorf("controlnet %s: %w", c.Path, err)
	}
	p.releaseControlNet()
	p.control = &controlState{net: net, m: c}
	p.control.id, _ = checkpoint.Identity(c.Path)
	return nil
}

// UseControlNet makes the ControlNet at path the pipeline's, loading it
// unless the same file (path, size, modification time) is loaded already;
// "" removes it. Bad files are refused (naming the file) with the
// pipeline unchanged.
func (p *Pipeline) UseControlNet(path string) error {
	if path == "" {
		p.releaseControlNet()
		return nil
	}
	id, err := checkpoint.Identity(path)
	if err != nil {
		return fmt.Errorf("controlnet: %w", err)
	}
	if p.control != nil && p.control.id == id {
		return nil
	}
	c, err := checkpoint.LoadControlNet(path)
	if err != nil {
		return err
	}
	return p.SetControlNet(c)
}

// ControlNet is the loaded ControlNet, or nil.
func (p *Pipeline) ControlNet() *checkpoint.ControlNet {
	if p.control == nil {
		return nil
	}
	return p.control.m
}

func (p *Pipeline) releaseControlNet() {
	if p.control != nil {
		p.control.net.Release()
		p.doneReading(p.control.m.Source())
		p.control.m.Close()
		p.control = nil
	}
}

// Control is a control image prepared for a run: [3, H, W] in [0, 1] in
// the ControlNet's channel order (the image size), uploaded once per batch
// size. Release it when the run ends.
type Control struct {
	pix   []float32
	h, w  int
	dev   gpu.Device
	batch map[int]*gpu.Tensor
}

// NewControl prepares a control image given as RGB planes [3, h, w] in
// [0, 1] (diffusers' control_image_processor: RGB / 255) for the loaded
// ControlNet: a "bgr" ControlNet gets the planes swapped.
func (p *Pipeline) NewControl(rgb []float32, h, w int) (*Control, error) {
	if len(rgb) != 3*h*w || h < 1 || w < 1 {
		return nil, fmt.Errorf("control image: %d values for 3x%dx%d", len(rgb), h, w)
	}
	pix := append([]float32(nil), rgb...)
	if c := p.ControlNet(); c != nil && c.Config.ChannelOrder == "bgr" {
		plane := h * w
		copy(pix[:plane], rgb[2*plane:])
		copy(pix[2*plane:], rgb[:plane])
	}
	return &Control{pix: pix, h: h, w: w, dev: p.dev}, nil
}

// tensor is the control image repeated for a batch of b rows.
func (c *Control) tensor(b int) *gpu.Tensor {
	if t, ok := c.batch[b]; ok {
		return t
	}
	all := make([]float32, 0, b*len(c.pix))
	for range b {
		all = append(all, c.pix...)
	}
	t := c.dev.Upload(all, b, 3, c.h, c.w)
	if c.batch == nil {
		c.batch = map[int]*gpu.Tensor{}
	}
	c.batch[b] = t
	return t
}

// Release frees the control image's device copies.
func (c *Control) Release() {
	if c == nil {
		return
	}
	for _, t := range c.batch {
		c.dev.Release(t)
	}
	c.batch = nil
}

// PredictNoiseControl is PredictNoise steered by the loaded ControlNet
// with the control image ctl, its residuals multiplied by scale (the
// control strength, 0 outside the run's control start/end): the
// ControlNet sees the U-Net's input latents (the first in_channels of an
// inpainting U-Net's), timestep, text context and added conditioning.
// A nil ctl, a zero scale or no ControlNet is PredictNoise.
func (p *Pipeline) PredictNoiseControl(x []float32, shape [4]int, t float64, c *Conditioning, rows []Row, ctl *Control, scale float64) ([]float32, error) {
	if ctl == nil || scale == 0 || p.control == nil {
		return p.PredictNoise(x, shape, t, c, rows)
	}
	ds := p.Downscale()
	if ctl.h != shape[2]*ds || ctl.w != shape[3]*ds {
		return nil, fmt.Errorf("predict: the control image is %dx%d, the latents %dx%d (x%d)", ctl.w, ctl.h, shape[3], shape[2], ds)
	}
	return p.predict(x, shape, t, c, rows, ctl, scale)
}
