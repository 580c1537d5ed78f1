package tokenizer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Fragment is one run of prompt text with the attention weight A1111's
// syntax gives it. A BREAK keyword is a fragment with Break set (and Text
// "BREAK").
type Fragment struct {
	Text   string
	Weight float64
	Break  bool
}

// Encoded is a prompt split into the 77-token chunks the text encoder
// takes, as A1111 builds them.
type Encoded struct {
	Chunks    [][]int32   // each ContextLen ids: BOS, 75 tokens or EOS padding, EOS
	Weights   [][]float32 // per position of Chunks; 1 for BOS, EOS and padding
	Lengths   []int       // prompt tokens in each chunk (positions 1..Lengths[i])
	Fragments []Fragment  // the parsed prompt
	// TokenCount is A1111's count: 75 for every full chunk plus the tokens
	// of the last one.
	TokenCount int
	// Chunked is true when the prompt needed more than one chunk.
	Chunked bool
}

// Weight multipliers of A1111's emphasis syntax.
const (
	roundMultiplier  = 1.1
	squareMultiplier = 1 / 1.1
)

// commaBacktrack is A1111's comma_padding_backtrack default: when a chunk
// fills up, text after a comma within its last 20 tokens moves on to the
// next chunk.
const commaBacktrack = 20

// commaID is the id of ",</w>".
const commaID int32 = 267

// ParseWeights splits a prompt written in A1111's attention syntax into
// weighted fragments, the way A1111's parse_prompt_attention does:
// "(a)" multiplies by 1.1, "[a]" divides by 1.1, "(a:1.5)" sets 1.5 (all
// nest multiplicatively), "\(" "\)" "\[" "\]" "\\" are literal, a lone
// backslash is dropped, unmatched closing brackets are literal text,
// unclosed opening brackets apply to the end of the prompt, and "BREAK"
// (as a whole word, outside brackets) starts a new chunk. Adjacent
// fragments of equal weight are merged. An empty prompt gives one empty
// fragment of weight 1. The error reports a weight that is not a number.
// Extra-network tags (<lora:NAME:W>, see ExtraNetworks) are removed first,
// as A1111 does: they never reach the tokenizer.
func ParseWeights(prompt string) ([]Fragment, error) {
	prompt, _ = ExtraNetworks(prompt)
	var res []Fragment
	var round, square []int
	multiply := func(from int, m float64) {
		for i := from; i < len(res); i++ {
			res[i].Weight *= m
		}
	}
	plain := func(text string) {
		for i, part := range splitBreak(text) {
			if i > 0 {
				res = append(res, Fragment{Text: "BREAK", Weight: -1, Break: true})
			}
			res = append(res, Fragment{Text: part, Weight: 1})
		}
	}
	s := prompt
	for i := 0; i < len(s); {
		c := s[i]
		switch c {
		case '\\':
			if i+1 < len(s) && strings.IndexByte(`()[]\`, s[i+1]) >= 0 {
				res = append(res, Fragment{Text: s[i+1 : i+2], Weight: 1})
				i += 2
			} else {
				res = append(res, Fragment{Text: "", Weight: 1})
				i++
			}
		case '(':
			round = append(round, len(res))
			i++
		case '[':
			square = append(square, len(res))
			i++
		case ':':
			num, n := weightSuffix(s[i:])
			if n == 0 {
				plain(":")
				i++
				continue
			}
			if len(round) == 0 {
				plain(s[i : i+n])
				i += n
				continue
			}
			w, err := strconv.ParseFloat(num, 64)
			if err != nil && !errors.Is(err, strconv.ErrRange) { // Python's float() overflows to inf
				return nil, fmt.Errorf("tokenizer: prompt weight %q at byte %d is not a number", num, i)
			}
			multiply(round[len(round)-1], w)
			round = round[:len(round)-1]
			i += n
		case ')':
			if len(round) > 0 {
				multiply(round[len(round)-1], roundMultiplier)
				round = round[:len(round)-1]
			} else {
				plain(")")
			}
			i++
		case ']':
			if len(square) > 0 {
				multiply(square[len(square)-1], squareMultiplier)
				square = square[:len(square)-1]
			} else {
				plain("]")
			}
			i++
		default:
			j := i + 1
			for j < len(s) && strings.IndexByte(`\()[]:`, s[j]) < 0 {
				j++
			}
			plain(s[i:j])
			i = j
		}
	}
	for _, p := range round {
		multiply(p, roundMultiplier)
	}
	for _, p := range square {
		multiply(p, squareMultiplier)
	}
	if len(res) == 0 {
		return []Fragment{{Text: "", Weight: 1}}, nil
	}
	out := res[:1]
	for _, f := range res[1:] {
		last := &out[len(out)-1]
		if f.Weight == last.Weight {
			last.Text += f.Text
			last.Break = last.Break && f.Text == ""
			continue
		}
		out = append(out, f)
	}
	for i := range out {
		// Only an untouched marker still means BREAK (A1111 compares the
		// text and a weight of exactly -1).
		out[i].Break = out[i].Text == "BREAK" && out[i].Weight == -1
	}
	return out, nil
}

// weightSuffix matches `:\s*([+-]?[.\d]+)\s*\)` at the start of s and
// returns the number text and the match length (0 when it does not match).
func weightSuffix(s string) (string, int) {
	i := 1
	i += spaceRun(s[i:])
	start := i
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := i
	for i < len(s) && (s[i] == '.' || s[i] >= '0' && s[i] <= '9') {
		i++
	}
	if i == digits {
		return "", 0
	}
	num := s[start:i]
	i += spaceRun(s[i:])
	if i >= len(s) || s[i] != ')' {
		return "", 0
	}
	return num, i + 1
}

// spaceRun returns the byte length of the Python whitespace at the start of s.
func spaceRun(s string) int {
	n := 0
	for n < len(s) {
		r, sz := utf8.DecodeRuneInString(s[n:])
		if !isPySpace(r) {
			break
		}
		n += sz
	}
	return n
}

func isPyWord(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) }

// splitBreak splits text at `\s*\bBREAK\b\s*` like Python's re.split.
func splitBreak(text string) []string {
	var parts []string
	last := 0 // start of the current part
	for search := 0; ; {
		k := strings.Index(text[search:], "BREAK")
		if k < 0 {
			break
		}
		k += search
		end := k + len("BREAK")
		before, _ := utf8.DecodeLastRuneInString(text[:k])
		after, _ := utf8.DecodeRuneInString(text[end:])
		if (k > 0 && isPyWord(before)) || (end < len(text) && isPyWord(after)) {
			search = k + 1
			continue
		}
		// Leading whitespace belongs to the separator, but not before the
		// end of the previous one.
		start := k
		for start > last {
			r, sz := utf8.DecodeLastRuneInString(text[last:start])
			if !isPySpace(r) {
				break
			}
			start -= sz
		}
		end += spaceRun(text[end:])
		parts = append(parts, text[last:start])
		last, search = end, end
	}
	return append(parts, text[last:])
}

// EncodeWeighted parses prompt with ParseWeights, tokenizes each fragment
// on its own, and packs the tokens into chunks of 75 the way A1111 does:
// a BREAK or a full chunk starts the next one, and when a chunk fills up
// with a comma among its last 20 tokens, the tokens after that comma move
// to the next chunk. Each chunk is framed by BOS and EOS and padded with
// EOS; BOS, EOS and padding have weight 1.
func (t *Tokenizer) EncodeWeighted(prompt string) (Encoded, error) {
	frags, err := ParseWeights(prompt)
	if err != nil {
		return Encoded{}, err
	}
	enc := Encoded{Fragments: frags}
	var toks []int32
	var ws []float32
	lastComma := -1
	next := func(isLast bool) {
		if isLast {
			enc.TokenCount += len(toks)
		} else {
			enc.TokenCount += MaxTokens
		}
		ids := make([]int32, 0, ContextLen)
		w := make([]float32, 0, ContextLen)
		ids = append(append(ids, BOS), toks...)
		w = append(append(w, 1), ws...)
		for len(ids) < ContextLen-1 {
			ids = append(ids, EOS)
			w = append(w, 1)
		}
		ids = append(ids, EOS)
		w = append(w, 1)
		enc.Chunks = append(enc.Chunks, ids)
		enc.Lengths = append(enc.Lengths, len(toks))
		enc.Weights = append(enc.Weights, w)
		toks, ws, lastComma = nil, nil, -1
	}
	for _, f := range frags {
		if f.Break {
			next(false)
			continue
		}
		for _, id := range t.Encode(f.Text) {
			if id == commaID {
				lastComma = len(toks)
			} else if len(toks) == MaxTokens && lastComma != -1 && len(toks)-lastComma <= commaBacktrack {
				cut := lastComma + 1
				relocT := append([]int32(nil), toks[cut:]...)
				relocW := append([]float32(nil), ws[cut:]...)
				toks, ws = toks[:cut], ws[:cut]
				next(false)
				toks, ws = relocT, relocW
			}
			if len(toks) == MaxTokens {
				next(false)
			}
			toks = append(toks, id)
			ws = append(ws, float32(f.Weight))
		}
	}
	if len(toks) > 0 || len(enc.Chunks) == 0 {
		next(true)
	}
	enc.Chunked = len(enc.Chunks) > 1
	return enc, nil
}

// ApplyWeights applies per-token attention weights to one chunk's text
// embedding z (tokens rows of dim values, row-major) in place, the way
// A1111 does: every row is multiplied by its weight, then the whole chunk
// is rescaled so its mean equals the mean before weighting
// (z' = z*w; z' *= mean(z)/mean(z')). A1111 takes both means over the
// whole batch it encodes at once; for a batch of one chunk that is this
// chunk. When the weighted mean is zero the rescaling is skipped. It panics
// if the lengths disagree.
func ApplyWeights(z []float32, tokens, dim int, weights []float32) {
	if len(z) != tokens*dim || len(weights) != tokens {
		panic(fmt.Sprintf("tokenizer.ApplyWeights: %d values, %d weights for %dx%d", len(z), len(weights), tokens, dim))
	}
	if len(z) == 0 {
		return
	}
	var before, after float64
	for i := 0; i < tokens; i++ {
		w := weights[i]
		row := z[i*dim : (i+1)*dim]
		for j, v := range row {
			before += float64(v)
			row[j] = v * w
			after += float64(row[j])
		}
	}
	if after == 0 {
		return
	}
	scale := float32(before / after)
	for i := range z {
		z[i] *= scale
	}
}
