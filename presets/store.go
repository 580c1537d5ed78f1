package presets

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/stepwise/stepwise/internal/safefile"
)

// Preset is named settings: a user's file or a built-in.
type Preset struct {
	Name     string
	Settings Settings
	Builtin  bool   // read-only, from Builtins
	Path     string // the file, for user presets
}

// ErrReadOnly is returned when saving, renaming or deleting a built-in preset.
var ErrReadOnly = errors.New("built-in presets are read-only")

// MaxNameLen is the longest preset name, in characters.
const MaxNameLen = 100

const (
	presetExt    = ".toml"
	presetFormat = 1
	maxFileSize  = 1 << 20
)

// Store is a folder of preset files, one TOML file per preset, named
// NAME.toml. Writes are atomic (see WriteFileAtomic); a temporary file left
// by a killed save is never listed, and is removed by a later Save of the
// same preset once it is older than 10 minutes. The folder is created on the
// first Save.
type Store struct {
	Dir string
}

// NewStore returns a store over dir.
func NewStore(dir string) *Store { return &Store{Dir: dir} }

// DefaultDir returns $XDG_CONFIG_HOME/stepwise/presets, or
// ~/.config/stepwise/presets when XDG_CONFIG_HOME is unset or not absolute.
func DefaultDir() (string, error) {
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "stepwise", "presets"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("preset folder: %w", err)
	}
	return filepath.Join(home, ".config", "stepwise", "presets"), nil
}

// ValidateName checks a preset name: not empty or blank, at most MaxNameLen
// characters, valid UTF-8, no path separators, control characters or a
// leading dot.
func ValidateName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return errors.New("preset name is empty")
	case !utf8.ValidString(name):
		return fmt.Errorf("preset name %q is not valid UTF-8", name)
	case utf8.RuneCountInString(name) > MaxNameLen:
		return fmt.Errorf("preset name is longer than %d characters", MaxNameLen)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("preset name %q contains a path separator", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("preset name %q starts with a dot", name)
	case name != strings.TrimSpace(name):
		return fmt.Errorf("preset name %q starts or ends with a space", name)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("preset name %q contains a control character", name)
		}
	}
	return nil
}

func (st *Store) path(name string) string { return filepath.Join(st.Dir, name+presetExt) }

// List returns the built-ins followed by the user presets sorted by name.
// A file that cannot be read or parsed gives an error naming it; the other
// presets still load. A missing folder is no error.
func (st *Store) List() ([]Preset, []error) {
	out := Builtins()
	entries, err := os.ReadDir(st.Dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return out, nil
		}
		return out, []error{fmt.Errorf("preset folder %s: %w", st.Dir, err)}
	}
	var errs []error
	var user []Preset
	for _, e := range entries {
		fname := e.Name()
		if e.IsDir() || isTempName(fname) || !strings.HasSuffix(fname, presetExt) {
			continue
		}
		name := strings.TrimSuffix(fname, presetExt)
		if err := ValidateName(name); err != nil {
			errs = append(errs, fmt.Errorf("preset file %s: %w", filepath.Join(st.Dir, fname), err))
			continue
		}
		p, err := st.loadFile(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		user = append(user, p)
	}
	sort.Slice(user, func(i, j int) bool { return user[i].Name < user[j].Name })
	return append(out, user...), errs
}

// Load returns the preset called name: a built-in or a user file.
func (st *Store) Load(name string) (Preset, error) {
	if b, ok := builtin(name); ok {
		return b, nil
	}
	if err := ValidateName(name); err != nil {
		return Preset{}, err
	}
	return st.loadFile(name)
}

func (st *Store) loadFile(name string) (Preset, error) {
	path := st.path(name)
	data, err := readLimited(path, maxFileSize)
	if err != nil {
		return Preset{}, fmt.Errorf("preset %q: %w", name, err)
	}
	s, err := DecodePreset(data)
	if err != nil {
		return Preset{}, fmt.Errorf("preset file %s: %w", path, err)
	}
	return Preset{Name: name, Settings: s, Path: path}, nil
}

// readLimited reads a regular file of at most limit bytes: a FIFO named
// *.toml in the folder must not hang the listing, nor a symlink to
// /dev/zero fill the memory.
func readLimited(path string, limit int64) ([]byte, error) {
	return safefile.ReadFile(path, limit)
}

// presetFile is the on-disk form: a format number and the settings' keys.
type presetFile struct {
	Format int `toml:"format"`
	Settings
}

// EncodePreset returns the TOML file contents for s.
func EncodePreset(s Settings) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("# Stepwise preset\n")
	if err := toml.NewEncoder(&buf).Encode(presetFile{Format: presetFormat, Settings: s}); err != nil {
		return nil, fmt.Errorf("encode preset: %w", err)
	}
	return buf.Bytes(), nil
}

// DecodePreset parses a preset file. Keys it does not know, a newer format
// and settings that fail Validate are errors; absent keys take Default's values.
func DecodePreset(data []byte) (Settings, error) {
	if !utf8.Valid(data) {
		return Settings{}, errors.New("not UTF-8 text")
	}
	pf := presetFile{Settings: Default()}
	md, err := toml.Decode(string(data), &pf)
	if err != nil {
		return Settings{}, fmt.Errorf("not valid TOML: %w", err)
	}
	if !md.IsDefined("format") {
		return Settings{}, errors.New("no \"format\" key (not a Stepwise preset?)")
	}
	if pf.Format != presetFormat {
		return Settings{}, fmt.Errorf("format %d, this Stepwise reads format %d", pf.Format, presetFormat)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return Settings{}, fmt.Errorf("unknown key(s) %s", strings.Join(keys, ", "))
	}
	if err := pf.Settings.Validate(); err != nil {
		return Settings{}, fmt.Errorf("invalid settings: %w", err)
	}
	return pf.Settings, nil
}

// Save writes the preset name atomically, replacing an existing one
// without asking; the studio uses Create, then Replace once the user said
// yes.
func (st *Store) Save(name string, s Settings) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if _, ok := builtin(name); ok {
		return fmt.Errorf("save preset %q: %w", name, ErrReadOnly)
	}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("save preset %q: %w", name, err)
	}
	data, err := EncodePreset(s)
	if err != nil {
		return fmt.Errorf("save preset %q: %w", name, err)
	}
	if err := os.MkdirAll(st.Dir, 0o755); err != nil {
		return fmt.Errorf("save preset %q: %w", name, err)
	}
	if err := WriteFileAtomic(st.path(name), data, 0o644); err != nil {
		return err
	}
	st.removeStaleTemps(name)
	return nil
}

// ErrChanged is returned by Replace when the preset file is no longer what
// the caller read: another program (another studio sharing the folder)
// wrote it meanwhile.
var ErrChanged = errors.New("the preset file changed since it was read")

// Stamp identifies the contents of a preset file as read (a SHA-256 of the
// bytes); the zero Stamp means no file.
type Stamp [sha256.Size]byte

// Stamp returns the stamp of the preset file name as it is now; a missing
// file gives the zero Stamp and an error wrapping fs.ErrNotExist.
func (st *Store) Stamp(name string) (Stamp, error) {
	if err := ValidateName(name); err != nil {
		return Stamp{}, err
	}
	data, err := readLimited(st.path(name), maxFileSize)
	if err != nil {
		return Stamp{}, fmt.Errorf("preset %q: %w", name, err)
	}
	return sha256.Sum256(data), nil
}

// Create saves a new preset: it fails with an error wrapping fs.ErrExist,
// without a race, when a preset of that name exists (ask the user, then
// Replace).
func (st *Store) Create(name string, s Settings) error {
	data, err := st.encode(name, s)
	if err != nil {
		return err
	}
	// The complete file is written under a temporary name and hard-linked
	// to its name, which fails if the name exists.
	tmp, err := os.CreateTemp(st.Dir, "."+name+presetExt+tempMarker+"*")
	if err != nil {
		return fmt.Errorf("save preset %q: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), st.path(name))
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("save preset %q: a preset of that name exists: %w", name, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("save preset %q: %w", name, err)
	}
	if err := syncDir(st.Dir); err != nil {
		return fmt.Errorf("save preset %q: sync folder: %w", name, err)
	}
	st.removeStaleTemps(name)
	return nil
}

// Replace overwrites the preset name (atomically) when its file still has
// the stamp seen, the one read when the user was asked; otherwise it
// changes nothing and returns an error wrapping ErrChanged. (Between the
// check and the rename another writer has a moment of a few microseconds.)
func (st *Store) Replace(name string, s Settings, seen Stamp) error {
	data, err := st.encode(name, s)
	if err != nil {
		return err
	}
	now, err := st.Stamp(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("save preset %q: %w", name, err)
	}
	if now != seen {
		return fmt.Errorf("save preset %q: %w (another studio saved it?); not replaced: load it to see it, or save under another name", name, ErrChanged)
	}
	if err := WriteFileAtomic(st.path(name), data, 0o644); err != nil {
		return err
	}
	st.removeStaleTemps(name)
	return nil
}

// encode validates and encodes a preset for saving and makes the folder.
func (st *Store) encode(name string, s Settings) ([]byte, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if _, ok := builtin(name); ok {
		return nil, fmt.Errorf("save preset %q: %w", name, ErrReadOnly)
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("save preset %q: %w", name, err)
	}
	data, err := EncodePreset(s)
	if err != nil {
		return nil, fmt.Errorf("save preset %q: %w", name, err)
	}
	if err := os.MkdirAll(st.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("save preset %q: %w", name, err)
	}
	return data, nil
}

// staleTemp is the age after which a temporary file left by a killed save
// is removed by the next Save of the same preset.
const staleTemp = 10 * time.Minute

func (st *Store) removeStaleTemps(name string) {
	matches, _ := filepath.Glob(filepath.Join(st.Dir, "."+globEscape(name+presetExt)+tempMarker+"*"))
	for _, m := range matches {
		if fi, err := os.Lstat(m); err == nil && fi.Mode().IsRegular() && time.Since(fi.ModTime()) > staleTemp {
			os.Remove(m)
		}
	}
}

func globEscape(s string) string {
	return strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`).Replace(s)
}

// Rename renames a user preset; it fails if newName exists.
func (st *Store) Rename(oldName, newName string) error {
	for _, n := range []string{oldName, newName} {
		if err := ValidateName(n); err != nil {
			return err
		}
		if _, ok := builtin(n); ok {
			return fmt.Errorf("rename preset %q to %q: %w", oldName, newName, ErrReadOnly)
		}
	}
	if oldName == newName {
		return nil
	}
	// A hard link fails if the new name exists, so no preset is overwritten.
	if err := os.Link(st.path(oldName), st.path(newName)); err != nil {
		return fmt.Errorf("rename preset %q to %q: %w", oldName, newName, err)
	}
	if err := os.Remove(st.path(oldName)); err != nil {
		return fmt.Errorf("rename preset %q to %q: %w", oldName, newName, err)
	}
	if err := syncDir(st.Dir); err != nil {
		return fmt.Errorf("rename preset %q to %q: sync folder: %w", oldName, newName, err)
	}
	return nil
}

// Delete removes a user preset.
func (st *Store) Delete(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if _, ok := builtin(name); ok {
		return fmt.Errorf("delete preset %q: %w", name, ErrReadOnly)
	}
	if err := os.Remove(st.path(name)); err != nil {
		return fmt.Errorf("delete preset %q: %w", name, err)
	}
	if err := syncDir(st.Dir); err != nil {
		return fmt.Errorf("delete preset %q: sync folder: %w", name, err)
	}
	return nil
}

// Builtins returns the read-only presets, in display order. Their sizes are
// Default's; the studio keeps its own size when it applies one.
func Builtins() []Preset {
	mk := func(name string, f func(*Settings)) Preset {
		s := Default()
		f(&s)
		return Preset{Name: name, Settings: s, Builtin: true}
	}
	return []Preset{
		mk("Quick draft", func(s *Settings) { s.Steps, s.Sampler, s.Schedule = 8, "DPM++ 2M", "karras" }),
		mk("Quality", func(s *Settings) { s.Steps, s.Sampler, s.Schedule, s.CFGScale = 30, "DPM++ 2M", "karras", 7 }),
		mk("Euler a classic", func(s *Settings) { s.Steps, s.Sampler, s.CFGScale = 20, "Euler a", 7 }),
		mk("Low guidance", func(s *Settings) { s.Steps, s.Sampler, s.CFGScale = 25, "Euler", 3.5 }),
		mk("Diffusers reference", func(s *Settings) {
			s.Steps, s.Sampler, s.Schedule, s.CFGScale, s.RNG = 20, "Euler", "leading", 7.5, RNGTorchCPU
		}),
	}
}

func builtin(name string) (Preset, bool) {
	for _, b := range Builtins() {
		if strings.EqualFold(b.Name, name) {
			return b, true
		}
	}
	return Preset{}, false
}
