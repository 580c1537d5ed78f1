package tokenizer

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
)

// tokenizerJSON is the part of a Hugging Face tokenizer.json a T5 unigram
// tokenizer needs: the vocabulary with scores, the unknown id, the special
// tokens and the normaliser's precompiled character map.
type tokenizerJSON struct {
	AddedTokens []struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	Normalizer *jsonNormalizer `json:"normalizer"`
	Model      struct {
		Type  string            `json:"type"`
		UnkID *int              `json:"unk_id"`
		Vocab []json.RawMessage `json:"vocab"`
	} `json:"model"`
}

type jsonNormalizer struct {
	Type        string           `json:"type"`
	Charsmap    string           `json:"precompiled_charsmap"`
	Normalizers []jsonNormalizer `json:"normalizers"`
}

// charsmap finds the Precompiled normaliser's map (in a Sequence or alone).
func (n *jsonNormalizer) charsmap() (string, bool) {
	if n == nil {
		return "", false
	}
	if n.Type == "Precompiled" {
		return n.Charsmap, true
	}
	for i := range n.Normalizers {
		if s, ok := n.Normalizers[i].charsmap(); ok {
			return s, true
		}
	}
	return "", false
}

// ParseUnigramJSON reads a Hugging Face tokenizer.json whose model is
// Unigram (T5TokenizerFast's, beside spiece.model in SD3's and Flux's
// folders). The text is normalised as sentencepiece does (the same
// precompiled map, leading, trailing and repeated spaces removed), which is
// what the fast tokenizer gives for ordinary prompts.
func ParseUnigramJSON(name string, data []byte) (*Unigram, error) {
	var t tokenizerJSON
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, fmt.Errorf("tokenizer %s: not a readable tokenizer.json: %w", name, err)
	}
	if t.Model.Type != "Unigram" {
		return nil, fmt.Errorf("tokenizer %s: model type %q is not supported (want Unigram, a T5 tokenizer)", name, t.Model.Type)
	}
	if t.Model.UnkID == nil {
		return nil, fmt.Errorf("tokenizer %s: the Unigram model has no unk_id", name)
	}
	m := &spmModel{modelType: 1, unkID: *t.Model.UnkID, addDummyPrefix: true, removeExtraSpaces: true, escapeWhitespaces: true}
	special := map[int]bool{}
	for _, a := range t.AddedTokens {
		if a.Special {
			special[a.ID] = true
		}
	}
	for i, raw := range t.Model.Vocab {
		var pair []json.RawMessage
		var p spmPiece
		if json.Unmarshal(raw, &pair) != nil || len(pair) != 2 ||
			json.Unmarshal(pair[0], &p.text) != nil {
			return nil, fmt.Errorf("tokenizer %s: vocab entry %d: want [piece, score]", name, i)
		}
		var score float64
		if err := json.Unmarshal(pair[1], &score); err != nil || math.IsNaN(score) || math.IsInf(score, 0) {
			return nil, fmt.Errorf("tokenizer %s: vocab entry %d (%q): score is not a finite number", name, i, p.text)
		}
		p.score, p.typ = float32(score), pieceNormal
		switch {
		case i == m.unkID:
			p.typ = pieceUnknown
		case special[i]:
			p.typ = pieceControl
		}
		m.pieces = append(m.pieces, p)
	}
	if len(m.pieces) == 0 || m.unkID < 0 || m.unkID >= len(m.pieces) {
		return nil, fmt.Errorf("tokenizer %s: unk_id %d outside a vocabulary of %d", name, m.unkID, len(m.pieces))
	}
	if s, ok := t.Normalizer.charsmap(); ok && s != "" {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("tokenizer %s: precompiled_charsmap is not base64: %w", name, err)
		}
		m.charsmap = b
	}
	u, err := newUnigram(name, m)
	if err != nil {
		return nil, err
	}
	// Added tokens past the vocabulary (<extra_id_N>) only count as ids.
	for _, a := range t.AddedTokens {
		u.extra = max(u.extra, a.ID+1-len(m.pieces))
	}
	return u, nil
}
