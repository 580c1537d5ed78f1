package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/gguf"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
	"github.com/stepwise/stepwise/presets"
)

func init() {
	register(command{name: "convert", summary: "write a model's weights quantized: GGUF (q8_0, q4_0, q4_k, q5_k) or fp8 safetensors", run: runConvert})
}

const convertUsage = "usage: stepwise convert --type q8_0|q4_0|q4_k|q5_k|fp8|fp8_e5m2 [--config FILE] IN OUT\n" +
	"  IN is any model Stepwise loads (a single file, a diffusers folder, a GGUF file);\n" +
	"  OUT is written atomically in the original single-file key names (model.diffusion_model.*, ...):\n" +
	"  a GGUF file for the q types, a safetensors file for fp8 (F8_E4M3; fp8_e5m2: F8_E5M2).\n" +
	"  Only 2-D linear weights whose rows are whole blocks are quantized; norms, biases, embeddings,\n" +
	"  convolutions and the VAE stay F16/F32, as stable-diffusion.cpp does."

// convertTypes maps --type to the storage type of the quantized weights.
var convertTypes = map[string]gpu.DType{
	"q8_0": gpu.Q8_0, "q4_0": gpu.Q4_0, "q4_k": gpu.Q4_K, "q5_k": gpu.Q5_K,
	"fp8": gpu.F8E4M3, "fp8_e4m3": gpu.F8E4M3, "fp8_e5m2": gpu.F8E5M2,
}

func runConvert(args []string) error {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	typ := fs.String("type", "", "the weight type: q8_0, q4_0, q4_k, q5_k (GGUF) or fp8, fp8_e5m2 (safetensors)")
	config := fs.String("config", "", "a config bundle or LDM .yaml for a single-file IN (as for generate)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), convertUsage)
		fs.PrintDefaults()
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	dt, ok := convertTypes[strings.ToLower(*typ)]
	if !ok {
		return fmt.Errorf("%w: --type %q: want q8_0, q4_0, q4_k, q5_k, fp8 or fp8_e5m2\n%s", errUsage, *typ, convertUsage)
	}
	if len(pos) != 2 {
		return fmt.Errorf("%w: want IN and OUT, got %d arguments\n%s", errUsage, len(pos), convertUsage)
	}
	st, err := convert(pos[0], pos[1], *config, dt)
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s: %d tensors, %d quantized to %v; %.1f MiB of weights (from %.1f MiB)\n",
		pos[1], st.tensors, st.quantized, dt, float64(st.outBytes)/(1<<20), float64(st.inBytes)/(1<<20))
	return nil
}

type convertStats struct {
	tensors, quantized int
	inBytes, outBytes  int64
}

// convert loads in and writes its weights to out with the linear weights
// quantized to dt. For a model whose hyper-parameters came from a config
// (not inferred from the shapes), the config bundle is written beside out
// (OUT without its extension + .json), where Load finds it.
func convert(in, out, config string, dt gpu.DType) (convertStats, error) {
	var st convertStats
	m, err := checkpoint.Load(in, config)
	if err != nil {
		return st, err
	}
	defer m.Close()
	entries, err := checkpoint.SingleFileEntries(m)
	if err != nil {
		return st, fmt.Errorf("convert %s: %w", in, err)
	}
	toGGUF := dt != gpu.F8E4M3 && dt != gpu.F8E5M2
	type plan struct {
		e      safetensors.Entry
		src    gpu.DType
		target gpu.DType
	}
	plans := make([]plan, 0, len(entries))
	for _, e := range entries {
		src, ok := e.DType.GPU()
		if !ok {
			return st, fmt.Errorf("convert %s: tensor %s: dtype %s", in, e.Name, e.DType)
		}
		target := src
		switch {
		case quantizable(m, e.Name, e.Shape, dt):
			target = dt
			st.quantized++
		case src.Quantized() || (toGGUF && src == gpu.F8E4M3) || (toGGUF && src == gpu.F8E5M2):
			target = gpu.F16 // widened, as the loaders would
		}
		plans = append(plans, plan{e, src, target})
		st.tensors++
		st.inBytes += int64(len(e.Data))
		st.outBytes += int64(target.Bytes(gpu.Shape(e.Shape).Numel()))
	}
	data := func(p plan) ([]byte, error) {
		if p.src == p.target {
			return p.e.Data, nil
		}
		n := gpu.Shape(p.e.Shape).Numel()
		v, err := ref.Dequantize(p.src, p.e.Data, n)
		if err != nil {
			return nil, err
		}
		return ref.Quantize(p.target, v)
	}
	err = presets.WriteAtomic(out, 0o644, func(w io.Writer) error {
		if toGGUF {
			ts := make([]gguf.WriteTensor, len(plans))
			for i, p := range plans {
				ts[i] = gguf.WriteTensor{Name: p.e.Name, Shape: p.e.Shape, DType: p.target, Data: func() ([]byte, error) { return data(p) }}
			}
			return gguf.Write(w, []gguf.KV{
				{Key: "general.architecture", Value: ggufArch(m)},
				{Key: "general.name", Value: strings.TrimSuffix(filepath.Base(in), filepath.Ext(in))},
				{Key: "general.quantization_version", Value: uint32(2)},
				{Key: "general.file_type", Value: strings.ToUpper(dt.String())},
				{Key: "stepwise.family", Value: m.Family},
			}, ts)
		}
		es := make([]safetensors.Entry, len(plans))
		for i, p := range plans {
			b, err := data(p)
			if err != nil {
				return fmt.Errorf("tensor %s: %w", p.e.Name, err)
			}
			sd, _ := safetensors.FromGPU(p.target)
			es[i] = safetensors.Entry{Name: p.e.Name, DType: sd, Shape: p.e.Shape, Data: b}
		}
		return safetensors.Write(w, es, map[string]string{"stepwise": "converted to " + dt.String() + " from " + filepath.Base(in)})
	})
	if err != nil {
		return st, fmt.Errorf("convert %s: %w", out, err)
	}
	if strings.HasPrefix(m.ConfigSource, "inferred") {
		return st, nil // the shapes say it all
	}
	cfg := map[string]any{"vae": m.VAE, "scheduler": m.Scheduler}
	switch {
	case m.Transformer != nil:
		cfg["transformer"] = m.Transformer
		if m.T5 != nil {
			cfg[m.T5.Spec.Role] = m.T5.Config
		}
	case m.Flux != nil:
		cfg["transformer"] = m.Flux
		cfg[m.T5.Spec.Role] = m.T5.Config
	default:
		cfg["unet"] = m.UNet
	}
	for _, t := range m.Texts {
		cfg[t.Spec.Role] = t.Config
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return st, err
	}
	side := strings.TrimSuffix(out, filepath.Ext(out)) + ".json"
	return st, presets.WriteFileAtomic(side, js, 0o644)
}

// quantizable says whether the tensor name (an original single-file key)
// is quantized to dt: a 2-D ".weight" whose rows are whole blocks, not an
// embedding table (read by Embedding, not MatMul) and not the VAE's (its
// few linear weights matter more than they weigh).
func quantizable(m *checkpoint.Model, name string, shape []int, dt gpu.DType) bool {
	if !strings.HasSuffix(name, ".weight") || !nets.QuantizableRow(dt, shape) {
		return false
	}
	if m.Spec != nil && m.Spec.VAEPrefix != "" && strings.HasPrefix(name, m.Spec.VAEPrefix) {
		return false
	}
	return !strings.Contains(name, "embedding") && !strings.HasSuffix(name, "shared.weight")
}

// ggufArch is the general.architecture value ComfyUI-GGUF writes for the
// family.
func ggufArch(m *checkpoint.Model) string {
	switch {
	case m.Flux != nil:
		return "flux"
	case m.Transformer != nil:
		return "sd3"
	case strings.HasPrefix(m.Family, "SDXL"):
		return "sdxl"
	}
	return "sd1"
}
