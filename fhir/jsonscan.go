package fhir

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// SyntaxError is a JSON syntax or limit error at a byte offset of one JSON
// text (an NDJSON line, or a whole .json file).
type SyntaxError struct {
	Offset int64 // bytes consumed before the error, counted from the text's start
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.Offset, e.Msg)
}

// errStop ends a scan early without error (used by peeks).
var errStop = errors.New("stop")

// scanner validates one JSON text and compacts it on the fly, with the
// semantics of encoding/json.Compact: insignificant whitespace is dropped,
// everything else (key order, number literals, string escapes) is copied
// byte for byte. It reads from an io.Reader through its own buffer, or from
// a byte slice without copying. Compacted bytes go to out (if set) and to
// the capture buffer while capturing. Memory is the read buffer plus the
// capture, which is capped.
type scanner struct {
	src  io.Reader
	buf  []byte
	r, n int   // read position and end of valid data in buf
	base int64 // offset of buf[0] in the text
	rerr error

	out      io.Writer // optional pass-through of compacted bytes
	outBuf   []byte    // pending bytes for out
	outErr   error
	capture  []byte
	capOn    bool
	capLimit int // max captured bytes; 0 means unlimited

	maxDepth int
}

const outFlush = 64 << 10

func newBytesScanner(b []byte, maxDepth int) *scanner {
	return &scanner{buf: b, n: len(b), maxDepth: maxDepth}
}

func newReaderScanner(r io.Reader, bufSize, maxDepth int) *scanner {
	return &scanner{src: r, buf: make([]byte, bufSize), maxDepth: maxDepth}
}

func (s *scanner) offset() int64 { return s.base + int64(s.r) }

func (s *scanner) errf(format string, a ...any) error {
	return &SyntaxError{Offset: s.offset(), Msg: fmt.Sprintf(format, a...)}
}

// fill makes at least one more byte available; it returns false at EOF or
// on a read error (kept in rerr).
func (s *scanner) fill() bool {
	if s.r < s.n {
		return true
	}
	if s.src == nil || s.rerr != nil {
		return false
	}
	s.base += int64(s.n)
	s.r, s.n = 0, 0
	for i := 0; i < 100; i++ {
		m, err := s.src.Read(s.buf)
		s.n = m
		if err != nil {
			s.rerr = err
		}
		if m > 0 {
			return true
		}
		if err != nil {
			return false
		}
	}
	s.rerr = io.ErrNoProgress
	return false
}

// eofErr describes running out of input in the middle of a value.
func (s *scanner) eofErr(what string) error {
	if s.rerr != nil && s.rerr != io.EOF {
		return fmt.Errorf("reading %s at byte %d: %w", what, s.offset(), s.rerr)
	}
	return s.errf("unexpected end of input in %s (truncated file?)", what)
}

func (s *scanner) emit(b []byte) error {
	if s.capOn {
		if s.capLimit > 0 && len(s.capture)+len(b) > s.capLimit {
			return s.errf("value larger than %d bytes, the cap for one resource (ehrport export --max-resource-size)", s.capLimit)
		}
		s.capture = append(s.capture, b...)
	}
	if s.out != nil {
		s.outBuf = append(s.outBuf, b...)
		if len(s.outBuf) >= outFlush {
			return s.flush()
		}
	}
	return nil
}

func (s *scanner) emitByte(c byte) error {
	if s.capOn {
		if s.capLimit > 0 && len(s.capture)+1 > s.capLimit {
			return s.errf("value larger than %d bytes, the cap for one resource (ehrport export --max-resource-size)", s.capLimit)
		}
		s.capture = append(s.capture, c)
	}
	if s.out != nil {
		s.outBuf = append(s.outBuf, c)
		if len(s.outBuf) >= outFlush {
			return s.flush()
		}
	}
	return nil
}

func (s *scanner) flush() error {
	if s.out == nil || len(s.outBuf) == 0 {
		return s.outErr
	}
	if s.outErr == nil {
		_, s.outErr = s.out.Write(s.outBuf)
	}
	s.outBuf = s.outBuf[:0]
	return s.outErr
}

// skipWS skips JSON whitespace and returns the next byte without consuming
// it; ok is false at end of input.
func (s *scanner) skipWS() (c byte, ok bool) {
	for {
		for s.r < s.n {
			c = s.buf[s.r]
			if c != ' ' && c != '\n' && c != '\r' && c != '\t' {
				return c, true
			}
			s.r++
		}
		if !s.fill() {
			return 0, false
		}
	}
}

// end checks that only whitespace follows the value.
func (s *scanner) end() error {
	if c, ok := s.skipWS(); ok {
		return s.errf("unexpected %q after the top-level value", c)
	}
	if s.rerr != nil && s.rerr != io.EOF {
		return fmt.Errorf("reading at byte %d: %w", s.offset(), s.rerr)
	}
	return nil
}

// value scans one JSON value at the given depth (1 for the top level).
func (s *scanner) value(depth int) error {
	c, ok := s.skipWS()
	if !ok {
		return s.eofErr("value")
	}
	switch {
	case c == '{':
		return s.object(depth, nil)
	case c == '[':
		return s.array(depth, nil)
	case c == '"':
		return s.str(nil)
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.errf("unexpected %q where a value was expected", c)
}

// memberFunc, when given to object, is called after each key is scanned;
// it may scan the value itself (returning handled=true) or leave it.
type memberFunc func(key []byte) (handled bool, err error)

func (s *scanner) object(depth int, onKey memberFunc) error {
	if depth > s.maxDepth {
		return s.errf("nesting deeper than %d levels", s.maxDepth)
	}
	s.r++ // '{'
	if err := s.emitByte('{'); err != nil {
		return err
	}
	c, ok := s.skipWS()
	if !ok {
		return s.eofErr("object")
	}
	if c == '}' {
		s.r++
		return s.emitByte('}')
	}
	var keyBuf []byte
	for i := 0; ; i++ {
		if i > 0 {
			if err := s.emitByte(','); err != nil {
				return err
			}
		}
		c, ok = s.skipWS()
		if !ok {
			return s.eofErr("object")
		}
		if c != '"' {
			return s.errf("expected a string key, found %q", c)
		}
		if onKey != nil {
			keyBuf = keyBuf[:0]
			if err := s.str(&keyBuf); err != nil {
				return err
			}
		} else if err := s.str(nil); err != nil {
			return err
		}
		c, ok = s.skipWS()
		if !ok {
			return s.eofErr("object")
		}
		if c != ':' {
			return s.errf("expected ':' after a key, found %q", c)
		}
		s.r++
		if err := s.emitByte(':'); err != nil {
			return err
		}
		handled := false
		if onKey != nil {
			var err error
			if handled, err = onKey(keyBuf); err != nil {
				return err
			}
		}
		if !handled {
			if err := s.value(depth + 1); err != nil {
				return err
			}
		}
		c, ok = s.skipWS()
		if !ok {
			return s.eofErr("object")
		}
		s.r++
		if c == '}' {
			return s.emitByte('}')
		}
		if c != ',' {
			s.r--
			return s.errf("expected ',' or '}' in an object, found %q", c)
		}
	}
}

// elemFunc, when given to array, scans element i itself.
type elemFunc func(i int) error

func (s *scanner) array(depth int, onElem elemFunc) error {
	if depth > s.maxDepth {
		return s.errf("nesting deeper than %d levels", s.maxDepth)
	}
	s.r++ // '['
	if err := s.emitByte('['); err != nil {
		return err
	}
	c, ok := s.skipWS()
	if !ok {
		return s.eofErr("array")
	}
	if c == ']' {
		s.r++
		return s.emitByte(']')
	}
	for i := 0; ; i++ {
		if i > 0 {
			if err := s.emitByte(','); err != nil {
				return err
			}
		}
		var err error
		if onElem != nil {
			err = onElem(i)
		} else {
			err = s.value(depth + 1)
		}
		if err != nil {
			return err
		}
		c, ok = s.skipWS()
		if !ok {
			return s.eofErr("array")
		}
		s.r++
		if c == ']' {
			return s.emitByte(']')
		}
		if c != ',' {
			s.r--
			return s.errf("expected ',' or ']' in an array, found %q", c)
		}
	}
}

// str scans a string starting at its opening quote and emits it verbatim.
// If raw is not nil the bytes between the quotes are appended to it.
func (s *scanner) str(raw *[]byte) error {
	s.r++ // opening quote
	if err := s.emitByte('"'); err != nil {
		return err
	}
	for {
		start := s.r
		for s.r < s.n {
			c := s.buf[s.r]
			if c == '"' || c == '\\' || c < 0x20 {
				break
			}
			s.r++
		}
		if s.r > start {
			if raw != nil {
				*raw = append(*raw, s.buf[start:s.r]...)
			}
			if err := s.emit(s.buf[start:s.r]); err != nil {
				return err
			}
		}
		if s.r >= s.n {
			if !s.fill() {
				return s.eofErr("string")
			}
			continue
		}
		c := s.buf[s.r]
		switch {
		case c == '"':
			s.r++
			return s.emitByte('"')
		case c < 0x20:
			return s.errf("control character 0x%02x in a string (must be escaped)", c)
		}
		// escape sequence
		s.r++
		if !s.fill() {
			return s.eofErr("string escape")
		}
		e := s.buf[s.r]
		s.r++
		var esc [6]byte
		esc[0], esc[1] = '\\', e
		l := 2
		switch e {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		case 'u':
			for k := 0; k < 4; k++ {
				if !s.fill() {
					return s.eofErr("string escape")
				}
				h := s.buf[s.r]
				if !isHex(h) {
					return s.errf("invalid \\u escape in a string")
				}
				s.r++
				esc[l] = h
				l++
			}
		default:
			s.r--
			return s.errf("invalid escape '\\%c' in a string", e)
		}
		if raw != nil {
			*raw = append(*raw, esc[:l]...)
		}
		if err := s.emit(esc[:l]); err != nil {
			return err
		}
	}
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// number scans a JSON number and emits it verbatim.
func (s *scanner) number() error {
	var tmp [32]byte
	lit := tmp[:0]
	// state machine per RFC 8259: -? int frac? exp?
	const (
		stStart = iota
		stMinus
		stZero
		stInt
		stDot
		stFrac
		stE
		stESign
		stExp
	)
	st := stStart
	for {
		if !s.fill() {
			break
		}
		c := s.buf[s.r]
		next := -1
		switch st {
		case stStart:
			if c == '-' {
				next = stMinus
			} else if c == '0' {
				next = stZero
			} else if c >= '1' && c <= '9' {
				next = stInt
			}
		case stMinus:
			if c == '0' {
				next = stZero
			} else if c >= '1' && c <= '9' {
				next = stInt
			}
		case stZero, stInt:
			if st == stInt && c >= '0' && c <= '9' {
				next = stInt
			} else if c == '.' {
				next = stDot
			} else if c == 'e' || c == 'E' {
				next = stE
			}
		case stDot, stFrac:
			if c >= '0' && c <= '9' {
				next = stFrac
			} else if st == stFrac && (c == 'e' || c == 'E') {
				next = stE
			}
		case stE:
			if c == '+' || c == '-' {
				next = stESign
			} else if c >= '0' && c <= '9' {
				next = stExp
			}
		case stESign, stExp:
			if c >= '0' && c <= '9' {
				next = stExp
			}
		}
		if next < 0 {
			break
		}
		st = next
		s.r++
		lit = append(lit, c)
		if len(lit) == cap(tmp) {
			if err := s.emit(lit); err != nil {
				return err
			}
			lit = lit[:0]
		}
	}
	switch st {
	case stZero, stInt, stFrac, stExp:
	default:
		if s.r >= s.n && s.rerr != nil && s.rerr != io.EOF {
			return s.eofErr("number")
		}
		return s.errf("malformed number")
	}
	// A number must be followed by a delimiter, not by a letter or digit.
	if s.r < s.n {
		switch c := s.buf[s.r]; c {
		case ',', '}', ']', ' ', '\n', '\r', '\t':
		default:
			return s.errf("unexpected %q after a number", c)
		}
	}
	return s.emit(lit)
}

func (s *scanner) literal(word string) error {
	for i := 0; i < len(word); i++ {
		if !s.fill() {
			return s.eofErr("literal")
		}
		if s.buf[s.r] != word[i] {
			return s.errf("invalid literal (expected %q)", word)
		}
		s.r++
	}
	return s.emit([]byte(word))
}

// compactValue validates b as exactly one JSON value and appends its
// compacted form to dst. It is the []byte fast path used for NDJSON lines
// and single-resource files. dst may be b[:0]: compacting in place is safe
// because every byte written was read before, at the same or a later
// offset (memmove semantics of append).
func compactValue(dst, b []byte, maxDepth int) ([]byte, error) {
	s := newBytesScanner(b, maxDepth)
	s.capture = dst
	s.capOn = true
	if err := s.value(1); err != nil {
		return s.capture, err
	}
	if err := s.end(); err != nil {
		return s.capture, err
	}
	return s.capture, nil
}

// checkValue validates b as exactly one JSON value, writing nothing.
func checkValue(b []byte, maxDepth int) error {
	s := newBytesScanner(b, maxDepth)
	if err := s.value(1); err != nil {
		return err
	}
	return s.end()
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

func trimBOM(b []byte) []byte { return bytes.TrimPrefix(b, utf8BOM) }
