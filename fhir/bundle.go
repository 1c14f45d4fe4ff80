package fhir

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Bundle is one Bundle file kept whole. It is never held in memory: every
// pass re-opens the file and streams it, so memory is bounded by the largest
// entry (and by MaxResourceBytes).
//
// The exporter's order of calls is:
//
//  1. Entries (usually through Checker.Bundle) validates the entries one by
//     one and records the digest of the compacted Bundle;
//  2. WriteTo streams the compacted Bundle (one NDJSON line without its
//     newline) into any io.Writer, such as an encrypting writer, and fails
//     if the bytes differ from what step 1 validated (the file changed).
type Bundle struct {
	Pos  Position // File is set, Line is 0, Entry is -1
	Type string   // Bundle.type, e.g. "transaction"; "" if absent
	ID   string   // Bundle.id; "" if absent (a Bundle kept whole needs no id)

	open   func() (io.ReadCloser, error)
	opts   *WalkOptions
	digest []byte // sha256 of the compacted bytes, set by a complete Entries pass
	size   int64
}

// Entry is one Bundle.entry element, compacted.
type Entry struct {
	Index    int    // 0-based position in Bundle.entry
	FullURL  string // entry.fullUrl, "" if absent
	Method   string // entry.request.method, "" if absent
	URL      string // entry.request.url, "" if absent
	Resource []byte // entry.resource compacted, nil if absent; valid only during the callback
	Raw      []byte // the whole entry compacted; valid only during the callback
}

// Entries streams the Bundle once and calls fn for every entry in order.
// The slices in Entry are reused after fn returns. An error from fn stops
// the pass and is returned as is. A complete pass records the digest and
// size of the compacted Bundle that WriteTo later checks against.
func (b *Bundle) Entries(fn func(e *Entry) error) error {
	rc, err := b.open()
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	bs := newBundleStream(rc, h, b.opts)
	var e Entry
	var ef entryFields
	for {
		raw, err := bs.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return b.wrap(err, bs.n-1)
		}
		if err := ef.read(raw); err != nil {
			return b.wrap(err, bs.n-1)
		}
		e = Entry{Index: bs.n - 1, FullURL: ef.fullURL, Method: ef.method, URL: ef.url, Raw: raw}
		if ef.res.end > 0 {
			e.Resource = raw[ef.res.start:ef.res.end]
		}
		if err := fn(&e); err != nil {
			return err
		}
	}
	b.digest = h.Sum(nil)
	b.size = bs.written
	return nil
}

// WriteTo writes the compacted Bundle to w, without a trailing newline. If
// Entries completed earlier, WriteTo returns an error wrapping ErrBadInput
// when the bytes differ (the file changed between the passes); the bytes
// already written to w must then be discarded by the caller.
func (b *Bundle) WriteTo(w io.Writer) (int64, error) {
	rc, err := b.open()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	h := sha256.New()
	bs := newBundleStream(rc, io.MultiWriter(w, h), b.opts)
	for {
		_, err := bs.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return bs.written, b.wrap(err, bs.n-1)
		}
	}
	if b.digest != nil && (bs.written != b.size || string(h.Sum(nil)) != string(b.digest)) {
		return bs.written, fmt.Errorf("%s: %w: the file changed while it was being exported; run the export again", b.Pos.File, ErrBadInput)
	}
	return bs.written, nil
}

func (b *Bundle) wrap(err error, entry int) error {
	var we *writeError
	if errors.As(err, &we) {
		return we.err
	}
	pos := b.Pos
	pos.Entry = entry
	return fmt.Errorf("%s: %w: %v", pos, ErrBadInput, err)
}

// writeError marks an error from the destination writer, which is not bad input.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }

// bundleStream pulls entries one by one from a streamed Bundle, writing the
// compacted Bundle to out as it goes.
type bundleStream struct {
	s        *scanner
	out      *countWriter
	started  bool
	members  int
	inArr    bool
	arrFirst bool
	n        int // entries returned so far
	done     bool
	written  int64
	key      []byte
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil {
		err = &writeError{err}
	}
	return n, err
}

func newBundleStream(r io.Reader, out io.Writer, o *WalkOptions) *bundleStream {
	s := newReaderScanner(r, 256<<10, o.maxDepth())
	s.capLimit = o.maxResource()
	bs := &bundleStream{s: s}
	if out != nil {
		bs.out = &countWriter{w: out}
		s.out = bs.out
	}
	return bs
}

var _ hash.Hash = sha256.New()

func (bs *bundleStream) finish() error {
	if err := bs.s.flush(); err != nil {
		return err
	}
	if bs.out != nil {
		bs.written = bs.out.n
	}
	return nil
}

// next returns the next entry's compacted bytes (reused by the next call),
// or io.EOF after the Bundle's closing brace.
func (bs *bundleStream) next() ([]byte, error) {
	s := bs.s
	if bs.done {
		return nil, io.EOF
	}
	if !bs.started {
		c, ok := s.skipWS()
		if !ok {
			return nil, s.eofErr("Bundle")
		}
		if c != '{' {
			return nil, s.errf("a Bundle must be a JSON object, found %q", c)
		}
		s.r++
		if err := s.emitByte('{'); err != nil {
			return nil, err
		}
		bs.started = true
	}
	for {
		if bs.inArr {
			c, ok := s.skipWS()
			if !ok {
				return nil, s.eofErr("Bundle.entry")
			}
			if c == ']' {
				s.r++
				if err := s.emitByte(']'); err != nil {
					return nil, err
				}
				bs.inArr = false
				continue
			}
			if !bs.arrFirst {
				if c != ',' {
					return nil, s.errf("expected ',' or ']' in Bundle.entry, found %q", c)
				}
				s.r++
				if err := s.emitByte(','); err != nil {
					return nil, err
				}
			}
			bs.arrFirst = false
			s.capture = s.capture[:0]
			s.capOn = true
			err := s.value(3)
			s.capOn = false
			if err != nil {
				return nil, err
			}
			bs.n++
			return s.capture, nil
		}
		c, ok := s.skipWS()
		if !ok {
			return nil, s.eofErr("Bundle")
		}
		if c == '}' {
			s.r++
			if err := s.emitByte('}'); err != nil {
				return nil, err
			}
			if err := s.end(); err != nil {
				return nil, err
			}
			if err := bs.finish(); err != nil {
				return nil, err
			}
			bs.done = true
			return nil, io.EOF
		}
		if bs.members > 0 {
			if c != ',' {
				return nil, s.errf("expected ',' or '}' in the Bundle object, found %q", c)
			}
			s.r++
			if err := s.emitByte(','); err != nil {
				return nil, err
			}
			if c, ok = s.skipWS(); !ok {
				return nil, s.eofErr("Bundle")
			}
		}
		if c != '"' {
			return nil, s.errf("expected a string key, found %q", c)
		}
		bs.key = bs.key[:0]
		if err := s.str(&bs.key); err != nil {
			return nil, err
		}
		if c, ok = s.skipWS(); !ok {
			return nil, s.eofErr("Bundle")
		}
		if c != ':' {
			return nil, s.errf("expected ':' after a key, found %q", c)
		}
		s.r++
		if err := s.emitByte(':'); err != nil {
			return nil, err
		}
		bs.members++
		if string(bs.key) == "entry" {
			if c, ok = s.skipWS(); ok && c == '[' {
				s.r++
				if err := s.emitByte('['); err != nil {
					return nil, err
				}
				bs.inArr, bs.arrFirst = true, true
				continue
			}
			if ok {
				return nil, s.errf("Bundle.entry must be a JSON array, found %q", c)
			}
		}
		if err := s.value(2); err != nil {
			return nil, err
		}
	}
}

// entryFields reads fullUrl, request.method/url and the resource span of a
// compacted entry.
type entryFields struct {
	fullURL, method, url string
	res                  span
	f                    facts
}

func (ef *entryFields) read(raw []byte) error {
	ef.fullURL, ef.method, ef.url, ef.res = "", "", "", span{}
	if len(raw) == 0 || raw[0] != '{' {
		return errors.New("a Bundle entry must be a JSON object")
	}
	w := factWalker{b: raw, f: &ef.f}
	i := 1
	if len(raw) > 1 && raw[1] == '}' {
		return nil
	}
	for i < len(raw) {
		ks, ke, esc, err := w.strSpan(i)
		if err != nil {
			return err
		}
		key := string(raw[ks:ke])
		if esc {
			key = unquote(raw[ks-1 : ke+1])
		}
		i = ke + 2 // skip '":'
		end, err := w.value(i, 4)
		if err != nil {
			return err
		}
		switch key {
		case "fullUrl":
			if raw[i] == '"' {
				ef.fullURL = w.stringAt(i)
			}
		case "resource":
			if raw[i] != '{' {
				return errors.New("the entry's resource (Bundle.entry.resource) must be a JSON object, a FHIR resource")
			}
			ef.res = span{i, end}
		case "request":
			if raw[i] == '{' {
				ef.method, ef.url = requestFields(raw[i:end])
			}
		}
		i = end
		if i >= len(raw) || raw[i] == '}' {
			break
		}
		i++ // ','
	}
	return nil
}

func requestFields(b []byte) (method, url string) {
	var f facts
	w := factWalker{b: b, f: &f}
	i := 1
	for i < len(b) && b[i] == '"' {
		ks, ke, _, err := w.strSpan(i)
		if err != nil {
			return
		}
		key := string(b[ks:ke])
		i = ke + 2
		end, err := w.value(i, 5)
		if err != nil || i >= len(b) {
			return
		}
		if b[i] == '"' {
			switch key {
			case "method":
				method = w.stringAt(i)
			case "url":
				url = w.stringAt(i)
			}
		}
		i = end
		if i >= len(b) || b[i] != ',' {
			break
		}
		i++
	}
	return
}

// NewBundleBytes returns a Bundle kept whole whose bytes are already in
// memory: one line of a decrypted Bundle NDJSON object, when a restored
// export is checked the way it was exported. raw must be a JSON object with
// "resourceType":"Bundle"; opts may be nil for the defaults.
func NewBundleBytes(raw []byte, pos Position, opts *WalkOptions) (*Bundle, error) {
	if opts == nil {
		opts = &WalkOptions{}
	}
	rt, btype, id, err := peekTop(bytes.NewReader(raw), opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", pos, ErrBadInput, err)
	}
	if rt != "Bundle" {
		return nil, fmt.Errorf("%s: %w: resourceType is %q, not Bundle", pos, ErrBadInput, rt)
	}
	pos.Entry = -1
	return &Bundle{Pos: pos, Type: btype, ID: id, opts: opts,
		open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }}, nil
}
