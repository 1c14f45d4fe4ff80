package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
)

// Copy moves one object from src to dst without touching the local disk and
// without looking inside it: the bytes are ciphertext, streamed as they are.
// docs/copy.md describes the algorithm; the rules it keeps are these.
//
//   - The manifest is the authority. opts.Size and opts.SHA256 say what the
//     object must be. An object up to opts.BufferMax is read whole and
//     checked before dst.Put is called at all. A larger one streams with its
//     last byte held back until the whole object has been read, its length
//     checked and its SHA-256 compared: by the client, or, when the
//     destination was seen to verify checksums and gets the object in one
//     request, by the destination, before it stores anything
//     (serverChecksContent). Either way a source that serves other bytes
//     (or more, or fewer) makes the copy fail before the destination can
//     commit it, so nothing becomes visible. The error is ErrIntegrity and
//     names the source key.
//   - The destination is sent the expected SHA-256 (x-amz-checksum-sha256).
//     A server that verifies checksums rejects bytes that differ from it.
//   - Every copy is then proven at the destination (see Prove): by the
//     server's verification when opts.TrustServerChecksum says the store
//     was seen to reject wrong checksums, otherwise by reading it back. A
//     copy that fails its proof is deleted and reported as ErrIntegrity
//     naming the destination key. ETags are never used as proof.
//   - Failures that wrap ErrUnavailable are retried under opts.Retry,
//     restarting the object (or only its proof, when the Put succeeded).
//
// Objects up to opts.PartSize are read with one Get (or, with
// opts.Parallel > 1, larger ones in ranges of PartSize, Parallel at a time,
// reassembled in order into the single stream that dst.Put consumes).
// Memory per Copy is bounded by one buffer of up to BufferMax, or
// Parallel×PartSize for the range buffers, plus what dst.Put buffers itself
// (for S3Store, above SinglePutMax, its parts in flight × its part size).
func Copy(ctx context.Context, src, dst Store, key string, opts CopyOptions) (res CopyResult, err error) {
	start := time.Now()
	o := opts.withDefaults(key)
	res = CopyResult{Key: key, DstKey: o.DstKey}
	defer func() { res.Duration = time.Since(start) }()
	if err := o.validate(); err != nil {
		return res, &Error{Op: "copy", Location: src.Location(), Key: key, Err: err}
	}

	if o.SkipExisting {
		var proof string
		retries, err := o.Retry.Do(ctx, func(int) error {
			var err error
			proof, err = existingProof(ctx, dst, o)
			return err
		})
		res.Retries += retries
		if err != nil {
			return res, err
		}
		if proof != "" {
			res.Skipped, res.Proof = true, proof
			return res, nil
		}
	}

	committed := false
	retries, err := o.Retry.Do(ctx, func(int) error {
		if !committed {
			if err := copyOnce(ctx, src, dst, key, o); err != nil {
				return err
			}
			committed = true
			// A store seen to reject wrong checksums (on whole PUTs and on
			// parts) has just accepted the bytes with the expected SHA-256:
			// that acceptance is the proof, and a HEAD would add a third
			// request per object without adding certainty.
			if o.TrustServerChecksum {
				res.Proof = ProofServerChecksum
				return nil
			}
		}
		proof, err := prove(ctx, dst, o.DstKey, o, false)
		res.Proof = proof
		return err
	})
	res.Retries += retries
	if err != nil {
		res.Proof = ""
		if committed && errors.Is(err, ErrIntegrity) {
			err = discard(ctx, dst, o.DstKey, err)
		}
		return res, err
	}
	res.Bytes = o.Size
	return res, nil
}

// CopyOptions describe one object to copy. Size and SHA256 come from the
// export's manifest and are required.
type CopyOptions struct {
	// Size is the object's size in bytes.
	Size int64
	// SHA256 is the expected SHA-256 of the content (32 bytes).
	SHA256 []byte
	// DstKey is the key at the destination; "" means the same key.
	DstKey string
	// Parallel is how many range reads of a large object are in flight
	// (default DefaultCopyParallel). 1 reads every object with one Get.
	Parallel int
	// PartSize is the range size for large objects, and the size up to
	// which an object is read with one Get (default DefaultPartSize).
	PartSize int64
	// Limiter, when set, bounds the bytes per second read by this copy,
	// from the source and for read-back proofs, shared with whatever else
	// uses the same limiter.
	Limiter *RateLimiter
	// TrustServerChecksum: dst was seen by Check to reject a wrong
	// x-amz-checksum-sha256 (Capabilities.VerifiesChecksums). Then a Stat
	// proves a copy; otherwise it is read back. Set it from a probe, never
	// from a default: a server that only echoes checksums would be trusted.
	TrustServerChecksum bool
	// SkipExisting: when dst already holds a proven copy (same proof rules
	// as after a Put), do nothing and report Skipped. The source is not read.
	SkipExisting bool
	// Retry is the policy for failures that wrap ErrUnavailable; the zero
	// value means DefaultRetryPolicy.
	Retry RetryPolicy
	// BufferMax: objects up to this size are read whole into memory and
	// checked against Size and SHA256 before dst.Put is called, which then
	// sends them from memory; larger ones stream through with the last
	// byte held back. 0 means DefaultBufferMax; negative means stream
	// every object. Memory: one buffer of up to BufferMax per copy in
	// flight.
	BufferMax int64
	// SinglePutMax: objects up to this size go to dst in one request
	// (PutOptions.OneRequest), so the destination verifies the whole
	// object's SHA-256 (and, when trusted, is the only one to hash it:
	// serverChecksContent); larger ones
	// go in dst's parts, each hashed for its own checksum. 0 means
	// DefaultSinglePutMax; negative means parts for everything larger than
	// dst's part size.
	SinglePutMax int64
}

// DefaultSinglePutMax is the largest object copied with one PUT by
// default: S3's limit. On the 2-core test bed one PUT costs the client no
// part buffers and, to a trusted destination, no SHA-256 pass; see
// docs/copy.md for the measurements and for when parts are better.
const DefaultSinglePutMax = MaxSinglePut

// DefaultBufferMax is the largest object copied through memory by
// default. On small objects a streamed copy costs more requests' worth of
// writes and TLS records (the held-back last byte goes in a record of its
// own); see docs/copy.md. 256 KiB keeps the memory per copy in flight
// small.
const DefaultBufferMax = 256 << 10

// DefaultCopyParallel is the range reads in flight per large object: 1, one
// streamed Get with no range buffers. With the copy going out in one PUT,
// ranges only add a memory copy per byte; on the 2-core test bed 1 range
// used the least CPU and was as fast as 2 or 4 (docs/copy.md).
const DefaultCopyParallel = 1

func (o CopyOptions) withDefaults(key string) CopyOptions {
	if o.DstKey == "" {
		o.DstKey = key
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultCopyParallel
	}
	if o.PartSize <= 0 {
		o.PartSize = DefaultPartSize
	}
	if o.SinglePutMax == 0 {
		o.SinglePutMax = DefaultSinglePutMax
	}
	if o.BufferMax == 0 {
		o.BufferMax = DefaultBufferMax
	}
	return o
}

func (o CopyOptions) validate() error {
	switch {
	case o.Size < 0:
		return fmt.Errorf("size %d: the manifest must give the object's size", o.Size)
	case len(o.SHA256) != sha256.Size:
		return fmt.Errorf("expected SHA-256 is %d bytes, want %d: the manifest must give it", len(o.SHA256), sha256.Size)
	}
	return nil
}

// Proof methods, as reported in CopyResult.Proof.
const (
	// ProofServerChecksum: the destination verified the SHA-256 we sent
	// before storing the object, and Stat shows the right size.
	ProofServerChecksum = "server-checksum"
	// ProofReadBack: the object was read back from the destination and its
	// SHA-256 and size matched.
	ProofReadBack = "read-back"
)

// CopyResult says what Copy did with one object.
type CopyResult struct {
	Key    string // at the source
	DstKey string // at the destination
	// Bytes is the object's size when it was copied, 0 when skipped.
	Bytes int64
	// Proof is ProofServerChecksum or ProofReadBack: how the copy (or, when
	// Skipped, the object already there) was proven. "" on failure.
	Proof string
	// Skipped: dst already held a proven copy; nothing was read or written.
	Skipped bool
	// Retries counts tries after the first, for the skip check, the copy
	// and its proof together.
	Retries  int
	Duration time.Duration
}

// Prove establishes that st holds exactly size bytes with the given SHA-256
// under key, and returns how: ProofServerChecksum or ProofReadBack.
//
// With trustServer, which callers set only when Check saw st reject a wrong
// x-amz-checksum-sha256, a Stat suffices: such a server stored the object
// only after verifying the checksum it was sent, and Put sends the expected
// one. The size must still match, and where the server reports a
// full-object SHA-256 of its own (S3 HEAD with checksum mode) it must match
// too. Without trustServer, the object is read back and hashed.
//
// A mismatch is an error wrapping ErrIntegrity that names the key; other
// failures are the store's own errors (ErrNotExist, ErrUnavailable, ...).
func Prove(ctx context.Context, st Store, key string, size int64, sha []byte, trustServer bool) (string, error) {
	o := CopyOptions{Size: size, SHA256: sha, TrustServerChecksum: trustServer}.withDefaults(key)
	return prove(ctx, st, key, o, false)
}

// prove is Prove with the copy's limiter, range size and parallelism (large
// objects are read back in parallel ranges, as they were copied); statFirst
// checks the size before a read-back, so a skip check does not download an
// object of the wrong size.
func prove(ctx context.Context, st Store, key string, o CopyOptions, statFirst bool) (string, error) {
	size, sha, lim := o.Size, o.SHA256, o.Limiter
	rr, ranged := st.(RangeReader)
	ranged = ranged && o.Parallel > 1 && size > o.PartSize
	// Ranges never look past size: learn the stored size first.
	statFirst = statFirst || ranged
	trustServer := o.TrustServerChecksum
	bad := func(format string, args ...any) error {
		return &Error{Op: "prove", Location: st.Location(), Key: key, Err: withKind(ErrIntegrity, fmt.Errorf(format, args...))}
	}
	if trustServer || statFirst {
		oi, serverSHA, err := statChecksum(ctx, st, key)
		if err != nil {
			return "", err
		}
		if oi.Size != size {
			return "", bad("the store holds %d bytes, expected %d", oi.Size, size)
		}
		// A multipart object's checksum is a checksum of part checksums
		// ("…-N"): not comparable with the whole-object SHA-256.
		if serverSHA != "" && !strings.Contains(serverSHA, "-") {
			if got, err := base64.StdEncoding.DecodeString(serverSHA); err == nil && !bytes.Equal(got, sha) {
				return "", bad("the store reports SHA-256 %x, expected %x", got, sha)
			}
		}
		if trustServer {
			return ProofServerChecksum, nil
		}
	}
	var body io.Reader
	if ranged {
		pr := newParallelReader(ctx, rr, st.Location(), key, o)
		defer pr.Close()
		body = pr
	} else {
		rc, err := st.Get(ctx, key)
		if err != nil {
			return "", err
		}
		defer rc.Close()
		body = lim.Reader(ctx, io.LimitReader(rc, size+1))
	}
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		return "", err
	}
	if n != size {
		if n > size {
			return "", bad("read back more than the expected %d bytes", size)
		}
		return "", bad("read back %d bytes, expected %d", n, size)
	}
	if got := h.Sum(nil); !bytes.Equal(got, sha) {
		return "", bad("read back %d bytes with SHA-256 %x, expected %x", n, got, sha)
	}
	return ProofReadBack, nil
}

// statChecksum is Stat that, for S3, also asks for the checksum the server
// stored (x-amz-checksum-mode: ENABLED) in the same HEAD request.
func statChecksum(ctx context.Context, st Store, key string) (ObjectInfo, string, error) {
	s, ok := st.(*S3Store)
	if !ok {
		oi, err := st.Stat(ctx, key)
		return oi, "", err
	}
	full, err := s.key(key)
	if err != nil {
		return ObjectInfo{}, "", s.fail("stat", key, err)
	}
	oi, err := s.client.StatObject(ctx, s.bucket, full, minio.StatObjectOptions{Checksum: true})
	if err != nil {
		return ObjectInfo{}, "", s.fail("stat", key, err)
	}
	return ObjectInfo{Key: key, Size: oi.Size, ModTime: oi.LastModified, ETag: oi.ETag}, oi.ChecksumSHA256, nil
}

// existingProof returns how the object already at dst is proven, or "" when
// it must be copied (missing, or not what the manifest says).
func existingProof(ctx context.Context, dst Store, o CopyOptions) (string, error) {
	proof, err := prove(ctx, dst, o.DstKey, o, true)
	switch {
	case err == nil:
		return proof, nil
	case errors.Is(err, ErrNotExist), errors.Is(err, ErrIntegrity):
		return "", nil
	}
	return "", err
}

// discard deletes a copy that failed its proof, and says so in err.
func discard(ctx context.Context, dst Store, key string, err error) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	note := "the bad copy was deleted"
	if derr := dst.Delete(dctx, key); derr != nil {
		note = fmt.Sprintf("the bad copy could NOT be deleted (%v): delete it by hand", derr)
	}
	var se *Error
	if errors.As(err, &se) {
		se.Err = fmt.Errorf("%w; %s", se.Err, note)
		return err
	}
	return fmt.Errorf("%w; %s", err, note)
}

// copyOnce streams the source into dst.Put once.
func copyOnce(ctx context.Context, src, dst Store, key string, o CopyOptions) error {
	srcErr := func(err error) error {
		return &Error{Op: "copy", Location: src.Location(), Key: key, Err: err}
	}
	var body io.Reader
	rr, ranged := src.(RangeReader)
	ranged = ranged && o.Parallel > 1 && o.Size > o.PartSize
	if !ranged && o.Size <= o.BufferMax {
		return copyBuffered(ctx, src, dst, key, o, srcErr)
	}
	if ranged {
		// Ranges never look past the manifest's size: check the source's.
		oi, err := src.Stat(ctx, key)
		if err != nil {
			return err
		}
		if oi.Size != o.Size {
			return srcErr(withKind(ErrIntegrity, fmt.Errorf("the source object is %d bytes, the manifest says %d; nothing was written to %s", oi.Size, o.Size, dst.Location())))
		}
		pr := newParallelReader(ctx, rr, src.Location(), key, o)
		defer pr.Close()
		body = pr
	} else {
		rc, err := src.Get(ctx, key)
		if err != nil {
			return err
		}
		defer rc.Close()
		body = o.Limiter.Reader(ctx, rc)
	}
	serverChecks := o.serverChecksContent()
	v := &verifyingReader{r: body, left: o.Size, want: o.SHA256}
	if !serverChecks {
		v.h = sha256.New()
	}
	if o.Size == 0 {
		// An empty Put may never read its body: verify first.
		if _, err := v.Read(make([]byte, 1)); err != io.EOF {
			if verr := v.verdict(); verr != nil {
				return srcErr(fmt.Errorf("%w; nothing was written to %s", verr, dst.Location()))
			}
			return err
		}
	}
	err := dst.Put(ctx, o.DstKey, v, o.Size, PutOptions{SHA256: o.SHA256, Verified: !serverChecks, OneRequest: o.Size <= o.SinglePutMax})
	if verr := v.verdict(); verr != nil {
		if err == nil {
			// A store that commits without reading the whole body breaks
			// the Store contract; do not leave its object behind.
			return discard(ctx, dst, o.DstKey, srcErr(verr))
		}
		// Held-back last byte: the Put saw a short body and committed nothing.
		return srcErr(fmt.Errorf("%w; nothing was written to %s", verr, dst.Location()))
	}
	if serverChecks && errors.Is(err, ErrIntegrity) {
		// The destination's check is the content check here: say which
		// object failed it and what that means.
		return srcErr(fmt.Errorf("the bytes read from the source do not match the manifest's SHA-256 (the source object differs from the export, or was damaged on the way), and %s refused them; nothing was written: %w", dst.Location(), err))
	}
	return err
}

// serverChecksContent says whether the destination, not the client,
// compares a streamed copy's content with the manifest's SHA-256: when the
// store was seen to verify checksums (TrustServerChecksum) and the object
// goes in one request, whose whole SHA-256 the server then checks before it
// stores anything. Hashing it here as well would check the same bytes
// against the same value a second time, at a fifth of the client's CPU on
// large objects (docs/copy.md). In parts the server checks only each part,
// so the client hashes the whole object; on other stores the client's hash
// is the check. The length and the end of the source are checked either way.
func (o CopyOptions) serverChecksContent() bool {
	// An empty object is checked before its Put (which may never read a
	// body), and hashing nothing costs nothing.
	return o.TrustServerChecksum && o.Size > 0 && o.Size <= min(o.SinglePutMax, MaxSinglePut)
}

// copyBuffered copies an object of at most o.BufferMax bytes by reading it
// whole first: its size and SHA-256 are checked against the manifest before
// dst.Put is called at all, so a wrong source never reaches the
// destination, and the Put gets a body it can send in as few TLS records
// and writes as possible (on small objects, per-request costs are what
// limits a copy).
func copyBuffered(ctx context.Context, src, dst Store, key string, o CopyOptions, srcErr func(error) error) error {
	rc, err := src.Get(ctx, key)
	if err != nil {
		return err
	}
	bp := smallBuffers.Get().(*[]byte)
	defer smallBuffers.Put(bp)
	if int64(cap(*bp)) < o.Size+1 {
		*bp = make([]byte, o.Size+1)
	}
	// One byte more than the manifest says, to see that the source ends.
	buf := (*bp)[:o.Size+1]
	n, err := io.ReadFull(o.Limiter.Reader(ctx, rc), buf)
	rc.Close()
	bad := func(format string, args ...any) error {
		return srcErr(fmt.Errorf("%w; nothing was written to %s", withKind(ErrIntegrity, fmt.Errorf(format, args...)), dst.Location()))
	}
	switch {
	case err == nil:
		return bad("the source has more than the %d bytes the manifest says", o.Size)
	case err != io.EOF && err != io.ErrUnexpectedEOF:
		return err
	case int64(n) != o.Size:
		return bad("the source ended after %d bytes; the manifest says %d", n, o.Size)
	}
	buf = buf[:n]
	if got := sha256.Sum256(buf); !bytes.Equal(got[:], o.SHA256) {
		return bad("the source's %d bytes have SHA-256 %x; the manifest says %x", n, got, o.SHA256)
	}
	return dst.Put(ctx, o.DstKey, bytes.NewReader(buf), o.Size, PutOptions{SHA256: o.SHA256, Verified: true, OneRequest: true})
}

// smallBuffers recycles copyBuffered's buffers, grown as needed up to
// BufferMax+1 bytes each: one per copy in flight.
var smallBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// verifyingReader passes through exactly left bytes of r, hashing them, and
// holds back the last one until r has ended and the SHA-256 matched. A
// mismatch (content, or r ending early or late) fails the read that would
// have delivered the last byte, so a store that commits only complete
// bodies commits nothing.
type verifyingReader struct {
	r    io.Reader
	left int64
	want []byte
	// h hashes the bytes for comparison with want. nil: the destination
	// checks the content (serverChecksContent); the length and the end of
	// r are still checked here.
	h    hash.Hash
	read int64
	done bool  // the last byte was released
	fail error // sticky error returned by Read

	// The verdict may be read by another goroutine than the one reading
	// the body (net/http writes request bodies from its own goroutine).
	mu  sync.Mutex
	bad error
}

func (v *verifyingReader) verdict() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.bad
}

func (v *verifyingReader) mismatch(format string, args ...any) error {
	err := withKind(ErrIntegrity, fmt.Errorf(format, args...))
	v.mu.Lock()
	v.bad = err
	v.mu.Unlock()
	v.fail = err
	return err
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	switch {
	case v.done:
		return 0, io.EOF
	case v.fail != nil:
		return 0, v.fail
	case len(p) == 0:
		return 0, nil
	}
	if v.left > 1 {
		n, err := v.r.Read(p[:min(int64(len(p)), v.left-1)])
		if v.h != nil {
			v.h.Write(p[:n])
		}
		v.left -= int64(n)
		v.read += int64(n)
		if err == io.EOF {
			return n, v.mismatch("the source ended after %d bytes; the manifest says %d", v.read, v.read+v.left)
		}
		if err != nil {
			v.fail = err
		}
		return n, err
	}
	var last [1]byte
	if v.left == 1 {
		n, err := io.ReadFull(v.r, last[:])
		if n == 0 {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return 0, v.mismatch("the source ended after %d bytes; the manifest says %d", v.read, v.read+1)
			}
			v.fail = err
			return 0, err
		}
		if v.h != nil {
			v.h.Write(last[:])
		}
		v.left, v.read = 0, v.read+1
	}
	// The source must end here.
	var extra [1]byte
	for tries := 0; ; tries++ {
		n, err := v.r.Read(extra[:])
		if n > 0 {
			return 0, v.mismatch("the source has more than the %d bytes the manifest says", v.read)
		}
		if err == io.EOF || (err == nil && tries >= 3) {
			break
		}
		if err != nil {
			v.fail = err
			return 0, err
		}
	}
	if v.h != nil {
		if got := v.h.Sum(nil); !bytes.Equal(got, v.want) {
			return 0, v.mismatch("the source's %d bytes have SHA-256 %x; the manifest says %x", v.read, got, v.want)
		}
	}
	if v.read == 0 {
		v.done = true
		return 0, io.EOF
	}
	p[0] = last[0]
	v.done = true
	return 1, nil
}

// parallelReader reads an object in ranges of partSize, up to parallel at a
// time, and yields them in order. At most parallel buffers exist: a range
// takes a slot before it is fetched and gives it back once it has been read
// through.
type parallelReader struct {
	ctx    context.Context
	cancel context.CancelFunc
	queue  chan chan rangeResult // in object order
	slots  chan struct{}
	bufs   chan []byte
	wg     sync.WaitGroup
	// partSize is the size of the buffers, which go back to the shared
	// pool on Close.
	partSize int64

	cur  []byte
	held []byte // the buffer cur points into, released when exhausted
	err  error
}

type rangeResult struct {
	buf []byte
	err error
}

func newParallelReader(ctx context.Context, rr RangeReader, loc, key string, o CopyOptions) *parallelReader {
	ctx, cancel := context.WithCancel(ctx)
	p := &parallelReader{
		ctx: ctx, cancel: cancel,
		queue:    make(chan chan rangeResult, o.Parallel),
		slots:    make(chan struct{}, o.Parallel),
		bufs:     make(chan []byte, o.Parallel),
		partSize: o.PartSize,
	}
	p.wg.Add(1)
	go p.launch(rr, loc, key, o)
	return p
}

func (p *parallelReader) launch(rr RangeReader, loc, key string, o CopyOptions) {
	defer p.wg.Done()
	defer close(p.queue)
	for off := int64(0); off < o.Size; off += o.PartSize {
		select {
		case p.slots <- struct{}{}:
		case <-p.ctx.Done():
			return
		}
		n := min(o.PartSize, o.Size-off)
		ch := make(chan rangeResult, 1)
		p.queue <- ch // never blocks: the queue holds as many as there are slots
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			var buf []byte
			select {
			case buf = <-p.bufs:
			default:
				buf = getPartBuf(o.PartSize)
			}
			buf = buf[:n]
			ch <- rangeResult{buf, fetchRange(p.ctx, rr, loc, key, off, buf, o.Limiter)}
		}()
	}
}

func fetchRange(ctx context.Context, rr RangeReader, loc, key string, off int64, buf []byte, lim *RateLimiter) error {
	rc, err := rr.GetRange(ctx, key, off, int64(len(buf)))
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.ReadFull(lim.Reader(ctx, rc), buf); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return &Error{Op: "get", Location: loc, Key: key, Err: withKind(ErrIntegrity, fmt.Errorf("the object ended inside bytes %d-%d", off, off+int64(len(buf))-1))}
		}
		return err
	}
	return nil
}

func (p *parallelReader) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.err != nil {
			return 0, p.err
		}
		if p.held != nil {
			select {
			case p.bufs <- p.held[:cap(p.held)]:
			default:
			}
			p.held = nil
			<-p.slots
		}
		var ch chan rangeResult
		var ok bool
		select {
		case ch, ok = <-p.queue:
		case <-p.ctx.Done():
		}
		if ch == nil {
			if err := p.ctx.Err(); err != nil {
				p.err = err
			} else if !ok {
				p.err = io.EOF
			}
			continue
		}
		select {
		case r := <-ch:
			if r.err != nil {
				p.err = r.err
				p.cancel()
				continue
			}
			p.cur, p.held = r.buf, r.buf
		case <-p.ctx.Done():
			p.err = p.ctx.Err()
		}
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// Close stops the range reads in flight and waits for them.
func (p *parallelReader) Close() error {
	p.cancel()
	p.wg.Wait()
	// Hand idle buffers back for the next object.
	for {
		select {
		case b := <-p.bufs:
			if int64(cap(b)) == p.partSize {
				putPartBuf(b)
			}
		default:
			return nil
		}
	}
}
