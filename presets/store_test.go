package presets

import (
	"encoding/json"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStoreSaveLoadListRenameDelete(t *testing.T) {
	st := NewStore(filepath.Join(t.TempDir(), "presets"))
	ps, errs := st.List()
	require.Empty(t, errs, "empty store")
	require.Len(t, ps, len(Builtins()), "empty store")
	a := Default()
	a.Prompt, a.Seed, a.Eta = "a lighthouse\nat dusk", 99, Float(0)
	b := Default()
	b.Prompt, b.Sampler, b.Schedule, b.CFGScale = "b", "DPM++ 2M", "karras", 4.5
	require.NoError(t, st.Save("Évening ✨", a))
	require.NoError(t, st.Save("b", b))
	p, err := st.Load("Évening ✨")
	require.NoError(t, err, "Load")
	require.Equal(t, a, p.Settings, "Load")
	require.False(t, p.Builtin, "Load: %+v", p)
	ps, errs = st.List()
	require.Empty(t, errs)
	var names []string
	for _, p := range ps[len(Builtins()):] {
		names = append(names, p.Name)
	}
	require.Equal(t, []string{"b", "Évening ✨"}, names)
	require.ErrorIs(t, st.Rename("b", "Évening ✨"), fs.ErrExist, "rename onto an existing preset")
	require.NoError(t, st.Rename("b", "c"))
	_, err = st.Load("b")
	require.ErrorIs(t, err, fs.ErrNotExist, "old name still loads")
	p, err = st.Load("c")
	require.NoError(t, err, "renamed")
	require.Equal(t, b, p.Settings, "renamed")
	require.NoError(t, st.Delete("c"))
	require.ErrorIs(t, st.Delete("c"), fs.ErrNotExist, "delete twice")
	// Saving again replaces.
	a.Steps = 33
	require.NoError(t, st.Save("Évening ✨", a))
	p, _ = st.Load("Évening ✨")
	require.Equal(t, 33, p.Settings.Steps, "not replaced: %+v", p.Settings)
	entries, _ := os.ReadDir(st.Dir)
	require.Len(t, entries, 1, "no temp files left")
}

func TestStoreRefusesBadNamesAndBuiltins(t *testing.T) {
	st := NewStore(t.TempDir())
	for _, name := range []string{"", "  ", "a/b", `a\b`, ".hidden", "../up", "tab\there", " pad", strings.Repeat("x", MaxNameLen+1), "bad\xffutf8"} {
		assert.Error(t, st.Save(name, Default()), "Save(%q) accepted", name)
	}
	assert.ErrorIs(t, st.Save("Quality", Default()), ErrReadOnly, "Save over built-in")
	assert.ErrorIs(t, st.Delete("quick draft"), ErrReadOnly, "Delete built-in")
	p, err := st.Load("Quick draft")
	assert.NoError(t, err, "Load built-in")
	assert.True(t, p.Builtin, "Load built-in: %+v", p)
	assert.Equal(t, 8, p.Settings.Steps, "Load built-in")
	assert.Equal(t, "karras", p.Settings.Schedule, "Load built-in")
	for _, b := range Builtins() {
		assert.NoError(t, b.Settings.Validate(), "built-in %q invalid", b.Name)
	}
	bad := Default()
	bad.Width = 100
	assert.ErrorContains(t, st.Save("bad", bad), "multiple of 8", "Save invalid settings")
}

func TestStoreCorruptedFileDoesNotHideOthers(t *testing.T) {
	st := NewStore(t.TempDir())
	require.NoError(t, st.Save("good", Default()))
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
		require.NoError(t, os.WriteFile(filepath.Join(st.Dir, name), []byte(content), 0o644))
	}
	ps, errs := st.List()
	require.Len(t, ps, len(Builtins())+1, "presets")
	require.Equal(t, "good", ps[len(ps)-1].Name, "presets %+v", ps)
	require.Len(t, errs, 6, "errors")
	wantIn := map[string]string{"broken.toml": "steps", "garbage.toml": "TOML", "future.toml": "format 2",
		"typo.toml": "stesp", "invalid.toml": "multiple of 8", "noformat.toml": "format"}
	for _, err := range errs {
		found := false
		for file, word := range wantIn {
			if strings.Contains(err.Error(), filepath.Join(st.Dir, file)) && strings.Contains(err.Error(), word) {
				found = true
			}
		}
		assert.True(t, found, "error does not name its file and problem: %v", err)
	}
}

func TestDefaultDir(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", "/cfg")
	d, _ := DefaultDir()
	assert.Equal(t, filepath.Join("/cfg", "stepwise", "presets"), d, "XDG")
	t.Setenv("XDG_CONFIG_HOME", "relative/path")
	t.Setenv("HOME", "/home/someone")
	d, _ = DefaultDir()
	if runtime.GOOS == "linux" {
		assert.Equal(t, "/home/someone/.config/stepwise/presets", d, "HOME")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.bin")
	for _, content := range []string{"first", "second, longer"} {
		require.NoError(t, WriteFileAtomic(p, []byte(content), 0o600))
		got, _ := os.ReadFile(p)
		require.Equal(t, content, string(got))
	}
	fi, _ := os.Stat(p)
	if runtime.GOOS != "windows" {
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "perm")
	}
	assert.Error(t, WriteFileAtomic(filepath.Join(dir, "missing", "x"), nil, 0o644), "write into a missing folder succeeded")
	entries, _ := os.ReadDir(dir)
	assert.Len(t, entries, 1, "entries left")
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
	require.NoError(t, st.Save("p", killSettings(0)))
	rng := rand.New(rand.NewSource(1))
	var seen [2]int
	for iter := 0; iter < 20; iter++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSaveSurvivesSIGKILL$")
		cmd.Env = append(os.Environ(), killSaverEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		buf := make([]byte, 6)
		_, err = out.Read(buf)
		require.NoError(t, err, "helper did not start")
		time.Sleep(time.Duration(1+rng.Intn(40)) * time.Millisecond)
		require.NoError(t, cmd.Process.Kill()) // SIGKILL on Unix
		require.ErrorContains(t, cmd.Wait(), "killed", "helper ended, want killed")
		ps, errs := st.List()
		require.Empty(t, errs, "iteration %d: folder unreadable after SIGKILL", iter)
		user := ps[len(Builtins()):]
		require.Len(t, user, 1, "iteration %d: presets", iter)
		require.Equal(t, "p", user[0].Name, "iteration %d: presets", iter)
		which := int(user[0].Settings.Seed)
		// ObjectsAreEqual, not require.Equal: a diff would print two 48 KiB prompts.
		require.True(t, (which == 0 || which == 1) && assert.ObjectsAreEqual(killSettings(which), user[0].Settings),
			"iteration %d: preset is neither version (seed %d)", iter, which)
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
		require.NoError(t, os.WriteFile(f, []byte("partial"), 0o644))
	}
	long := time.Now().Add(-time.Hour)
	for _, f := range []string{old, other} {
		require.NoError(t, os.Chtimes(f, long, long))
	}
	require.NoError(t, st.Save("p [1]", Default()))
	for f, want := range map[string]bool{old: false, young: true, other: true} {
		_, err := os.Stat(f)
		assert.Equal(t, want, err == nil, "%s exists", filepath.Base(f))
	}
}

func TestSettingsJSONRoundTrip(t *testing.T) {
	s := Default()
	s.Prompt, s.Eta, s.ModelHash = "x", Float(1), "abc"
	data, err := json.Marshal(s)
	require.NoError(t, err)
	assert.Contains(t, string(data), `"cfg_scale":7`, "json")
	assert.Contains(t, string(data), `"eta":1`, "json")
	var back Settings
	require.NoError(t, json.Unmarshal(data, &back))
	require.Equal(t, s, back)
}
