// Package tokenizer turns prompt text into token ids: OpenAI CLIP's
// byte-level BPE (the vocabulary is embedded in the binary), the text
// clean-up the reference tokenizers apply first (ftfy's fixes, whitespace
// collapsing, lower-casing) and A1111's prompt-weighting syntax, which
// splits a prompt into weighted 75-token chunks; and SentencePiece's
// unigram model read from a model's own spiece.model (T5, Unigram).
//
// Encode equals transformers' CLIPTokenizer with ftfy installed (what
// diffusers, CompVis and A1111 use) id for id; Pad77 adds BOS/EOS and the
// EOS padding of Stable Diffusion 1.x.
package tokenizer

import (
	"bytes"
	"compress/gzip"
	"container/heap"
	_ "embed" // the vocabulary files
	"fmt"
	"io"
	"strings"
	"sync"
)

// Special token ids and sizes of the CLIP text model's input.
const (
	BOS        int32 = 49406 // <|startoftext|>
	EOS        int32 = 49407 // <|endoftext|>, also the padding token for SD1.x
	VocabSize        = 49408 // number of token ids
	MaxTokens        = 75    // BPE tokens that fit between BOS and EOS
	ContextLen       = 77    // positions of the text encoder
)

const (
	bosText = "<|startoftext|>"
	eosText = "<|endoftext|>"
)

// merges.txt.gz is CLIP's BPE merge list. The vocabulary follows from it
// exactly as CLIP builds it: the 256 byte symbols, the same with "</w>",
// one token per merge in rank order, then <|startoftext|> and
// <|endoftext|>. vocab.json.gz beside it is the published id table; a test
// checks that the built vocabulary equals it id for id.
//
//go:embed merges.txt.gz
var mergesGz []byte

// Tokenizer is a loaded CLIP BPE vocabulary. It is safe for concurrent use.
type Tokenizer struct {
	decoder  []string         // id -> token string (byte-to-unicode form)
	merges   map[uint64]merge // (left id, right id) -> merge rank and result
	byteID   [256]int32       // id of the symbol of one byte
	byteEnd  [256]int32       // id of the symbol of one byte + "</w>"
	byteRune [256]rune        // CLIP's bytes_to_unicode table

	mu    sync.Mutex
	cache map[string][]int32 // pre-token -> BPE ids

	// extra is one more literal split out as a special token (extraID),
	// as transformers does with a pad_token that is not in the vocabulary's
	// special tokens ("!" = id 0 for SD 2.x and SDXL's OpenCLIP tokenizers).
	extra   string
	extraID int32
}

// WithSpecial returns a tokenizer sharing t's vocabulary that also splits
// text out as the special token id wherever it occurs (before cleaning and
// BPE), as transformers' CLIPTokenizer does with an added pad_token such as
// SD 2.x's "!" (id 0): "world!" then encodes as "world</w>", 0, not
// "world</w>", "!</w>".
func (t *Tokenizer) WithSpecial(text string, id int32) *Tokenizer {
	return &Tokenizer{decoder: t.decoder, merges: t.merges, byteID: t.byteID, byteEnd: t.byteEnd, byteRune: t.byteRune,
		cache: map[string][]int32{}, extra: text, extraID: id}
}

type merge struct{ rank, id int32 }

// cacheLimit bounds the BPE cache; it is cleared when it grows past this.
const cacheLimit = 1 << 14

var (
	defaultOnce sync.Once
	defaultTok  *Tokenizer
	defaultErr  error
)

// Default returns the tokenizer of the embedded vocabulary, loading it on
// the first call (about 15 ms) and sharing it afterwards.
func Default() *Tokenizer {
	defaultOnce.Do(func() { defaultTok, defaultErr = load(mergesGz) })
	if defaultErr != nil {
		// The embedded files are part of the binary; a failure here is a
		// build defect, not a user error.
		panic(defaultErr)
	}
	return defaultTok
}

// New returns the tokenizer of the embedded CLIP vocabulary. It is the same
// shared instance as Default.
func New() *Tokenizer { return Default() }

// clipByteOrder lists the bytes in the order of CLIP's bytes_to_unicode:
// the printable Latin-1 bytes, then the rest. Byte symbol ids follow it.
func clipByteOrder() []int {
	var order []int
	for b := 0; b < 256; b++ {
		if printableByte(b) {
			order = append(order, b)
		}
	}
	for b := 0; b < 256; b++ {
		if !printableByte(b) {
			order = append(order, b)
		}
	}
	return order
}

func printableByte(b int) bool {
	return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
}

// bytesToUnicode is CLIP's reversible map from bytes to printable runes:
// printable Latin-1 bytes map to themselves, the rest to U+0100 onwards.
func bytesToUnicode() [256]rune {
	var m [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if printableByte(b) {
			m[b] = rune(b)
		} else {
			m[b] = rune(256 + n)
			n++
		}
	}
	return m
}

func gunzip(name string, data []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", name, err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", name, err)
	}
	return out, nil
}

// numMerges is the number of merges CLIP uses (49152 - 256 - 2).
const numMerges = VocabSize - 2*256 - 2

// load builds a tokenizer from a gzip-compressed merges.txt.
func load(mergesGz []byte) (*Tokenizer, error) {
	mergesTxt, err := gunzip("merges.txt", mergesGz)
	if err != nil {
		return nil, err
	}
	t := &Tokenizer{
		decoder:  make([]string, VocabSize),
		merges:   make(map[uint64]merge, numMerges),
		byteRune: bytesToUnicode(),
		cache:    make(map[string][]int32),
	}
	enc := make(map[string]int32, VocabSize)
	for k, b := range clipByteOrder() {
		s := string(t.byteRune[b])
		t.decoder[k], t.decoder[256+k] = s, s+"</w>"
		enc[t.decoder[k]], enc[t.decoder[256+k]] = int32(k), int32(256+k)
		t.byteID[b], t.byteEnd[b] = int32(k), int32(256+k)
	}
	text := string(mergesTxt)
	header, rest, _ := strings.Cut(text, "\n")
	if !strings.HasPrefix(header, "#version") {
		return nil, fmt.Errorf("tokenizer: merges.txt: missing #version header")
	}
	for i := 0; i < numMerges; i++ {
		line, more, ok := strings.Cut(rest, "\n")
		if !ok && line == "" {
			return nil, fmt.Errorf("tokenizer: merges.txt: %d merges, want %d", i, numMerges)
		}
		rest = more
		a, b, ok := strings.Cut(line, " ")
		ia, oka := enc[a]
		ib, okb := enc[b]
		if !ok || !oka || !okb {
			return nil, fmt.Errorf("tokenizer: merges.txt line %d: %q is not a pair of known symbols", i+2, line)
		}
		id := int32(2*256 + i)
		m := line[:len(a)] + line[len(a)+1:]
		if _, dup := enc[m]; dup {
			return nil, fmt.Errorf("tokenizer: merges.txt line %d: %q merges into an existing symbol", i+2, line)
		}
		t.decoder[id], enc[m] = m, id
		t.merges[uint64(uint32(ia))<<32|uint64(uint32(ib))] = merge{rank: int32(i), id: id}
	}
	t.decoder[BOS], t.decoder[EOS] = bosText, eosText
	return t, nil
}

// Token returns the vocabulary string of id (in CLIP's byte-to-unicode form,
// "</w>" marking a word end), or "" for an id outside the vocabulary.
func (t *Tokenizer) Token(id int32) string {
	if id < 0 || int(id) >= len(t.decoder) {
		return ""
	}
	return t.decoder[id]
}

// Encode returns the BPE ids of text without BOS/EOS and without truncation,
// exactly as transformers' CLIPTokenizer (with ftfy) tokenizes it. Literal
// "<|startoftext|>" and "<|endoftext|>" become the special ids.
func (t *Tokenizer) Encode(text string) []int32 {
	var ids []int32
	t.splitSpecial(text, func(piece string, special int32) {
		if special >= 0 {
			ids = append(ids, special)
			return
		}
		pretokenize(Clean(piece), func(tok string) {
			ids = t.appendBPE(ids, tok)
		})
	})
	return ids
}

// Tokens returns the token strings of Encode(text).
func (t *Tokenizer) Tokens(text string) []string {
	ids := t.Encode(text)
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = t.Token(id)
	}
	return out
}

// Pad77 returns the 77 ids the text encoder takes: BOS, the first 75 of
// ids, EOS, then EOS padding (what diffusers' pipelines do with
// padding="max_length", truncation=True).
func Pad77(ids []int32) []int32 {
	out := make([]int32, ContextLen)
	out[0] = BOS
	n := copy(out[1:1+MaxTokens], ids)
	for i := 1 + n; i < ContextLen; i++ {
		out[i] = EOS
	}
	return out
}

// splitSpecial splits text around literal special tokens the way
// transformers' added-token trie does, calling fn with each plain piece
// (special -1) or special token id.
func (t *Tokenizer) splitSpecial(text string, fn func(piece string, special int32)) {
	for len(text) > 0 {
		i, id, n := -1, int32(-1), 0
		if j := strings.Index(text, bosText); j >= 0 {
			i, id, n = j, BOS, len(bosText)
		}
		if j := strings.Index(text, eosText); j >= 0 && (i < 0 || j < i) {
			i, id, n = j, EOS, len(eosText)
		}
		if t.extra != "" {
			if j := strings.Index(text, t.extra); j >= 0 && (i < 0 || j < i) {
				i, id, n = j, t.extraID, len(t.extra)
			}
		}
		if i < 0 {
			fn(text, -1)
			return
		}
		if i > 0 {
			fn(text[:i], -1)
		}
		fn("", id)
		text = text[i+n:]
	}
}

// appendBPE appends the BPE ids of one pre-token (plain UTF-8) to ids.
func (t *Tokenizer) appendBPE(ids []int32, tok string) []int32 {
	switch tok {
	case bosText:
		return append(ids, BOS)
	case eosText:
		return append(ids, EOS)
	}
	t.mu.Lock()
	cached, ok := t.cache[tok]
	t.mu.Unlock()
	if ok {
		return append(ids, cached...)
	}
	word := t.bpe(tok)
	t.mu.Lock()
	if len(t.cache) >= cacheLimit {
		clear(t.cache)
	}
	t.cache[tok] = word
	t.mu.Unlock()
	return append(ids, word...)
}

// longWord is the length from which bpe switches to the heap algorithm.
const longWord = 48

// bpe merges the byte symbols of tok by rank until no listed pair remains:
// each step merges every occurrence, left to right, of the adjacent pair
// with the lowest rank (CLIP's algorithm).
func (t *Tokenizer) bpe(tok string) []int32 {
	word := make([]int32, len(tok))
	for i := 0; i < len(tok); i++ {
		word[i] = t.byteID[tok[i]]
	}
	word[len(word)-1] = t.byteEnd[tok[len(tok)-1]]
	if len(word) >= longWord {
		return t.bpeHeap(word)
	}
	return t.bpeScan(word)
}

// bpeScan is bpe by repeated scans, fast for short words.
func (t *Tokenizer) bpeScan(word []int32) []int32 {
	for len(word) > 1 {
		best := merge{rank: -1}
		var bestL, bestR int32
		for i := 0; i+1 < len(word); i++ {
			m, ok := t.merges[uint64(uint32(word[i]))<<32|uint64(uint32(word[i+1]))]
			if ok && (best.rank < 0 || m.rank < best.rank) {
				best, bestL, bestR = m, word[i], word[i+1]
			}
		}
		if best.rank < 0 {
			break
		}
		out := word[:0]
		for i := 0; i < len(word); {
			if i+1 < len(word) && word[i] == bestL && word[i+1] == bestR {
				out = append(out, best.id)
				i += 2
			} else {
				out = append(out, word[i])
				i++
			}
		}
		word = out
	}
	return word
}

// bpeHeap is bpe in O(n log n) for long words: candidate pairs wait in a
// heap ordered by (rank, position). Merging a pair only creates pairs of
// higher rank, so taking candidates in that order and skipping stale ones
// merges exactly what bpe's repeated scans would.
func (t *Tokenizer) bpeHeap(word []int32) []int32 {
	n := len(word)
	next := make([]int, n) // index of the next live symbol, n at the end
	prev := make([]int, n) // index of the previous live symbol, -1 at the start
	for i := range word {
		next[i], prev[i] = i+1, i-1
	}
	h := &pairHeap{}
	push := func(i int) {
		if i < 0 || next[i] >= n {
			return
		}
		j := next[i]
		if m, ok := t.merges[uint64(uint32(word[i]))<<32|uint64(uint32(word[j]))]; ok {
			heap.Push(h, pairCand{rank: m.rank, pos: i, left: word[i], right: word[j], id: m.id})
		}
	}
	for i := 0; i+1 < n; i++ {
		push(i)
	}
	dead := make([]bool, n)
	for h.Len() > 0 {
		c := heap.Pop(h).(pairCand)
		i := c.pos
		if dead[i] || word[i] != c.left || next[i] >= n || word[next[i]] != c.right {
			continue // stale
		}
		j := next[i]
		word[i] = c.id
		dead[j] = true
		next[i] = next[j]
		if next[j] < n {
			prev[next[j]] = i
		}
		push(prev[i])
		push(i)
	}
	out := word[:0]
	for i := 0; i < n; i = next[i] {
		out = append(out, word[i])
	}
	return out
}

type pairCand struct {
	rank, left, right, id int32
	pos                   int
}

type pairHeap []pairCand

func (h pairHeap) Len() int { return len(h) }
func (h pairHeap) Less(a, b int) bool {
	if h[a].rank != h[b].rank {
		return h[a].rank < h[b].rank
	}
	return h[a].pos < h[b].pos
}
func (h pairHeap) Swap(a, b int) { h[a], h[b] = h[b], h[a] }
func (h *pairHeap) Push(x any)   { *h = append(*h, x.(pairCand)) }
func (h *pairHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
