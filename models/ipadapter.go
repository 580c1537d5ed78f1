package models

import (
	"errors"
	"fmt"
	"image"
	"strings"
	"time"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
)

// ipState is an IP-Adapter attached to the pipeline's U-Net, with its
// image encoder, on the pipeline's device.
type ipState struct {
	m     *checkpoint.IPAdapter
	net   *nets.IPAdapter
	enc   *nets.VisionEncoder
	scale float64
}

// SetIPAdapter uploads an IP-Adapter and its image encoder to the
// pipeline's device and attaches it to the U-Net's cross-attention layers
// with the given scale; nil detaches and frees the current one. The
// pipeline owns a from then on. Conditionings then need an image prompt
// (SetImagePrompt) before PredictNoise.
func (p *Pipeline) SetIPAdapter(a *checkpoint.IPAdapter, scale float64) error {
	if a == nil {
		p.releaseIP()
		return nil
	}
	if p.unet == nil {
		return fmt.Errorf("ip-adapter %s: %s is a %s transformer, not a U-Net; IP-Adapters for it are not supported", a.Path, p.Name, p.Model.Family)
	}
	if w := p.unet.Config.CrossAttentionDim; a.Config.UNet.CrossAttentionDim != w {
		return fmt.Errorf("ip-adapter %s: made for cross-attention width %d, %s's is %d", a.Path, a.Config.UNet.CrossAttentionDim, p.Name, w)
	}
	var net *nets.IPAdapter
	var enc *nets.VisionEncoder
	release := func() {
		if net != nil {
			net.Release()
		}
		if enc != nil {
			enc.Release()
		}
		p.doneReading(a.Source())
	}
	err := p.uploadSide(a.Source(), "ip_adapter", func(d gpu.Device, w nets.Weights) (err error) {
		net, err = nets.NewIPAdapter(d, a.Config, w)
		return err
	})
	if err != nil {
		release()
		return fmt.Errorf("ip-adapter %s: %w", a.Path, err)
	}
	err = p.uploadSide(a.Source(), "image_encoder", func(d gpu.Device, w nets.Weights) (err error) {
		enc, err = nets.NewVisionEncoder(d, a.Encoder, w)
		return err
	})
	if err != nil {
		release()
		return fmt.Errorf("image encoder %s: %w", a.EncoderPath, err)
	}
	if err := p.dev.Finish(); err != nil {
		release()
		return fmt.Errorf("ip-adapter %s: uploading weights: %w", a.Path, err)
	}
	p.releaseIP()
	if err := p.unet.SetIPAdapter(net, float32(scale)); err != nil {
		release()
		return fmt.Errorf("ip-adapter %s: %w", a.Path, err)
	}
	p.ip = &ipState{m: a, net: net, enc: enc, scale: scale}
	return nil
}

// IPAdapter is the attached IP-Adapter, or nil.
func (p *Pipeline) IPAdapter() *checkpoint.IPAdapter {
	if p.ip == nil {
		return nil
	}
	return p.ip.m
}

// SetIPAdapterScale changes the attached adapter's scale without
// reloading it (diffusers' set_ip_adapter_scale).
func (p *Pipeline) SetIPAdapterScale(scale float64) {
	if p.ip != nil {
		p.ip.scale = scale
		p.unet.SetIPAdapterScale(float32(scale))
	}
}

func (p *Pipeline) releaseIP() {
	if p.ip == nil {
		return
	}
	if p.unet != nil {
		_ = p.unet.SetIPAdapter(nil, 0)
	}
	p.ip.net.Release()
	p.ip.enc.Release()
	p.doneReading(p.ip.m.Source())
	p.ip.m.Close()
	p.ip = nil
}

// SetImagePrompt encodes the reference image with the attached adapter's
// image encoder (preprocessed as its CLIPImageProcessor says) and gives c
// the image embeddings: the image's for the conditional rows, zeros for
// the unconditional ones, as diffusers' prepare_ip_adapter_image_embeds.
func (p *Pipeline) SetImagePrompt(c *Conditioning, img image.Image) error {
	if p.ip == nil {
		return errors.New("image prompt: no IP-Adapter is loaded")
	}
	t0 := time.Now()
	pix, err := PreprocessCLIPImage(img, p.ip.m.Processor)
	if err != nil {
		return err
	}
	pc := p.ip.m.Processor
	d := p.dev
	d.PushScope()
	out, err := p.ip.enc.EncodeImages(d.Upload(pix, 1, 3, pc.CropH, pc.CropW), false)
	if err != nil {
		d.PopScope()
		return err
	}
	d.PopScope(out.ImageEmbeds)
	dim := p.ip.m.Config.ImageEmbedDim
	cond := out.ImageEmbeds.View(1, 1, dim)
	uncond := d.Upload(make([]float32, dim), 1, 1, dim)
	if err := d.Err(); err != nil {
		d.Release(out.ImageEmbeds)
		return fmt.Errorf("image encoder: %w", err)
	}
	for _, t := range []**gpu.Tensor{&c.CondImage, &c.UncondImage} {
		if *t != nil {
			d.Release(*t)
		}
	}
	for k, t := range c.batch {
		if strings.HasPrefix(k, "image:") {
			d.Release(t)
			delete(c.batch, k)
		}
	}
	c.CondImage, c.UncondImage = cond, uncond
	p.Timings["image_encoder"] = time.Since(t0)
	return nil
}
