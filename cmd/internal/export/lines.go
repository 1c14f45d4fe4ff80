package export

import (
	"crypto/sha256"
	"hash"
	"io"
)

// lineScanner follows an NDJSON stream of compact JSON objects byte by byte
// and extracts each line's top-level resourceType and id as they are
// written (the raw text between the quotes), without holding a line in
// memory. It feeds "Type/id\n" per line into ids, the per-object id digest of
// docs/export-format.md §3. The exporter and restore use the same code, so
// both sides agree on every byte.
type lineScanner struct {
	ids   hash.Hash
	lines int64

	depth     int
	inStr     bool
	esc       bool
	expectKey bool
	strIsKey  bool
	capturing bool
	buf       []byte
	key       string
	typ, id   []byte
}

const maxCapture = 1024

func newLineScanner() *lineScanner {
	return &lineScanner{ids: sha256.New(), buf: make([]byte, 0, 64)}
}

func (s *lineScanner) Write(p []byte) (int, error) {
	for _, c := range p {
		if s.inStr {
			switch {
			case s.esc:
				s.esc = false
			case c == '\\':
				s.esc = true
			case c == '"':
				s.inStr = false
				if s.strIsKey {
					switch string(s.buf) { // no allocation
					case "resourceType":
						s.key = "resourceType"
					case "id":
						s.key = "id"
					default:
						s.key = ""
					}
				} else if s.capturing {
					switch s.key {
					case "resourceType":
						s.typ = append(s.typ[:0], s.buf...)
					case "id":
						s.id = append(s.id[:0], s.buf...)
					}
				}
				continue
			}
			if s.capturing && len(s.buf) < maxCapture {
				s.buf = append(s.buf, c)
			}
			continue
		}
		switch c {
		case '"':
			s.inStr = true
			s.buf = s.buf[:0]
			if s.depth == 1 {
				s.strIsKey = s.expectKey
				s.capturing = s.strIsKey || s.key == "resourceType" || s.key == "id"
				s.expectKey = false
			} else {
				s.strIsKey, s.capturing = false, false
			}
		case '{':
			s.depth++
			if s.depth == 1 {
				s.expectKey = true
			}
		case '[':
			s.depth++
		case '}', ']':
			s.depth--
		case ',':
			if s.depth == 1 {
				s.expectKey = true
			}
		case '\n':
			if s.depth == 0 {
				s.endLine()
			}
		}
	}
	return len(p), nil
}

func (s *lineScanner) endLine() {
	s.ids.Write(s.typ)
	s.ids.Write([]byte{'/'})
	s.ids.Write(s.id)
	s.ids.Write([]byte{'\n'})
	s.lines++
	s.typ, s.id, s.key = s.typ[:0], s.id[:0], ""
	s.depth, s.expectKey = 0, false
}

// peekType returns the top-level resourceType of one compact JSON resource.
func peekType(raw []byte) string {
	typ, _ := peekTypeID(raw)
	return string(typ)
}

// peekTypeID returns the top-level resourceType and id of one compact JSON
// resource exactly as lineScanner sees them, stopping as soon as both are
// known (they are usually the first keys).
func peekTypeID(raw []byte) (typ, id []byte) {
	var s lineScanner
	return s.peek(raw)
}

// peek is peekTypeID reusing s's buffers; the results are valid until the
// next call.
func (s *lineScanner) peek(raw []byte) (typ, id []byte) {
	s.reset()
	for i := 0; i < len(raw); {
		end := min(i+128, len(raw))
		s.Write(raw[i:end])
		i = end
		if len(s.typ) > 0 && len(s.id) > 0 && !s.inStr {
			break
		}
	}
	return s.typ, s.id
}

func (s *lineScanner) reset() {
	s.depth, s.inStr, s.esc, s.expectKey, s.strIsKey, s.capturing = 0, false, false, false, false, false
	s.buf, s.typ, s.id, s.key = s.buf[:0], s.typ[:0], s.id[:0], ""
}

// addLine records a line whose type and id the caller already knows.
func (s *lineScanner) addLine(typ, id []byte) {
	s.typ, s.id = typ, id
	s.endLine()
	s.typ, s.id = nil, nil
}

// hashCounter hashes and counts bytes on their way to w (or from r).
type hashCounter struct {
	h hash.Hash
	n int64
	w io.Writer
	r io.Reader
}

func (hc *hashCounter) Write(p []byte) (int, error) {
	n, err := hc.w.Write(p)
	hc.h.Write(p[:n])
	hc.n += int64(n)
	return n, err
}

func (hc *hashCounter) Read(p []byte) (int, error) {
	n, err := hc.r.Read(p)
	hc.h.Write(p[:n])
	hc.n += int64(n)
	return n, err
}
