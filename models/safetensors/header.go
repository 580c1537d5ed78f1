package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// metadataKey is the one header entry that is not a tensor.
const metadataKey = "__metadata__"

// headerError is a header problem, optionally about one tensor; parse turns
// it into a FormatError carrying the path.
type headerError struct {
	tensor, msg string
}

func (e *headerError) Error() string { return e.msg }

func herr(tensor, format string, args ...any) error {
	return &headerError{tensor: tensor, msg: fmt.Sprintf(format, args...)}
}

// parseHeader reads the JSON header token by token, so that duplicate keys
// (which encoding/json would silently merge) and unexpected value types are
// rejected. Offsets and sizes are checked later by File.check.
func parseHeader(hdr []byte) ([]TensorInfo, map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.UseNumber()
	if err := expectDelim(dec, '{', "", "the header"); err != nil {
		return nil, nil, err
	}
	var (
		tensors []TensorInfo
		meta    map[string]string
		seen    = map[string]bool{}
	)
	for dec.More() {
		key, err := stringToken(dec, "", "an entry name")
		if err != nil {
			return nil, nil, err
		}
		if seen[key] {
			return nil, nil, herr(key, "duplicate entry in the header")
		}
		seen[key] = true
		if key == metadataKey {
			if meta, err = parseMetadata(dec); err != nil {
				return nil, nil, err
			}
			continue
		}
		if key == "" {
			return nil, nil, herr("", "tensor with an empty name")
		}
		t, err := parseEntry(dec, key)
		if err != nil {
			return nil, nil, err
		}
		tensors = append(tensors, t)
	}
	if err := expectDelim(dec, '}', "", "the end of the header"); err != nil {
		return nil, nil, err
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return nil, nil, herr("", "after the header object: %v", err)
		}
		return nil, nil, herr("", "unexpected %v after the header object", tok)
	}
	return tensors, meta, nil
}

func parseMetadata(dec *json.Decoder) (map[string]string, error) {
	if err := expectDelim(dec, '{', "", "__metadata__ to be an object"); err != nil {
		return nil, err
	}
	meta := map[string]string{}
	for dec.More() {
		k, err := stringToken(dec, "", "a __metadata__ key")
		if err != nil {
			return nil, err
		}
		if _, dup := meta[k]; dup {
			return nil, herr("", "duplicate __metadata__ key %q", k)
		}
		v, err := stringToken(dec, "", fmt.Sprintf("__metadata__[%q] to be a string", k))
		if err != nil {
			return nil, err
		}
		meta[k] = v
	}
	return meta, expectDelim(dec, '}', "", "the end of __metadata__")
}

func parseEntry(dec *json.Decoder, name string) (TensorInfo, error) {
	t := TensorInfo{Name: name}
	if err := expectDelim(dec, '{', name, "an object {dtype, shape, data_offsets}"); err != nil {
		return t, err
	}
	var haveDType, haveShape, haveOffsets bool
	for dec.More() {
		field, err := stringToken(dec, name, "a field name")
		if err != nil {
			return t, err
		}
		switch field {
		case "dtype":
			if haveDType {
				return t, herr(name, "duplicate field dtype")
			}
			haveDType = true
			s, err := stringToken(dec, name, "dtype to be a string")
			if err != nil {
				return t, err
			}
			t.DType = DType(s)
			if t.DType.Size() == 0 {
				return t, herr(name, "unknown dtype %q", s)
			}
		case "shape":
			if haveShape {
				return t, herr(name, "duplicate field shape")
			}
			haveShape = true
			dims, err := intList(dec, name, "shape")
			if err != nil {
				return t, err
			}
			t.Shape = make([]int, len(dims))
			for i, d := range dims {
				if d < 0 || d > math.MaxInt {
					return t, herr(name, "shape %v has an invalid dimension %d", dims, d)
				}
				t.Shape[i] = int(d)
			}
		case "data_offsets":
			if haveOffsets {
				return t, herr(name, "duplicate field data_offsets")
			}
			haveOffsets = true
			offs, err := intList(dec, name, "data_offsets")
			if err != nil {
				return t, err
			}
			if len(offs) != 2 {
				return t, herr(name, "data_offsets has %d values, want 2", len(offs))
			}
			t.Begin, t.End = offs[0], offs[1]
		default:
			return t, herr(name, "unknown field %q", field)
		}
	}
	if err := expectDelim(dec, '}', name, "the end of the entry"); err != nil {
		return t, err
	}
	switch {
	case !haveDType:
		return t, herr(name, "missing dtype")
	case !haveShape:
		return t, herr(name, "missing shape")
	case !haveOffsets:
		return t, herr(name, "missing data_offsets")
	}
	return t, nil
}

// intList reads a JSON array of non-negative integers.
func intList(dec *json.Decoder, tensor, what string) ([]int64, error) {
	if err := expectDelim(dec, '[', tensor, what+" to be a list of integers"); err != nil {
		return nil, err
	}
	var out []int64
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, tokenErr(tensor, "an integer in "+what, err)
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, herr(tensor, "%s: want an integer, got %v", what, describe(tok))
		}
		v, err := strconv.ParseInt(string(num), 10, 64)
		if err != nil {
			var ne *strconv.NumError
			if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
				return nil, herr(tensor, "%s: %s is out of range", what, num)
			}
			return nil, herr(tensor, "%s: %s is not an integer", what, num)
		}
		if v < 0 {
			return nil, herr(tensor, "%s: negative value %d", what, v)
		}
		out = append(out, v)
	}
	return out, expectDelim(dec, ']', tensor, "the end of "+what)
}

// tokenErr describes a failed read of the next header token; the end of
// the input is named as such rather than as a bare EOF.
func tokenErr(tensor, what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return herr(tensor, "want %s, got the end of the header (truncated header?)", what)
	}
	return herr(tensor, "want %s: %v", what, err)
}

func stringToken(dec *json.Decoder, tensor, what string) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", tokenErr(tensor, what, err)
	}
	s, ok := tok.(string)
	if !ok {
		return "", herr(tensor, "want %s, got %v", what, describe(tok))
	}
	return s, nil
}

func expectDelim(dec *json.Decoder, d json.Delim, tensor, what string) error {
	tok, err := dec.Token()
	if err != nil {
		return tokenErr(tensor, what, err)
	}
	if got, ok := tok.(json.Delim); !ok || got != d {
		return herr(tensor, "want %s, got %v", what, describe(tok))
	}
	return nil
}

func describe(tok json.Token) string {
	switch v := tok.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(v)
	case json.Delim:
		return "'" + v.String() + "'"
	}
	return fmt.Sprint(tok)
}
