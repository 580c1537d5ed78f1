package main

import (
	"github.com/stepwise/stepwise/gen"
	"github.com/stepwise/stepwise/models/checkpoint"
)

// precheckIPAdapter loads the IP-Adapter that f names against the model's
// U-Net configuration (read from the checkpoint without uploading it), so
// that an adapter for another family or a mismatched image encoder is
// refused before the model's weights go to the device. The bundled model
// is checked when it is loaded (gen.Start), which costs nothing.
func precheckIPAdapter(f genFlags) error {
	if f.s.IPAdapter == "" || f.model == "" {
		return nil
	}
	m, err := checkpoint.Load(f.model, f.config)
	if err != nil {
		return err
	}
	defer m.Close()
	a, err := checkpoint.LoadIPAdapter(f.s.IPAdapter, gen.ImageEncoderDir(f.s), m.UNet)
	if err != nil {
		return err
	}
	return a.Close()
}
