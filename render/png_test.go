package render

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/stepwise/stepwise/internal/golden"
)

const sampleParams = "a photograph of an astronaut riding a horse\nNegative prompt: low quality, blurry\n" +
	"Steps: 20, Sampler: Euler, Schedule type: Leading, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: sd15-mini, RNG: CPU"

// chunkTypes lists the chunk types of a PNG in order.
func chunkTypes(t *testing.T, data []byte) []string {
	t.Helper()
	var out []string
	for i := 8; i+8 <= len(data); {
		n := int(binary.BigEndian.Uint32(data[i:]))
		out = append(out, string(data[i+4:i+8]))
		i += 12 + n
	}
	return out
}

func TestWritePNGRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.png")
	img := gradient(13, 7)
	text := map[string]string{
		"parameters": sampleParams,
		"Software":   "Stepwise",
		"Comment":    "café, 100°", // Latin-1: tEXt
		"Title":      "宇宙飛行士 ✨",    // not Latin-1: iTXt
	}
	if err := WritePNG(path, img, text, false); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Text chunks come right after IHDR, before IDAT, sorted by keyword.
	types := chunkTypes(t, data)
	want := []string{"IHDR", "tEXt", "tEXt", "iTXt", "tEXt", "IDAT", "IEND"}
	if !reflect.DeepEqual(types, want) {
		t.Fatalf("chunks %v, want %v", types, want)
	}
	got, err := ReadPNGText(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, text) {
		t.Fatalf("text %q, want %q", got, text)
	}
	dec, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("image/png cannot read our file: %v", err)
	}
	for y := 0; y < 7; y++ {
		for x := 0; x < 13; x++ {
			if a, b := color.RGBAModel.Convert(dec.At(x, y)), img.At(x, y); a != b {
				t.Fatalf("pixel %d,%d: %v want %v", x, y, a, b)
			}
		}
	}
	// Never overwritten without overwrite=true.
	err = WritePNG(path, image.NewRGBA(image.Rect(0, 0, 1, 1)), nil, false)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second write: %v", err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, data) {
		t.Fatal("file changed by a refused write")
	}
	if err := WritePNG(path, image.NewRGBA(image.Rect(0, 0, 1, 1)), map[string]string{"parameters": "x"}, true); err != nil {
		t.Fatal(err)
	}
	if m, err := ReadPNGTextFile(path); err != nil || m["parameters"] != "x" {
		t.Fatalf("overwrite: %v %v", m, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("%d files in the folder, want 1 (temporaries left?)", len(entries))
	}
}

func TestWritePNGNoOverwriteRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "race.png")
	img := gradient(8, 8)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, exists := 0, 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			err := WritePNG(path, img, map[string]string{"n": string(rune('0' + i))}, false)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, fs.ErrExist):
				exists++
			default:
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 || exists != 7 {
		t.Fatalf("%d writers succeeded, %d refused; want 1 and 7", wins, exists)
	}
}

func TestWritePNGRejectsBadKeywords(t *testing.T) {
	for _, k := range []string{"", " lead", "two  spaces", "nul\x00", "é", strings.Repeat("k", 80)} {
		if _, err := EncodePNG(gradient(2, 2), map[string]string{k: "v"}); err == nil {
			t.Errorf("keyword %q accepted", k)
		}
	}
}

// buildPNG assembles a PNG from a real IHDR/IDAT/IEND plus extra chunks
// inserted after IHDR.
func buildPNG(t *testing.T, extra func(b *bytes.Buffer)) []byte {
	t.Helper()
	enc, err := EncodePNG(gradient(4, 4), nil)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.Write(enc[:33])
	extra(&b)
	b.Write(enc[33:])
	return b.Bytes()
}

func zlibBytes(s string) []byte {
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.Bytes()
}

func TestReadPNGTextChunkKinds(t *testing.T) {
	data := buildPNG(t, func(b *bytes.Buffer) {
		// iTXt, uncompressed, as some tools write "parameters" (with a language tag).
		writeChunk(b, "iTXt", append([]byte("parameters\x00\x00\x00en\x00Parameter\x00"), "宇宙, Steps: 20"...))
		// iTXt, zlib-compressed.
		writeChunk(b, "iTXt", append([]byte("zipped\x00\x01\x00\x00\x00"), zlibBytes("ünïcode ✓")...))
		// zTXt holds Latin-1.
		writeChunk(b, "zTXt", append([]byte("Comment\x00\x00"), zlibBytes("caf\xe9")...))
		// tEXt in Latin-1.
		writeChunk(b, "tEXt", []byte("Author\x00Ren\xe9"))
	})
	got, err := ReadPNGText(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"parameters": "宇宙, Steps: 20", "zipped": "ünïcode ✓", "Comment": "café", "Author": "René"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestReadPNGTextErrors(t *testing.T) {
	good := buildPNG(t, func(b *bytes.Buffer) { writeChunk(b, "tEXt", []byte("parameters\x00"+sampleParams)) })
	if m, err := ReadPNGText(bytes.NewReader(good)); err != nil || m["parameters"] != sampleParams {
		t.Fatalf("good file: %v %v", m, err)
	}
	corrupt := append([]byte(nil), good...)
	corrupt[33+8+20] ^= 0x20 // a byte inside the tEXt data
	bigLen := append([]byte(nil), good...)
	binary.BigEndian.PutUint32(bigLen[33:], 0x7fffffff)
	cases := map[string]struct {
		data []byte
		want string
	}{
		"crc":        {corrupt, "tEXt chunk at byte 33: CRC mismatch"},
		"truncated":  {good[:len(good)-20], "truncated"},
		"signature":  {[]byte("GIF89a...."), "not a PNG"},
		"empty":      {nil, "not a PNG"},
		"huge text":  {bigLen, "more than"},
		"no nul":     {buildPNG(t, func(b *bytes.Buffer) { writeChunk(b, "tEXt", []byte("parameters")) }), "no NUL"},
		"bad zlib":   {buildPNG(t, func(b *bytes.Buffer) { writeChunk(b, "zTXt", []byte("k\x00\x00not zlib")) }), "zlib"},
		"bad utf8":   {buildPNG(t, func(b *bytes.Buffer) { writeChunk(b, "iTXt", []byte("k\x00\x00\x00\x00\x00\xff\xfe")) }), "UTF-8"},
		"bad method": {buildPNG(t, func(b *bytes.Buffer) { writeChunk(b, "iTXt", []byte("k\x00\x01\x07\x00\x00x")) }), "compression"},
		"no ihdr":    {append([]byte(pngSignature), good[33:]...), "first chunk must be IHDR"},
	}
	for name, c := range cases {
		_, err := ReadPNGText(bytes.NewReader(c.data))
		var fe *FormatError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want a *FormatError containing %q", name, err, c.want)
		}
	}
}

// A PNG written by another program (the reference pipeline, via PIL) has no
// text; reading it is no error. With a parameters chunk spliced in as A1111
// would write it, the text comes back.
func TestReadPNGTextForeignFile(t *testing.T) {
	data, err := os.ReadFile(golden.Path(t, "e2e_euler_seed42.png"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ReadPNGText(bytes.NewReader(data))
	if err != nil || len(m) != 0 {
		t.Fatalf("got %v, %v", m, err)
	}
	var b bytes.Buffer
	b.Write(data[:33])
	writeChunk(&b, "tEXt", []byte("parameters\x00"+sampleParams))
	b.Write(data[33:])
	if m, err := ReadPNGText(&b); err != nil || m["parameters"] != sampleParams {
		t.Fatalf("spliced: %v, %v", m, err)
	}
}

func TestUniquePath(t *testing.T) {
	dir := t.TempDir()
	if p := UniquePath(dir, "stepwise", "png"); p != filepath.Join(dir, "stepwise_0001.png") {
		t.Fatal(p)
	}
	for _, n := range []string{"stepwise_0001.png", "stepwise_0002.png", "stepwise_0004.png"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o644)
	}
	if p := UniquePath(dir, "stepwise", ".png"); p != filepath.Join(dir, "stepwise_0003.png") {
		t.Fatal(p)
	}
}

func FuzzReadPNGText(f *testing.F) {
	enc, err := EncodePNG(gradient(3, 2), map[string]string{"parameters": sampleParams, "Title": "✨"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ReadPNGText(bytes.NewReader(data))
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error is not a *FormatError: %v", err)
			}
			return
		}
		// What was read can be written again and read back the same.
		out, err := EncodePNG(gradient(1, 1), m)
		if err != nil {
			return // e.g. a keyword that is not printable ASCII
		}
		m2, err := ReadPNGText(bytes.NewReader(out))
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-read: %v\n%q\n%q", err, m, m2)
		}
	})
}

// FuzzPNGTextChunk fuzzes the text-chunk decoders behind a valid CRC (most
// mutations of a whole file only break the CRC): the payload is wrapped as a
// tEXt, zTXt or iTXt chunk of an otherwise valid PNG.
func FuzzPNGTextChunk(f *testing.F) {
	f.Add(uint8(0), []byte("parameters\x00"+sampleParams))
	f.Add(uint8(1), append([]byte("Comment\x00\x00"), zlibBytes("caf\xe9")...))
	f.Add(uint8(2), append([]byte("parameters\x00\x00\x00en\x00Parameter\x00"), "宇宙, Steps: 20"...))
	f.Add(uint8(2), append([]byte("zipped\x00\x01\x00\x00\x00"), zlibBytes("ünïcode ✓")...))
	base, err := EncodePNG(gradient(1, 1), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, kind uint8, payload []byte) {
		typ := [3]string{"tEXt", "zTXt", "iTXt"}[kind%3]
		var b bytes.Buffer
		b.Write(base[:33])
		writeChunk(&b, typ, payload)
		b.Write(base[33:])
		m, err := ReadPNGText(&b)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Chunk != typ {
				t.Fatalf("error not a *FormatError on the %s chunk: %v", typ, err)
			}
			return
		}
		if len(m) != 1 {
			t.Fatalf("%d entries from one chunk", len(m))
		}
		for k, v := range m {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				t.Fatalf("invalid UTF-8 returned: %q %q", k, v)
			}
		}
	})
}
