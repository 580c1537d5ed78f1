package tokenizer

import (
	"strings"
	"testing"
)

// prompt75 is a typical prompt of about 75 tokens.
const prompt75 = "a breathtaking panoramic photograph of a misty mountain valley at sunrise, " +
	"with golden light spilling over jagged snow-capped peaks, a winding river reflecting " +
	"the cloudy heavens above, ancient stone bridges, wildflowers in bloom, " +
	"the pastel sky, pine forests covered in frost, a small wooden cabin with smoke rising, " +
	"soft volumetric fog, dramatic clouds, highly detailed, 8k, masterpiece"

func BenchmarkLoad(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if _, err := load(mergesGz); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode75 is the steady state: the BPE cache holds the words.
func BenchmarkEncode75(b *testing.B) {
	tok := Default()
	if n := len(tok.Encode(prompt75)); n < 70 || n > 75 {
		b.Fatalf("prompt has %d tokens", n)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tok.Encode(prompt75)
	}
}

// BenchmarkEncode75Cold clears the BPE cache before every encode.
func BenchmarkEncode75Cold(b *testing.B) {
	tok := Default()
	for i := 0; i < b.N; i++ {
		tok.mu.Lock()
		clear(tok.cache)
		tok.mu.Unlock()
		tok.Encode(prompt75)
	}
}

func BenchmarkEncodeWeighted(b *testing.B) {
	tok := Default()
	p := strings.ReplaceAll(prompt75, "golden light", "(golden light:1.3)")
	for i := 0; i < b.N; i++ {
		if _, err := tok.EncodeWeighted(p); err != nil {
			b.Fatal(err)
		}
	}
}
