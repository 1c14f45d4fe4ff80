package crypto

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"github.com/ehrport/ehrport/crypto/internal/format"
	"github.com/ehrport/ehrport/crypto/internal/stream"
)

// The payload is Tink's AES256_GCM_HKDF_1MB streaming AEAD (docs §5): main
// key payload_key, HKDF-SHA256, 32-byte derived key, 1 MiB segments. Package
// stream implements that format itself, sealing and opening segments in
// place and in parallel; TestPayloadIsTinkKeyset and the stream package's
// tests check it against tink-go both ways.
func streamParams(o *options) stream.Params {
	return stream.Params{SegmentSize: format.SegmentSize, Workers: o.workers}
}

// Sealer holds a finished header and its DEK, so that a caller can learn the
// object's size before writing it.
type Sealer struct {
	header *Header
	dek    []byte
	opts   *options
	used   bool
}

// NewSealer draws a fresh DEK and wraps it for every recipient. Wrap a
// recipient with Escrow to give its stanza the escrow role.
func NewSealer(recipients []Recipient, b Binding, opts ...Option) (*Sealer, error) {
	o := buildOptions(opts)
	if o.rand == nil {
		o.rand = rand.Reader
	}
	dek := make([]byte, DEKSize)
	if _, err := io.ReadFull(o.rand, dek); err != nil {
		return nil, fmt.Errorf("%w: reading randomness: %v", ErrPolicy, err)
	}
	h, err := seal(dek, recipients, b, o.policy)
	if err != nil {
		return nil, err
	}
	return &Sealer{header: h, dek: dek, opts: o}, nil
}

// Header returns the header the Sealer will write.
func (s *Sealer) Header() *Header { return s.header }

// HeaderLen is the header's length, the payload's offset.
func (s *Sealer) HeaderLen() int { return s.header.Len() }

// CiphertextSize is the object size for plaintextSize bytes.
func (s *Sealer) CiphertextSize(plaintextSize int64) int64 {
	return CiphertextSize(plaintextSize, s.header.Len())
}

// Writer writes the header to dst and returns a writer that encrypts the
// payload. Close must be called to write the last segment; it does not close
// dst. A Sealer writes one object only.
func (s *Sealer) Writer(dst io.Writer) (io.WriteCloser, error) {
	if err := s.claim(); err != nil {
		return nil, err
	}
	if _, err := dst.Write(s.header.raw); err != nil {
		return nil, err
	}
	w, err := stream.NewWriter(dst, derive(s.dek, format.LabelPayloadKey), payloadAD(s.header.Version, s.header.Suite, s.header.Binding), streamParams(s.opts))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPolicy, err)
	}
	return payloadWriter{w}, nil
}

// claim marks the Sealer used: its DEK encrypts one object only.
func (s *Sealer) claim() error {
	if s.used {
		return fmt.Errorf("%w: a Sealer encrypts one object only (a DEK is never reused)", ErrPolicy)
	}
	s.used = true
	return nil
}

// payloadWriter classifies the stream's own errors; those of dst pass as
// they are. It keeps ReadFrom visible, so io.Copy reads straight into the
// segment buffers.
type payloadWriter struct{ w *stream.Writer }

func (p payloadWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	return n, writeErr(err)
}

func (p payloadWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := p.w.ReadFrom(r)
	return n, writeErr(err)
}

func (p payloadWriter) Close() error { return writeErr(p.w.Close()) }

func writeErr(err error) error {
	if errors.Is(err, stream.ErrTooManySegments) {
		return fmt.Errorf("%w: the plaintext needs more than %d segments (about 4 PiB)", ErrPolicy, uint64(stream.MaxSegments))
	}
	return err
}

// NewEncryptWriter starts an object in dst for recipients under binding b:
// it writes the header and returns the payload writer. Close finishes the
// object and does not close dst.
func NewEncryptWriter(dst io.Writer, recipients []Recipient, b Binding, opts ...Option) (io.WriteCloser, error) {
	s, err := NewSealer(recipients, b, opts...)
	if err != nil {
		return nil, err
	}
	return s.Writer(dst)
}

// Reader decrypts one object. Plaintext from a segment is returned only
// after that segment authenticated, but truncation of the whole object is
// detected only at the end: treat what you read as unconfirmed until Read
// returned io.EOF (DecryptFile does this for files). It reads a few
// segments ahead of what it returns and opens them in parallel.
type Reader struct {
	header *Header
	r      *stream.Reader
}

var (
	_ io.Reader   = (*Reader)(nil)
	_ io.WriterTo = (*Reader)(nil)
)

// Open reads and authenticates the header of the object in src: the
// binding must equal want, one of ids must unwrap a stanza, and the
// commitment and MAC must verify. src is left at the first payload byte.
func Open(src io.Reader, ids []Identity, want Binding, opts ...Option) (*Header, []byte, error) {
	o := buildOptions(opts)
	h, err := ParseHeader(src, opts...)
	if err != nil {
		return nil, nil, err
	}
	if h.Binding != want {
		return nil, nil, fmt.Errorf("%w: object is bound to %q, expected %q (swapped or renamed)", ErrCorrupt, h.Binding.String(), want.String())
	}
	dek, err := open(h, ids, o.policy)
	if err != nil {
		return nil, nil, err
	}
	return h, dek, nil
}

// NewDecryptReader authenticates the header of the object in src (see Open)
// and returns a reader of its plaintext.
func NewDecryptReader(src io.Reader, ids []Identity, want Binding, opts ...Option) (*Reader, error) {
	h, dek, err := Open(src, ids, want, opts...)
	if err != nil {
		return nil, err
	}
	r, err := stream.NewReader(src, derive(dek, format.LabelPayloadKey), payloadAD(h.Version, h.Suite, h.Binding), streamParams(buildOptions(opts)))
	if err != nil {
		return nil, readErr(err)
	}
	return &Reader{header: h, r: r}, nil
}

// readErr classifies the stream's errors as ErrCorrupt; errors of the
// caller's reader or writer pass as they are.
func readErr(err error) error {
	var se *stream.SegmentError
	switch {
	case err == nil || err == io.EOF:
		return err
	case errors.Is(err, stream.ErrHeader):
		return fmt.Errorf("%w: payload stream header is truncated or invalid", ErrCorrupt)
	case errors.Is(err, stream.ErrTooManySegments):
		return fmt.Errorf("%w: payload has more segments than the format allows (%d)", ErrCorrupt, uint64(stream.MaxSegments))
	case errors.As(err, &se):
		return fmt.Errorf("%w: payload segment %d failed to authenticate (truncated, reordered, appended or altered)", ErrCorrupt, se.Segment)
	}
	return err
}

// Header returns the authenticated header.
func (r *Reader) Header() *Header { return r.header }

// Read returns authenticated plaintext, io.EOF after the last segment
// authenticated, or an error wrapping ErrCorrupt.
func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	return n, readErr(err)
}

// WriteTo writes the plaintext to w, each segment once it authenticated,
// straight from the segment buffers, and returns nil only when the last
// segment authenticated. io.Copy uses it.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	n, err := r.r.WriteTo(w)
	return n, readErr(err)
}
