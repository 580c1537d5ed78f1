package golden

import (
	"os"
	"path/filepath"
	"testing"
)

// InpaintFolder returns a diffusers folder of the 9-channel inpainting
// model of golden-wave3: its published U-Net (sd15-mini-inpaint/unet) with
// sd15-mini's text encoder, tokenizer, VAE and scheduler, as its README
// says to use it. The folder is made of symbolic links in a temporary
// folder removed when the test ends.
func InpaintFolder(t testing.TB) string {
	t.Helper()
	w3 := Wave(t, "golden-wave3")
	sd15 := filepath.Join(Dir(t), "sd15-mini")
	out := filepath.Join(t.TempDir(), "sd15-mini-inpaint")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{"unet": filepath.Join(w3, "sd15-mini-inpaint", "unet")}
	for _, name := range []string{"model_index.json", "scheduler", "text_encoder", "tokenizer", "vae"} {
		links[name] = filepath.Join(sd15, name)
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(out, name)); err != nil {
			t.Fatal(err)
		}
	}
	return out
}
