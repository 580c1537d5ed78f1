package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// Tiny is a loaded TAESD (diffusers' AutoencoderTiny): its config and
// weights (diffusers names), mapped from its files until Close.
type Tiny struct {
	Path   string
	Config nets.TinyConfig
	// Layout: "diffusers folder", "diffusers single file" or "original"
	// (madebyollin's taesd_decoder / taesd_encoder files).
	Layout  string
	Weights nets.MapWeights
	// HasEncoder: an original decoder file without its encoder beside it
	// decodes only.
	HasEncoder bool

	files []*safetensors.File
	src   *Model // Source's
}

// Source is t's weights as a Model with one component, "taesd", for
// uploading them (StartUpload) and checking the files (CheckFiles). t owns
// the files: close t, not the Model.
func (t *Tiny) Source() *Model {
	if t.src == nil {
		t.src = sideModel(t.Path, t.files, map[string]nets.Weights{"taesd": t.Weights})
	}
	return t.src
}

// Close releases the mapped files.
func (t *Tiny) Close() error {
	var errs []error
	for _, f := range t.files {
		errs = append(errs, f.Close())
	}
	t.files = nil
	return errors.Join(errs...)
}

// LoadTiny opens a TAESD: a diffusers folder (config.json +
// diffusion_pytorch_model[.fp16].safetensors), one .safetensors with
// diffusers names (encoder.layers.* / decoder.layers.*), or madebyollin's
// taesd_decoder.safetensors (its taesd_encoder.safetensors beside it is
// used when present; either may be named). Channel counts of files
// without a config come from the shapes.
func LoadTiny(path string) (*Tiny, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("taesd: %w", err)
	}
	t := &Tiny{Path: path}
	var files []string
	if st.IsDir() {
		data, err := readConfig(filepath.Join(path, "config.json"))
		if err != nil {
			return nil, fmt.Errorf("taesd %s: %w", path, err)
		}
		if err := decodeJSON(filepath.Join(path, "config.json"), data, &t.Config); err != nil {
			return nil, err
		}
		wf, err := weightFile(path, "diffusion_pytorch_model")
		if err != nil {
			return nil, err
		}
		files, t.Layout, t.HasEncoder = []string{wf}, "diffusers folder", true
	} else {
		if err := refusePickle(path); err != nil {
			return nil, err
		}
		files = []string{path}
	}
	for _, p := range files {
		f, err := safetensors.Open(p)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("taesd: %w", err)
		}
		t.files = append(t.files, f)
	}
	if t.Layout == "" {
		if err := t.sniff(); err != nil {
			t.Close()
			return nil, err
		}
	}
	if err := t.place(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// sniff tells a diffusers-named single file from an original one and, for
// the latter, opens its partner and reads the channel counts.
func (t *Tiny) sniff() error {
	infos := t.files[0].Tensors()
	shapes := map[string][]int{}
	for _, ti := range infos {
		shapes[ti.Name] = ti.Shape
	}
	if _, ok := shapes["decoder.layers.0.weight"]; ok {
		_, hasEnc := shapes["encoder.layers.0.weight"]
		t.Layout, t.HasEncoder = "diffusers single file", hasEnc
		t.Config.LatentChannels = shapes["decoder.layers.0.weight"][1]
		t.Config.DecoderBlockOutChannels = repeat(shapes["decoder.layers.0.weight"][0], 4)
		if s, ok := shapes["encoder.layers.0.weight"]; ok {
			t.Config.EncoderBlockOutChannels = repeat(s[0], 4)
		}
		return nil
	}
	t.Layout = "original"
	_, isDecoder := shapes["1.weight"] // the decoder's first conv follows its Clamp
	_, isEncoder := shapes["0.weight"]
	if !isDecoder && !isEncoder {
		return fmt.Errorf("taesd %s: neither diffusers names (decoder.layers.*) nor an original TAESD layout (0.weight / 1.weight)", t.Path)
	}
	dec, enc := t.Path, ""
	if isEncoder {
		dec, enc = "", t.Path
	}
	partner := func(from, to string) string {
		dir, base := filepath.Split(t.Path)
		if strings.Contains(base, from) {
			return filepath.Join(dir, strings.Replace(base, from, to, 1))
		}
		return ""
	}
	if dec == "" {
		dec = partner("encoder", "decoder")
	} else {
		enc = partner("decoder", "encoder")
	}
	if dec == "" || dec == t.Path && !isDecoder {
		return fmt.Errorf("taesd %s: an original TAESD encoder without its decoder (taesd_decoder.safetensors beside it)", t.Path)
	}
	// files[0] is the one named; open the partner and order them
	// decoder first.
	named := t.files[0]
	t.files = nil
	var decF, encF *safetensors.File
	if isDecoder {
		decF = named
	} else {
		encF = named
	}
	if isDecoder && enc != "" {
		if f, err := safetensors.Open(enc); err == nil {
			encF = f
		} else if !errors.Is(err, os.ErrNotExist) {
			named.Close()
			return fmt.Errorf("taesd: %w", err)
		}
	}
	if !isDecoder {
		f, err := safetensors.Open(dec)
		if err != nil {
			named.Close()
			return fmt.Errorf("taesd %s: its decoder: %w", t.Path, err)
		}
		decF = f
	}
	t.files = append(t.files, decF)
	if encF != nil {
		t.files = append(t.files, encF)
		t.HasEncoder = true
	}
	d, _ := decF.Lookup("1.weight")
	if len(d.Shape) != 4 {
		return fmt.Errorf("taesd %s: 1.weight has shape %v, want a 3x3 conv", decF.Path(), d.Shape)
	}
	t.Config.LatentChannels, t.Config.DecoderBlockOutChannels = d.Shape[1], repeat(d.Shape[0], 4)
	if encF != nil {
		if e, ok := encF.Lookup("0.weight"); ok && len(e.Shape) == 4 {
			t.Config.EncoderBlockOutChannels = repeat(e.Shape[0], 4)
		}
	}
	return nil
}

func repeat(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// place maps the files' tensors onto the network's declarations.
func (t *Tiny) place() error {
	t.Config.DecoderOnly = !t.HasEncoder
	t.Config.Defaults()
	if len(t.Config.EncoderBlockOutChannels) != len(t.Config.DecoderBlockOutChannels) {
		t.Config.EncoderBlockOutChannels = repeat(t.Config.DecoderBlockOutChannels[0], len(t.Config.DecoderBlockOutChannels))
	}
	decls, err := nets.TinyDecls(t.Config)
	if err != nil {
		return fmt.Errorf("taesd %s: %w", t.Path, err)
	}
	original := t.Layout == "original"
	c := newComponent("taesd", decls, false, func(d nets.Decl) []string {
		if !original {
			return []string{d.Name}
		}
		// Separate original files hold bare Sequential indices.
		k := strings.TrimPrefix(strings.TrimPrefix(d.Orig, "decoder."), "encoder.")
		if strings.HasPrefix(d.Name, "encoder.") {
			return []string{"enc:" + k}
		}
		return []string{"dec:" + k}
	})
	var b builder
	for i, f := range t.files {
		tag := ""
		if original {
			tag = "dec:"
			if i == 1 {
				tag = "enc:"
			}
		}
		for _, ti := range f.Tensors() {
			idx := c.byKey[tag+ti.Name]
			if len(idx) == 0 {
				b.unknown = append(b.unknown, f.Path()+": "+ti.Name)
				continue
			}
			for _, j := range idx {
				b.placeAs(c, f, ti.Name, tag+ti.Name, c.decls[j])
			}
		}
	}
	b.missing(c)
	if len(b.problems) > 0 {
		return b.fail(t.Path)
	}
	t.Weights = c.weights
	return nil
}

// placeAs is place for a file key that the component indexes under
// another name (the original TAESD files' bare indices, tagged by file).
func (b *builder) placeAs(c *component, f *safetensors.File, key, indexed string, d nets.Decl) {
	before := len(c.from)
	b.place(c, f, key, d)
	if len(c.from) > before {
		c.from[d.Name] = indexed
	}
}
