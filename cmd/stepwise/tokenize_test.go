package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stepwise/stepwise/internal/golden"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tokenizeGolden returns the golden tokenizer prompts and their input_ids
// rows (diffusers' CLIPTokenizer with ftfy), skipping when absent.
func tokenizeGolden(t *testing.T) ([]string, [][]int64) {
	t.Helper()
	raw, err := os.ReadFile(golden.Path(t, "tokenizer.json"))
	require.NoError(t, err)
	var meta struct {
		Prompts []struct {
			Prompt string `json:"prompt"`
		} `json:"prompts"`
	}
	require.NoError(t, json.Unmarshal(raw, &meta), "tokenizer.json")
	ids := golden.Open(t, "tokenizer.safetensors").I64("input_ids")
	require.Len(t, ids, len(meta.Prompts)*77, "input_ids for %d prompts", len(meta.Prompts))
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
		require.NoError(t, tokenizeTo(&out, nil, []string{"--json", p}), "prompt %d %q", i, p)
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
		require.NoError(t, json.Unmarshal(out.Bytes(), &rep), "prompt %d: output is not JSON:\n%s", i, out.String())
		assert.NotContains(t, strings.TrimSpace(out.String()), "\n", "prompt %d: JSON output is not one line", i)
		require.Len(t, rep.IDs, 77, "prompt %d: ids", i)
		assert.Equal(t, rows[i], rep.IDs, "prompt %d %q: ids", i, p)
		assert.Len(t, rep.Tokens, rep.Count, "prompt %d: count %d, %d tokens", i, rep.Count, len(rep.Tokens))
		assert.Equal(t, rep.Count > 75, rep.Truncated, "prompt %d: truncated with count %d", i, rep.Count)
		if assert.NotEmpty(t, rep.Weighted.Chunks, "prompt %d: weighted chunks malformed", i) {
			assert.Len(t, rep.Weighted.Chunks[0].IDs, 77, "prompt %d: weighted chunks malformed: %+v", i, rep.Weighted.Chunks)
			assert.Len(t, rep.Weighted.Chunks[0].Weights, 77, "prompt %d: weighted chunks malformed: %+v", i, rep.Weighted.Chunks)
		}
	}
}

func TestTokenizeText(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, tokenizeTo(&out, nil, []string{"a", "(cat:1.5)", "BREAK", "dog"}))
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
		assert.Contains(t, s, want, "output")
	}
	out.Reset()
	require.NoError(t, tokenizeTo(&out, strings.NewReader("x,y\n"), []string{"-"}))
	assert.Contains(t, out.String(), `text:      "x,y"`, "stdin prompt not read")
	out.Reset()
	require.NoError(t, tokenizeTo(&out, nil, []string{strings.Repeat("cat ", 80)}))
	assert.Contains(t, out.String(), "80 tokens: 5 over the 75-token limit", "truncation not reported")
	assert.Contains(t, out.String(), "-- chunk 1: 75 of 75 tokens (full) --", "truncation not reported")
	out.Reset()
	require.NoError(t, tokenizeTo(&out, nil, []string{strings.Repeat("cat ", 70) + ", " + strings.Repeat("dog ", 10)}))
	assert.Contains(t, out.String(), "-- chunk 1: 71 of 75 tokens (broken after its last comma;", "comma break not reported")
	assert.ErrorIs(t, tokenizeTo(&out, nil, nil), errUsage, "no TEXT")
}
