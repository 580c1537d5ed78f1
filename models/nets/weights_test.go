package nets

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/internal/golden"
)

// miniConfigs reads sd15-mini's diffusers config.json files.
func miniConfigs(t *testing.T) (UNetConfig, VAEConfig, TextConfig) {
	dir := golden.Dir(t)
	var u UNetConfig
	var v VAEConfig
	var x TextConfig
	loadConfig(t, filepath.Join(dir, "sd15-mini/unet/config.json"), &u)
	loadConfig(t, filepath.Join(dir, "sd15-mini/vae/config.json"), &v)
	loadConfig(t, filepath.Join(dir, "sd15-mini/text_encoder/config.json"), &x)
	return u, v, x
}

// The expected parameter lists are exactly what diffusers/transformers
// wrote for sd15-mini: every name, every shape, nothing more.
func TestExpectedMatchesDiffusersFiles(t *testing.T) {
	dir := golden.Dir(t)
	u, v, x := miniConfigs(t)
	for _, tc := range []struct {
		file string
		want map[string][]int
	}{
		{"unet/diffusion_pytorch_model.fp16.safetensors", ExpectedUNet(u)},
		{"vae/diffusion_pytorch_model.fp16.safetensors", ExpectedVAE(v)},
		{"text_encoder/model.fp16.safetensors", ExpectedText(x)},
	} {
		f := golden.Open(t, filepath.Join(dir, "sd15-mini", tc.file))
		seen := map[string]bool{}
		for _, ti := range f.Tensors() {
			seen[ti.Name] = true
			shape, ok := tc.want[ti.Name]
			switch {
			case !ok:
				t.Errorf("%s: %s %v is in the file but not expected", tc.file, ti.Name, ti.Shape)
			case !gpu.Shape(shape).Equal(ti.Shape):
				t.Errorf("%s: %s: expected shape %v, file has %v", tc.file, ti.Name, gpu.Shape(shape), gpu.Shape(ti.Shape))
			}
		}
		for n := range tc.want {
			if !seen[n] {
				t.Errorf("%s: expected %s is not in the file", tc.file, n)
			}
		}
		if len(tc.want) == 0 {
			t.Errorf("%s: nothing expected", tc.file)
		}
	}
}

func numel(m map[string][]int) (tensors, params int) {
	for _, s := range m {
		tensors++
		params += gpu.Shape(s).Numel()
	}
	return
}

// With default configs the networks are SD 1.5's: the same number of
// tensors and parameters as the full-size single file in sd15_keys.txt.
func TestExpectedSD15Defaults(t *testing.T) {
	keys := golden.SD15Keys(t)
	wantTensors, wantParams := len(keys), 0
	for _, e := range keys {
		n := 1
		for _, d := range e.Shape {
			n *= d
		}
		wantParams += n
	}
	ut, up := numel(ExpectedUNet(UNetConfig{}))
	vt, vp := numel(ExpectedVAE(VAEConfig{}))
	xt, xp := numel(ExpectedText(TextConfig{}))
	if got := ut + vt + xt; got != wantTensors {
		t.Errorf("SD 1.5 defaults expect %d tensors (unet %d, vae %d, text %d), sd15_keys.txt has %d", got, ut, vt, xt, wantTensors)
	}
	if got := up + vp + xp; got != wantParams {
		t.Errorf("SD 1.5 defaults expect %d parameters, sd15_keys.txt has %d", got, wantParams)
	}
	if up != 859520964 {
		t.Errorf("SD 1.5 U-Net has %d parameters, want 859520964", up)
	}
	// SD 2.x: heads per level, 1024-wide context, linear projections.
	sd2 := UNetConfig{AttentionHeadDim: IntOrList{5, 10, 20, 20}, CrossAttentionDim: 1024, UseLinearProjection: true}
	m := ExpectedUNet(sd2)
	if _, p := numel(m); p != 865910724 {
		t.Errorf("SD 2.x U-Net has %d parameters, want 865910724", p)
	}
	if s := m["down_blocks.0.attentions.0.proj_in.weight"]; !gpu.Shape(s).Equal(gpu.Shape{320, 320}) {
		t.Errorf("SD 2.x proj_in is %v, want a linear [320,320]", gpu.Shape(s))
	}
}

// One error names every missing, mis-shaped or truncated tensor with the
// expected shape, and nothing is left on the device.
func TestWeightsErrorListsEveryProblem(t *testing.T) {
	dir := golden.Dir(t)
	u, _, _ := miniConfigs(t)
	src := loadWeights(t, filepath.Join(dir, "sd15-mini/unet/diffusion_pytorch_model.fp16.safetensors"))
	w := MapWeights{}
	for k, p := range src {
		w[k] = p
	}
	delete(w, "conv_in.weight")
	delete(w, "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight")
	p := w["time_embedding.linear_1.weight"]
	p.Shape = []int{32, 128}
	w["time_embedding.linear_1.weight"] = p
	p = w["mid_block.resnets.1.norm2.bias"]
	p.Raw = p.Raw[:len(p.Raw)-2]
	w["mid_block.resnets.1.norm2.bias"] = p

	for name, d := range testDevices(t) {
		before := d.Stats().Buffers
		_, err := NewUNet(d, u, w)
		var we *WeightsError
		if !errors.As(err, &we) {
			t.Fatalf("%s: got %v, want a *WeightsError", name, err)
		}
		if we.Component != "unet" || len(we.Problems) != 4 {
			t.Errorf("%s: component %q, %d problems, want unet and 4:\n%v", name, we.Component, len(we.Problems), err)
		}
		msg := err.Error()
		for _, want := range []string{
			"conv_in.weight: missing (want shape [32,4,3,3])",
			"up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight: missing (want shape [32,64])",
			"time_embedding.linear_1.weight: shape [32,128], want [128,32]",
			"mid_block.resnets.1.norm2.bias: 254 bytes of data, want 256",
		} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: error does not contain %q:\n%s", name, want, msg)
			}
		}
		if got := d.Stats().Buffers; got != before {
			t.Errorf("%s: %d buffers live after a failed load, want %d", name, got, before)
		}
		if d.Err() != nil {
			t.Errorf("%s: a weights error reached the device: %v", name, d.Err())
		}
	}
}

func TestConfigErrors(t *testing.T) {
	u, v, x := miniConfigs(t)
	badU := []func(c *UNetConfig){
		func(c *UNetConfig) {
			c.DownBlockTypes = []string{"CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}
		},
		func(c *UNetConfig) { c.AttentionHeadDim = IntOrList{7} },
		func(c *UNetConfig) { c.UpBlockTypes = c.UpBlockTypes[:3] },
		func(c *UNetConfig) { c.ResnetTimeScaleShift = "scale_shift" },
		func(c *UNetConfig) { c.BlockOutChannels = []int{32, 64, 128, 100} },
	}
	for name, d := range testDevices(t) {
		for i, mod := range badU {
			c := u
			c.DownBlockTypes = append([]string(nil), u.DownBlockTypes...)
			mod(&c)
			if ExpectedUNet(c) != nil {
				t.Errorf("bad unet config %d: ExpectedUNet returned a list", i)
			}
			if _, err := NewUNet(d, c, MapWeights{}); err == nil || errors.As(err, new(*WeightsError)) {
				t.Errorf("%s: bad unet config %d: got %v, want a config error", name, i, err)
			}
		}
		bv := v
		bv.UpBlockTypes = []string{"UpDecoderBlock2D", "AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"}
		if _, err := NewVAE(d, bv, MapWeights{}); err == nil || !strings.Contains(err.Error(), "AttnUpDecoderBlock2D") {
			t.Errorf("%s: bad vae config: got %v", name, err)
		}
		bx := x
		bx.HiddenAct = "relu"
		if _, err := NewTextEncoder(d, bx, MapWeights{}); err == nil || !strings.Contains(err.Error(), "relu") {
			t.Errorf("%s: bad text config: got %v", name, err)
		}
		if d.Stats().Buffers != 0 || d.Err() != nil {
			t.Errorf("%s: config errors touched the device: %+v, %v", name, d.Stats(), d.Err())
		}
	}
}

// Bad operands are reported through the device's sticky error.
func TestUNetForwardRejectsBadOperands(t *testing.T) {
	dir := golden.Dir(t)
	u, _, _ := miniConfigs(t)
	w := loadWeights(t, filepath.Join(dir, "sd15-mini/unet/diffusion_pytorch_model.fp16.safetensors"))
	for name, d := range testDevices(t) {
		net, err := NewUNet(d, u, w)
		if err != nil {
			t.Fatal(err)
		}
		x := d.Upload(make([]float32, 2*4*8*8), 2, 4, 8, 8)
		ctx := d.Upload(make([]float32, 2*77*64), 2, 77, 64)
		out := net.Forward(x, []float32{999}, ctx)
		if err := d.Err(); err == nil || !strings.Contains(err.Error(), "1 timesteps for a batch of 2") {
			t.Errorf("%s: got %v, want a timestep count error", name, err)
		}
		if !out.Shape.Equal(gpu.Shape{2, 4, 8, 8}) {
			t.Errorf("%s: placeholder shape %v", name, out.Shape)
		}
	}
}
