package stream

import (
	"crypto/cipher"
	"errors"
	"io"
)

// Writer encrypts a stream. Segments are sealed in parallel and written to
// the destination in order: by the goroutine calling Write or Close, so an
// error of the destination may be returned by a later call, or, during
// ReadFrom, by a goroutine of ReadFrom's own that ends before it returns.
type Writer struct {
	aead   cipher.AEAD
	prefix [NoncePrefixSize]byte
	p      Params
	pool   workers
	out    *sink
	cur    *job // being filled
	err    error
	closed bool
}

var (
	_ io.WriteCloser = (*Writer)(nil)
	_ io.ReaderFrom  = (*Writer)(nil)
)

// NewWriter writes a stream header (newHeader) to dst and returns a Writer
// for the segments, keyed from mainKey with ad as associated data.
func NewWriter(dst io.Writer, mainKey, ad []byte, p Params) (*Writer, error) {
	p, err := p.check()
	if err != nil {
		return nil, err
	}
	hdr, a, prefix, err := newHeader(mainKey, ad)
	if err != nil {
		return nil, err
	}
	if _, err := dst.Write(hdr[:]); err != nil {
		return nil, err
	}
	w := &Writer{aead: a, prefix: prefix, p: p, pool: newWorkers(p.Workers), out: newSink(dst, p.SegmentSize, p.InFlight)}
	w.cur = &job{buf: getBuf(p.SegmentSize)}
	return w, nil
}

func (w *Writer) limit() int {
	if w.cur.idx == 0 {
		return firstPlain(w.p.SegmentSize)
	}
	return plain(w.p.SegmentSize)
}

func (w *Writer) seal(j *job) {
	j.n = len(w.aead.Seal(j.buf[:0], j.nonce(&w.prefix), j.buf[:j.n], nil))
}

// submit hands the current segment to the workers and, unless it is the
// last, starts the next one in next (or a fresh buffer).
func (w *Writer) submit(last bool, next []byte) {
	j := w.cur
	if !last && j.idx+1 >= MaxSegments {
		w.err = ErrTooManySegments
		return
	}
	j.last = last
	if !j.ready {
		w.pool.start(j, w.seal)
	}
	w.out.put(j)
	if last {
		w.cur = nil
		return
	}
	if next == nil {
		next = getBuf(w.p.SegmentSize)
	}
	w.cur = &job{buf: next, idx: j.idx + 1}
}

func (w *Writer) error() error {
	if w.closed {
		return errors.New("stream: write on closed writer")
	}
	if w.err != nil {
		return w.err
	}
	return w.out.error()
}

// Write encrypts p.
func (w *Writer) Write(p []byte) (int, error) {
	n := 0
	for {
		if err := w.error(); err != nil {
			return n, err
		}
		if lim := w.limit(); w.pool.sync() && w.cur.n == 0 && len(p)-n > lim {
			// A whole segment with more after it: seal it from p straight
			// into the segment buffer, without copying it first.
			w.cur.n = len(w.aead.Seal(w.cur.buf[:0], w.cur.nonce(&w.prefix), p[n:n+lim], nil))
			w.cur.ready = true
			n += lim
			w.submit(false, nil)
			continue
		}
		c := copy(w.cur.buf[w.cur.n:w.limit()], p[n:])
		w.cur.n += c
		n += c
		if n == len(p) {
			return n, nil
		}
		w.submit(false, nil)
	}
}

// ReadFrom encrypts what r yields until io.EOF, reading straight into the
// segment buffers. While it runs, a goroutine of its own writes the sealed
// segments, so reading, sealing and writing overlap; it returns after
// the last of those writes. It does not close the stream.
func (w *Writer) ReadFrom(r io.Reader) (total int64, err error) {
	if !w.pool.sync() {
		w.out.startAsync()
		defer func() {
			w.out.stopAsync()
			if err == nil {
				err = w.error()
			}
		}()
	}
	for {
		if err := w.error(); err != nil {
			return total, err
		}
		if w.cur.n == w.limit() {
			// One byte of the next segment decides whether this one is last.
			next := getBuf(w.p.SegmentSize)
			m, err := io.ReadAtLeast(r, next[:plain(w.p.SegmentSize)], 1)
			total += int64(m)
			if m > 0 {
				w.submit(false, next)
				if w.err != nil {
					return total, w.err
				}
				w.cur.n = m
			} else {
				putBuf(w.p.SegmentSize, next)
			}
			if err == io.EOF {
				return total, nil
			}
			if err != nil {
				return total, err
			}
			continue
		}
		m, err := io.ReadFull(r, w.cur.buf[w.cur.n:w.limit()])
		w.cur.n += m
		total += int64(m)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close seals the last segment, writes every segment still held and
// returns the first error. It does not close the destination. A second
// Close returns nil, as Tink's does.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	if w.error() == nil {
		w.submit(true, nil)
	}
	w.out.drain()
	w.closed = true
	if w.err != nil {
		return w.err
	}
	return w.out.error()
}
