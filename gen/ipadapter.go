package gen

import (
	"fmt"
	"path/filepath"

	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/presets"
)

// loadIPInputs reads the IP-Adapter's reference image that s names and
// checks that the adapter file and its image encoder folder are there,
// before any model work.
func loadIPInputs(s presets.Settings, in *Inputs) error {
	if s.IPAdapter == "" && s.IPAdapterImage == "" {
		return nil
	}
	if s.IPAdapterImage == "" {
		return &ImageError{Role: "ip-adapter image", Path: s.IPAdapter, Problem: "an IP-Adapter needs a reference image (--ip-adapter-image)"}
	}
	im, err := readImage("ip-adapter image", s.IPAdapterImage)
	if err != nil {
		return err
	}
	if s.IPAdapter == "" {
		return &ImageError{Role: "ip-adapter image", Path: s.IPAdapterImage, Problem: "a reference image needs an IP-Adapter file (--ip-adapter)"}
	}
	if err := checkpoint.CheckIPAdapterFiles(s.IPAdapter, s.ImageEncoder); err != nil {
		return err
	}
	in.IPImage, in.IPImagePath = toNRGBA(im), s.IPAdapterImage
	return nil
}

// ImageEncoderDir is the image encoder folder s uses: its ImageEncoder,
// or the image_encoder folder beside the adapter file.
func ImageEncoderDir(s presets.Settings) string {
	if s.ImageEncoder != "" {
		return s.ImageEncoder
	}
	return checkpoint.DefaultImageEncoder(s.IPAdapter)
}

// LoadIPAdapter loads the IP-Adapter that s names for p's U-Net and
// attaches it, unless the same adapter and encoder are attached already
// (then only the scale changes); without one in s it detaches any. A file
// for another family, a missing or mismatched encoder is refused before
// anything is uploaded.
func LoadIPAdapter(p *models.Pipeline, s presets.Settings) error {
	if s.IPAdapter == "" {
		return p.SetIPAdapter(nil, 0)
	}
	enc := ImageEncoderDir(s)
	if cur := p.IPAdapter(); cur != nil && samePath(cur.Path, s.IPAdapter) && samePath(cur.EncoderPath, enc) {
		p.SetIPAdapterScale(s.IPAdapterScale)
		return nil
	}
	a, err := checkpoint.LoadIPAdapter(s.IPAdapter, enc, p.Model.UNet)
	if err != nil {
		return err
	}
	if err := p.SetIPAdapter(a, s.IPAdapterScale); err != nil {
		a.Close()
		return deviceFault(p, "IP-Adapter upload", 0, 0, err)
	}
	return nil
}

func samePath(a, b string) bool {
	if a == b {
		return true
	}
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && aa == bb
}

// conditionIPImage encodes the reference image into c when s uses an
// IP-Adapter.
func conditionIPImage(p *models.Pipeline, s presets.Settings, in *Inputs, c *models.Conditioning) error {
	if s.IPAdapter == "" {
		return nil
	}
	if in == nil || in.IPImage == nil {
		return fmt.Errorf("ip-adapter %s: no reference image was read", s.IPAdapter)
	}
	if err := p.SetImagePrompt(c, in.IPImage); err != nil {
		return deviceFault(p, "image encoder", 0, 0, fmt.Errorf("ip-adapter image %s: %w", in.IPImagePath, err))
	}
	return nil
}

// EncodeImagePrompt attaches the IP-Adapter that s names (detaching any
// when it names none) and encodes its reference image into c: for a branch,
// which encodes its own prompt after its parent's conditioning is gone.
func EncodeImagePrompt(p *models.Pipeline, s presets.Settings, c *models.Conditioning) error {
	in := &Inputs{}
	if err := loadIPInputs(s, in); err != nil {
		return err
	}
	if err := LoadIPAdapter(p, s); err != nil {
		return err
	}
	return conditionIPImage(p, s, in, c)
}
