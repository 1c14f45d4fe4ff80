package crypto

import (
	"io"
	"sync"
)

// The file helpers overlap I/O with crypto: a goroutine reads ahead, another
// writes behind, and the caller's goroutine only encrypts or decrypts. Each
// side holds pipeDepth buffers of pipeChunk bytes, so memory stays bounded.
const (
	pipeChunk = 1 << 20
	pipeDepth = 3
)

type chunk struct {
	b   []byte
	err error
}

// readAhead reads r in a goroutine. Errors of r are returned as they are,
// after the data read before them.
type readAhead struct {
	full chan chunk
	free chan []byte
	done chan struct{}
	once sync.Once
	cur  chunk
	off  int
}

func newReadAhead(r io.Reader) *readAhead {
	ra := &readAhead{full: make(chan chunk, pipeDepth), free: make(chan []byte, pipeDepth), done: make(chan struct{})}
	for i := 0; i < pipeDepth; i++ {
		ra.free <- make([]byte, pipeChunk)
	}
	go func() {
		defer close(ra.full)
		for {
			var buf []byte
			select {
			case buf = <-ra.free:
			case <-ra.done:
				return
			}
			n, err := io.ReadFull(r, buf)
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			select {
			case ra.full <- chunk{buf[:n], err}:
			case <-ra.done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ra
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for ra.off == len(ra.cur.b) {
		if ra.cur.err != nil {
			return 0, ra.cur.err
		}
		if ra.cur.b != nil {
			ra.free <- ra.cur.b[:cap(ra.cur.b)]
		}
		c, ok := <-ra.full
		if !ok {
			return 0, io.ErrClosedPipe
		}
		ra.cur, ra.off = c, 0
	}
	n := copy(p, ra.cur.b[ra.off:])
	ra.off += n
	return n, nil
}

// Close stops the goroutine; it does not close the underlying reader.
func (ra *readAhead) Close() { ra.once.Do(func() { close(ra.done) }) }

// writeBehind writes to w in a goroutine. The first error of w is returned
// by a later Write or by Close.
type writeBehind struct {
	w    io.Writer
	full chan []byte
	free chan []byte
	done chan struct{}
	mu   sync.Mutex
	err  error
	buf  []byte
}

func newWriteBehind(w io.Writer) *writeBehind {
	wb := &writeBehind{w: w, full: make(chan []byte, pipeDepth), free: make(chan []byte, pipeDepth+1), done: make(chan struct{})}
	for i := 0; i < pipeDepth+1; i++ {
		wb.free <- make([]byte, 0, pipeChunk)
	}
	wb.buf = <-wb.free
	go func() {
		defer close(wb.done)
		for b := range wb.full {
			if wb.error() == nil {
				if _, err := wb.w.Write(b); err != nil {
					wb.mu.Lock()
					wb.err = err
					wb.mu.Unlock()
				}
			}
			wb.free <- b[:0]
		}
	}()
	return wb
}

func (wb *writeBehind) error() error {
	wb.mu.Lock()
	defer wb.mu.Unlock()
	return wb.err
}

func (wb *writeBehind) Write(p []byte) (int, error) {
	if err := wb.error(); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		c := copy(wb.buf[len(wb.buf):cap(wb.buf)], p)
		wb.buf = wb.buf[:len(wb.buf)+c]
		p = p[c:]
		if len(wb.buf) == cap(wb.buf) {
			wb.full <- wb.buf
			wb.buf = <-wb.free
		}
	}
	return n, nil
}

// Close flushes, waits for the goroutine and returns the first error. It
// does not close the underlying writer.
func (wb *writeBehind) Close() error {
	if len(wb.buf) > 0 {
		wb.full <- wb.buf
	}
	wb.buf = nil
	close(wb.full)
	<-wb.done
	return wb.error()
}

// pipeline runs fill with a read-ahead copy of src and a write-behind copy
// of dst.
func pipeline(dst io.Writer, src io.Reader, fill func(w io.Writer, r io.Reader) error) error {
	ra := newReadAhead(src)
	defer ra.Close()
	wb := newWriteBehind(dst)
	err := fill(wb, ra)
	if cerr := wb.Close(); err == nil {
		err = cerr
	}
	return err
}
