package main

import (
	"os"
	"path/filepath"

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

// ipFilesBeside finds the IP-Adapter files a --from PNG names by relative
// paths that are missing here beside the PNG instead (flags given on the
// command line win). Files found nowhere stay as named: LoadInputs then
// refuses them naming the file, since the image prompt cannot be dropped
// without changing the image.
func ipFilesBeside(f *genFlags, set map[string]bool) {
	beside := func(name string) string {
		if name == "" || filepath.IsAbs(name) {
			return name
		}
		if _, err := os.Stat(name); err == nil {
			return name
		}
		p := filepath.Join(filepath.Dir(f.from), name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		return name
	}
	if !set["ip-adapter"] {
		f.s.IPAdapter = beside(f.s.IPAdapter)
	}
	if !set["ip-adapter-image"] && !set["ip-image"] {
		f.s.IPAdapterImage = beside(f.s.IPAdapterImage)
	}
	if !set["image-encoder"] && !set["clip-vision"] {
		f.s.ImageEncoder = beside(f.s.ImageEncoder)
	}
}
