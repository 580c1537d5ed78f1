package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/internal/termsafe"
	"github.com/stepwise/stepwise/models/tokenizer"
)

func init() {
	register(command{name: "tokenize", summary: "show how a prompt is tokenized: CLIP tokens, the 75-token limit, chunks and weights", run: runTokenize})
}

const tokenizeUsage = "usage: stepwise tokenize [--json] [--model DIR | --t5 SPIECE] [--max-sequence-length N] TEXT...\n" +
	"  TEXT is the prompt (several arguments are joined with spaces; \"-\" reads it from stdin);\n" +
	"  with a T5 tokenizer (a model folder's tokenizer_3, or a spiece.model) the T5 ids are shown too"

// maxStdinPrompt caps a prompt read from stdin: a prompt is a few KiB, and
// a stream of NULs must not take the memory.
const maxStdinPrompt = 1 << 20

// runTokenize parses "tokenize [--json] TEXT..." and prints the prompt's
// tokenization to stdout.
func runTokenize(args []string) error { return tokenizeTo(os.Stdout, os.Stdin, args) }

func tokenizeTo(w io.Writer, stdin io.Reader, args []string) error {
	fs := flag.NewFlagSet("tokenize", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	asJSON := fs.Bool("json", false, "print one JSON object instead of text")
	model := fs.String("model", "", "a diffusers folder with a T5 tokenizer (SD3's tokenizer_3): also show the T5 ids")
	t5 := fs.String("t5", "", "a T5 SentencePiece model (spiece.model, or the folder holding it): also show the T5 ids")
	msl := fs.Int("max-sequence-length", 256, "T5 tokens the ids are padded or cut to (diffusers' max_sequence_length)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), tokenizeUsage)
		fs.PrintDefaults()
	}
	var words []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		words = append(words, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(words) == 0 {
		return fmt.Errorf("%w: no TEXT given\n%s", errUsage, tokenizeUsage)
	}
	text := strings.Join(words, " ")
	if len(words) == 1 && text == "-" {
		b, err := safefile.ReadAll(stdin, "the prompt on stdin", maxStdinPrompt)
		if err != nil {
			return err
		}
		text = strings.TrimSuffix(string(b), "\n")
	}
	rep := buildTokenizeReport(tokenizer.Default(), text)
	if *model != "" || *t5 != "" {
		u, err := t5Tokenizer(*model, *t5)
		if err != nil {
			return err
		}
		if *msl < 1 || *msl > 4096 {
			return fmt.Errorf("%w: --max-sequence-length %d: want 1..4096", errUsage, *msl)
		}
		rep.T5 = buildT5Report(u, text, *msl)
	}
	if *asJSON {
		return json.NewEncoder(w).Encode(rep)
	}
	return writeTokenizeText(w, rep)
}

// tokenizeReport is what "stepwise tokenize --json" prints.
type tokenizeReport struct {
	Text string `json:"text"`
	// IDs is the plain CLIP tokenization of the literal text (no weight
	// syntax): BOS, up to 75 tokens, EOS, EOS padding to 77, exactly what
	// diffusers' CLIPTokenizer (with ftfy) gives.
	IDs       []int32  `json:"ids"`
	Tokens    []string `json:"tokens"`    // strings of all BPE tokens, untruncated
	TokenIDs  []int32  `json:"token_ids"` // ids of all BPE tokens, untruncated
	Count     int      `json:"count"`     // len(Tokens)
	Limit     int      `json:"limit"`     // 75
	Truncated bool     `json:"truncated"` // Count > Limit
	Weighted  weighted `json:"weighted"`
	// T5 is the T5 tokenization, with --model or --t5.
	T5 *t5Report `json:"t5,omitempty"`
}

// t5Report is a prompt's T5 tokenization as SD3's pipeline makes it:
// SentencePiece pieces, then </s>, padded with <pad> or cut to the
// maximum sequence length.
type t5Report struct {
	Pieces    []string `json:"pieces"`     // SentencePiece pieces of the text
	PieceIDs  []int32  `json:"piece_ids"`  // their ids, untruncated
	IDs       []int32  `json:"ids"`        // what the encoder gets: max_sequence_length ids
	Count     int      `json:"count"`      // pieces + </s>
	MaxLength int      `json:"max_length"` // max_sequence_length
	Truncated bool     `json:"truncated"`
}

// t5Tokenizer loads the T5 tokenizer that --t5 names, or the one of the
// --model folder (tokenizer_3, else tokenizer_2).
func t5Tokenizer(model, t5 string) (*tokenizer.Unigram, error) {
	if t5 != "" {
		return tokenizer.LoadUnigram(t5)
	}
	for _, sub := range []string{"tokenizer_3", "tokenizer_2"} {
		dir := filepath.Join(model, sub)
		if _, err := os.Stat(filepath.Join(dir, "spiece.model")); err == nil {
			return tokenizer.LoadUnigram(dir)
		}
	}
	return nil, fmt.Errorf("--model %s: no tokenizer_3/spiece.model or tokenizer_2/spiece.model (a T5 tokenizer) in this folder", model)
}

func buildT5Report(u *tokenizer.Unigram, text string, n int) *t5Report {
	ids, cut := u.EncodePadded(text, n)
	pieceIDs := u.Encode(text)
	r := &t5Report{Pieces: u.Pieces(text), PieceIDs: pieceIDs, IDs: ids, Count: len(pieceIDs) + 1, MaxLength: n, Truncated: cut}
	if r.Pieces == nil {
		r.Pieces, r.PieceIDs = []string{}, []int32{}
	}
	return r
}

// weighted is the prompt as generation uses it: A1111 syntax parsed into
// weighted chunks.
type weighted struct {
	Error      string          `json:"error,omitempty"`
	Fragments  []fragmentJSON  `json:"fragments"`
	Chunks     []weightedChunk `json:"chunks"`
	TokenCount int             `json:"token_count"`
	Chunked    bool            `json:"chunked"`
}

type fragmentJSON struct {
	Text   string  `json:"text"`
	Weight float64 `json:"weight"`
	Break  bool    `json:"break,omitempty"`
}

type weightedChunk struct {
	IDs     []int32   `json:"ids"`     // 77
	Weights []float32 `json:"weights"` // 77
	Tokens  []string  `json:"tokens"`  // strings of the 77 ids
	Count   int       `json:"count"`   // prompt tokens, at positions 1..count
}

func buildTokenizeReport(tok *tokenizer.Tokenizer, text string) tokenizeReport {
	ids := tok.Encode(text)
	rep := tokenizeReport{
		Text:      text,
		IDs:       tokenizer.Pad77(ids),
		TokenIDs:  ids,
		Tokens:    tokenStrings(tok, ids),
		Count:     len(ids),
		Limit:     tokenizer.MaxTokens,
		Truncated: len(ids) > tokenizer.MaxTokens,
	}
	if rep.TokenIDs == nil {
		rep.TokenIDs = []int32{}
	}
	enc, err := tok.EncodeWeighted(text)
	if err != nil {
		rep.Weighted.Error = err.Error()
		rep.Weighted.Fragments = []fragmentJSON{}
		rep.Weighted.Chunks = []weightedChunk{}
		return rep
	}
	for _, f := range enc.Fragments {
		rep.Weighted.Fragments = append(rep.Weighted.Fragments, fragmentJSON{f.Text, f.Weight, f.Break})
	}
	for i, c := range enc.Chunks {
		rep.Weighted.Chunks = append(rep.Weighted.Chunks, weightedChunk{
			IDs: c, Weights: enc.Weights[i], Tokens: tokenStrings(tok, c), Count: enc.Lengths[i],
		})
	}
	rep.Weighted.TokenCount = enc.TokenCount
	rep.Weighted.Chunked = enc.Chunked
	return rep
}

func tokenStrings(tok *tokenizer.Tokenizer, ids []int32) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = tok.Token(id)
	}
	return out
}

func fmtWeight(w float64) string { return strconv.FormatFloat(w, 'g', 4, 64) }

func writeTokenizeText(w io.Writer, rep tokenizeReport) error {
	var b strings.Builder
	fmt.Fprintf(&b, "text:      %q\n", rep.Text)
	if r := rep.T5; r != nil {
		state := fmt.Sprintf("%d of %d tokens", r.Count, r.MaxLength)
		if r.Truncated {
			state = fmt.Sprintf("%d tokens: cut to %d (the pieces after %q are dropped)", r.Count, r.MaxLength, r.Pieces[r.MaxLength-2])
		}
		fmt.Fprintf(&b, "t5:        %s (SentencePiece pieces + </s>, <pad> up to --max-sequence-length)\n", state)
		fmt.Fprintf(&b, "%4s %6s  %s\n", "pos", "id", "piece")
		for i, id := range r.IDs {
			if i > 0 && id == r.IDs[len(r.IDs)-1] && i >= r.Count {
				fmt.Fprintf(&b, "     (%d x %d padding)\n", len(r.IDs)-i, id)
				break
			}
			piece := "</s>"
			if i < len(r.Pieces) && i < r.Count-1 {
				piece = r.Pieces[i]
			}
			fmt.Fprintf(&b, "%4d %6d  %s\n", i, id, piece)
		}
	}
	switch {
	case rep.Truncated:
		fmt.Fprintf(&b, "plain:     %d tokens: %d over the %d-token limit; a plain CLIP tokenizer drops everything after %q\n",
			rep.Count, rep.Count-rep.Limit, rep.Limit, rep.Tokens[rep.Limit-1])
	default:
		fmt.Fprintf(&b, "plain:     %d of %d tokens\n", rep.Count, rep.Limit)
	}
	wt := rep.Weighted
	if wt.Error != "" {
		fmt.Fprintf(&b, "weighted:  %s\n", wt.Error)
		_, err := io.WriteString(w, termsafe.Text(b.String()))
		return err
	}
	fmt.Fprintf(&b, "weighted:  %d/%d tokens in %d chunk(s) (A1111 syntax and count, BREAK, comma backtracking)\n",
		wt.TokenCount, rep.Limit*len(wt.Chunks), len(wt.Chunks))
	b.WriteString("fragments:")
	for _, f := range wt.Fragments {
		if f.Break {
			b.WriteString(" | BREAK")
			continue
		}
		if f.Text == "" {
			continue
		}
		fmt.Fprintf(&b, " | %q x%s", f.Text, fmtWeight(f.Weight))
	}
	b.WriteString("\n")
	for i, c := range wt.Chunks {
		why := ""
		if i+1 < len(wt.Chunks) {
			switch {
			case c.Count == rep.Limit:
				why = " (full)"
			case c.Count > 0 && c.Tokens[c.Count] == ",</w>":
				why = " (broken after its last comma; the words after it start the next chunk)"
			default:
				why = " (ended by BREAK)"
			}
		}
		fmt.Fprintf(&b, "\n-- chunk %d: %d of %d tokens%s --\n", i+1, c.Count, rep.Limit, why)
		fmt.Fprintf(&b, "%4s %6s  %-24s %s\n", "pos", "id", "token", "weight")
		for p := 0; p <= c.Count+1 && p < len(c.IDs); p++ {
			fmt.Fprintf(&b, "%4d %6d  %-24s %s\n", p, c.IDs[p], c.Tokens[p], fmtWeight(float64(c.Weights[p])))
		}
		if pad := len(c.IDs) - c.Count - 2; pad > 0 {
			fmt.Fprintf(&b, "     (%d x %d padding)\n", pad, tokenizer.EOS)
		}
	}
	_, err := io.WriteString(w, termsafe.Text(b.String()))
	return err
}
