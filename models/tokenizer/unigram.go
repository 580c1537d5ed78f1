package tokenizer

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/stepwise/stepwise/internal/safefile"
)

// spaceSymbol is SentencePiece's escaped space, U+2581.
const spaceSymbol = "\u2581"

// unkPenalty is what SentencePiece's unigram lattice subtracts from the
// lowest piece score for an unknown character.
const unkPenalty = 10

// maxSPMBytes caps the size of a spiece.model read (T5's is 792 KiB).
const maxSPMBytes = 64 << 20

// Unigram is a SentencePiece unigram tokenizer, read from a model's own
// spiece.model: T5's (SD3's tokenizer_3, Flux's tokenizer_2, DeepFloyd
// IF's tokenizer). Encode equals sentencepiece's encode (normalisation
// with the model's precompiled map, whitespace handling, Viterbi over the
// piece scores, runs of unknown characters merged into one <unk>);
// EncodePadded adds what T5TokenizerFast adds for plain prompts (</s>,
// truncation and <pad> padding). It is safe for concurrent use.
type Unigram struct {
	m        *spmModel
	cm       *charsMap
	byText   map[string]int32
	maxLen   int // longest piece in bytes
	minScore float32
	maxScore float32
	// EOS and Pad are the ids of "</s>" and "<pad>"; Unk that of "<unk>".
	EOS, Pad, Unk int32
	// extra is the number of <extra_id_N> tokens transformers appends after
	// the pieces (tokenizer_config.json "extra_ids", 100 for T5).
	extra int
}

// LoadUnigram reads a SentencePiece model file (spiece.model), a Hugging
// Face tokenizer.json with a Unigram model, or the folder holding one (a
// diffusers tokenizer_3 / tokenizer_2 folder: spiece.model first; its
// tokenizer_config.json may add <extra_id_N> tokens).
func LoadUnigram(path string) (*Unigram, error) {
	dir := ""
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		dir, path = path, filepath.Join(path, "spiece.model")
		if _, err := os.Stat(path); err != nil {
			if j := filepath.Join(dir, "tokenizer.json"); fileExists(j) {
				path = j
			}
		}
	}
	limit := int64(maxSPMBytes)
	if filepath.Ext(path) == ".json" {
		limit = 64 << 20
	}
	data, err := safefile.ReadFile(path, limit)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	parse := ParseUnigram
	if filepath.Ext(path) == ".json" {
		parse = ParseUnigramJSON
	}
	u, err := parse(path, data)
	if err != nil {
		return nil, err
	}
	if dir != "" && filepath.Ext(path) != ".json" {
		u.extra = extraIDs(filepath.Join(dir, "tokenizer_config.json"))
	}
	return u, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// extraIDs reads "extra_ids" from a T5 tokenizer_config.json (0 when the
// file or the key is absent or unreadable: they only affect the ids
// Piece can name).
func extraIDs(path string) int {
	data, err := safefile.ReadFile(path, 1<<20)
	if err != nil {
		return 0
	}
	var c struct {
		ExtraIDs int `json:"extra_ids"`
	}
	if json.Unmarshal(data, &c) != nil || c.ExtraIDs < 0 || c.ExtraIDs > 1<<16 {
		return 0
	}
	return c.ExtraIDs
}

// ParseUnigram reads a serialised SentencePiece ModelProto; name is used in
// errors. Only unigram models are accepted.
func ParseUnigram(name string, data []byte) (*Unigram, error) {
	m, err := parseSPM(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: not a readable SentencePiece model: %w", name, err)
	}
	if m.modelType != 1 {
		return nil, fmt.Errorf("tokenizer %s: SentencePiece model type %d is not supported (want 1, unigram)", name, m.modelType)
	}
	return newUnigram(name, m)
}

// newUnigram indexes a parsed model.
func newUnigram(name string, m *spmModel) (*Unigram, error) {
	cm, err := newCharsMap(m.charsmap)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", name, err)
	}
	u := &Unigram{m: m, cm: cm, byText: map[string]int32{}, EOS: -1, Pad: -1, Unk: int32(m.unkID),
		minScore: float32(math.Inf(1)), maxScore: float32(math.Inf(-1))}
	for i, p := range m.pieces {
		switch p.typ {
		case pieceNormal, pieceUserDefined:
			if p.text == "" {
				return nil, fmt.Errorf("tokenizer %s: piece %d is empty", name, i)
			}
			if _, dup := u.byText[p.text]; !dup {
				u.byText[p.text] = int32(i)
			}
			u.maxLen = max(u.maxLen, len(p.text))
			if p.typ == pieceNormal {
				u.minScore = min(u.minScore, p.score)
				u.maxScore = max(u.maxScore, p.score)
			}
		case pieceControl:
			switch p.text {
			case "</s>":
				u.EOS = int32(i)
			case "<pad>":
				u.Pad = int32(i)
			}
		}
	}
	if len(u.byText) == 0 {
		return nil, fmt.Errorf("tokenizer %s: no normal pieces", name)
	}
	if u.minScore > u.maxScore {
		u.minScore, u.maxScore = 0, 0
	}
	if u.EOS < 0 || u.Pad < 0 {
		return nil, fmt.Errorf("tokenizer %s: no </s> or <pad> control piece (not a T5 tokenizer)", name)
	}
	return u, nil
}

// VocabSize is the number of ids: the pieces and the <extra_id_N> tokens.
func (u *Unigram) VocabSize() int { return len(u.m.pieces) + u.extra }

// Piece returns the text of id ("<extra_id_N>" past the pieces).
func (u *Unigram) Piece(id int32) string {
	switch {
	case id >= 0 && int(id) < len(u.m.pieces):
		return u.m.pieces[id].text
	case int(id) >= len(u.m.pieces) && int(id) < u.VocabSize():
		// transformers numbers them down from the end of the vocabulary.
		return fmt.Sprintf("<extra_id_%d>", u.VocabSize()-1-int(id))
	}
	return fmt.Sprintf("<id %d>", id)
}

// prefix is one step of the normaliser: the replacement of the longest
// prefix of s the precompiled map holds, else its first character.
func (u *Unigram) prefix(s string) (string, int) {
	if u.cm != nil {
		if r, n := u.cm.longest(s); n > 0 {
			return r, n
		}
	}
	r, n := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && n <= 1 {
		return "\ufffd", 1
	}
	return s[:n], n
}

// Normalize is sentencepiece's normaliser: the precompiled map, leading,
// trailing and repeated spaces removed, a space prepended (the "dummy
// prefix") and spaces escaped as U+2581.
func (u *Unigram) Normalize(text string) string {
	m := u.m
	if m.removeExtraSpaces {
		for text != "" {
			r, n := u.prefix(text)
			if r != " " {
				break
			}
			text = text[n:]
		}
	}
	if text == "" {
		return ""
	}
	var b strings.Builder
	space := " "
	if m.escapeWhitespaces {
		space = spaceSymbol
	}
	if m.addDummyPrefix {
		b.WriteString(space)
	}
	prevSpace := m.removeExtraSpaces
	for text != "" {
		r, n := u.prefix(text)
		for prevSpace && strings.HasPrefix(r, " ") {
			r = r[1:]
		}
		if r != "" {
			if m.escapeWhitespaces {
				b.WriteString(strings.ReplaceAll(r, " ", spaceSymbol))
			} else {
				b.WriteString(r)
			}
			prevSpace = strings.HasSuffix(r, " ")
		}
		text = text[n:]
		prevSpace = prevSpace && m.removeExtraSpaces
	}
	out := b.String()
	if m.removeExtraSpaces {
		for strings.HasSuffix(out, space) {
			out = out[:len(out)-len(space)]
		}
	}
	return out
}

// Encode returns the piece ids of text (no </s>).
func (u *Unigram) Encode(text string) []int32 {
	ids, _ := u.encode(text)
	return ids
}

// Pieces returns the pieces Encode splits text into (unknown runs as
// their text).
func (u *Unigram) Pieces(text string) []string {
	_, ps := u.encode(text)
	return ps
}

// encode runs the unigram Viterbi search over the normalised text: the
// best-scoring segmentation into pieces, where a character no
// one-character piece covers may be <unk> at the lowest score minus 10.
// Ties keep the piece that starts first, as sentencepiece's lattice does.
func (u *Unigram) encode(text string) ([]int32, []string) {
	s := u.Normalize(text)
	if s == "" {
		return nil, nil
	}
	n := len(s)
	best := make([]float64, n+1)
	from := make([]int, n+1)
	id := make([]int32, n+1)
	for i := 1; i <= n; i++ {
		best[i] = math.Inf(-1)
	}
	unkScore := float64(u.minScore) - unkPenalty
	for i := 0; i < n; i++ {
		if math.IsInf(best[i], -1) || !utf8.RuneStart(s[i]) {
			continue
		}
		_, charLen := utf8.DecodeRuneInString(s[i:])
		single := false
		for l := 1; l <= u.maxLen && i+l <= n; l++ {
			pid, ok := u.byText[s[i:i+l]]
			if !ok {
				continue
			}
			p := u.m.pieces[pid]
			score := float64(p.score)
			if p.typ == pieceUserDefined {
				score = float64(l)*float64(u.maxScore) - 0.1
			}
			if l == charLen {
				single = true
			}
			if v := best[i] + score; v > best[i+l] {
				best[i+l], from[i+l], id[i+l] = v, i, pid
			}
		}
		if !single {
			if v := best[i] + unkScore; v > best[i+charLen] {
				best[i+charLen], from[i+charLen], id[i+charLen] = v, i, u.Unk
			}
		}
	}
	var ids []int32
	var pieces []string
	for end := n; end > 0; end = from[end] {
		ids = append(ids, id[end])
		pieces = append(pieces, s[from[end]:end])
	}
	// Reverse, merging runs of unknown characters into one <unk>.
	outIDs := make([]int32, 0, len(ids))
	outPieces := make([]string, 0, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		if ids[i] == u.Unk && len(outIDs) > 0 && outIDs[len(outIDs)-1] == u.Unk {
			outPieces[len(outPieces)-1] += pieces[i]
			continue
		}
		outIDs = append(outIDs, ids[i])
		outPieces = append(outPieces, pieces[i])
	}
	return outIDs, outPieces
}

// EncodePadded is what diffusers gets from T5TokenizerFast(text,
// padding="max_length", max_length=n, truncation=True): the piece ids cut
// to n-1, then </s>, then <pad> up to n. It also says whether the prompt
// was truncated.
func (u *Unigram) EncodePadded(text string, n int) ([]int32, bool) {
	ids := u.Encode(text)
	cut := false
	if n < 1 {
		n = 1
	}
	if len(ids) > n-1 {
		ids, cut = ids[:n-1], true
	}
	out := make([]int32, 0, n)
	out = append(out, ids...)
	out = append(out, u.EOS)
	for len(out) < n {
		out = append(out, u.Pad)
	}
	return out, cut
}
