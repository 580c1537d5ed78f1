package presets

import (
	"encoding/json"
	"errors"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestStoreSaveLoadListRenameDelete(t *testing.T) {
	st := NewStore(filepath.Join(t.TempDir(), "presets"))
	if ps, errs := st.List(); len(errs) != 0 || len(ps) != len(Builtins()) {
		t.Fatalf("empty store: %d presets, errors %v", len(ps), errs)
	}
	a := Default()
	a.Prompt, a.Seed, a.Eta = "a lighthouse\nat dusk", 99, Float(0)
	b := Default()
	b.Prompt, b.Sampler, b.Schedule, b.CFGScale = "b", "DPM++ 2M", "karras", 4.5
	if err := st.Save("Évening ✨", a); err != nil {
		t.Fatal(err)
	}
	if err := st.Save("b", b); err != nil {
		t.Fatal(err)
	}
	p, err := st.Load("Évening ✨")
	if err != nil || !reflect.DeepEqual(p.Settings, a) || p.Builtin {
		t.Fatalf("Load: %+v, %v", p, err)
	}
	ps, errs := st.List()
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	var names []string
	for _, p := range ps[len(Builtins()):] {
		names = append(names, p.Name)
	}
	if !reflect.DeepEqual(names, []string{"b", "Évening ✨"}) {
		t.Fatalf("names %v", names)
	}
	if err := st.Rename("b", "Évening ✨"); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("rename onto an existing preset: %v", err)
	}
	if err := st.Rename("b", "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load("b"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("old name still loads: %v", err)
	}
	if p, err := st.Load("c"); err != nil || !reflect.DeepEqual(p.Settings, b) {
		t.Fatalf("renamed: %+v %v", p, err)
	}
	if err := st.Delete("c"); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete("c"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("delete twice: %v", err)
	}
	// Saving again replaces.
	a.Steps = 33
	if err := st.Save("Évening ✨", a); err != nil {
		t.Fatal(err)
	}
	if p, _ := st.Load("Évening ✨"); p.Settings.Steps != 33 {
		t.Fatalf("not replaced: %+v", p.Settings)
	}
	entries, _ := os.ReadDir(st.Dir)
	if len(entries) != 1 {
		t.Fatalf("folder holds %d entries, want 1 (no temp files left)", len(entries))
	}
}

func TestStoreRefusesBadNamesAndBuiltins(t *testing.T) {
	st := NewStore(t.TempDir())
	for _, name := range []string{"", "  ", "a/b", `a\b`, ".hidden", "../up", "tab\there", " pad", strings.Repeat("x", MaxNameLen+1), "bad\xffutf8"} {
		if err := st.Save(name, Default()); err == nil {
			t.Errorf("Save(%q) accepted", name)
		}
	}
	if err := st.Save("Quality", Default()); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Save over built-in: %v", err)
	}
	if err := st.Delete("quick draft"); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Delete built-in: %v", err)
	}
	p, err := st.Load("Quick draft")
	if err != nil || !p.Builtin || p.Settings.Steps != 8 || p.Settings.Schedule != "karras" {
		t.Errorf("Load built-in: %+v %v", p, err)
	}
	for _, b := range Builtins() {
		if err := b.Settings.Validate(); err != nil {
			t.Errorf("built-in %q invalid: %v", b.Name, err)
		}
	}
	bad := Default()
	bad.Width = 100
	if err := st.Save("bad", bad); err == nil || !strings.Contains(err.Error(), "multiple of 8") {
		t.Errorf("Save invalid settings: %v", err)
	}
}

func TestStoreCorruptedFileDoesNotHideOthers(t *testing.T) {
	st := NewStore(t.TempDir())
	if err := st.Save("good", Default()); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"broken.toml":        "format = 1\nsteps = \"twenty\"\n",
		"garbage.toml":       "\x00\x01\x02 not toml [[[",
		"future.toml":        "format = 2\n",
		"typo.toml":          "format = 1\nstesp = 20\n",
		"invalid.toml":       "format = 1\nwidth = 100\n",
		"noformat.toml":      "steps = 20\n",
		"notes.txt":          "ignored: not a preset",
		".good.toml.tmp-123": "format = 1\n", // a stray temporary from a crash
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(st.Dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ps, errs := st.List()
	if len(ps) != len(Builtins())+1 || ps[len(ps)-1].Name != "good" {
		t.Fatalf("presets %+v", ps)
	}
	if len(errs) != 6 {
		t.Fatalf("%d errors, want 6: %v", len(errs), errs)
	}
	wantIn := map[string]string{"broken.toml": "steps", "garbage.toml": "TOML", "future.toml": "format 2",
		"typo.toml": "stesp", "invalid.toml": "multiple of 8", "noformat.toml": "format"}
	for _, err := range errs {
		found := false
		for file, word := range wantIn {
			if strings.Contains(err.Error(), filepath.Join(st.Dir, file)) && strings.Contains(err.Error(), word) {
				found = true
			}
		}
		if !found {
			t.Errorf("error does not name its file and problem: %v", err)
		}
	}
}

func TestDefaultDir(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", "/cfg")
	if d, _ := DefaultDir(); d != filepath.Join("/cfg", "stepwise", "presets") {
		t.Errorf("XDG: %s", d)
	}
	t.Setenv("XDG_CONFIG_HOME", "relative/path")
	t.Setenv("HOME", "/home/someone")
	if d, _ := DefaultDir(); runtime.GOOS == "linux" && d != "/home/someone/.config/stepwise/presets" {
		t.Errorf("HOME: %s", d)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.bin")
	for _, content := range []string{"first", "second, longer"} {
		if err := WriteFileAtomic(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(p)
		if string(got) != content {
			t.Fatalf("got %q", got)
		}
	}
	if fi, _ := os.Stat(p); runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("perm %v", fi.Mode().Perm())
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "x"), nil, 0o644); err == nil {
		t.Error("write into a missing folder succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d entries left", len(entries))
	}
}

// killSaverEnv names the folder a re-executed test binary saves presets into
// in a tight loop, for TestSaveSurvivesSIGKILL.
const killSaverEnv = "STEPWISE_TEST_PRESET_SAVER_DIR"

func killSettings(which int) Settings {
	s := Default()
	s.Seed = int64(which)
	// A long prompt makes each write span more than one syscall.
	s.Prompt = strings.Repeat(string(rune('a'+which)), 48<<10)
	return s
}

// TestSaveSurvivesSIGKILL kills a process in the middle of saving presets,
// 20 times, and checks the folder after each kill: it lists without errors
// and the preset equals one of the two versions the process alternates.
func TestSaveSurvivesSIGKILL(t *testing.T) {
	if dir := os.Getenv(killSaverEnv); dir != "" {
		st := NewStore(dir)
		os.Stdout.WriteString("ready\n")
		for i := 0; ; i++ {
			if err := st.Save("p", killSettings(i%2)); err != nil {
				os.Stderr.WriteString(err.Error())
				os.Exit(3)
			}
		}
	}
	if runtime.GOOS == "windows" || testing.Short() {
		t.Skip("needs SIGKILL; skipped in -short")
	}
	dir := t.TempDir()
	st := NewStore(dir)
	if err := st.Save("p", killSettings(0)); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	var seen [2]int
	for iter := 0; iter < 20; iter++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSaveSurvivesSIGKILL$")
		cmd.Env = append(os.Environ(), killSaverEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 6)
		if _, err := out.Read(buf); err != nil {
			t.Fatalf("helper did not start: %v", err)
		}
		time.Sleep(time.Duration(1+rng.Intn(40)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil { // SIGKILL on Unix
			t.Fatal(err)
		}
		err = cmd.Wait()
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("helper ended with %v, want killed", err)
		}
		ps, errs := st.List()
		if len(errs) != 0 {
			t.Fatalf("iteration %d: folder unreadable after SIGKILL: %v", iter, errs)
		}
		user := ps[len(Builtins()):]
		if len(user) != 1 || user[0].Name != "p" {
			t.Fatalf("iteration %d: presets %v", iter, user)
		}
		which := int(user[0].Settings.Seed)
		if which < 0 || which > 1 || !reflect.DeepEqual(user[0].Settings, killSettings(which)) {
			t.Fatalf("iteration %d: preset is neither version (seed %d)", iter, which)
		}
		seen[which]++
	}
	entries, _ := os.ReadDir(dir)
	t.Logf("after 20 kills: saw old/new %v; %d stray temporary files (ignored by List)", seen, len(entries)-1)
}

func TestSaveRemovesStaleTemporaries(t *testing.T) {
	st := NewStore(t.TempDir())
	old := filepath.Join(st.Dir, ".p [1].toml.tmp-111")
	young := filepath.Join(st.Dir, ".p [1].toml.tmp-222")
	other := filepath.Join(st.Dir, ".q.toml.tmp-333")
	for _, f := range []string{old, young, other} {
		if err := os.WriteFile(f, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-time.Hour)
	for _, f := range []string{old, other} {
		if err := os.Chtimes(f, long, long); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Save("p [1]", Default()); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]bool{old: false, young: true, other: true} {
		if _, err := os.Stat(f); (err == nil) != want {
			t.Errorf("%s exists=%v, want %v", filepath.Base(f), err == nil, want)
		}
	}
}

func TestSettingsJSONRoundTrip(t *testing.T) {
	s := Default()
	s.Prompt, s.Eta, s.ModelHash = "x", Float(1), "abc"
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"cfg_scale":7`) || !strings.Contains(string(data), `"eta":1`) {
		t.Errorf("json: %s", data)
	}
	var back Settings
	if err := json.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(back, s) {
		t.Fatalf("%+v %v", back, err)
	}
}
