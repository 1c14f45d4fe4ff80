package verify

import (
	"bytes"
	"context"
	"io"
	"iter"
	"sync"

	"github.com/ehrport/ehrport/storage"
)

// refChunk is the unit in which a reference object is read ahead, and
// refAhead how many chunks may wait: about 1 MiB per object in flight.
const (
	refChunk = 256 << 10
	refAhead = 4
)

// refComparer reads one object of the reference store on its own goroutine
// while the same object is read here, and compares the two byte for byte
// as the bytes read here are written to it. Each side is so read once, and
// both at the same time; the reference needs no hash of its own when the
// copy here matched the manifest.
type refComparer struct {
	cancel context.CancelFunc
	chunk  int         // the size of the buffers read into
	chunks chan []byte // filled, in order; closed at the end
	free   chan []byte
	err    error // how the reading ended (io.EOF when clean); set before chunks closes

	cur, held []byte
	differ    bool
}

// compareReference starts reading key (at most size+1 bytes, to see a
// longer object) from st.
func compareReference(ctx context.Context, st storage.Store, key string, size int64) *refComparer {
	ctx, cancel := context.WithCancel(ctx)
	// A small object needs one buffer of its own size (one byte more, to
	// see the end): a whole chunk for each of thousands of small objects
	// was most of what verify --against allocated, and the GC's work.
	chunk := int(min(size+1, refChunk))
	r := &refComparer{cancel: cancel, chunk: chunk, chunks: make(chan []byte, refAhead), free: make(chan []byte, refAhead+2)}
	go r.read(ctx, st, key, size)
	return r
}

func (r *refComparer) read(ctx context.Context, st storage.Store, key string, size int64) {
	defer close(r.chunks)
	rc, err := st.Get(ctx, key)
	if err != nil {
		r.err = err
		return
	}
	defer rc.Close()
	body := io.LimitReader(rc, size+1)
	for {
		var buf []byte
		select {
		case buf = <-r.free:
		default:
			buf = make([]byte, r.chunk)
		}
		n, err := io.ReadFull(body, buf)
		if n > 0 {
			select {
			case r.chunks <- buf[:n]:
			case <-ctx.Done():
				r.err = ctx.Err()
				return
			}
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			r.err = io.EOF
			return
		default:
			r.err = err
			return
		}
	}
}

// next makes the next chunk current; false at the end of the reference.
func (r *refComparer) next() bool {
	if r.held != nil {
		select {
		case r.free <- r.held[:cap(r.held)]:
		default:
		}
		r.held = nil
	}
	c, ok := <-r.chunks
	r.cur, r.held = c, c
	return ok
}

// Write compares p with the reference's next len(p) bytes. It never fails:
// it only notes a difference, so the read here goes on undisturbed.
func (r *refComparer) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && !r.differ {
		if len(r.cur) == 0 && !r.next() {
			r.differ = true // the reference is shorter, or could not be read
			break
		}
		k := min(len(p), len(r.cur))
		if !bytes.Equal(p[:k], r.cur[:k]) {
			r.differ = true
			break
		}
		p, r.cur = p[k:], r.cur[k:]
	}
	return n, nil
}

// same reports whether the reference held exactly the bytes written, and
// was read to its end without error.
func (r *refComparer) same() bool {
	if r.differ {
		return false
	}
	for len(r.cur) == 0 {
		if !r.next() {
			return r.err == io.EOF
		}
	}
	return false // bytes left over: the reference is longer
}

// indices yields 0, 1, ... n-1: manifest entries by their index.
func indices(n int) iter.Seq[int] {
	return func(yield func(int) bool) {
		for i := range n {
			if !yield(i) {
				return
			}
		}
	}
}

// close stops the reading and waits for it.
func (r *refComparer) close() {
	r.cancel()
	for range r.chunks {
	}
}

// drainBufs holds the buffers drain reads into.
var drainBufs = sync.Pool{New: func() any { b := make([]byte, refChunk); return &b }}

// drain reads r to its end. It reads in refChunk pieces rather than
// io.Discard's 8 KiB: each Read goes down the whole stack (limit, HTTP
// body, TLS) and at most one TLS record (16 KiB) comes back, so a buffer
// smaller than a record costs two passes per record.
func drain(r io.Reader) error {
	bp := drainBufs.Get().(*[]byte)
	defer drainBufs.Put(bp)
	buf := *bp
	for {
		_, err := r.Read(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
