package gl

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	gogl "github.com/go-gl/gl/v4.3-core/gl"
)

// Linked programs are cached on disk as GL program binaries
// (GL_ARB_get_program_binary), so a second start compiles no GLSL. An entry
// is named by a hash of the driver (renderer, version, vendor) and the full
// source with its defines; a driver update changes the name, and an entry
// the driver refuses, or one whose checksum does not match, is ignored and
// rewritten. Entries are written to a temporary file and renamed, so a
// reader never sees half of one.
//
// STEPWISE_GL_CACHE names another folder, or "off" to disable the cache; by
// default it is os.UserCacheDir()/stepwise/gl-programs.

// progCacheMagic starts every cache entry (format version included).
var progCacheMagic = []byte("stepwise-gl-program-1\n")

// progCache is the GL thread's program binary cache. The zero value (empty
// dir) is a disabled cache.
type progCache struct {
	dir    string // folder of entries; empty when disabled
	driver string // renderer, version and vendor, part of every key
	hits   int    // programs loaded from the cache (for tests)
	writes int    // entries written
}

// newProgCache sets up the cache for the current context: disabled when the
// driver offers no binary formats, when STEPWISE_GL_CACHE is "off", or when
// there is no user cache folder.
func newProgCache() progCache {
	var n int32
	gogl.GetIntegerv(gogl.NUM_PROGRAM_BINARY_FORMATS, &n)
	if n <= 0 {
		return progCache{}
	}
	dir := cacheDir()
	if dir == "" {
		return progCache{}
	}
	driver := glString(gogl.RENDERER) + "\n" + glString(gogl.VERSION) + "\n" + glString(gogl.VENDOR)
	return progCache{dir: dir, driver: driver}
}

// cacheDir is the folder of the program cache and the tuner's decisions:
// STEPWISE_GL_CACHE, or os.UserCacheDir()/stepwise/gl-programs; empty when
// STEPWISE_GL_CACHE is "off" or there is no user cache folder.
func cacheDir() string {
	switch dir := os.Getenv("STEPWISE_GL_CACHE"); dir {
	case "off":
		return ""
	case "":
		base, err := os.UserCacheDir()
		if err != nil {
			return ""
		}
		return filepath.Join(base, "stepwise", "gl-programs")
	default:
		return dir
	}
}

// path is the entry file for a program's source.
func (c *progCache) path(src string) string {
	h := sha256.New()
	h.Write([]byte(c.driver))
	h.Write([]byte{0})
	h.Write([]byte(src))
	return filepath.Join(c.dir, hex.EncodeToString(h.Sum(nil))[:40]+".bin")
}

// has reports whether src has an entry (one the driver may yet refuse).
func (c *progCache) has(src string) bool {
	if c.dir == "" {
		return false
	}
	_, err := os.Stat(c.path(src))
	return err == nil
}

// load makes a program from the cached binary of src, or returns 0 when
// there is none or the driver refuses it.
func (c *progCache) load(src string) uint32 {
	if c.dir == "" {
		return 0
	}
	raw, err := os.ReadFile(c.path(src))
	if err != nil {
		return 0
	}
	format, payload, err := decodeEntry(raw)
	if err != nil {
		return 0
	}
	prog := gogl.CreateProgram()
	gogl.ProgramBinary(prog, format, unsafe.Pointer(&payload[0]), int32(len(payload)))
	var ok int32
	gogl.GetProgramiv(prog, gogl.LINK_STATUS, &ok)
	if ok == 0 {
		gogl.DeleteProgram(prog)
		for gogl.GetError() != gogl.NO_ERROR {
		}
		return 0
	}
	c.hits++
	return prog
}

// store writes prog's binary as src's entry. Failures only cost the next
// start a compile, so they are not reported.
func (c *progCache) store(src string, prog uint32) {
	if c.dir == "" {
		return
	}
	var n int32
	gogl.GetProgramiv(prog, gogl.PROGRAM_BINARY_LENGTH, &n)
	if n <= 0 {
		return
	}
	payload := make([]byte, n)
	var got int32
	var format uint32
	gogl.GetProgramBinary(prog, n, &got, &format, unsafe.Pointer(&payload[0]))
	if got <= 0 || gogl.GetError() != gogl.NO_ERROR {
		return
	}
	if err := writeAtomic(c.path(src), encodeEntry(format, payload[:got])); err == nil {
		c.writes++
	}
}

// encodeEntry lays out an entry: magic, binary format, payload length,
// SHA-256 of the payload, payload.
func encodeEntry(format uint32, payload []byte) []byte {
	var b bytes.Buffer
	b.Write(progCacheMagic)
	var hdr [8]byte
	binary.LittleEndian.PutUint32(hdr[0:], format)
	binary.LittleEndian.PutUint32(hdr[4:], uint32(len(payload)))
	b.Write(hdr[:])
	sum := sha256.Sum256(payload)
	b.Write(sum[:])
	b.Write(payload)
	return b.Bytes()
}

// decodeEntry checks an entry and returns its binary format and payload.
func decodeEntry(raw []byte) (uint32, []byte, error) {
	if !bytes.HasPrefix(raw, progCacheMagic) {
		return 0, nil, errors.New("not a program cache entry")
	}
	raw = raw[len(progCacheMagic):]
	if len(raw) < 8+sha256.Size {
		return 0, nil, errors.New("truncated header")
	}
	format := binary.LittleEndian.Uint32(raw[0:])
	n := binary.LittleEndian.Uint32(raw[4:])
	sum := raw[8 : 8+sha256.Size]
	payload := raw[8+sha256.Size:]
	if n == 0 || uint32(len(payload)) != n {
		return 0, nil, fmt.Errorf("payload is %d bytes, header says %d", len(payload), n)
	}
	if got := sha256.Sum256(payload); !bytes.Equal(got[:], sum) {
		return 0, nil, errors.New("checksum mismatch")
	}
	return format, payload, nil
}

// writeAtomic writes data to path through a temporary file in the same
// folder and a rename.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		os.Remove(f.Name())
	}
	return werr
}
