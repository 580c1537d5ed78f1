package render

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/stepwise/stepwise/internal/safefile"
)

// FormatError reports a PNG that is malformed where its text is read.
type FormatError struct {
	Offset int64  // byte offset of the chunk (or of the problem) in the stream
	Chunk  string // the chunk type, e.g. "tEXt"; empty for the signature
	Msg    string
}

func (e *FormatError) Error() string {
	if e.Chunk == "" {
		return fmt.Sprintf("png: at byte %d: %s", e.Offset, e.Msg)
	}
	return fmt.Sprintf("png: %s chunk at byte %d: %s", e.Chunk, e.Offset, e.Msg)
}

const pngSignature = "\x89PNG\r\n\x1a\n"

// Limits on what ReadPNGText accepts.
const (
	maxTextChunk = 16 << 20 // stored bytes of one text chunk
	maxTextValue = 16 << 20 // decompressed bytes of one value
	maxChunkLen  = 1<<31 - 1
	maxTextTotal = 32 << 20 // decompressed bytes of all values together
)

// WritePNG encodes img as a PNG at path with one text chunk per entry of
// text (sorted by key, placed right after IHDR so readers that stop at IDAT
// see them): tEXt when the value is Latin-1, otherwise iTXt (UTF-8,
// uncompressed). The file is written atomically (a temporary file in the
// same folder, fsync, rename). Unless overwrite is true an existing file is
// never replaced, without a race: the temporary is hard-linked to path,
// which fails if path exists, and the error then wraps fs.ErrExist.
func WritePNG(path string, img image.Image, text map[string]string, overwrite bool) error {
	data, err := EncodePNG(img, text)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if !overwrite {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("write %s: %w", path, fs.ErrExist)
		}
	}
	// A short temporary name: one made from a long file name would pass
	// the file system's limit after all the work that made the image.
	f, err := os.CreateTemp(dir, tempPattern)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a link or rename this is a no-op or drops the extra name
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if overwrite {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
		var le *os.LinkError
		if err != nil && !errors.Is(err, fs.ErrExist) && errors.As(err, &le) {
			// No hard links on this file system: fall back to a checked
			// rename (not race-free, but the check above already ran).
			if _, serr := os.Lstat(path); serr == nil {
				err = fs.ErrExist
			} else {
				err = os.Rename(tmp, path)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: makes the new name durable
		d.Close()
	}
	RemoveStaleTemps(dir)
	return nil
}

// Temporary files of WritePNG: ".stepwise-RANDOM.tmp" (older versions wrote
// ".NAME.png.tmp-RANDOM").
const (
	tempPattern    = ".stepwise-*.tmp"
	oldTempPattern = ".*.png.tmp-*"
	// StaleTemp is the age after which a temporary file is taken for one
	// left by a killed write (no write takes that long) and removed.
	StaleTemp = 10 * time.Minute
)

// RemoveStaleTemps removes WritePNG's temporary files in dir that are older
// than StaleTemp: those of a write that was killed (SIGKILL, power loss)
// between creating and renaming them. WritePNG calls it after each write.
func RemoveStaleTemps(dir string) {
	for _, pat := range []string{tempPattern, oldTempPattern} {
		matches, _ := filepath.Glob(filepath.Join(dir, pat))
		for _, m := range matches {
			if fi, err := os.Lstat(m); err == nil && fi.Mode().IsRegular() && time.Since(fi.ModTime()) > StaleTemp {
				os.Remove(m)
			}
		}
	}
}

// MaxNameLen is the longest file name (one path element, in bytes) that
// common file systems accept.
const MaxNameLen = 255

// CheckOutput checks, before any work, that an image can be written at
// path: a file name (not empty, not a folder, at most MaxNameLen bytes) in
// an existing folder that accepts new files. The check creates and removes
// a temporary file there.
func CheckOutput(path string) error {
	if path == "" {
		return errors.New("the output file name is empty")
	}
	if strings.HasSuffix(path, "/") || strings.HasSuffix(path, string(filepath.Separator)) {
		return fmt.Errorf("%s is a folder name; name a file in it (e.g. %s)", path, filepath.Join(path, "out.png"))
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Errorf("%s is a folder; name a file in it (e.g. %s)", path, filepath.Join(path, "out.png"))
	}
	base := filepath.Base(path)
	if len(base) > MaxNameLen {
		return fmt.Errorf("the file name %.40s… is %d bytes, more than the %d a file system accepts", base, len(base), MaxNameLen)
	}
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("output folder %s does not exist", dir)
	}
	f, err := os.CreateTemp(dir, tempPattern)
	if err != nil {
		return fmt.Errorf("output folder %s: cannot write there: %w", dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// EncodePNG returns img encoded as PNG with text chunks, as WritePNG writes it.
func EncodePNG(img image.Image, text map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	enc := buf.Bytes()
	const ihdrEnd = 8 + 8 + 13 + 4
	if len(enc) < ihdrEnd || string(enc[12:16]) != "IHDR" {
		return nil, errors.New("png: encoder output does not start with IHDR")
	}
	keys := make([]string, 0, len(text))
	for k := range text {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var chunks bytes.Buffer
	for _, k := range keys {
		if err := validKeyword(k); err != nil {
			return nil, err
		}
		v := text[k]
		if latin1, ok := toLatin1(v); ok {
			writeChunk(&chunks, "tEXt", append(append([]byte(k), 0), latin1...))
		} else {
			if !utf8.ValidString(v) {
				return nil, fmt.Errorf("png: text %q is not valid UTF-8", k)
			}
			// keyword NUL, compression flag 0, method 0, empty language tag NUL,
			// empty translated keyword NUL, UTF-8 text.
			d := append([]byte(k), 0, 0, 0, 0, 0)
			writeChunk(&chunks, "iTXt", append(d, v...))
		}
	}
	out := make([]byte, 0, len(enc)+chunks.Len())
	out = append(out, enc[:ihdrEnd]...)
	out = append(out, chunks.Bytes()...)
	out = append(out, enc[ihdrEnd:]...)
	return out, nil
}

// validKeyword checks a PNG text keyword: 1-79 printable Latin-1
// characters, no leading, trailing or consecutive spaces.
func validKeyword(k string) error {
	if len(k) < 1 || len(k) > 79 {
		return fmt.Errorf("png: text keyword %q must be 1 to 79 bytes", k)
	}
	if strings.HasPrefix(k, " ") || strings.HasSuffix(k, " ") || strings.Contains(k, "  ") {
		return fmt.Errorf("png: text keyword %q has leading, trailing or double spaces", k)
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 32 || c > 126 {
			return fmt.Errorf("png: text keyword %q has a character outside printable ASCII", k)
		}
	}
	return nil
}

func toLatin1(s string) ([]byte, bool) {
	if !utf8.ValidString(s) {
		return nil, false
	}
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xff || r == 0 {
			return nil, false
		}
		b = append(b, byte(r))
	}
	return b, true
}

func fromLatin1(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b))
	for _, c := range b {
		sb.WriteRune(rune(c))
	}
	return sb.String()
}

func writeChunk(w *bytes.Buffer, typ string, data []byte) {
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(data)))
	copy(hdr[4:], typ)
	w.Write(hdr[:])
	w.Write(data)
	crc := crc32.NewIEEE()
	crc.Write(hdr[4:])
	crc.Write(data)
	var c [4]byte
	binary.BigEndian.PutUint32(c[:], crc.Sum32())
	w.Write(c[:])
}

// ReadPNGTextFile is ReadPNGText on a file; errors name the file.
//
// Only regular files are read: a folder, a FIFO (whose open would block) or
// a device gives an error saying what the path is.
func ReadPNGTextFile(path string) (map[string]string, error) {
	f, _, err := safefile.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := ReadPNGText(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// ReadPNGText reads the text chunks of a PNG stream up to IEND: tEXt and
// zTXt (Latin-1, returned as UTF-8) and iTXt (UTF-8, plain or
// zlib-compressed). Every chunk's CRC is checked. A later chunk with the same
// keyword replaces an earlier one. A malformed stream gives a *FormatError
// (or an I/O error), never a panic.
func ReadPNGText(r io.Reader) (map[string]string, error) {
	br := bufio.NewReader(r)
	var sig [8]byte
	if _, err := io.ReadFull(br, sig[:]); err != nil || string(sig[:]) != pngSignature {
		return nil, &FormatError{Offset: 0, Msg: "not a PNG file (bad signature)"}
	}
	out := map[string]string{}
	total := 0 // decompressed text bytes kept
	off := int64(8)
	first := true
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return nil, &FormatError{Offset: off, Msg: "truncated: no IEND chunk"}
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		typ := string(hdr[4:8])
		if !validChunkType(hdr[4:8]) {
			return nil, &FormatError{Offset: off, Msg: fmt.Sprintf("bad chunk type %q", typ)}
		}
		ferr := func(format string, args ...any) error {
			return &FormatError{Offset: off, Chunk: typ, Msg: fmt.Sprintf(format, args...)}
		}
		if n > maxChunkLen {
			return nil, ferr("length %d is too large", n)
		}
		if first && typ != "IHDR" {
			return nil, ferr("the first chunk must be IHDR")
		}
		first = false
		crc := crc32.NewIEEE()
		crc.Write(hdr[4:8])
		isText := typ == "tEXt" || typ == "zTXt" || typ == "iTXt"
		var data []byte
		if isText {
			if n > maxTextChunk {
				return nil, ferr("%d bytes of text is more than %d", n, maxTextChunk)
			}
			data = make([]byte, n)
			if _, err := io.ReadFull(br, data); err != nil {
				return nil, ferr("truncated")
			}
			crc.Write(data)
		} else if _, err := io.CopyN(crc, br, int64(n)); err != nil {
			return nil, ferr("truncated")
		}
		var c [4]byte
		if _, err := io.ReadFull(br, c[:]); err != nil {
			return nil, ferr("truncated (no CRC)")
		}
		if got, want := crc.Sum32(), binary.BigEndian.Uint32(c[:]); got != want {
			return nil, ferr("CRC mismatch (stored %08x, computed %08x)", want, got)
		}
		if isText {
			k, v, err := parseTextChunk(typ, data)
			if err != nil {
				return nil, ferr("%v", err)
			}
			total += len(v) - len(out[k])
			if total > maxTextTotal {
				return nil, ferr("the text chunks hold more than %d bytes in all", maxTextTotal)
			}
			out[k] = v
		}
		off += 12 + int64(n)
		if typ == "IEND" {
			return out, nil
		}
	}
}

func validChunkType(t []byte) bool {
	for _, c := range t {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// parseTextChunk decodes the data of a tEXt, zTXt or iTXt chunk.
func parseTextChunk(typ string, data []byte) (string, string, error) {
	kw, rest, ok := bytes.Cut(data, []byte{0})
	if !ok {
		return "", "", errors.New("no NUL after the keyword")
	}
	if len(kw) < 1 || len(kw) > 79 {
		return "", "", fmt.Errorf("keyword of %d bytes (want 1 to 79)", len(kw))
	}
	key := fromLatin1(kw)
	switch typ {
	case "tEXt":
		return key, fromLatin1(rest), nil
	case "zTXt":
		if len(rest) < 1 || rest[0] != 0 {
			return "", "", errors.New("compression method is not 0 (zlib)")
		}
		v, err := inflate(rest[1:])
		if err != nil {
			return "", "", err
		}
		return key, fromLatin1(v), nil
	}
	// iTXt
	if len(rest) < 2 {
		return "", "", errors.New("too short for the compression fields")
	}
	flag, method := rest[0], rest[1]
	rest = rest[2:]
	_, rest, ok = bytes.Cut(rest, []byte{0}) // language tag
	if !ok {
		return "", "", errors.New("no NUL after the language tag")
	}
	_, rest, ok = bytes.Cut(rest, []byte{0}) // translated keyword
	if !ok {
		return "", "", errors.New("no NUL after the translated keyword")
	}
	switch {
	case flag == 1 && method == 0:
		v, err := inflate(rest)
		if err != nil {
			return "", "", err
		}
		rest = v
	case flag != 0:
		return "", "", fmt.Errorf("compression flag %d / method %d", flag, method)
	}
	if !utf8.Valid(rest) {
		return "", "", errors.New("text is not valid UTF-8")
	}
	return key, string(rest), nil
}

func inflate(b []byte) ([]byte, error) {
	zr, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("zlib: %w", err)
	}
	defer zr.Close()
	v, err := io.ReadAll(io.LimitReader(zr, maxTextValue+1))
	if err != nil {
		return nil, fmt.Errorf("zlib: %w", err)
	}
	if len(v) > maxTextValue {
		return nil, fmt.Errorf("decompressed text is more than %d bytes", maxTextValue)
	}
	return v, nil
}

// UniquePath returns dir/base_NNNN.ext for the smallest NNNN >= 1 (four
// digits or more) that names no existing file. ext may be given with or
// without its dot. Another process may take the name before it is written:
// write with WritePNG(..., overwrite=false) and try again on fs.ErrExist.
func UniquePath(dir, base, ext string) string {
	if ext != "" && !strings.HasPrefix(ext, ".") {
		ext = "." + ext
	}
	for n := 1; ; n++ {
		p := filepath.Join(dir, fmt.Sprintf("%s_%04d%s", base, n, ext))
		if _, err := os.Lstat(p); err != nil {
			return p // free, or unreadable: then writing it reports why
		}
	}
}
