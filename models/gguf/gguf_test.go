package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
)

// sample writes a small valid file: metadata of several types, an F32
// bias, an F16 matrix, a Q8_0 and a Q4_K weight.
func sample(t testing.TB) []byte {
	vals := make([]float32, 2*256)
	for i := range vals {
		vals[i] = float32(i%17) - 8
	}
	q8, err := ref.Quantize(gpu.Q8_0, vals[:3*32])
	require.NoError(t, err)
	q4k, err := ref.Quantize(gpu.Q4_K, vals)
	require.NoError(t, err)
	fixed := func(b []byte) func() ([]byte, error) { return func() ([]byte, error) { return b, nil } }
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, []KV{
		{"general.architecture", "stable-diffusion"},
		{"general.quantization_version", uint32(2)},
		{"test.int", int32(-5)}, {"test.f", float32(0.5)}, {"test.flag", true},
		{"test.list", []string{"a", "bc"}}, {"test.big", uint64(1 << 40)},
	}, []WriteTensor{
		{"model.diffusion_model.out.bias", []int{3}, gpu.F32, fixed(ref.EncodeF32([]float32{1, 2, 3}))},
		{"model.diffusion_model.proj.weight", []int{3, 2}, gpu.F16, fixed(ref.EncodeF16([]float32{1, 2, 3, 4, 5, 6}))},
		{"q8", []int{3, 32}, gpu.Q8_0, fixed(q8)},
		{"q4k", []int{2, 256}, gpu.Q4_K, fixed(q4k)},
	}))
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	b := sample(t)
	f, err := Parse("x.gguf", b)
	require.NoError(t, err)
	assert.Equal(t, uint32(3), f.Version)
	assert.Equal(t, "stable-diffusion", f.String("general.architecture"))
	assert.Equal(t, uint64(2), f.Meta["general.quantization_version"])
	assert.Equal(t, int64(-5), f.Meta["test.int"])
	assert.Equal(t, 0.5, f.Meta["test.f"])
	assert.Equal(t, true, f.Meta["test.flag"])
	assert.Equal(t, []any{"a", "bc"}, f.Meta["test.list"])
	assert.Equal(t, uint64(1<<40), f.Meta["test.big"])
	require.Len(t, f.Tensors, 4)
	assert.Equal(t, int64(0), f.DataStart%32)
	proj := f.Tensors[1]
	assert.Equal(t, []int{3, 2}, proj.Shape) // stored innermost first: [2, 3]
	assert.Equal(t, gpu.F16, proj.DType)
	v, err := ref.Dequantize(gpu.F16, f.Data(proj), 6)
	require.NoError(t, err)
	assert.Equal(t, []float32{1, 2, 3, 4, 5, 6}, v)
	q := f.Tensors[3]
	assert.Equal(t, []int{2, 256}, q.Shape)
	assert.Equal(t, gpu.Q4_K, q.DType)
	assert.Equal(t, int64(2*144), q.Size)
	assert.Equal(t, int64(0), q.Offset%32)
	// The dimension order on disk is innermost first.
	assert.Equal(t, []byte{2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0}, findDims(b, "model.diffusion_model.proj.weight"))
}

// findDims returns the 16 bytes after a tensor name's dimension count.
func findDims(b []byte, name string) []byte {
	i := bytes.Index(b, []byte(name))
	return b[i+len(name)+4 : i+len(name)+20]
}

func TestBadFiles(t *testing.T) {
	good := sample(t)
	withVersion := func(v uint32) []byte {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint32(b[4:], v)
		return b
	}
	setType := func(name string, typ uint32) []byte {
		b := append([]byte(nil), good...)
		i := bytes.Index(b, []byte(name)) + len(name)
		nd := int(binary.LittleEndian.Uint32(b[i:]))
		binary.LittleEndian.PutUint32(b[i+4+8*nd:], typ)
		return b
	}
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, `bad magic ""`},
		{"magic", []byte("GGML\x03\x00\x00\x00"), `bad magic "GGML"`},
		{"v1", withVersion(1), "version 1"},
		{"v9", withVersion(9), "unknown GGUF version 9"},
		{"big-endian", withVersion(3 << 24), "big-endian"},
		{"truncated header", good[:40], "truncated or corrupt file?"},
		{"truncated metadata", good[:160], "(truncated file?)"},
		{"truncated data", good[:len(good)-40], "runs past the"},
		{"q6_k", setType("q8", 14), `tensor "q8": ggml type 14 (Q6_K) is not supported`},
		{"type 99", setType("q8", 99), "ggml type 99 (unknown)"},
		{"huge tensor count", func() []byte {
			b := append([]byte(nil), good...)
			binary.LittleEndian.PutUint64(b[8:], 1<<60)
			return b
		}(), "tensors cannot fit"},
		{"huge kv count", func() []byte {
			b := append([]byte(nil), good...)
			binary.LittleEndian.PutUint64(b[16:], 1<<62)
			return b
		}(), "metadata entries cannot fit"},
	} {
		_, err := Parse("bad.gguf", c.b)
		var fe *FormatError
		if assert.True(t, errors.As(err, &fe), "%s: %v", c.name, err) {
			assert.Contains(t, err.Error(), "gguf bad.gguf")
			assert.Contains(t, err.Error(), c.want, c.name)
		}
	}
}

// FuzzGGUF: no input panics or allocates beyond its size; what parses has
// every tensor inside the data.
func FuzzGGUF(f *testing.F) {
	f.Add(sample(f))
	var buf bytes.Buffer
	require.NoError(f, Write(&buf, nil, nil))
	f.Add(buf.Bytes())
	f.Add([]byte("GGUF\x02\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := Parse("fuzz.gguf", b)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		for _, ti := range g.Tensors {
			if d := g.Data(ti); int64(len(d)) != ti.Size {
				t.Fatalf("tensor %q: %d bytes, want %d", ti.Name, len(d), ti.Size)
			}
		}
	})
}
