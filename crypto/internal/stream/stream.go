// Package stream is Tink's AES-GCM-HKDF streaming AEAD ciphertext format
// (the payload of suite 1, docs/format-v1.md §5), written for speed: every
// segment lives in one buffer that is read into, sealed or opened in place
// and written out from, and segments are sealed or opened in parallel by a
// small bounded set of goroutines, in order.
//
// The wire format, byte for byte what tink-go's streamingaead/subtle
// AESGCMHKDF writes and reads:
//
//	stream  = header || segment_0 || ... || segment_k
//	header  = 0x28 || salt (32) || nonce_prefix (7)
//	key     = HKDF-SHA256(ikm = main key, salt = salt, info = associated data, 32)
//	nonce_i = nonce_prefix || uint32_be(i) || last (1: 0x01 for segment_k, else 0x00)
//	segment_i = AES-256-GCM(key, nonce_i, plaintext_i) with its 16-byte tag
//
// Every ciphertext segment is SegmentSize bytes except the first, which is
// shorter by the header's 40 bytes, and the last, which may be shorter. A
// writer seals a segment as not-last only once it holds a byte of the next
// one, so a plaintext that fills its last segment exactly gets no empty
// segment after it. The last flag in the nonce is what makes truncation,
// appended segments and trailing bytes fail to authenticate.
package stream

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
)

// Constants of the format, mirrored from docs/format-v1.md §5.
const (
	KeySize         = 32
	SaltSize        = 32
	NoncePrefixSize = 7
	NonceSize       = 12
	TagSize         = 16
	HeaderLen       = 1 + SaltSize + NoncePrefixSize // 40, also the header's first byte

	// MaxSegments is the number of segments a stream may have: Tink refuses
	// segment numbers from 2^32-1 on.
	MaxSegments = math.MaxUint32

	// MinSegmentSize is the smallest ciphertext segment size Tink accepts:
	// the first segment must hold the header and a tag and one byte.
	MinSegmentSize = HeaderLen + TagSize + 1

	maxInFlight = 64
)

// Params are the stream's segment size and parallelism.
type Params struct {
	// SegmentSize is the ciphertext segment size (1 MiB for suite 1).
	SegmentSize int
	// Workers bounds the segments sealed or opened at once; 0 means
	// GOMAXPROCS. With 1, everything happens in the caller's goroutine.
	Workers int
	// InFlight bounds the segments held at once besides the one the caller
	// fills or drains, so memory stays near (InFlight+1) * SegmentSize; 0
	// means Workers+2.
	InFlight int
}

func (p Params) check() (Params, error) {
	if p.SegmentSize < MinSegmentSize {
		return p, fmt.Errorf("stream: segment size %d is below %d", p.SegmentSize, MinSegmentSize)
	}
	if p.Workers <= 0 {
		p.Workers = runtime.GOMAXPROCS(0)
	}
	if p.InFlight <= 0 {
		p.InFlight = p.Workers + 2
	}
	if p.Workers == 1 {
		p.InFlight = 1
	}
	p.InFlight = min(p.InFlight, maxInFlight)
	return p, nil
}

// Errors about the ciphertext. Errors of the caller's io.Reader or
// io.Writer are returned as they are, never wrapped in these.
var (
	// ErrHeader: the stream header is missing, truncated or has the wrong
	// length byte.
	ErrHeader = errors.New("stream header is truncated or invalid")
	// ErrAuth: a segment did not authenticate: altered, truncated,
	// reordered, appended, or under another key or associated data.
	ErrAuth = errors.New("segment failed to authenticate")
	// ErrTooManySegments: the stream has more than MaxSegments segments.
	ErrTooManySegments = errors.New("too many segments")
)

// SegmentError says which segment failed and why (it wraps ErrAuth or
// ErrTooManySegments).
type SegmentError struct {
	Segment uint64
	Err     error
}

func (e *SegmentError) Error() string { return fmt.Sprintf("segment %d: %v", e.Segment, e.Err) }
func (e *SegmentError) Unwrap() error { return e.Err }

// newAEAD derives the stream key from the main key, salt and ad.
func newAEAD(mainKey, salt, ad []byte) (cipher.AEAD, error) {
	if len(mainKey) != KeySize {
		return nil, fmt.Errorf("stream: main key must be %d bytes, got %d", KeySize, len(mainKey))
	}
	k, err := hkdf.Key(sha256.New, mainKey, salt, string(ad), KeySize)
	if err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// newHeader draws a stream header, its salt then its nonce prefix from
// crypto/rand (32 then 7 bytes, Tink's order, so that a test that fixes
// crypto/rand's output gets Tink's bytes), and keys the stream with it.
func newHeader(mainKey, ad []byte) (hdr [HeaderLen]byte, a cipher.AEAD, prefix [NoncePrefixSize]byte, err error) {
	hdr[0] = HeaderLen
	if _, err = rand.Read(hdr[1 : 1+SaltSize]); err != nil {
		return
	}
	if _, err = rand.Read(hdr[1+SaltSize:]); err != nil {
		return
	}
	a, prefix, err = openHeader(&hdr, mainKey, ad)
	return
}

// openHeader checks a stream header's length byte (ErrHeader) and keys the
// stream with its salt; prefix is its nonce prefix.
func openHeader(hdr *[HeaderLen]byte, mainKey, ad []byte) (a cipher.AEAD, prefix [NoncePrefixSize]byte, err error) {
	if hdr[0] != HeaderLen {
		return nil, prefix, ErrHeader
	}
	a, err = newAEAD(mainKey, hdr[1:1+SaltSize], ad)
	copy(prefix[:], hdr[1+SaltSize:])
	return a, prefix, err
}

// firstPlain and plain are the plaintext capacities of the first and of
// every other segment.
func firstPlain(segSize int) int { return segSize - HeaderLen - TagSize }
func plain(segSize int) int      { return segSize - TagSize }

// job is one segment: buf holds its input and, after run, its output.
type job struct {
	buf  []byte // cap segSize+1
	n    int    // input bytes in buf; after run, output bytes
	idx  uint64
	last bool
	// ready: buf already holds the output (a synchronous Writer sealed it
	// straight from the caller's slice).
	ready bool
	err   error
	done  chan struct{} // closed after run; nil when run synchronously
}

func (j *job) nonce(prefix *[NoncePrefixSize]byte) []byte {
	var n [NonceSize]byte
	copy(n[:], prefix[:])
	binary.BigEndian.PutUint32(n[NoncePrefixSize:], uint32(j.idx))
	if j.last {
		n[NonceSize-1] = 1
	}
	return n[:]
}

// workers runs jobs either in the caller's goroutine or on at most n
// goroutines at once; a job's goroutine ends when the job does, so an
// abandoned stream leaves nothing running.
type workers struct {
	sem chan struct{} // nil: synchronous
}

func (w workers) sync() bool { return w.sem == nil }

func newWorkers(n int) workers {
	if n <= 1 {
		return workers{}
	}
	return workers{sem: make(chan struct{}, n)}
}

func (w workers) start(j *job, run func(*job)) {
	if w.sem == nil {
		run(j)
		return
	}
	j.done = make(chan struct{})
	go func() {
		w.sem <- struct{}{}
		run(j)
		<-w.sem
		close(j.done)
	}()
}

func (j *job) wait() {
	if j.done != nil {
		<-j.done
	}
}

// finished reports, without waiting, whether the job is done.
func (j *job) finished() bool {
	if j.done == nil {
		return true
	}
	select {
	case <-j.done:
		return true
	default:
		return false
	}
}

// Segment buffers are recycled across streams of the same segment size.
var pools sync.Map // segment size -> *sync.Pool of *[]byte

func pool(segSize int) *sync.Pool {
	if p, ok := pools.Load(segSize); ok {
		return p.(*sync.Pool)
	}
	p, _ := pools.LoadOrStore(segSize, &sync.Pool{})
	return p.(*sync.Pool)
}

func getBuf(segSize int) []byte {
	if b, ok := pool(segSize).Get().(*[]byte); ok {
		return (*b)[:cap(*b)]
	}
	return make([]byte, segSize+1)
}

func putBuf(segSize int, b []byte) {
	if cap(b) == segSize+1 {
		pool(segSize).Put(&b)
	}
}
