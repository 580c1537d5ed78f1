package tokenizer

import (
	"math"
	"slices"
	"testing"
)

func TestParseWeights(t *testing.T) {
	type fr = Fragment
	cases := []struct {
		in   string
		want []Fragment
	}{
		// The examples of A1111's parse_prompt_attention docstring.
		{"normal text", []fr{{"normal text", 1, false}}},
		{"an (important) word", []fr{{"an ", 1, false}, {"important", 1.1, false}, {" word", 1, false}}},
		{"(unbalanced", []fr{{"unbalanced", 1.1, false}}},
		{`\(literal\]`, []fr{{"(literal]", 1, false}}},
		{"(unnecessary)(parens)", []fr{{"unnecessaryparens", 1.1, false}}},
		{"a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", []fr{
			{"a ", 1, false}, {"house", 1.5730000000000004, false}, {" ", 1.1, false}, {"on", 1, false},
			{" a ", 1.1, false}, {"hill", 0.55, false}, {", sun, ", 1.1, false},
			{"sky", 1.4641000000000006, false}, {".", 1.1, false}}},
		{"", []fr{{"", 1, false}}},
		{"((word))", []fr{{"word", 1.2100000000000002, false}}},
		{"[word]", []fr{{"word", 1 / 1.1, false}}},
		{"a) b] c:1.2)", []fr{{"a) b] c:1.2)", 1, false}}},
		{"x ( y : 2 )", []fr{{"x ", 1, false}, {" y ", 2, false}}},
		{`a\b \\ c`, []fr{{`ab \ c`, 1, false}}},
		{"cat BREAK dog", []fr{{"cat", 1, false}, {"BREAK", -1, true}, {"dog", 1, false}}},
		{"catBREAK dog", []fr{{"catBREAK dog", 1, false}}},
		// Inside brackets the marker's weight is no longer -1, so (as in A1111)
		// it is no break: "BREAK" is tokenized as text.
		{"(cat BREAK dog)", []fr{{"cat", 1.1, false}, {"BREAK", -1.1, false}, {"dog", 1.1, false}}},
	}
	for _, c := range cases {
		got, err := ParseWeights(c.in)
		if err != nil {
			t.Errorf("ParseWeights(%q): %v", c.in, err)
			continue
		}
		if len(got) != len(c.want) {
			t.Errorf("ParseWeights(%q) = %+v, want %+v", c.in, got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("ParseWeights(%q)[%d] = %+v, want %+v", c.in, i, got[i], c.want[i])
			}
		}
	}
	if _, err := ParseWeights("(a:.)"); err == nil {
		t.Error(`ParseWeights("(a:.)") accepted a weight that is not a number`)
	}
}

func repeat(word string, n int) string {
	s := ""
	for i := 0; i < n; i++ {
		s += word + " "
	}
	return s
}

func TestEncodeWeightedChunks(t *testing.T) {
	tok := Default()
	cat, dog := tok.Encode("cat")[0], tok.Encode("dog")[0]

	check := func(name string, e Encoded, wantChunks [][]int32, wantCount int) {
		t.Helper()
		if len(e.Chunks) != len(wantChunks) || len(e.Weights) != len(wantChunks) {
			t.Fatalf("%s: %d chunks, %d weight rows, want %d", name, len(e.Chunks), len(e.Weights), len(wantChunks))
		}
		for i := range wantChunks {
			if !slices.Equal(e.Chunks[i], Pad77(wantChunks[i])) {
				t.Errorf("%s: chunk %d = %v, want Pad77(%v)", name, i, e.Chunks[i], wantChunks[i])
			}
		}
		if e.TokenCount != wantCount || e.Chunked != (len(wantChunks) > 1) {
			t.Errorf("%s: TokenCount %d Chunked %v, want %d %v", name, e.TokenCount, e.Chunked, wantCount, len(wantChunks) > 1)
		}
	}
	ids := func(parts ...any) []int32 {
		var out []int32
		for i := 0; i < len(parts); i += 2 {
			for j := 0; j < parts[i+1].(int); j++ {
				out = append(out, parts[i].(int32))
			}
		}
		return out
	}

	e, err := tok.EncodeWeighted(repeat("cat", 70) + ", " + repeat("dog", 10))
	if err != nil {
		t.Fatal(err)
	}
	// The chunk fills after the 4th dog; the comma is 5 tokens back, so the
	// dogs move to the second chunk.
	check("comma backtrack", e, [][]int32{ids(cat, 70, commaID, 1), ids(dog, 10)}, 85)

	e, _ = tok.EncodeWeighted(repeat("cat", 80))
	check("no comma", e, [][]int32{ids(cat, 75), ids(cat, 5)}, 80)

	e, _ = tok.EncodeWeighted(repeat("cat", 50) + ", " + repeat("dog", 40))
	// The comma is 25 tokens back when the chunk fills: no backtrack.
	check("far comma", e, [][]int32{ids(cat, 50, commaID, 1, dog, 24), ids(dog, 16)}, 91)

	e, _ = tok.EncodeWeighted("cat BREAK dog")
	check("BREAK", e, [][]int32{ids(cat, 1), ids(dog, 1)}, 76)

	e, _ = tok.EncodeWeighted("")
	check("empty", e, [][]int32{nil}, 0)

	e, _ = tok.EncodeWeighted("a (cat:1.5) [dog]")
	if len(e.Chunks) != 1 {
		t.Fatalf("weighted: %d chunks", len(e.Chunks))
	}
	wantW := []float32{1, 1, 1.5, float32(1 / 1.1), 1}
	for i, w := range wantW {
		if e.Weights[0][i] != w {
			t.Errorf("weighted: weight[%d] = %v, want %v (all %v)", i, e.Weights[0][i], w, e.Weights[0][:6])
		}
	}
	if e.Chunks[0][2] != cat || e.Chunks[0][3] != dog || e.Chunks[0][4] != EOS {
		t.Errorf("weighted: ids %v", e.Chunks[0][:6])
	}
	for i := 5; i < ContextLen; i++ {
		if e.Weights[0][i] != 1 {
			t.Fatalf("weighted: padding weight[%d] = %v", i, e.Weights[0][i])
		}
	}
}

func TestApplyWeights(t *testing.T) {
	// Hand computation: z = [[1 2] [3 4]], w = [1 2]: weighted [[1 2] [6 8]],
	// mean 2.5 before and 4.25 after, so everything is scaled by 10/17.
	z := []float32{1, 2, 3, 4}
	ApplyWeights(z, 2, 2, []float32{1, 2})
	want := []float64{10.0 / 17, 20.0 / 17, 60.0 / 17, 80.0 / 17}
	for i := range z {
		if math.Abs(float64(z[i])-want[i]) > 1e-6 {
			t.Errorf("z[%d] = %v, want %v", i, z[i], want[i])
		}
	}
	// Unit weights leave z unchanged.
	z = []float32{0.5, -1, 2, 7}
	ApplyWeights(z, 2, 2, []float32{1, 1})
	for i, v := range []float32{0.5, -1, 2, 7} {
		if z[i] != v {
			t.Errorf("unit weights changed z[%d] to %v", i, z[i])
		}
	}
}
