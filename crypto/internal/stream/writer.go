package stream

import (
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"io"
)

// Writer encrypts a stream. Segments are sealed in parallel and written to
// the destination in order by the goroutine calling Write, ReadFrom or
// Close, so an error of the destination may be returned by a later call.
type Writer struct {
	dst    io.Writer
	aead   cipher.AEAD
	prefix [NoncePrefixSize]byte
	p      Params
	pool   workers
	cur    *job   // being filled
	queue  []*job // sealing or sealed, in stream order
	err    error
	closed bool
}

var (
	_ io.WriteCloser = (*Writer)(nil)
	_ io.ReaderFrom  = (*Writer)(nil)
)

// NewWriter writes a stream header to dst and returns a Writer for the
// segments, keyed from mainKey with ad as associated data. The salt and
// nonce prefix come from crypto/rand, 32 then 7 bytes, as in Tink, so that
// a test that fixes crypto/rand's output gets Tink's bytes.
func NewWriter(dst io.Writer, mainKey, ad []byte, p Params) (*Writer, error) {
	p, err := p.check()
	if err != nil {
		return nil, err
	}
	var hdr [HeaderLen]byte
	hdr[0] = HeaderLen
	if _, err := rand.Read(hdr[1 : 1+SaltSize]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(hdr[1+SaltSize:]); err != nil {
		return nil, err
	}
	a, err := newAEAD(mainKey, hdr[1:1+SaltSize], ad)
	if err != nil {
		return nil, err
	}
	if _, err := dst.Write(hdr[:]); err != nil {
		return nil, err
	}
	w := &Writer{dst: dst, aead: a, p: p, pool: newWorkers(p.Workers)}
	copy(w.prefix[:], hdr[1+SaltSize:])
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

// submit hands the current segment to the workers and starts the next one
// with a fresh buffer (or next, when given).
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
	w.queue = append(w.queue, j)
	for len(w.queue) >= w.p.InFlight {
		w.drain()
	}
	if last {
		w.cur = nil
		return
	}
	if next == nil {
		next = getBuf(w.p.SegmentSize)
	}
	w.cur = &job{buf: next, idx: j.idx + 1}
}

// drain writes out the oldest segment once it is sealed.
func (w *Writer) drain() {
	j := w.queue[0]
	w.queue[0] = nil
	w.queue = w.queue[1:]
	j.wait()
	if w.err == nil {
		_, w.err = w.dst.Write(j.buf[:j.n])
	}
	putBuf(w.p.SegmentSize, j.buf)
}

// full reports whether the current segment is full; a full segment is
// sealed only once a byte of the next one has arrived.
func (w *Writer) full() bool { return w.cur.n == w.limit() }

func (w *Writer) canWrite() error {
	if w.closed {
		return errors.New("stream: write on closed writer")
	}
	return w.err
}

// Write encrypts p.
func (w *Writer) Write(p []byte) (int, error) {
	n := 0
	for {
		if err := w.canWrite(); err != nil {
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
// segment buffers. It does not close the stream.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if err := w.canWrite(); err != nil {
			return total, err
		}
		if w.full() {
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
				return total, w.err
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
			return total, w.err
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
	w.closed = true
	if w.err == nil {
		w.submit(true, nil)
	}
	for len(w.queue) > 0 {
		w.drain()
	}
	return w.err
}
