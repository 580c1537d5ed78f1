package gen

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	_ "image/jpeg" // init images and masks may be JPEG
	_ "image/png"
	"io/fs"
	"math"
	"strings"

	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/models"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
	"github.com/stepwise/stepwise/sampler"
)

// Limits of the images a generation starts from.
const (
	// MaxInputBytes caps an init image or mask file.
	MaxInputBytes = 256 << 20
	// MaxInputPixels caps its pixels (presets.MaxSize squared).
	MaxInputPixels = presets.MaxSize * presets.MaxSize
)

// Inputs are the images a generation starts from, decoded and checked: the
// init image (img2img; nil for text to image) and the mask (inpainting;
// nil for none), with the paths they came from.
type Inputs struct {
	Init     *image.NRGBA
	Mask     *image.Gray
	InitPath string
	MaskPath string
	// Control is the ControlNet's control image (nil for none), as read:
	// the edge map is made from it (Settings.Canny) when a run starts.
	Control     *image.NRGBA
	ControlPath string
	// IPImage is an IP-Adapter's reference image (nil without one).
	IPImage     *image.NRGBA
	IPImagePath string
}

// ImageError reports an init image or mask that cannot be used: its role
// ("init image", "mask"), the file and what is wrong with it.
type ImageError struct {
	Role, Path, Problem string
}

func (e *ImageError) Error() string { return fmt.Sprintf("%s %s: %s", e.Role, e.Path, e.Problem) }

// LoadInputs reads the init image and the mask that s names (none when s
// names none) and checks them before any model work: each must be a PNG or
// JPEG file with pixels, at most MaxInputPixels, and the mask the size of
// the init image. An IP-Adapter's reference image is read the same way,
// and its adapter file and image encoder folder are checked to exist.
func LoadInputs(s presets.Settings) (*Inputs, error) {
	in := &Inputs{InitPath: s.InitImage, MaskPath: s.Mask}
	if s.Mask != "" && s.InitImage == "" {
		return nil, &ImageError{Role: "mask", Path: s.Mask, Problem: "a mask needs an init image to repaint (--init-img)"}
	}
	if s.InitImage != "" {
		im, err := readImage("init image", s.InitImage)
		if err != nil {
			return nil, err
		}
		in.Init = toNRGBA(im)
	}
	if s.ControlImage != "" {
		im, err := readImage("control image", s.ControlImage)
		if err != nil {
			return nil, err
		}
		in.Control, in.ControlPath = toNRGBA(im), s.ControlImage
	}
	if s.Mask != "" {
		im, err := readImage("mask", s.Mask)
		if err != nil {
			return nil, err
		}
		in.Mask = toGray(im)
		if a, b := in.Mask.Bounds().Size(), in.Init.Bounds().Size(); a != b {
			return nil, &ImageError{Role: "mask", Path: s.Mask, Problem: fmt.Sprintf("is %dx%d but the init image %s is %dx%d; they must be the same size",
				a.X, a.Y, s.InitImage, b.X, b.Y)}
		}
	}
	if err := loadIPInputs(s, in); err != nil {
		return nil, err
	}
	return in, nil
}

// readImage reads and decodes one PNG or JPEG file.
func readImage(role, path string) (image.Image, error) {
	fail := func(format string, args ...any) error {
		return &ImageError{Role: role, Path: path, Problem: fmt.Sprintf(format, args...)}
	}
	f, _, err := safefile.Open(path)
	if err != nil {
		var nr *safefile.NotRegularError
		var pe *fs.PathError
		switch {
		case errors.As(err, &nr):
			return nil, fail("is %s, not an image file", nr.Kind)
		case errors.As(err, &pe):
			return nil, fail("%v", pe.Err)
		}
		return nil, fail("%v", err)
	}
	defer f.Close()
	data, err := safefile.ReadAll(f, path, MaxInputBytes)
	if err != nil {
		var tl *safefile.TooLargeError
		if errors.As(err, &tl) {
			return nil, fail("is larger than %s", safefile.Bytes(MaxInputBytes))
		}
		return nil, fail("%v", err)
	}
	if w, h, ok := pngSize(data); ok && (w == 0 || h == 0) {
		return nil, fail("has no pixels (%dx%d)", w, h) // the decoder only says "invalid format"
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if errors.Is(err, image.ErrFormat) || (err == nil && format != "png" && format != "jpeg") {
		return nil, fail("not a PNG or JPEG image")
	}
	if err != nil {
		return nil, fail("not a readable image (%v)", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fail("has no pixels (%dx%d)", cfg.Width, cfg.Height)
	}
	if int64(cfg.Width)*int64(cfg.Height) > MaxInputPixels {
		return nil, fail("is %dx%d, more pixels than the %dx%d Stepwise takes", cfg.Width, cfg.Height, presets.MaxSize, presets.MaxSize)
	}
	im, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fail("not a readable %s image (%v)", map[string]string{"png": "PNG", "jpeg": "JPEG"}[format], err)
	}
	return im, nil
}

// pngSize reads the size in a PNG's header (ok false when data is not one).
func pngSize(data []byte) (w, h uint32, ok bool) {
	if len(data) < 24 || string(data[:8]) != "\x89PNG\r\n\x1a\n" || string(data[12:16]) != "IHDR" {
		return 0, 0, false
	}
	return binary.BigEndian.Uint32(data[16:]), binary.BigEndian.Uint32(data[20:]), true
}

// toNRGBA converts an image to 8-bit RGB with alpha not premultiplied (the
// alpha is ignored afterwards, as PIL's convert("RGB") drops it).
func toNRGBA(im image.Image) *image.NRGBA {
	b := im.Bounds()
	out := image.NewNRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(out, out.Bounds(), im, b.Min, draw.Src)
	return out
}

// toGray converts a mask to 8-bit grey as PIL's convert("L") does: grey
// images as they are, colour by ITU-R 601 luma (R*19595 + G*38470 +
// B*7471 + 2^15) >> 16, alpha ignored.
func toGray(im image.Image) *image.Gray {
	b := im.Bounds()
	out := image.NewGray(image.Rect(0, 0, b.Dx(), b.Dy()))
	if g, ok := im.(*image.Gray); ok {
		draw.Draw(out, out.Bounds(), g, b.Min, draw.Src)
		return out
	}
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			var v uint8
			switch c := im.At(b.Min.X+x, b.Min.Y+y).(type) {
			case color.Gray16:
				v = uint8(c.Y >> 8)
			default:
				n := color.NRGBAModel.Convert(c).(color.NRGBA)
				v = uint8((uint32(n.R)*19595 + uint32(n.G)*38470 + uint32(n.B)*7471 + 1<<15) >> 16)
			}
			out.Pix[y*out.Stride+x] = v
		}
	}
	return out
}

// ResizeNote says how StartInputs will resize the inputs for a w x h
// image: "" when they are that size already.
func (in *Inputs) ResizeNote(w, h int) string {
	if in == nil {
		return ""
	}
	var notes []string
	if in.Init != nil {
		if sz := in.Init.Bounds().Size(); sz.X != w || sz.Y != h {
			what := "the init image " + in.InitPath
			if in.Mask != nil {
				what += " and the mask " + in.MaskPath
			}
			notes = append(notes, fmt.Sprintf("resizing %s from %dx%d to %dx%d (Lanczos, as diffusers)", what, sz.X, sz.Y, w, h))
		}
	}
	if in.Control != nil {
		if sz := in.Control.Bounds().Size(); sz.X != w || sz.Y != h {
			notes = append(notes, fmt.Sprintf("resizing the control image %s from %dx%d to %dx%d (Lanczos, as diffusers)", in.ControlPath, sz.X, sz.Y, w, h))
		}
	}
	return strings.Join(notes, "; ")
}

// controlPixels prepares the control image of a w x h run as diffusers'
// control_image_processor does (resized with Lanczos, RGB / 255 in [0, 1],
// not normalised to [-1, 1]); with s.Canny it becomes its edge map first,
// at the output size (render.Canny with s's thresholds, the map in all
// three channels). It returns [3, h, w] planes, or nil without a control
// image.
func controlPixels(s presets.Settings, in *Inputs) []float32 {
	if in == nil || in.Control == nil {
		return nil
	}
	w, h := s.Width, s.Height
	im := resizeRGB(in.Control, w, h)
	if s.Canny {
		edges := render.Canny(im, s.CannyLow, s.CannyHigh)
		for i, v := range edges.Pix {
			copy(im.Pix[4*i:4*i+3], []uint8{v, v, v})
		}
	}
	plane := w * h
	out := make([]float32, 3*plane)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			p := im.Pix[y*im.Stride+4*x:]
			for c := 0; c < 3; c++ {
				out[c*plane+y*w+x] = float32(p[c]) / 255
			}
		}
	}
	return out
}

// ControlEdges is the control image as a run given s sees it: resized to
// the output size and, with s.Canny, turned into its edge map (for a
// preview of what the ControlNet reads); nil without a control image.
func ControlEdges(s presets.Settings, in *Inputs) *image.NRGBA {
	px := controlPixels(s, in)
	if px == nil {
		return nil
	}
	w, h := s.Width, s.Height
	out := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < w*h; i++ {
		for c := 0; c < 3; c++ {
			out.Pix[4*i+c] = uint8(px[c*w*h+i]*255 + 0.5)
		}
		out.Pix[4*i+3] = 255
	}
	return out
}

// imageKind is how a model and inputs condition a run: 0 for text to
// image on an ordinary model.
func imageKind(p *models.Pipeline, in *Inputs) sampler.ImageKind {
	switch {
	case p.Inpainting():
		return sampler.InpaintConcat
	case in == nil || in.Init == nil:
		return 0
	case in.Mask != nil:
		return sampler.InpaintBlend
	}
	return sampler.Img2Img
}

// conditionImage prepares the image conditioning of a run as diffusers'
// img2img and inpainting pipelines do (see pixels), with the VAE encodes
// that the kind needs: the init image unless a 9-channel model repaints at
// strength 1, the masked image for 9-channel models.
func conditionImage(p *models.Pipeline, s presets.Settings, in *Inputs) (*sampler.Image, error) {
	kind := imageKind(p, in)
	if kind == 0 {
		return nil, nil
	}
	vc := p.Model.VAE
	im := &sampler.Image{Kind: kind, Scale: vc.ScalingFactor}
	if vc.ShiftFactor != nil {
		im.Shift = *vc.ShiftFactor
	}
	if c := p.LatentChannels(); len(vc.LatentsMean) == c && len(vc.LatentsStd) == c {
		im.Mean, im.Std = vc.LatentsMean, vc.LatentsStd
	}
	px := pixels(s, in, kind, p.Downscale())
	im.Mask = px.latentMask
	encode := func(what string, x []float32) ([]float32, error) {
		m, _, err := p.EncodePixels(x, [4]int{1, 3, s.Height, s.Width})
		if err != nil {
			return nil, deviceFault(p, "VAE encoder", 0, 0, fmt.Errorf("%s: %w", what, err))
		}
		return m, nil
	}
	partial := s.InitImage != "" && s.Strength > 0 && s.Strength < 1
	var err error
	if kind != sampler.InpaintConcat || partial {
		if px.init == nil {
			return nil, errors.New("img2img at a strength below 1 needs an init image")
		}
		if im.Init, err = encode("init image", px.init); err != nil {
			return nil, err
		}
	}
	if kind == sampler.InpaintConcat {
		if im.Masked, err = encode("masked image", px.masked); err != nil {
			return nil, err
		}
	}
	return im, nil
}

// imagePixels are the host tensors of an image-conditioned run.
type imagePixels struct {
	init       []float32 // [3, h, w] in [-1, 1]; nil without an init image
	masked     []float32 // init with the repainted pixels 0 (inpainting)
	mask       []float32 // [h*w], 1 = repaint (inpainting)
	latentMask []float32 // [h/ds * w/ds]
}

// pixels prepares the inputs for a s.Width x s.Height run as diffusers'
// pipelines do: the init image resized (Lanczos) and mapped to [-1, 1];
// the mask blurred (A1111's "Mask blur", before resizing), resized and
// binarised (>= 0.5 repaints), its latent form taken at every ds-th pixel
// (nearest, as F.interpolate); the masked image. An inpainting kind
// without a mask repaints everything (A1111's conditioning for text to
// image and img2img on inpainting models).
func pixels(s presets.Settings, in *Inputs, kind sampler.ImageKind, ds int) imagePixels {
	w, h := s.Width, s.Height
	var px imagePixels
	if in != nil && in.Init != nil {
		px.init = normalise(resizeRGB(in.Init, w, h))
	}
	if kind == sampler.Img2Img {
		return px
	}
	px.mask = make([]float32, w*h)
	if in != nil && in.Mask != nil {
		g := in.Mask
		if s.MaskBlur > 0 {
			g = gaussianBlur(g, float64(s.MaskBlur))
		}
		g = resizeGray(g, w, h)
		for i, v := range g.Pix {
			if float32(v)/255 >= 0.5 {
				px.mask[i] = 1
			}
		}
	} else {
		for i := range px.mask {
			px.mask[i] = 1
		}
	}
	lw, lh := w/ds, h/ds
	px.latentMask = make([]float32, lw*lh)
	for i := 0; i < lh; i++ {
		for j := 0; j < lw; j++ {
			px.latentMask[i*lw+j] = px.mask[i*ds*w+j*ds]
		}
	}
	px.masked = make([]float32, 3*w*h)
	if px.init != nil {
		for i := range px.masked {
			if px.mask[i%(w*h)] < 0.5 {
				px.masked[i] = px.init[i]
			}
		}
	}
	return px
}

// normalise maps an image to the VAE's input, [3, h, w] in [-1, 1], as
// diffusers' VaeImageProcessor (x/255 in float32, then 2x - 1).
func normalise(im *image.NRGBA) []float32 {
	b := im.Bounds()
	w, h := b.Dx(), b.Dy()
	plane := w * h
	out := make([]float32, 3*plane)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			p := im.Pix[y*im.Stride+4*x:]
			for c := 0; c < 3; c++ {
				out[c*plane+y*w+x] = 2*(float32(p[c])/255) - 1
			}
		}
	}
	return out
}

// lanczos3 is PIL's Lanczos filter, support 3.
func lanczos3(x float64) float64 {
	sinc := func(x float64) float64 {
		if x == 0 {
			return 1
		}
		x *= math.Pi
		return math.Sin(x) / x
	}
	if x < -3 || x >= 3 {
		return 0
	}
	return sinc(x) * sinc(x/3)
}

// resampleAxis resizes lines of inSize 8-bit samples to outSize with
// PIL's Lanczos coefficients (antialiased when shrinking: the filter is
// stretched by the scale), rounding to 8 bits.
func resampleAxis(inSize, outSize, lines int, get func(line, i int) uint8, put func(line, i int, v uint8)) {
	scale := float64(inSize) / float64(outSize)
	fs := max(scale, 1)
	support := 3 * fs
	for o := 0; o < outSize; o++ {
		center := (float64(o) + 0.5) * scale
		lo := max(int(center-support+0.5), 0)
		hi := min(int(center+support+0.5), inSize)
		ks := make([]float64, hi-lo)
		sum := 0.0
		for i := range ks {
			ks[i] = lanczos3((float64(i+lo) - center + 0.5) / fs)
			sum += ks[i]
		}
		for l := 0; l < lines; l++ {
			v := 0.0
			for i, k := range ks {
				v += k * float64(get(l, i+lo))
			}
			if sum != 0 {
				v /= sum
			}
			put(l, o, clip8(v))
		}
	}
}

func clip8(v float64) uint8 { return uint8(min(max(math.Round(v), 0), 255)) }

// resizePlanes resizes an 8-bit image (ch interleaved channels, rows
// stride apart) from w x h to nw x nh: horizontally, then vertically, each
// pass rounded to 8 bits, as PIL's resample does. The result is packed.
func resizePlanes(pix []uint8, stride, ch, w, h, nw, nh int) []uint8 {
	cur := make([]uint8, w*h*ch)
	for y := 0; y < h; y++ {
		copy(cur[y*w*ch:(y+1)*w*ch], pix[y*stride:])
	}
	if nw != w {
		next := make([]uint8, nw*h*ch)
		for c := 0; c < ch; c++ {
			resampleAxis(w, nw, h,
				func(l, i int) uint8 { return cur[(l*w+i)*ch+c] },
				func(l, i int, v uint8) { next[(l*nw+i)*ch+c] = v })
		}
		cur = next
	}
	if nh != h {
		next := make([]uint8, nw*nh*ch)
		for c := 0; c < ch; c++ {
			resampleAxis(h, nh, nw,
				func(l, i int) uint8 { return cur[(i*nw+l)*ch+c] },
				func(l, i int, v uint8) { next[(i*nw+l)*ch+c] = v })
		}
		cur = next
	}
	return cur
}

// resizeRGB resizes an image to w x h with PIL's Lanczos (a copy when it
// has that size already).
func resizeRGB(im *image.NRGBA, w, h int) *image.NRGBA {
	b := im.Bounds()
	out := image.NewNRGBA(image.Rect(0, 0, w, h))
	out.Pix = resizePlanes(im.Pix, im.Stride, 4, b.Dx(), b.Dy(), w, h)
	return out
}

// resizeGray resizes a mask to w x h with PIL's Lanczos.
func resizeGray(g *image.Gray, w, h int) *image.Gray {
	b := g.Bounds()
	out := image.NewGray(image.Rect(0, 0, w, h))
	out.Pix = resizePlanes(g.Pix, g.Stride, 1, b.Dx(), b.Dy(), w, h)
	return out
}

// gaussianBlur blurs a mask as A1111's "Mask blur" does with OpenCV:
// cv2.GaussianBlur with a (2*int(2.5*sigma+0.5)+1)-tap kernel, first
// along x, then along y, each pass rounded to 8 bits, borders mirrored
// without repeating the edge (BORDER_REFLECT_101).
func gaussianBlur(g *image.Gray, sigma float64) *image.Gray {
	b := g.Bounds()
	w, h := b.Dx(), b.Dy()
	r := int(2.5*sigma + 0.5)
	k := make([]float64, 2*r+1)
	sum := 0.0
	for i := range k {
		d := float64(i - r)
		k[i] = math.Exp(-d * d / (2 * sigma * sigma))
		sum += k[i]
	}
	for i := range k {
		k[i] /= sum
	}
	reflect := func(i, n int) int {
		if n == 1 {
			return 0
		}
		for i < 0 || i >= n {
			if i < 0 {
				i = -i
			}
			if i >= n {
				i = 2*(n-1) - i
			}
		}
		return i
	}
	pass := func(src []uint8, n, lines int, idx func(line, i int) int) []uint8 {
		out := make([]uint8, w*h)
		for l := 0; l < lines; l++ {
			for i := 0; i < n; i++ {
				v := 0.0
				for j, kj := range k {
					v += kj * float64(src[idx(l, reflect(i+j-r, n))])
				}
				out[idx(l, i)] = clip8(v)
			}
		}
		return out
	}
	src := make([]uint8, w*h)
	for y := 0; y < h; y++ {
		copy(src[y*w:(y+1)*w], g.Pix[y*g.Stride:])
	}
	x := pass(src, w, h, func(l, i int) int { return l*w + i })
	y := pass(x, h, w, func(l, i int) int { return i*w + l })
	out := image.NewGray(image.Rect(0, 0, w, h))
	out.Pix = y
	return out
}

// ReadImage reads an init, control or reference image as LoadInputs does
// (a PNG or JPEG with pixels, within the limits), for a caller that shows
// it before a run; role names it in the *ImageError ("init image").
func ReadImage(role, path string) (*image.NRGBA, error) {
	im, err := readImage(role, path)
	if err != nil {
		return nil, err
	}
	return toNRGBA(im), nil
}

// ReadMask reads a mask as LoadInputs does: 8-bit grey, colour by luma.
func ReadMask(path string) (*image.Gray, error) {
	im, err := readImage("mask", path)
	if err != nil {
		return nil, err
	}
	return toGray(im), nil
}

// BlurMask is the mask a run repaints with after A1111's "Mask blur" of
// blur pixels (see pixels): g itself when blur is 0.
func BlurMask(g *image.Gray, blur int) *image.Gray {
	if blur <= 0 {
		return g
	}
	return gaussianBlur(g, float64(blur))
}
