package gen

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/sampler"
)

// TestImagePixelsAsDiffusers: the init image, the masked image and the
// latent mask are exactly the tensors diffusers built from golden-wave3's
// inputs (PIL decoding, /255, 2x-1, binarised mask, nearest-neighbour
// latent mask).
func TestImagePixelsAsDiffusers(t *testing.T) {
	dir := golden.Wave(t, "golden-wave3")
	g := golden.Open(t, filepath.Join(dir, "inpaint4_euler_s1.0_seed42.safetensors"))
	s := presets.Default()
	s.Width, s.Height = 64, 64
	s.InitImage, s.Mask = filepath.Join(dir, "inputs", "init_64.png"), filepath.Join(dir, "inputs", "mask_64.png")
	in, err := LoadInputs(s)
	require.NoError(t, err)
	assert.Empty(t, in.ResizeNote(64, 64))
	px := pixels(s, in, sampler.InpaintBlend, 8)
	wantInit, _ := g.F32("vae_encode.0.input")
	wantMasked, _ := g.F32("vae_encode.1.input")
	wantMask, _ := g.F32("callback.mask")
	assert.Equal(t, wantInit, px.init, "init image")
	require.Len(t, px.masked, len(wantMasked))
	for i := range wantMasked { // -0 and 0 are the same pixel
		require.Equalf(t, wantMasked[i] == 0, px.masked[i] == 0, "masked image value %d", i)
		if wantMasked[i] != 0 {
			require.Equalf(t, wantMasked[i], px.masked[i], "masked image value %d", i)
		}
	}
	assert.Equal(t, wantMask[:64], px.latentMask, "latent mask")

	// Without a mask a 9-channel model repaints everything; img2img has
	// no mask at all.
	none := pixels(s, &Inputs{Init: in.Init}, sampler.InpaintConcat, 8)
	for _, v := range none.latentMask {
		require.Equal(t, float32(1), v)
	}
	for _, v := range none.masked {
		require.Zero(t, v)
	}
	assert.Nil(t, pixels(s, in, sampler.Img2Img, 8).mask)
}

// TestImageResizeAndBlur: resizing to the same size changes nothing; a
// flat image stays flat through Lanczos and the Gaussian blur; the blur
// rounds a hard edge into a ramp and keeps the mask's middle.
func TestImageResizeAndBlur(t *testing.T) {
	im := image.NewNRGBA(image.Rect(0, 0, 40, 24))
	for i := range im.Pix {
		im.Pix[i] = uint8(i * 7)
	}
	assert.Equal(t, im.Pix, resizeRGB(im, 40, 24).Pix)
	flat := image.NewNRGBA(image.Rect(0, 0, 40, 24))
	for i := range flat.Pix {
		flat.Pix[i] = 200
	}
	for _, sz := range [][2]int{{64, 64}, {16, 8}, {40, 48}} {
		r := resizeRGB(flat, sz[0], sz[1])
		require.Equal(t, image.Rect(0, 0, sz[0], sz[1]), r.Bounds())
		for _, v := range r.Pix {
			require.Equal(t, uint8(200), v)
		}
	}
	m := image.NewGray(image.Rect(0, 0, 32, 32))
	for y := 0; y < 32; y++ {
		for x := 16; x < 32; x++ {
			m.SetGray(x, y, color.Gray{255})
		}
	}
	b := gaussianBlur(m, 4)
	assert.Equal(t, uint8(0), b.GrayAt(0, 5).Y)
	assert.Equal(t, uint8(255), b.GrayAt(31, 5).Y)
	mid := b.GrayAt(15, 5).Y
	assert.True(t, mid > 60 && mid < 128, "left of the edge: %d", mid)
	assert.True(t, b.GrayAt(16, 5).Y >= 128, "right of the edge stays repainted")
	half := resizeGray(m, 8, 8)
	assert.Equal(t, uint8(0), half.GrayAt(0, 0).Y)
	assert.Equal(t, uint8(255), half.GrayAt(7, 7).Y)
}

// pngWithSize is a PNG whose header says w x h (no pixel data).
func pngWithSize(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		_ = binary.Write(&b, binary.BigEndian, uint32(len(data)))
		b.WriteString(typ)
		b.Write(data)
		c := crc32.NewIEEE()
		c.Write([]byte(typ))
		c.Write(data)
		_ = binary.Write(&b, binary.BigEndian, c.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8] = 8
	chunk("IHDR", ihdr)
	chunk("IEND", nil)
	return b.Bytes()
}

// TestLoadInputsBadFiles: an init image or mask that is not a PNG or JPEG,
// has no pixels, is not a file, is missing, or (the mask) is another size
// than the init image is refused naming the file and the problem.
func TestLoadInputsBadFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o644))
		return p
	}
	encode := func(w, h int, gray bool) []byte {
		var b bytes.Buffer
		var im image.Image = image.NewNRGBA(image.Rect(0, 0, w, h))
		if gray {
			im = image.NewGray(image.Rect(0, 0, w, h))
		}
		require.NoError(t, png.Encode(&b, im))
		return b.Bytes()
	}
	good := write("good.png", encode(64, 64, false))
	var jb bytes.Buffer
	require.NoError(t, jpeg.Encode(&jb, image.NewRGBA(image.Rect(0, 0, 64, 64)), nil))
	goodJPEG := write("good.jpg", jb.Bytes())
	mask := write("mask.png", encode(64, 64, true))
	small := write("small.png", encode(32, 64, true))
	text := write("notes.png", []byte("not an image at all"))
	gif := write("anim.gif", []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"))
	empty := write("empty.png", pngWithSize(0, 64))
	truncated := write("cut.png", encode(64, 64, false)[:60])
	folder := filepath.Join(dir, "folder.png")
	require.NoError(t, os.Mkdir(folder, 0o755))
	fifo := filepath.Join(dir, "pipe.png")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))

	cases := []struct {
		init, mask, want string
	}{
		{text, "", "init image " + text + ": not a PNG or JPEG image"},
		{gif, "", "init image " + gif + ": not a PNG or JPEG image"},
		{empty, "", "init image " + empty + ": has no pixels (0x64)"},
		{truncated, "", "init image " + truncated + ": not a readable"},
		{folder, "", "init image " + folder + ": is a folder, not an image file"},
		{good, fifo, "mask " + fifo + ": is a named pipe (FIFO), not an image file"},
		{filepath.Join(dir, "absent.png"), "", "init image " + filepath.Join(dir, "absent.png") + ": no such file or directory"},
		{good, text, "mask " + text + ": not a PNG or JPEG image"},
		{good, empty, "mask " + empty + ": has no pixels"},
		{good, small, "mask " + small + ": is 32x64 but the init image " + good + " is 64x64; they must be the same size"},
		{"", mask, "mask " + mask + ": a mask needs an init image"},
	}
	for _, c := range cases {
		s := presets.Default()
		s.InitImage, s.Mask = c.init, c.mask
		_, err := LoadInputs(s)
		require.Error(t, err, c.want)
		assert.Contains(t, err.Error(), c.want)
		var ie *ImageError
		assert.ErrorAs(t, err, &ie)
	}
	s := presets.Default()
	s.InitImage, s.Mask = goodJPEG, mask
	in, err := LoadInputs(s)
	require.NoError(t, err)
	assert.Equal(t, image.Pt(64, 64), in.Init.Bounds().Size())
	assert.Contains(t, in.ResizeNote(128, 64), "resizing the init image "+goodJPEG+" and the mask "+mask+" from 64x64 to 128x64")
}

// TestReadImageAndMask: the studio's readers name the file and the
// problem as LoadInputs does; a mask blur of 0 is the mask itself.
func TestReadImageAndMask(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.png")
	require.NoError(t, os.WriteFile(bad, []byte("text"), 0o644))
	_, err := ReadImage("init image", bad)
	assert.EqualError(t, err, "init image "+bad+": not a PNG or JPEG image")
	_, err = ReadMask(filepath.Join(dir, "none.png"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "mask "+filepath.Join(dir, "none.png")+": ")
	g := image.NewGray(image.Rect(0, 0, 9, 9))
	g.Pix[40] = 255
	assert.Same(t, g, BlurMask(g, 0))
	soft := BlurMask(g, 1)
	assert.Equal(t, gaussianBlur(g, 1).Pix, soft.Pix)
	assert.Less(t, soft.Pix[40], uint8(255))
	assert.Greater(t, soft.Pix[41], uint8(0))
}
