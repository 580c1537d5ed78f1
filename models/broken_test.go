package models_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/safetensors"
)

// The broken-checkpoint corpus: every file below is derived from the golden
// sd15-mini checkpoint into a temporary folder and loaded the way
// `stepwise generate --model PATH [--config FILE]` loads it (models.Load on
// the reference device). Each case must end in an error that names the file
// and the problem, or, for harmless extras, in a pipeline plus a warning.

// Tensors of sd15-mini the cases damage.
const (
	unetConv  = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight" // F16 [32 32 3 3]
	unetBias  = "model.diffusion_model.input_blocks.1.0.in_layers.2.bias"   // F16 [32]
	vaeConv   = "first_stage_model.decoder.conv_out.weight"                 // F16 [3 16 3 3]
	textFC2   = "cond_stage_model.transformer.text_model.encoder.layers.2.mlp.fc2.weight"
	textNorm  = "cond_stage_model.transformer.text_model.final_layer_norm.bias"
	vaePrefix = "first_stage_model."
)

// mini is the golden single file, split into its parts.
type mini struct {
	path, config string
	raw          []byte
	header       map[string]json.RawMessage // entry name -> its JSON
	data         []byte                     // the data section
}

func loadMini(t *testing.T) *mini {
	t.Helper()
	g := golden.Dir(t)
	m := &mini{path: filepath.Join(g, "sd15-mini.fp16.safetensors"), config: filepath.Join(g, "sd15_mini_config.json")}
	var err error
	if m.raw, err = os.ReadFile(m.path); err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(m.raw)
	if err := json.Unmarshal(m.raw[8:8+n], &m.header); err != nil {
		t.Fatal(err)
	}
	m.data = m.raw[8+n:]
	return m
}

// entry is one tensor's header entry.
type entry struct {
	DType   string  `json:"dtype"`
	Shape   []int   `json:"shape"`
	Offsets []int64 `json:"data_offsets"`
}

func (m *mini) entry(t *testing.T, name string) entry {
	t.Helper()
	var e entry
	if err := json.Unmarshal(m.header[name], &e); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return e
}

// withHeader writes the file with header entries changed by edit (entries
// it returns replace or add; a nil value deletes) and extra raw JSON
// members appended verbatim; the data section is unchanged.
func (m *mini) withHeader(t *testing.T, path string, edit map[string]any, extra string) string {
	t.Helper()
	var keys []string
	for k := range m.header {
		keys = append(keys, k)
	}
	for k := range edit {
		if _, ok := m.header[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var h bytes.Buffer
	h.WriteString("{")
	for _, k := range keys {
		v := []byte(m.header[k])
		if e, ok := edit[k]; ok {
			if e == nil {
				continue
			}
			var err error
			if v, err = json.Marshal(e); err != nil {
				t.Fatal(err)
			}
		}
		if h.Len() > 1 {
			h.WriteString(",")
		}
		kj, _ := json.Marshal(k)
		h.Write(kj)
		h.WriteString(":")
		h.Write(v)
	}
	h.WriteString(extra)
	h.WriteString("}")
	return m.withRawHeader(t, path, h.Bytes())
}

// withRawHeader writes the header bytes as they are, then the data.
func (m *mini) withRawHeader(t *testing.T, path string, hdr []byte) string {
	t.Helper()
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	out = append(out, hdr...)
	return writeFile(t, path, append(out, m.data...))
}

// withEntries rewrites the file through safetensors.Write after edit has
// changed, dropped (false) or appended to its tensors.
func (m *mini) withEntries(t *testing.T, path string, edit func(es []safetensors.Entry) []safetensors.Entry) string {
	t.Helper()
	f, err := safetensors.FromBytes(m.path, m.raw)
	if err != nil {
		t.Fatal(err)
	}
	var es []safetensors.Entry
	for _, ti := range f.Tensors() {
		d, _ := f.Data(ti.Name)
		es = append(es, safetensors.Entry{Name: ti.Name, DType: ti.DType, Shape: ti.Shape, Data: d})
	}
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, edit(es), nil); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, path, buf.Bytes())
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// setValues overwrites F16 values of the named tensor at the given element
// indices with the bit pattern v (a copy: the golden bytes stay intact).
func setValues(es []safetensors.Entry, name string, v uint16, at ...int) []safetensors.Entry {
	for i := range es {
		if es[i].Name == name {
			d := slices.Clone(es[i].Data)
			for _, k := range at {
				binary.LittleEndian.PutUint16(d[2*k:], v)
			}
			es[i].Data = d
		}
	}
	return es
}

// toWide re-encodes the named F16 tensor as F32 or BF16 (exact values;
// BF16 by truncation), then applies poke to the new bytes.
func toWide(es []safetensors.Entry, name string, dt safetensors.DType, poke func(d []byte)) []safetensors.Entry {
	for i := range es {
		if es[i].Name != name {
			continue
		}
		src := es[i].Data
		var d []byte
		for k := 0; k+2 <= len(src); k += 2 {
			f := ref.HalfToFloat(binary.LittleEndian.Uint16(src[k:]))
			if dt == safetensors.F32 {
				d = binary.LittleEndian.AppendUint32(d, math.Float32bits(f))
			} else {
				d = binary.LittleEndian.AppendUint16(d, uint16(math.Float32bits(f)>>16))
			}
		}
		poke(d)
		es[i].DType, es[i].Data = dt, d
	}
	return es
}

// diffusersCopy links the golden diffusers folder into dir file by file,
// leaving out the files skip names (paths relative to the folder).
func diffusersCopy(t *testing.T, dir string, skip ...string) string {
	t.Helper()
	src := golden.Path(t, "sd15-mini")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if slices.Contains(skip, filepath.ToSlash(rel)) {
			return nil
		}
		dst := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.Symlink(p, dst)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

type brokenCase struct {
	class, name string
	// make writes the input into dir and returns the path and config
	// passed to models.Load, and the file the error must name (the path
	// when empty).
	make func(t *testing.T, m *mini, dir string) (path, config, names string)
	// typed reports whether err is of the expected type (nil: any error).
	typed func(err error) bool
	// want are phrases the error (or, for a success, a warning) contains.
	want []string
	// ok: the load succeeds; want then applies to the warnings, and check
	// (when set) looks at the pipeline.
	ok    bool
	check func(t *testing.T, p *models.Pipeline)
}

func isFormat(err error) bool {
	var fe *safetensors.FormatError
	return errors.As(err, &fe)
}

func isLoad(err error) bool {
	var le *checkpoint.LoadError
	return errors.As(err, &le)
}

func isConfig(err error) bool {
	var ce *checkpoint.ConfigError
	return errors.As(err, &ce)
}

func isNonFinite(err error) bool {
	var ne *checkpoint.NonFiniteError
	return errors.As(err, &ne)
}

func isPickle(err error) bool { return errors.Is(err, checkpoint.ErrPickle) }

func brokenCases() []brokenCase {
	var cs []brokenCase
	single := func(name string) string { return name + ".safetensors" }

	// Truncated at ten points: inside the length field, inside the header,
	// at the end of the header, inside the data, one byte short.
	type cut struct {
		name string
		at   func(m *mini) int
		want string
	}
	hdrEnd := func(m *mini) int { return len(m.raw) - len(m.data) }
	for _, c := range []cut{
		{"empty file", func(*mini) int { return 0 }, "too short"},
		{"in the length field", func(*mini) int { return 5 }, "too short"},
		{"after the length field", func(*mini) int { return 8 }, "truncated"},
		{"one byte into the header", func(*mini) int { return 9 }, "truncated"},
		{"half the header", func(m *mini) int { return hdrEnd(m) / 2 }, "truncated"},
		{"header short one byte", func(m *mini) int { return hdrEnd(m) - 1 }, "truncated"},
		{"at the end of the header", hdrEnd, "truncated"},
		{"a third of the data", func(m *mini) int { return hdrEnd(m) + len(m.data)/3 }, "truncated"},
		{"two thirds of the data", func(m *mini) int { return hdrEnd(m) + 2*len(m.data)/3 }, "truncated"},
		{"data short one byte", func(m *mini) int { return len(m.raw) - 1 }, "truncated"},
	} {
		cs = append(cs, brokenCase{class: "truncated", name: c.name, typed: isFormat, want: []string{c.want},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return writeFile(t, filepath.Join(dir, single("cut")), m.raw[:c.at(m)]), m.config, ""
			}})
	}

	// The 8-byte header length.
	for _, c := range []struct {
		name string
		n    uint64
		want string
	}{
		{"above the 100 MiB limit", safetensors.MaxHeaderSize + 1, "exceeds the 104857600-byte limit"},
		{"2^63", 1 << 63, "exceeds the 104857600-byte limit"},
		{"past the end of the file", 30 << 20, "truncated"},
	} {
		cs = append(cs, brokenCase{class: "header length too large", name: c.name, typed: isFormat, want: []string{"header length", c.want},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				b := slices.Clone(m.raw)
				binary.LittleEndian.PutUint64(b, c.n)
				return writeFile(t, filepath.Join(dir, single("len")), b), m.config, ""
			}})
	}

	// Headers that are not the JSON object they should be.
	for _, c := range []struct{ name, hdr, want string }{
		{"binary garbage", "\x00\x01\xfe\xffnot json at all", "header"},
		{"a JSON array", `[{"dtype":"F16"}]`, "want the header, got '['"},
		{"JSON cut short", `{"model.diffusion_model.out.2.bias":{"dtype":"F16","shape":[4],`, "got the end of the header (truncated header?)"},
		{"trailing data", `{} {}`, "after the header object"},
		{"entry not an object", `{"model.diffusion_model.out.2.bias":[1,2]}`, "want an object {dtype, shape, data_offsets}"},
		{"duplicate tensor", `{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"a":{"dtype":"F16","shape":[1],"data_offsets":[2,4]}}`, "duplicate entry"},
	} {
		cs = append(cs, brokenCase{class: "header not valid JSON", name: c.name, typed: isFormat, want: []string{c.want},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return m.withRawHeader(t, filepath.Join(dir, single("hdr")), []byte(c.hdr)), m.config, ""
			}})
	}

	// data_offsets overlapping, past the end, reversed.
	cs = append(cs,
		brokenCase{class: "offsets overlapping or past the end", name: "overlap", typed: isFormat, want: []string{"overlap"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				e := m.entry(t, unetConv)
				e.Offsets = []int64{e.Offsets[0] + 2, e.Offsets[1] + 2} // shifted one value into the next tensor
				return m.withHeader(t, filepath.Join(dir, single("overlap")), map[string]any{unetConv: e}, ""), m.config, ""
			}},
		brokenCase{class: "offsets overlapping or past the end", name: "two tensors share bytes", typed: isFormat, want: []string{"overlap", unetBias},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				a, b := m.entry(t, unetBias), m.entry(t, "model.diffusion_model.input_blocks.1.0.in_layers.0.bias")
				a.Offsets = b.Offsets // same dtype and size
				return m.withHeader(t, filepath.Join(dir, single("share")), map[string]any{unetBias: a}, ""), m.config, ""
			}},
		brokenCase{class: "offsets overlapping or past the end", name: "past the end", typed: isFormat, want: []string{unetConv, "run past"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				e := m.entry(t, unetConv)
				size := e.Offsets[1] - e.Offsets[0]
				end := int64(len(m.data)) + 64
				e.Offsets = []int64{end - size, end}
				return m.withHeader(t, filepath.Join(dir, single("past")), map[string]any{unetConv: e}, ""), m.config, ""
			}},
		brokenCase{class: "offsets overlapping or past the end", name: "begin after end", typed: isFormat, want: []string{unetConv, "bad data_offsets"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				e := m.entry(t, unetConv)
				e.Offsets = []int64{e.Offsets[1], e.Offsets[0]}
				return m.withHeader(t, filepath.Join(dir, single("reversed")), map[string]any{unetConv: e}, ""), m.config, ""
			}},
	)

	// dtype or shape that disagree with the bytes the offsets hold.
	for _, c := range []struct {
		name string
		fix  func(e *entry)
		want string
	}{
		{"dtype F32 on F16 bytes", func(e *entry) { e.DType = "F32" }, "needs"},
		{"shape twice the bytes", func(e *entry) { e.Shape = []int{64, 32, 3, 3} }, "needs"},
		{"shape with a zero", func(e *entry) { e.Shape = []int{32, 0, 3, 3} }, "needs 0"},
		{"unknown dtype", func(e *entry) { e.DType = "F17" }, `unknown dtype "F17"`},
	} {
		cs = append(cs, brokenCase{class: "dtype/shape mismatch", name: c.name, typed: isFormat, want: []string{unetConv, c.want},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				e := m.entry(t, unetConv)
				c.fix(&e)
				return m.withHeader(t, filepath.Join(dir, single("dtype")), map[string]any{unetConv: e}, ""), m.config, ""
			}})
	}

	// Missing tensors.
	cs = append(cs,
		brokenCase{class: "missing tensors", name: "one U-Net weight", typed: isLoad,
			want: []string{`missing tensor "` + unetConv + `" (unet down_blocks.0.resnets.0.conv1.weight), expected shape [32 32 3 3]`},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return m.withEntries(t, filepath.Join(dir, single("missing")), func(es []safetensors.Entry) []safetensors.Entry {
					return slices.DeleteFunc(es, func(e safetensors.Entry) bool { return e.Name == unetConv })
				}), m.config, ""
			}},
		brokenCase{class: "missing tensors", name: "the whole VAE", typed: isLoad, want: []string{"problems", `missing tensor "first_stage_model.`, "... and"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return m.withEntries(t, filepath.Join(dir, single("novae")), func(es []safetensors.Entry) []safetensors.Entry {
					return slices.DeleteFunc(es, func(e safetensors.Entry) bool { return strings.HasPrefix(e.Name, vaePrefix) })
				}), m.config, ""
			}},
		brokenCase{class: "missing tensors", name: "misnamed tensor", typed: isLoad,
			want: []string{`missing tensor "` + unetConv + `"`, "not recognised (misnamed?)", "model.diffusion_model.input_blocks.1.0.in_layers.2.weights"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return m.withEntries(t, filepath.Join(dir, single("misnamed")), func(es []safetensors.Entry) []safetensors.Entry {
					for i := range es {
						if es[i].Name == unetConv {
							es[i].Name += "s"
						}
					}
					return es
				}), m.config, ""
			}},
	)

	// Wrong shapes or types in one layer.
	reshape := func(name string, shape []int) func(es []safetensors.Entry) []safetensors.Entry {
		return func(es []safetensors.Entry) []safetensors.Entry {
			for i := range es {
				if es[i].Name == name {
					es[i].Shape = shape
				}
			}
			return es
		}
	}
	cs = append(cs,
		brokenCase{class: "wrong shape in one layer", name: "text MLP transposed", typed: isLoad,
			want: []string{`tensor "` + textFC2 + `" (text_encoder text_model.encoder.layers.2.mlp.fc2.weight): shape [256 64], expected [64 256]`},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return m.withEntries(t, filepath.Join(dir, single("transposed")), reshape(textFC2, []int{256, 64})), m.config, ""
			}},
		brokenCase{class: "wrong shape in one layer", name: "3x3 kernel flattened", typed: isLoad,
			want: []string{unetConv, "shape [32 32 9 1], expected [32 32 3 3]"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return m.withEntries(t, filepath.Join(dir, single("flat")), reshape(unetConv, []int{32, 32, 9, 1})), m.config, ""
			}},
		brokenCase{class: "wrong shape in one layer", name: "integer dtype", typed: isLoad,
			want: []string{textNorm, "dtype I16 is not supported (want F32, F16 or BF16)"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return m.withEntries(t, filepath.Join(dir, single("int")), func(es []safetensors.Entry) []safetensors.Entry {
					for i := range es {
						if es[i].Name == textNorm {
							es[i].DType = safetensors.I16
						}
					}
					return es
				}), m.config, ""
			}},
		brokenCase{class: "wrong shape in one layer", name: "config for another model", typed: isLoad,
			want: []string{"do the configs match the weights?", "shape [77 64], expected [77 768]", "... and 1098 more"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				p := filepath.Join(dir, single("sd15cfg"))
				os.Symlink(m.path, p)
				return p, writeFile(t, filepath.Join(dir, "sd15.json"), []byte(`{}`)), p
			}},
	)

	// Harmless extras: loaded, with a warning naming the unknown tensors.
	extra := func(name string) safetensors.Entry {
		return safetensors.Entry{Name: name, DType: safetensors.F16, Shape: []int{2}, Data: []byte{0, 0x3C, 0, 0x3C}}
	}
	cs = append(cs,
		brokenCase{class: "extra unknown tensors", name: "two unknown tensors", ok: true,
			want: []string{"2 unknown tensor(s) ignored", "lora_te_text_model_encoder_layers_0.alpha", "model.diffusion_model.extra_head.weight"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return m.withEntries(t, filepath.Join(dir, single("extras")), func(es []safetensors.Entry) []safetensors.Entry {
					return append(es, extra("model.diffusion_model.extra_head.weight"), extra("lora_te_text_model_encoder_layers_0.alpha"))
				}), m.config, ""
			}},
		brokenCase{class: "extra training-only tensors", name: "EMA copy and schedule buffers", ok: true,
			check: func(t *testing.T, p *models.Pipeline) {
				if p.Model.Ignored != 4 || len(p.Model.Warnings) != 0 {
					t.Errorf("ignored %d tensors, warnings %q; want 4 ignored silently", p.Model.Ignored, p.Model.Warnings)
				}
			},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return m.withEntries(t, filepath.Join(dir, single("ema")), func(es []safetensors.Entry) []safetensors.Entry {
					return append(es, extra("model_ema.decay"), extra("model_ema.num_updates"), extra("alphas_cumprod"), extra("betas"))
				}), m.config, ""
			}},
		brokenCase{class: "extra unknown tensors", name: "eight unknown, listed five and counted", ok: true,
			want: []string{"8 unknown tensor(s) ignored", "zz.0", "zz.4", "(3 more)"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return m.withEntries(t, filepath.Join(dir, single("many")), func(es []safetensors.Entry) []safetensors.Entry {
					for i := range 8 {
						es = append(es, extra(fmt.Sprintf("zz.%d", i)))
					}
					return es
				}), m.config, ""
			}},
	)

	// Non-finite weights.
	nf := func(name string, edit func(es []safetensors.Entry) []safetensors.Entry, want ...string) brokenCase {
		return brokenCase{class: "NaN/Inf weights", name: name, typed: isNonFinite, want: append([]string{"NaN"}, want...),
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return m.withEntries(t, filepath.Join(dir, single("nan")), edit), m.config, ""
			}}
	}
	cs = append(cs,
		nf("three F16 NaN in a U-Net conv", func(es []safetensors.Entry) []safetensors.Entry {
			return setValues(es, unetConv, 0x7E00, 0, 100, 9215)
		}, `tensor "`+unetConv+`" (unet down_blocks.0.resnets.0.conv1.weight): 3 of 9216 values are NaN or Inf`),
		nf("F16 +Inf and -Inf in the VAE", func(es []safetensors.Entry) []safetensors.Entry {
			return setValues(setValues(es, vaeConv, 0x7C00, 1), vaeConv, 0xFC00, 2)
		}, `"`+vaeConv+`" (vae decoder.conv_out.weight): 2 of 432 values`),
		nf("NaN in two text tensors", func(es []safetensors.Entry) []safetensors.Entry {
			return setValues(setValues(es, textFC2, 0x7FFF, 5), textNorm, 0xFE01, 0)
		}, "2 non-finite weight value(s) (NaN or Inf) in 2 tensor(s)", textFC2, textNorm),
		nf("F32 Inf", func(es []safetensors.Entry) []safetensors.Entry {
			return toWide(es, unetBias, safetensors.F32, func(d []byte) {
				binary.LittleEndian.PutUint32(d[4*31:], math.Float32bits(float32(math.Inf(-1))))
			})
		}, unetBias, "1 of 32 values"),
		nf("BF16 NaN", func(es []safetensors.Entry) []safetensors.Entry {
			return toWide(es, unetBias, safetensors.BF16, func(d []byte) { binary.LittleEndian.PutUint16(d[2*7:], 0x7FC0) })
		}, unetBias, "1 of 32 values"),
	)

	// Pickle checkpoints are refused, never unpickled.
	torchZip := append([]byte("PK\x03\x04"), bytes.Repeat([]byte{0}, 60)...)
	cs = append(cs,
		brokenCase{class: "pickle checkpoint", name: ".ckpt by extension", typed: isPickle, want: []string{"never loaded", "convert the file to .safetensors"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return writeFile(t, filepath.Join(dir, "model.ckpt"), torchZip), "", ""
			}},
		brokenCase{class: "pickle checkpoint", name: "torch zip named .safetensors", typed: isPickle, want: []string{"looks like a PyTorch pickle", ".safetensors"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return writeFile(t, filepath.Join(dir, single("zip")), torchZip), "", ""
			}},
		brokenCase{class: "pickle checkpoint", name: "raw pickle protocol 2", typed: isPickle, want: []string{"looks like a PyTorch pickle"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return writeFile(t, filepath.Join(dir, single("pkl")), []byte("\x80\x02}q\x00(X\x05\x00\x00\x00state_dictq\x01")), "", ""
			}},
		brokenCase{class: "pickle checkpoint", name: "diffusers folder with a .bin U-Net", typed: isPickle, want: []string{filepath.Join("unet", "diffusion_pytorch_model.bin")},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				d := diffusersCopy(t, filepath.Join(dir, "folder"), "unet/diffusion_pytorch_model.fp16.safetensors")
				writeFile(t, filepath.Join(d, "unet", "diffusion_pytorch_model.bin"), torchZip)
				return d, "", ""
			}},
	)

	// Not a full checkpoint; side configs that are broken.
	cs = append(cs,
		brokenCase{class: "not a checkpoint", name: "one diffusers component", typed: isLoad, want: []string{"one component of a diffusers folder"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				p := filepath.Join(dir, single("unet"))
				os.Symlink(filepath.Join(golden.Path(t, "sd15-mini"), "unet", "diffusion_pytorch_model.fp16.safetensors"), p)
				return p, "", p
			}},
		brokenCase{class: "not a checkpoint", name: "a LoRA", typed: isLoad, want: []string{"LoRA/adapter file"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				var buf bytes.Buffer
				safetensors.Write(&buf, []safetensors.Entry{{Name: "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", DType: safetensors.F16, Shape: []int{1}, Data: []byte{0, 0}}}, nil)
				return writeFile(t, filepath.Join(dir, single("lora")), buf.Bytes()), "", ""
			}},
		brokenCase{class: "broken config", name: "side .json not JSON", typed: isConfig, want: []string{"invalid character"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				p := filepath.Join(dir, single("side"))
				os.Symlink(m.path, p)
				return p, "", writeFile(t, filepath.Join(dir, "side.json"), []byte("unet: {}"))
			}},
		brokenCase{class: "broken config", name: "--config with an unsupported block", typed: isConfig, want: []string{`unet down_block_types[0] = "SimpleCrossAttnDownBlock2D" is not supported`},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				p := filepath.Join(dir, single("cfg"))
				os.Symlink(m.path, p)
				c := writeFile(t, filepath.Join(dir, "cfg.json"), []byte(`{"unet": {"down_block_types": ["SimpleCrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"], "block_out_channels": [32, 64]}}`))
				return p, c, c
			}},
	)

	// Diffusers folders.
	cs = append(cs,
		brokenCase{class: "diffusers folder", name: "no unet/config.json", typed: func(err error) bool { return errors.Is(err, fs.ErrNotExist) },
			want: []string{filepath.Join("unet", "config.json")},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				return diffusersCopy(t, filepath.Join(dir, "folder"), "unet/config.json"), "", ""
			}},
		brokenCase{class: "diffusers folder", name: "unet/config.json not JSON", typed: isConfig, want: []string{filepath.Join("unet", "config.json"), "invalid character"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				d := diffusersCopy(t, filepath.Join(dir, "folder"), "unet/config.json")
				writeFile(t, filepath.Join(d, "unet", "config.json"), []byte("block_out_channels = [32, 64]\n"))
				return d, "", ""
			}},
		brokenCase{class: "diffusers folder", name: "model_index.json not JSON", typed: isConfig, want: []string{"model_index.json"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				d := diffusersCopy(t, filepath.Join(dir, "folder"), "model_index.json")
				writeFile(t, filepath.Join(d, "model_index.json"), []byte(`{"_class_name": "StableDiffusionPipeline",`))
				return d, "", ""
			}},
		brokenCase{class: "diffusers folder", name: "a PixArt pipeline", typed: isConfig,
			want: []string{"model_index.json", "PixArtAlphaPipeline has a transformer denoiser that is not SD3's or Flux's"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				d := diffusersCopy(t, filepath.Join(dir, "folder"), "model_index.json", "unet/config.json")
				writeFile(t, filepath.Join(d, "model_index.json"), []byte(`{"_class_name": "PixArtAlphaPipeline", "transformer": ["diffusers", "PixArtTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]}`))
				return d, "", ""
			}},
		brokenCase{class: "diffusers folder", name: "an SDXL pipeline without its text_encoder_2", typed: func(err error) bool { return errors.Is(err, os.ErrNotExist) },
			want: []string{"text_encoder_2/config.json is missing"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				d := diffusersCopy(t, filepath.Join(dir, "folder"), "model_index.json")
				writeFile(t, filepath.Join(d, "model_index.json"), []byte(`{"_class_name": "StableDiffusionXLPipeline", "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "unet": ["diffusers", "UNet2DConditionModel"]}`))
				return d, "", ""
			}},
		brokenCase{class: "diffusers folder", name: "no VAE weights", want: []string{"no diffusion_pytorch_model.safetensors or diffusion_pytorch_model.fp16.safetensors"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				d := diffusersCopy(t, filepath.Join(dir, "folder"), "vae/diffusion_pytorch_model.fp16.safetensors")
				return d, "", filepath.Join(d, "vae")
			}},
		brokenCase{class: "diffusers folder", name: "truncated text encoder weights", typed: isFormat, want: []string{"truncated"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				rel := "text_encoder/model.fp16.safetensors"
				d := diffusersCopy(t, filepath.Join(dir, "folder"), rel)
				b, err := os.ReadFile(filepath.Join(golden.Path(t, "sd15-mini"), rel))
				if err != nil {
					t.Fatal(err)
				}
				return d, "", writeFile(t, filepath.Join(d, rel), b[:len(b)/2])
			}},
		brokenCase{class: "diffusers folder", name: "NaN in the text encoder file", typed: isNonFinite,
			want: []string{`"text_model.final_layer_norm.weight"`, "1 of 64 values are NaN or Inf"},
			make: func(t *testing.T, m *mini, dir string) (string, string, string) {
				rel := "text_encoder/model.fp16.safetensors"
				d := diffusersCopy(t, filepath.Join(dir, "folder"), rel)
				f := golden.Open(t, filepath.Join(golden.Path(t, "sd15-mini"), rel))
				var es []safetensors.Entry
				for _, ti := range f.Tensors() {
					data, _ := f.Data(ti.Name)
					es = append(es, safetensors.Entry{Name: ti.Name, DType: ti.DType, Shape: ti.Shape, Data: data})
				}
				es = setValues(es, "text_model.final_layer_norm.weight", 0x7E00, 63)
				var buf bytes.Buffer
				if err := safetensors.Write(&buf, es, nil); err != nil {
					t.Fatal(err)
				}
				return d, "", writeFile(t, filepath.Join(d, rel), buf.Bytes())
			}},
	)
	return cs
}

// TestBrokenCorpus loads every broken input through models.Load and checks
// the outcome; it logs the table of input classes, case counts and outcomes.
func TestBrokenCorpus(t *testing.T) {
	m := loadMini(t)
	dev := ref.New()
	type row struct{ cases, errs, ok int }
	table := map[string]*row{}
	var order []string
	for _, c := range brokenCases() {
		if table[c.class] == nil {
			table[c.class] = &row{}
			order = append(order, c.class)
		}
		table[c.class].cases++
		t.Run(c.class+"/"+c.name, func(t *testing.T) {
			path, config, names := c.make(t, m, t.TempDir())
			if names == "" {
				names = path
			}
			p, err := models.Load(dev, path, config)
			if c.ok {
				require.NoError(t, err, "want a pipeline with a warning")
				defer p.Close()
				warn := strings.Join(p.Model.Warnings, "\n")
				for _, w := range c.want {
					assert.Contains(t, warn, w, "warnings")
				}
				if c.check != nil {
					c.check(t, p)
				}
				if !t.Failed() {
					table[c.class].ok++
				}
				return
			}
			if err == nil {
				p.Close()
			}
			require.Error(t, err, "loaded without an error")
			msg := err.Error()
			assert.Contains(t, msg, names, "the error names the file")
			for _, w := range c.want {
				assert.Contains(t, msg, w)
			}
			if c.typed != nil {
				assert.True(t, c.typed(err), "error %T is not of the expected type: %v", err, err)
			}
			if !t.Failed() {
				table[c.class].errs++
			}
			t.Log(msg)
		})
	}
	assert.Zero(t, dev.Stats().Buffers, "tensors left on the device by failed loads")
	var b strings.Builder
	total := 0
	b.WriteString("input class | cases | outcome\n")
	for _, k := range order {
		r := table[k]
		total += r.cases
		outcome := fmt.Sprintf("%d errors naming the file and the problem", r.errs)
		if r.ok > 0 {
			outcome = fmt.Sprintf("%d loaded, unknown extras named in a warning, training-only ones counted as ignored", r.ok)
		}
		fmt.Fprintf(&b, "%s | %d | %s\n", k, r.cases, outcome)
	}
	fmt.Fprintf(&b, "total | %d |\n", total)
	t.Log("\n" + b.String())
}
