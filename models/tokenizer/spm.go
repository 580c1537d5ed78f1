package tokenizer

import (
	"encoding/binary"
	"fmt"
	"math"
	"unicode/utf8"
)

// SentencePiece piece types (sentencepiece_model.proto's
// SentencePiece.Type).
const (
	pieceNormal      = 1
	pieceUnknown     = 2
	pieceControl     = 3
	pieceUserDefined = 4
	pieceUnused      = 5
	pieceByte        = 6
)

// spmModel is what a SentencePiece model file (a serialised ModelProto)
// says about encoding: the pieces, the model type and the normaliser.
type spmModel struct {
	pieces []spmPiece
	// modelType is TrainerSpec.model_type: 1 unigram, 2 BPE, 3 word, 4 char.
	modelType int
	unkID     int
	// Normaliser settings (NormalizerSpec); proto defaults are true.
	charsmap                            []byte
	addDummyPrefix, removeExtraSpaces   bool
	escapeWhitespaces, treatWhitespaceS bool
	byteFallback                        bool
}

type spmPiece struct {
	text  string
	score float32
	typ   int
}

// protoReader walks the fields of one protobuf message.
type protoReader struct {
	b   []byte
	off int
}

// next returns the next field's number and wire type, or ok false at the
// end. Varint fields carry their value in v, length-delimited ones their
// bytes in data, fixed32/64 their bits in v.
func (r *protoReader) next() (field, wire int, v uint64, data []byte, err error) {
	key, err := r.varint()
	if err != nil {
		return 0, 0, 0, nil, err
	}
	field, wire = int(key>>3), int(key&7)
	if field == 0 {
		return 0, 0, 0, nil, fmt.Errorf("field number 0 at byte %d", r.off)
	}
	switch wire {
	case 0:
		v, err = r.varint()
	case 1:
		if len(r.b)-r.off < 8 {
			return 0, 0, 0, nil, fmt.Errorf("truncated fixed64 at byte %d", r.off)
		}
		v = binary.LittleEndian.Uint64(r.b[r.off:])
		r.off += 8
	case 2:
		var n uint64
		if n, err = r.varint(); err != nil {
			return
		}
		if n > uint64(len(r.b)-r.off) {
			return 0, 0, 0, nil, fmt.Errorf("field %d: length %d runs past the end (byte %d of %d)", field, n, r.off, len(r.b))
		}
		data = r.b[r.off : r.off+int(n)]
		r.off += int(n)
	case 5:
		if len(r.b)-r.off < 4 {
			return 0, 0, 0, nil, fmt.Errorf("truncated fixed32 at byte %d", r.off)
		}
		v = uint64(binary.LittleEndian.Uint32(r.b[r.off:]))
		r.off += 4
	default:
		return 0, 0, 0, nil, fmt.Errorf("field %d: unsupported wire type %d at byte %d", field, wire, r.off)
	}
	return field, wire, v, data, err
}

func (r *protoReader) done() bool { return r.off >= len(r.b) }

func (r *protoReader) varint() (uint64, error) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if r.off >= len(r.b) {
			return 0, fmt.Errorf("truncated varint at byte %d", r.off)
		}
		c := r.b[r.off]
		r.off++
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("varint longer than 10 bytes at byte %d", r.off)
}

// eachField calls f for every field of message b.
func eachField(b []byte, f func(field, wire int, v uint64, data []byte) error) error {
	r := &protoReader{b: b}
	for !r.done() {
		field, wire, v, data, err := r.next()
		if err != nil {
			return err
		}
		if err := f(field, wire, v, data); err != nil {
			return err
		}
	}
	return nil
}

// parseSPM decodes a SentencePiece ModelProto: pieces (field 1: piece 1,
// score 2, type 3), trainer_spec (field 2: model_type 3, unk_id 40,
// byte_fallback 35) and normalizer_spec (field 3: precompiled_charsmap 2,
// add_dummy_prefix 3, remove_extra_whitespaces 4, escape_whitespaces 5).
// Unknown fields are skipped, as protobuf readers do.
func parseSPM(b []byte) (*spmModel, error) {
	m := &spmModel{modelType: 1, unkID: 0, addDummyPrefix: true, removeExtraSpaces: true, escapeWhitespaces: true}
	wantVarint := func(name string, wire int) error {
		if wire != 0 {
			return fmt.Errorf("%s: wire type %d, want a varint", name, wire)
		}
		return nil
	}
	err := eachField(b, func(field, wire int, v uint64, data []byte) error {
		switch field {
		case 1:
			if wire != 2 {
				return fmt.Errorf("pieces: wire type %d, want a message", wire)
			}
			p := spmPiece{typ: pieceNormal}
			err := eachField(data, func(field, wire int, v uint64, data []byte) error {
				switch field {
				case 1:
					if wire != 2 {
						return fmt.Errorf("piece %d: text has wire type %d", len(m.pieces), wire)
					}
					if !utf8.Valid(data) {
						return fmt.Errorf("piece %d: text is not UTF-8", len(m.pieces))
					}
					p.text = string(data)
				case 2:
					if wire != 5 {
						return fmt.Errorf("piece %d: score has wire type %d, want fixed32", len(m.pieces), wire)
					}
					p.score = math.Float32frombits(uint32(v))
				case 3:
					if err := wantVarint("piece type", wire); err != nil {
						return err
					}
					p.typ = int(v)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("piece %d: %w", len(m.pieces), err)
			}
			if p.typ < pieceNormal || p.typ > pieceByte {
				return fmt.Errorf("piece %d (%q): unknown type %d", len(m.pieces), p.text, p.typ)
			}
			if math.IsNaN(float64(p.score)) || math.IsInf(float64(p.score), 0) {
				return fmt.Errorf("piece %d (%q): score %v is not finite", len(m.pieces), p.text, p.score)
			}
			m.pieces = append(m.pieces, p)
		case 2:
			if wire != 2 {
				return fmt.Errorf("trainer_spec: wire type %d, want a message", wire)
			}
			return eachField(data, func(field, wire int, v uint64, data []byte) error {
				switch field {
				case 3:
					if err := wantVarint("trainer_spec.model_type", wire); err != nil {
						return err
					}
					m.modelType = int(v)
				case 40:
					if err := wantVarint("trainer_spec.unk_id", wire); err != nil {
						return err
					}
					m.unkID = int(int32(v))
				case 35:
					if err := wantVarint("trainer_spec.byte_fallback", wire); err != nil {
						return err
					}
					m.byteFallback = v != 0
				}
				return nil
			})
		case 3:
			if wire != 2 {
				return fmt.Errorf("normalizer_spec: wire type %d, want a message", wire)
			}
			return eachField(data, func(field, wire int, v uint64, data []byte) error {
				switch field {
				case 2:
					if wire != 2 {
						return fmt.Errorf("normalizer_spec.precompiled_charsmap: wire type %d", wire)
					}
					m.charsmap = data
				case 3, 4, 5:
					if err := wantVarint("normalizer_spec flag", wire); err != nil {
						return err
					}
					switch field {
					case 3:
						m.addDummyPrefix = v != 0
					case 4:
						m.removeExtraSpaces = v != 0
					case 5:
						m.escapeWhitespaces = v != 0
					}
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(m.pieces) == 0 {
		return nil, fmt.Errorf("no pieces (not a SentencePiece model)")
	}
	if m.unkID < 0 || m.unkID >= len(m.pieces) || m.pieces[m.unkID].typ != pieceUnknown {
		return nil, fmt.Errorf("unk_id %d does not name an unknown piece", m.unkID)
	}
	return m, nil
}

// charsMap is SentencePiece's precompiled normalisation map: a
// Darts-clone double-array trie over UTF-8 input whose values are offsets
// of NUL-terminated replacement strings.
type charsMap struct {
	units []uint32
	norm  []byte
}

func newCharsMap(b []byte) (*charsMap, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("precompiled_charsmap: %d bytes, too short", len(b))
	}
	n := uint64(binary.LittleEndian.Uint32(b))
	if n%4 != 0 || n > uint64(len(b)-4) || n == 0 {
		return nil, fmt.Errorf("precompiled_charsmap: trie size %d does not fit its %d bytes", n, len(b))
	}
	cm := &charsMap{units: make([]uint32, n/4), norm: b[4+n:]}
	for i := range cm.units {
		cm.units[i] = binary.LittleEndian.Uint32(b[4+4*i:])
	}
	return cm, nil
}

// longest returns the replacement for the longest prefix of s that the
// map holds and its length in bytes, or n == 0 when none matches.
func (cm *charsMap) longest(s string) (repl string, n int) {
	units := cm.units
	offset := func(u uint32) uint32 { return (u >> 10) << ((u & (1 << 9)) >> 6) }
	pos := uint32(0)
	if len(units) == 0 {
		return "", 0
	}
	pos ^= offset(units[0])
	for i := 0; i < len(s); i++ {
		c := uint32(s[i])
		if c == 0 {
			break
		}
		pos ^= c
		if int(pos) >= len(units) {
			break
		}
		u := units[pos]
		if u&((1<<31)|0xff) != c {
			break
		}
		pos ^= offset(u)
		if int(pos) >= len(units) {
			break
		}
		if (u>>8)&1 == 1 {
			v := int(units[pos] & ((1 << 31) - 1))
			if v >= len(cm.norm) {
				break
			}
			end := v
			for end < len(cm.norm) && cm.norm[end] != 0 {
				end++
			}
			repl, n = string(cm.norm[v:end]), i+1
		}
	}
	return repl, n
}
