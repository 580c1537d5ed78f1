package gl

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestMain keeps the tests' program binaries out of the user's cache folder
// and, after the tests, checks every shader variant they built against the
// GLSL 4.30 specification (validateVariants).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "stepwise-gl-cache-")
	if err == nil {
		os.Setenv("STEPWISE_GL_CACHE", dir)
	}
	code := m.Run()
	if err == nil {
		os.RemoveAll(dir)
	}
	if report, n := validateVariants(); report != "" {
		fmt.Fprintln(os.Stderr, "FAIL: "+report)
		code = 1
	} else if n > 0 && testing.Verbose() {
		fmt.Fprintf(os.Stderr, "gl: %d shader variants are valid GLSL 4.30 (glslangValidator)\n", n)
	}
	os.Exit(code)
}

// scaleOn runs Scale(x, 2, 1) on a fresh device and returns its values.
func scaleOn(t *testing.T) ([]float32, *Device) {
	t.Helper()
	d := fresh(t)
	x := d.Upload([]float32{1, -2, 3.5}, 3)
	got, err := d.Download(d.Scale(x, 2, 1))
	if err != nil {
		t.Fatal(err)
	}
	return got, d
}

func TestProgramCache(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("STEPWISE_GL_CACHE", dir)
	want := []float32{3, -3, 8}
	check := func(got []float32) {
		t.Helper()
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("Scale gave %v, want %v", got, want)
			}
		}
	}

	got, d := scaleOn(t)
	check(got)
	if d.cache.dir == "" {
		t.Skip("this driver offers no program binary formats")
	}
	if d.cache.hits != 0 || d.cache.writes != 1 {
		t.Fatalf("cold start: %d hits, %d writes; want 0, 1", d.cache.hits, d.cache.writes)
	}
	entries, _ := filepath.Glob(filepath.Join(dir, "*.bin"))
	if len(entries) != 1 {
		t.Fatalf("cache holds %v, want one entry", entries)
	}

	got, d = scaleOn(t)
	check(got)
	if d.cache.hits != 1 || d.cache.writes != 0 {
		t.Fatalf("warm start: %d hits, %d writes; want 1, 0", d.cache.hits, d.cache.writes)
	}

	// A corrupt entry (one payload byte flipped) is ignored and rewritten.
	raw, err := os.ReadFile(entries[0])
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-1] ^= 0xff
	if err := os.WriteFile(entries[0], raw, 0o644); err != nil {
		t.Fatal(err)
	}
	got, d = scaleOn(t)
	check(got)
	if d.cache.hits != 0 || d.cache.writes != 1 {
		t.Fatalf("corrupt entry: %d hits, %d writes; want 0, 1", d.cache.hits, d.cache.writes)
	}

	// A stale entry (a valid file the driver refuses) is ignored and rewritten.
	if err := os.WriteFile(entries[0], encodeEntry(0x1234, []byte("not a program")), 0o644); err != nil {
		t.Fatal(err)
	}
	got, d = scaleOn(t)
	check(got)
	if d.cache.hits != 0 || d.cache.writes != 1 || d.Err() != nil {
		t.Fatalf("stale entry: %d hits, %d writes, err %v; want 0, 1, nil", d.cache.hits, d.cache.writes, d.Err())
	}
	got, d = scaleOn(t)
	check(got)
	if d.cache.hits != 1 {
		t.Fatalf("after rewrite: %d hits, want 1", d.cache.hits)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
}

func TestProgramCacheOff(t *testing.T) {
	t.Setenv("STEPWISE_GL_CACHE", "off")
	got, d := scaleOn(t)
	if got[0] != 3 || d.cache.dir != "" {
		t.Fatalf("cache off: Scale gave %v, cache folder %q", got, d.cache.dir)
	}
}

func TestDecodeEntry(t *testing.T) {
	e := encodeEntry(7, []byte{1, 2, 3})
	f, p, err := decodeEntry(e)
	if err != nil || f != 7 || len(p) != 3 || p[2] != 3 {
		t.Fatalf("round trip: format %d payload %v err %v", f, p, err)
	}
	for _, bad := range [][]byte{nil, e[:len(e)-1], append(append([]byte(nil), e...), 0), []byte("junk")} {
		if _, _, err := decodeEntry(bad); err == nil {
			t.Errorf("decodeEntry accepted %d bad bytes", len(bad))
		}
	}
}
