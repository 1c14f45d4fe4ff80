package stream

import (
	"crypto/cipher"
	"errors"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// Positional streams: when both ends are files, every segment has a fixed
// offset in the plaintext and in the ciphertext, so workers can each read,
// seal (or open) and write whole segments at their offsets with no handing
// over between goroutines. A segment then stays in one buffer in one core's
// cache from read to write, which is what makes file encryption fast: on
// files the reads and writes cost the kernel more than the sealing costs us.
// The bytes written are exactly those of Writer and the verdicts exactly
// those of Reader.

// ErrSourceChanged: the source did not hold the number of bytes it was
// said to hold (it shrank or grew while being read).
var ErrSourceChanged = errors.New("source changed size while being read")

// atWorkers is the default number of positional workers: one more than
// the cores, so that no core idles while a worker waits in a read or write.
func atWorkers(p Params) int {
	if p.Workers > 0 {
		return p.Workers
	}
	return runtime.GOMAXPROCS(0) + 1
}

// streamSegments returns the number of segments of a stream holding n
// plaintext bytes: the first one even when n is 0, and no empty one after
// a segment that is exactly full.
func streamSegments(n int64, segSize int) int64 {
	first := int64(firstPlain(segSize))
	if n <= first {
		return 1
	}
	per := int64(plain(segSize))
	return 1 + (n-first+per-1)/per
}

// plainOffset and cipherOffset are where segment i starts in the plaintext
// and in the stream (whose header takes the first HeaderLen bytes).
func plainOffset(i int64, segSize int) int64 {
	if i == 0 {
		return 0
	}
	return int64(firstPlain(segSize)) + (i-1)*int64(plain(segSize))
}

func cipherOffset(i int64, segSize int) int64 {
	if i == 0 {
		return HeaderLen
	}
	return i * int64(segSize)
}

// segmentRun runs do(i, buf) for i in [0, n) on up to workers goroutines,
// each with its own segment buffer, claiming segments in order. After the
// first error no new segment is claimed, but the ones claimed finish; so
// the error returned is that of the lowest segment that failed, the one a
// sequential reader meets first.
func segmentRun(n int64, workers, segSize int, do func(i int64, buf []byte) error) error {
	workers = int(min(int64(workers), n))
	var (
		next   atomic.Int64
		failed atomic.Bool
		mu     sync.Mutex
		errIdx int64 = -1
		first  error
		wg     sync.WaitGroup
	)
	work := func() {
		buf := getBuf(segSize)
		defer putBuf(segSize, buf)
		for !failed.Load() {
			i := next.Add(1) - 1
			if i >= n {
				return
			}
			if err := do(i, buf); err != nil {
				mu.Lock()
				if errIdx < 0 || i < errIdx {
					errIdx, first = i, err
				}
				mu.Unlock()
				failed.Store(true)
				return
			}
		}
	}
	for range workers - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
	return first
}

// readExactAt reads len(b) bytes at off; a source that ends early changed.
func readExactAt(src io.ReaderAt, b []byte, off int64) error {
	n, err := src.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		return ErrSourceChanged
	}
	return err
}

// checkEnd confirms that src has no byte at off.
func checkEnd(src io.ReaderAt, off int64) error {
	var b [1]byte
	n, err := src.ReadAt(b[:], off)
	switch {
	case n > 0:
		return ErrSourceChanged
	case err == io.EOF:
		return nil
	case err == nil:
		return io.ErrNoProgress
	}
	return err
}

// SealAt encrypts the size bytes of src at srcOff into one stream written
// to dst at dstOff: the header, then each segment at its offset. src must
// hold exactly size bytes from srcOff, else ErrSourceChanged. The header
// is newHeader's, as Writer's, so the output is Writer's for the same
// randomness. On error, dst holds a partial stream and is the caller's to
// discard.
func SealAt(dst io.WriterAt, dstOff int64, src io.ReaderAt, srcOff, size int64, mainKey, ad []byte, p Params) error {
	workers := atWorkers(p)
	p, err := p.check()
	if err != nil {
		return err
	}
	if size < 0 {
		return ErrSourceChanged
	}
	seg := p.SegmentSize
	n := streamSegments(size, seg)
	if n > MaxSegments {
		return ErrTooManySegments
	}
	hdr, a, prefix, err := newHeader(mainKey, ad)
	if err != nil {
		return err
	}
	if _, err := dst.WriteAt(hdr[:], dstOff); err != nil {
		return err
	}
	err = segmentRun(n, workers, seg, func(i int64, buf []byte) error {
		off := plainOffset(i, seg)
		end := min(size, plainOffset(i+1, seg))
		pt := buf[:end-off]
		if err := readExactAt(src, pt, srcOff+off); err != nil {
			return err
		}
		j := job{idx: uint64(i), last: i == n-1}
		ct := a.Seal(buf[:0], j.nonce(&prefix), pt, nil)
		_, err := dst.WriteAt(ct, dstOff+cipherOffset(i, seg))
		return err
	})
	if err != nil {
		return err
	}
	return checkEnd(src, srcOff+size)
}

// OpenAt decrypts the stream of streamLen bytes at srcOff in src into dst
// from offset 0 and returns the plaintext's length. The verdicts are
// Reader's: ErrHeader, or a *SegmentError for the lowest segment that does
// not authenticate. src must hold no byte after the stream, else
// ErrSourceChanged. On error, dst holds unauthenticated fragments and is
// the caller's to discard.
func OpenAt(dst io.WriterAt, src io.ReaderAt, srcOff, streamLen int64, mainKey, ad []byte, p Params) (int64, error) {
	workers := atWorkers(p)
	p, err := p.check()
	if err != nil {
		return 0, err
	}
	seg := p.SegmentSize
	var hdr [HeaderLen]byte
	if streamLen < HeaderLen {
		return 0, ErrHeader
	}
	if err := readExactAt(src, hdr[:], srcOff); err != nil {
		return 0, headerErr(err)
	}
	a, prefix, err := openHeader(&hdr, mainKey, ad)
	if err != nil {
		return 0, err
	}

	// Segment i spans [cipherOffset(i), cipherOffset(i+1)) of the stream,
	// the last one up to its end; a stream ending at a boundary has no
	// empty segment after it, as Reader reads it.
	n := int64(1)
	if streamLen > int64(seg) {
		n = (streamLen + int64(seg) - 1) / int64(seg)
	}
	if n > MaxSegments {
		return 0, &SegmentError{Segment: MaxSegments, Err: ErrTooManySegments}
	}
	var total atomic.Int64
	err = segmentRun(n, workers, seg, func(i int64, buf []byte) error {
		off := cipherOffset(i, seg)
		ct := buf[:min(streamLen, cipherOffset(i+1, seg))-off]
		if err := readExactAt(src, ct, srcOff+off); err != nil {
			return err
		}
		pt, ok := openSegment(a, &prefix, i, i == n-1, ct)
		if !ok {
			return &SegmentError{Segment: uint64(i), Err: ErrAuth}
		}
		if _, err := dst.WriteAt(pt, plainOffset(i, seg)); err != nil {
			return err
		}
		total.Add(int64(len(pt)))
		return nil
	})
	if err != nil {
		return 0, err
	}
	if err := checkEnd(src, srcOff+streamLen); err != nil {
		return 0, err
	}
	return total.Load(), nil
}

// openSegment opens segment i in place; a segment shorter than a tag
// cannot authenticate.
func openSegment(a cipher.AEAD, prefix *[NoncePrefixSize]byte, i int64, last bool, ct []byte) ([]byte, bool) {
	if len(ct) < TagSize {
		return nil, false
	}
	j := job{idx: uint64(i), last: last}
	pt, err := a.Open(ct[:0], j.nonce(prefix), ct, nil)
	return pt, err == nil
}
