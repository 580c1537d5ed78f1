package shaders

import (
	"strings"
	"testing"
)

func TestSourceSplicesDefinesAndIncludes(t *testing.T) {
	src, err := Source("unary.comp", []string{"OP_SILU", "LX=64", "X_LOADER=LOADER_F16"})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(src, "\n")
	if lines[0] != "#version 430" {
		t.Errorf("first line %q, want #version 430", lines[0])
	}
	want := []string{"#define OP_SILU ", "#define LX 64", "#define X_LOADER LOADER_F16"}
	for i, w := range want {
		if lines[i+1] != w {
			t.Errorf("line %d = %q, want %q", i+2, lines[i+1], w)
		}
	}
	for _, ln := range lines {
		if strings.HasPrefix(strings.TrimSpace(ln), "#include") {
			t.Errorf("an #include line was left in the source: %q", ln)
		}
	}
	if !strings.Contains(src, "#define LOADER_F16(fn, tex, unit)") {
		t.Error("common.glsl was not spliced in")
	}
}

func TestSourceErrors(t *testing.T) {
	for _, c := range []struct {
		file    string
		defines []string
		want    string
	}{
		{"nope.comp", nil, "nope.comp: no such shader"},
		{"common.glsl", nil, "first line must be #version"},
		{"unary.comp", []string{"BAD NAME=1"}, "bad define"},
		{"unary.comp", []string{"=1"}, "bad define"},
	} {
		_, err := Source(c.file, c.defines)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Source(%q, %q) error %v, want one containing %q", c.file, c.defines, err, c.want)
		}
	}
}

func TestEveryShaderAssembles(t *testing.T) {
	names := Names()
	if len(names) < 10 {
		t.Fatalf("only %d shaders embedded: %v", len(names), names)
	}
	for _, n := range names {
		src, err := Source(n, nil)
		if err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		if !strings.Contains(src, "void main()") || !strings.Contains(src, "DECLARE_OUTPUT") {
			t.Errorf("%s: no main or no output declaration", n)
		}
	}
}
