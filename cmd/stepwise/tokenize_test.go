package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/internal/golden"
)

// tokenizeGolden returns the golden tokenizer prompts and their input_ids
// rows (diffusers' CLIPTokenizer with ftfy), skipping when absent.
func tokenizeGolden(t *testing.T) ([]string, [][]int64) {
	t.Helper()
	raw, err := os.ReadFile(golden.Path(t, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Prompts []struct {
			Prompt string `json:"prompt"`
		} `json:"prompts"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatalf("tokenizer.json: %v", err)
	}
	ids := golden.Open(t, "tokenizer.safetensors").I64("input_ids")
	if len(ids) != len(meta.Prompts)*77 {
		t.Fatalf("input_ids has %d values for %d prompts", len(ids), len(meta.Prompts))
	}
	prompts := make([]string, len(meta.Prompts))
	rows := make([][]int64, len(meta.Prompts))
	for i, p := range meta.Prompts {
		prompts[i] = p.Prompt
		rows[i] = ids[i*77 : (i+1)*77]
	}
	return prompts, rows
}

func TestTokenizeJSONGolden(t *testing.T) {
	prompts, rows := tokenizeGolden(t)
	for i, p := range prompts {
		var out bytes.Buffer
		if err := tokenizeTo(&out, nil, []string{"--json", p}); err != nil {
			t.Fatalf("prompt %d %q: %v", i, p, err)
		}
		var rep struct {
			IDs       []int64  `json:"ids"`
			Tokens    []string `json:"tokens"`
			Count     int      `json:"count"`
			Truncated bool     `json:"truncated"`
			Weighted  struct {
				Chunks []struct {
					IDs     []int64   `json:"ids"`
					Weights []float64 `json:"weights"`
				} `json:"chunks"`
			} `json:"weighted"`
		}
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("prompt %d: output is not JSON: %v\n%s", i, err, out.String())
		}
		if strings.Count(strings.TrimSpace(out.String()), "\n") != 0 {
			t.Errorf("prompt %d: JSON output is not one line", i)
		}
		if len(rep.IDs) != 77 {
			t.Fatalf("prompt %d: %d ids", i, len(rep.IDs))
		}
		for j := range rows[i] {
			if rep.IDs[j] != rows[i][j] {
				t.Errorf("prompt %d %q: ids = %v, want %v", i, p, rep.IDs, rows[i])
				break
			}
		}
		if rep.Count != len(rep.Tokens) || rep.Truncated != (rep.Count > 75) {
			t.Errorf("prompt %d: count %d, %d tokens, truncated %v", i, rep.Count, len(rep.Tokens), rep.Truncated)
		}
		if len(rep.Weighted.Chunks) == 0 || len(rep.Weighted.Chunks[0].IDs) != 77 || len(rep.Weighted.Chunks[0].Weights) != 77 {
			t.Errorf("prompt %d: weighted chunks malformed: %+v", i, rep.Weighted.Chunks)
		}
	}
}

func TestTokenizeText(t *testing.T) {
	var out bytes.Buffer
	if err := tokenizeTo(&out, nil, []string{"a", "(cat:1.5)", "BREAK", "dog"}); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		`text:      "a (cat:1.5) BREAK dog"`,
		"plain:     10 of 75 tokens",
		"weighted:  76/150 tokens in 2 chunk(s)",
		`"cat" x1.5`,
		"| BREAK |",
		"-- chunk 1: 2 of 75 tokens (ended by BREAK) --",
		"-- chunk 2: 1 of 75 tokens --",
		"   2   2368  cat</w>                  1.5\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	out.Reset()
	if err := tokenizeTo(&out, strings.NewReader("x,y\n"), []string{"-"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `text:      "x,y"`) {
		t.Errorf("stdin prompt not read:\n%s", out.String())
	}
	out.Reset()
	if err := tokenizeTo(&out, nil, []string{strings.Repeat("cat ", 80)}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "80 tokens: 5 over the 75-token limit") ||
		!strings.Contains(out.String(), "-- chunk 1: 75 of 75 tokens (full) --") {
		t.Errorf("truncation not reported:\n%s", out.String())
	}
	out.Reset()
	if err := tokenizeTo(&out, nil, []string{strings.Repeat("cat ", 70) + ", " + strings.Repeat("dog ", 10)}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "-- chunk 1: 71 of 75 tokens (broken after its last comma;") {
		t.Errorf("comma break not reported:\n%s", out.String())
	}
	if err := tokenizeTo(&out, nil, nil); !errors.Is(err, errUsage) {
		t.Errorf("no TEXT: err = %v, want errUsage", err)
	}
}
