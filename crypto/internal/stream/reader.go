package stream

import (
	"crypto/cipher"
	"io"
)

// Reader decrypts a stream. It reads up to Params.InFlight segments ahead
// and opens them in parallel, but returns a segment's plaintext only after
// that segment authenticated, and io.EOF only after the segment marked last
// did. A truncated stream is known only at its end.
type Reader struct {
	src    io.Reader
	aead   cipher.AEAD
	prefix [NoncePrefixSize]byte
	p      Params
	pool   workers

	next     uint64 // number of the next segment to read from src
	carry    byte   // first byte of the next segment, read to tell the last one
	hasCarry bool
	srcDone  bool
	queue    []*job // read from src and opening or opened, in stream order

	cur *job // being returned
	off int
	err error // sticky, returned after the plaintext that came before it
	eof bool
}

var (
	_ io.Reader   = (*Reader)(nil)
	_ io.WriterTo = (*Reader)(nil)
)

// NewReader reads the stream header from src and returns a Reader of the
// plaintext, keyed from mainKey with ad as associated data. A missing or
// malformed header is ErrHeader; errors of src are returned as they are.
func NewReader(src io.Reader, mainKey, ad []byte, p Params) (*Reader, error) {
	p, err := p.check()
	if err != nil {
		return nil, err
	}
	var hdr [HeaderLen]byte
	if _, err := io.ReadFull(src, hdr[:1]); err != nil {
		return nil, headerErr(err)
	}
	if hdr[0] != HeaderLen {
		return nil, ErrHeader
	}
	if _, err := io.ReadFull(src, hdr[1:]); err != nil {
		return nil, headerErr(err)
	}
	a, prefix, err := openHeader(&hdr, mainKey, ad)
	if err != nil {
		return nil, err
	}
	return &Reader{src: src, aead: a, prefix: prefix, p: p, pool: newWorkers(p.Workers)}, nil
}

func headerErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return ErrHeader
	}
	return err
}

func (r *Reader) open(j *job) {
	if j.n >= TagSize {
		if out, err := r.aead.Open(j.buf[:0], j.nonce(&r.prefix), j.buf[:j.n], nil); err == nil {
			j.n = len(out)
			return
		}
	}
	j.n = 0
	j.err = &SegmentError{Segment: j.idx, Err: ErrAuth}
}

// fill reads segments from src and starts opening them until InFlight are
// held or src ended.
func (r *Reader) fill() {
	for !r.srcDone && len(r.queue) < r.p.InFlight {
		r.queue = append(r.queue, r.readSeg())
	}
}

// readSeg reads the next segment from src and, unless the Reader is
// synchronous, starts opening it. Each segment is read with one byte more,
// which, when it arrives, says that the segment is not the last and starts
// the next. An error of src comes back as a job holding it.
func (r *Reader) readSeg() *job {
	seg := r.p.SegmentSize
	j := &job{idx: r.next}
	if r.next >= MaxSegments {
		j.err = &SegmentError{Segment: j.idx, Err: ErrTooManySegments}
		r.srcDone = true
		return j
	}
	j.buf = getBuf(seg)
	pos := 0
	if r.hasCarry {
		j.buf[0] = r.carry
		pos = 1
	}
	limit := seg + 1
	if r.next == 0 {
		limit -= HeaderLen
	}
	m, err := io.ReadFull(r.src, j.buf[pos:limit])
	switch err {
	case nil:
		j.n = limit - 1
		r.carry, r.hasCarry = j.buf[limit-1], true
	case io.EOF, io.ErrUnexpectedEOF:
		j.n = pos + m
		j.last = true
		r.srcDone = true
	default:
		putBuf(seg, j.buf)
		j.buf, j.err = nil, err
		r.srcDone = true
		return j
	}
	r.next++
	if !r.pool.sync() {
		r.pool.start(j, r.open)
	}
	return j
}

// advance releases the current segment and makes the next one current,
// waiting for it to authenticate (a synchronous Reader opens it now).
func (r *Reader) advance() error {
	if r.cur != nil {
		putBuf(r.p.SegmentSize, r.cur.buf)
		r.cur = nil
	}
	if r.err != nil {
		return r.err
	}
	if r.eof {
		return io.EOF
	}
	r.fill()
	j := r.queue[0]
	r.queue[0] = nil
	r.queue = r.queue[1:]
	j.wait()
	if r.pool.sync() && j.err == nil {
		r.open(j)
	}
	if j.err != nil {
		if j.buf != nil {
			putBuf(r.p.SegmentSize, j.buf)
		}
		r.err = j.err
		return r.err
	}
	r.cur, r.off, r.eof = j, 0, j.last
	return nil
}

// Read returns authenticated plaintext; see the type's comment. Given room
// for a whole segment, a synchronous Reader reads it straight into p and
// opens it there, using p as scratch space as io.Reader allows.
func (r *Reader) Read(p []byte) (int, error) {
	for r.cur == nil || r.off == r.cur.n {
		if r.pool.sync() && len(r.queue) == 0 && !r.srcDone && r.err == nil && len(p) >= r.p.SegmentSize {
			if n, err := r.readInto(p); n > 0 || err != nil {
				return n, err
			}
			continue
		}
		if err := r.advance(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.cur.buf[r.off:r.cur.n])
	r.off += n
	return n, nil
}

// WriteTo writes the plaintext to w straight from the segment buffers,
// each segment once it authenticated, and returns nil at the authenticated
// end of the stream. Unless the Reader is synchronous, a goroutine of its
// own does the writing, so that reading, opening and writing overlap; it
// ends before WriteTo returns.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if r.cur != nil && r.off < r.cur.n {
		m, err := w.Write(r.cur.buf[r.off:r.cur.n])
		r.off += m
		total += int64(m)
		if err == nil && r.off < r.cur.n {
			err = io.ErrShortWrite
		}
		if err != nil {
			return total, err
		}
	}
	if r.pool.sync() {
		for {
			if err := r.advance(); err != nil {
				if err == io.EOF {
					return total, nil
				}
				return total, err
			}
			m, err := w.Write(r.cur.buf[:r.cur.n])
			r.off = m
			total += int64(m)
			if err == nil && m < r.cur.n {
				err = io.ErrShortWrite
			}
			if err != nil {
				return total, err
			}
		}
	}
	if r.cur != nil {
		putBuf(r.p.SegmentSize, r.cur.buf)
		r.cur = nil
	}
	if r.err != nil || r.eof {
		if r.err != nil {
			return total, r.err
		}
		return total, nil
	}
	out := newSink(w, r.p.SegmentSize, r.p.InFlight)
	out.queue, r.queue = r.queue, nil
	out.startAsync()
	for !r.srcDone && out.error() == nil {
		out.put(r.readSeg())
	}
	out.stopAsync()
	total += out.written
	if out.err != nil {
		r.err = out.err
		return total, r.err
	}
	r.eof = true
	return total, nil
}

// readInto reads the next segment straight into p, which holds a whole
// segment, and opens it there: a synchronous Reader then copies nothing
// itself. The byte that tells whether the segment is the last is read on
// its own.
func (r *Reader) readInto(p []byte) (int, error) {
	if r.cur != nil {
		putBuf(r.p.SegmentSize, r.cur.buf)
		r.cur = nil
	}
	if r.next >= MaxSegments {
		r.err = &SegmentError{Segment: r.next, Err: ErrTooManySegments}
		return 0, r.err
	}
	j := job{idx: r.next}
	pos := 0
	if r.hasCarry {
		p[0] = r.carry
		pos = 1
	}
	limit := r.p.SegmentSize
	if r.next == 0 {
		limit -= HeaderLen
	}
	m, err := io.ReadFull(r.src, p[pos:limit])
	j.n = pos + m
	if err == nil {
		var b [1]byte
		if _, err = io.ReadFull(r.src, b[:]); err == nil {
			r.carry, r.hasCarry = b[0], true
		}
	}
	switch err {
	case nil:
	case io.EOF, io.ErrUnexpectedEOF:
		j.last = true
		r.srcDone = true
	default:
		r.err = err
		return 0, err
	}
	r.next++
	out, oerr := []byte(nil), error(nil)
	if j.n >= TagSize {
		// Go's GCM clears the plaintext when the tag does not verify.
		out, oerr = r.aead.Open(p[:0], j.nonce(&r.prefix), p[:j.n], nil)
	}
	if j.n < TagSize || oerr != nil {
		r.err = &SegmentError{Segment: j.idx, Err: ErrAuth}
		return 0, r.err
	}
	r.eof = j.last
	if r.eof && len(out) == 0 {
		return 0, io.EOF
	}
	return len(out), nil
}
