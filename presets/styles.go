package presets

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Style is one row of an AUTOMATIC1111 styles.csv: text merged into the
// prompt and negative prompt.
type Style struct {
	Name           string
	Prompt         string
	NegativePrompt string
}

// MaxStylesSize is the largest styles.csv ImportStyles reads.
const MaxStylesSize = 16 << 20

// ImportStyles reads an A1111 styles.csv: a header row naming the columns
// "name", "prompt" (or the old "text") and optionally "negative_prompt", in
// any order, other columns ignored; a UTF-8 byte-order mark is skipped and
// spaces after a delimiter are dropped, as A1111 reads it. Rows with an empty
// name are skipped; a later row with the same name replaces the earlier one
// in place. Errors name the line.
func ImportStyles(r io.Reader) ([]Style, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxStylesSize+1))
	if err != nil {
		return nil, fmt.Errorf("styles.csv: %w", err)
	}
	if len(data) > MaxStylesSize {
		return nil, fmt.Errorf("styles.csv: larger than %d bytes", MaxStylesSize)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	cr := csv.NewReader(bytes.NewReader(data))
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.LazyQuotes = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("styles.csv: empty (want a header row name,prompt,negative_prompt)")
	}
	if err != nil {
		return nil, fmt.Errorf("styles.csv: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.TrimSpace(h)
		if _, dup := col[h]; !dup {
			col[h] = i
		}
	}
	nameCol, ok := col["name"]
	if !ok {
		return nil, fmt.Errorf("styles.csv: header %q has no \"name\" column", strings.Join(header, ","))
	}
	promptCol, ok := col["prompt"]
	if !ok {
		if promptCol, ok = col["text"]; !ok {
			return nil, fmt.Errorf("styles.csv: header %q has no \"prompt\" column", strings.Join(header, ","))
		}
	}
	negCol, hasNeg := col["negative_prompt"]
	field := func(rec []string, i int) string {
		if i < len(rec) {
			return rec[i]
		}
		return ""
	}
	var out []Style
	index := map[string]int{}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("styles.csv: %w", err)
		}
		st := Style{Name: field(rec, nameCol), Prompt: field(rec, promptCol)}
		if hasNeg {
			st.NegativePrompt = field(rec, negCol)
		}
		if strings.TrimSpace(st.Name) == "" {
			continue
		}
		if i, dup := index[st.Name]; dup {
			out[i] = st
			continue
		}
		index[st.Name] = len(out)
		out = append(out, st)
	}
	return out, nil
}

// ApplyStyle merges a style into s's prompts the way A1111 does: where the
// style text contains "{prompt}", every "{prompt}" is replaced by the current
// prompt; otherwise the two are joined with ", " (the prompt first, empty
// parts left out, both trimmed). The negative prompt is merged the same way.
func ApplyStyle(s Settings, st Style) Settings {
	s.Prompt = mergePrompt(st.Prompt, s.Prompt)
	s.NegativePrompt = mergePrompt(st.NegativePrompt, s.NegativePrompt)
	return s
}

func mergePrompt(style, prompt string) string {
	if strings.Contains(style, "{prompt}") {
		return strings.ReplaceAll(style, "{prompt}", prompt)
	}
	var parts []string
	for _, p := range []string{strings.TrimSpace(prompt), strings.TrimSpace(style)} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, ", ")
}

// StylesFile is the name of the styles a store keeps, in its folder.
const StylesFile = "styles.csv"

// EncodeStyles writes styles as an A1111 styles.csv (name, prompt,
// negative_prompt), which ImportStyles reads back.
func EncodeStyles(styles []Style) ([]byte, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	rows := [][]string{{"name", "prompt", "negative_prompt"}}
	for _, s := range styles {
		rows = append(rows, []string{s.Name, s.Prompt, s.NegativePrompt})
	}
	if err := w.WriteAll(rows); err != nil {
		return nil, fmt.Errorf("styles.csv: %w", err)
	}
	return buf.Bytes(), nil
}

// Styles returns the styles the store keeps (none when it keeps none).
func (st *Store) Styles() ([]Style, error) {
	path := filepath.Join(st.Dir, StylesFile)
	data, err := readLimited(path, MaxStylesSize)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("styles: %w", err)
	}
	styles, err := ImportStyles(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return styles, nil
}

// AddStyles merges styles into the store's (a style of the same name is
// replaced in place, new ones appended) and writes the file atomically. It
// returns the store's styles after the merge.
func (st *Store) AddStyles(styles []Style) ([]Style, error) {
	have, err := st.Styles()
	if err != nil {
		return nil, err
	}
	at := map[string]int{}
	for i, s := range have {
		at[s.Name] = i
	}
	for _, s := range styles {
		if i, ok := at[s.Name]; ok {
			have[i] = s
			continue
		}
		at[s.Name] = len(have)
		have = append(have, s)
	}
	data, err := EncodeStyles(have)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(st.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("styles: %w", err)
	}
	path := filepath.Join(st.Dir, StylesFile)
	if err := WriteFileAtomic(path, data, 0o644); err != nil {
		return nil, fmt.Errorf("styles: write %s: %w", path, err)
	}
	return have, nil
}
