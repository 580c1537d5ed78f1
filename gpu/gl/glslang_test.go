package gl

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
)

// variants collects the source of every program variant the tests make a
// device build, so that TestMain can check each against the GLSL 4.30
// specification with Khronos' reference compiler (glslangValidator): llvmpipe
// accepts what a stricter driver may refuse.
var variants = struct {
	sync.Mutex
	src map[string]string // kernel key -> source
}{src: map[string]string{}}

func init() {
	compiled = func(k kernel, src string) {
		variants.Lock()
		variants.src[k.key()] = src
		variants.Unlock()
	}
}

// validateVariants runs glslangValidator over every collected variant and
// returns a report of those it rejects ("" when all pass). Without the tool it
// reports that only when required (STEPWISE_REQUIRE_GLSLANG, as ./scripts/test
// sets, which installs glslang-tools).
func validateVariants() (report string, checked int) {
	tool, err := exec.LookPath("glslangValidator")
	if err != nil {
		if os.Getenv("STEPWISE_REQUIRE_GLSLANG") != "" {
			return "glslangValidator not found: install Debian's glslang-tools (./scripts/test does)", 0
		}
		fmt.Fprintln(os.Stderr, "gl: glslangValidator not found; shader variants not validated")
		return "", 0
	}
	variants.Lock()
	defer variants.Unlock()
	return glslang(tool, variants.src), len(variants.src)
}

// glslang checks each source with tool and reports those it rejects.
func glslang(tool string, srcs map[string]string) string {
	keys := make([]string, 0, len(srcs))
	for k := range srcs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var bad []string
	for _, k := range keys {
		cmd := exec.Command(tool, "--stdin", "-S", "comp")
		cmd.Stdin = strings.NewReader(srcs[k])
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v\n%s", k, err, strings.TrimSpace(out.String())))
		}
	}
	if len(bad) > 0 {
		return fmt.Sprintf("%d of %d shader variants are not valid GLSL 4.30:\n%s", len(bad), len(keys), strings.Join(bad, "\n"))
	}
	return ""
}

// TestGlslangRejects checks the checker: a variant that is not GLSL 4.30
// (a 4.50 built-in) is reported by its key, a valid one is not.
func TestGlslangRejects(t *testing.T) {
	tool, err := exec.LookPath("glslangValidator")
	if err != nil {
		if os.Getenv("STEPWISE_REQUIRE_GLSLANG") != "" {
			t.Fatal("glslangValidator not found: install glslang-tools")
		}
		t.Skip("glslangValidator not found")
	}
	good := "#version 430\nlayout(local_size_x = 1) in;\nlayout(std430, binding = 0) buffer O { float o[]; };\nvoid main() { o[0] = 1.0; }\n"
	bad := "#version 430\nlayout(local_size_x = 1) in;\nlayout(std430, binding = 0) buffer O { float o[]; };\nvoid main() { o[0] = dFdxFine(1.0); }\n"
	assert.Empty(t, glslang(tool, map[string]string{"good.comp|": good}))
	report := glslang(tool, map[string]string{"good.comp|": good, "bad.comp|X=1": bad})
	assert.Contains(t, report, "1 of 2 shader variants")
	assert.Contains(t, report, "bad.comp|X=1")
	assert.NotContains(t, report, "good.comp")
}
