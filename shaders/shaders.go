// Package shaders holds Stepwise's GLSL compute shaders and assembles a
// compilable source from a file and a set of #defines.
//
// A file holds one operation or a family of near-identical ones, and its
// variants are the same file compiled with different defines: the storage
// type of each input (X_LOADER=LOADER_F16, ...), optional inputs (HAS_BIAS),
// tile sizes, and which member of the family (matmul.comp's MM_NAIVE,
// MM_STRIDED, MM_NN4, MM_NT4 and MM_QBLOCK; groupnorm.comp's LAYERNORM;
// unary.comp's OP_SILU, ...). gpu/gl's ops table (kernels.go) names each
// kernel it builds: file, variant defines, local size. Shared pieces live in
// include files (common.glsl, quant.glsl) that Source splices in where a
// shader says #include "name", also inside an #if.
package shaders

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed *.comp *.glsl
var files embed.FS

// Names lists the compute shader files (*.comp), sorted.
func Names() []string {
	ents, _ := fs.Glob(files, "*.comp")
	sort.Strings(ents)
	return ents
}

// Source returns the GLSL text of file with each define ("NAME" or
// "NAME=VALUE") inserted after the #version line and every
// `#include "x.glsl"` line replaced by that file. A missing file, a missing
// #version line or an include that is not embedded is an error.
func Source(file string, defines []string) (string, error) {
	text, err := files.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("shaders: %s: no such shader", file)
	}
	lines := strings.Split(string(text), "\n")
	if len(lines) == 0 || !strings.HasPrefix(strings.TrimSpace(lines[0]), "#version") {
		return "", fmt.Errorf("shaders: %s: first line must be #version", file)
	}
	var b strings.Builder
	b.WriteString(lines[0])
	b.WriteString("\n")
	for _, d := range defines {
		name, val, _ := strings.Cut(d, "=")
		if name == "" || strings.ContainsAny(name, " \t\n") || strings.Contains(val, "\n") {
			return "", fmt.Errorf("shaders: %s: bad define %q", file, d)
		}
		fmt.Fprintf(&b, "#define %s %s\n", name, val)
	}
	for i, ln := range lines[1:] {
		t := strings.TrimSpace(ln)
		if !strings.HasPrefix(t, "#include") {
			b.WriteString(ln)
			b.WriteString("\n")
			continue
		}
		inc := strings.Trim(strings.TrimSpace(strings.TrimPrefix(t, "#include")), `"<>`)
		body, err := files.ReadFile(inc)
		if err != nil || !strings.HasSuffix(inc, ".glsl") {
			return "", fmt.Errorf("shaders: %s:%d: cannot include %q", file, i+2, inc)
		}
		b.Write(body)
		b.WriteString("\n")
	}
	return b.String(), nil
}
