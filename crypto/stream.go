package crypto

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"github.com/ehrport/ehrport/crypto/internal/format"
	"github.com/tink-crypto/tink-go/v2/streamingaead/subtle"
)

// newStream returns the Tink AES256_GCM_HKDF_1MB primitive under the
// payload key derived from dek. It is the primitive that a Tink keyset with
// one AesGcmHkdfStreamingKey (32-byte key, HKDF-SHA256, 32-byte derived
// key, 1 MiB segments) builds; the test TestPayloadIsTinkKeyset checks that.
func newStream(dek []byte) (*subtle.AESGCMHKDF, error) {
	return subtle.NewAESGCMHKDF(derive(dek, format.LabelPayloadKey), "SHA256", 32, format.SegmentSize, 0)
}

// Sealer holds a finished header and its DEK, so that a caller can learn the
// object's size before writing it.
type Sealer struct {
	header *Header
	dek    []byte
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
	return &Sealer{header: h, dek: dek}, nil
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
	if s.used {
		return nil, fmt.Errorf("%w: a Sealer encrypts one object only (a DEK is never reused)", ErrPolicy)
	}
	s.used = true
	if _, err := dst.Write(s.header.raw); err != nil {
		return nil, err
	}
	st, err := newStream(s.dek)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPolicy, err)
	}
	return st.NewEncryptingWriter(dst, payloadAD(s.header.Version, s.header.Suite, s.header.Binding))
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
// returned io.EOF (DecryptFile does this for files).
type Reader struct {
	header *Header
	src    *errReader
	r      io.Reader
	err    error
}

// errReader remembers errors of the caller's reader, so that they are told
// apart from authentication failures.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

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
	return newPayloadReader(src, h, dek)
}

func newPayloadReader(src io.Reader, h *Header, dek []byte) (*Reader, error) {
	st, err := newStream(dek)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	er := &errReader{r: src}
	r, err := st.NewDecryptingReader(er, payloadAD(h.Version, h.Suite, h.Binding))
	if err != nil {
		if er.err != nil {
			return nil, er.err
		}
		return nil, fmt.Errorf("%w: payload stream header is truncated or invalid", ErrCorrupt)
	}
	return &Reader{header: h, src: er, r: r}, nil
}

// Header returns the authenticated header.
func (r *Reader) Header() *Header { return r.header }

// Read returns authenticated plaintext, io.EOF after the last segment
// authenticated, or an error wrapping ErrCorrupt.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		if r.src.err != nil {
			r.err = r.src.err
		} else if errors.Is(err, io.ErrUnexpectedEOF) {
			r.err = fmt.Errorf("%w: payload is truncated", ErrCorrupt)
		} else {
			r.err = fmt.Errorf("%w: a payload segment failed to authenticate (truncated, reordered, appended or altered)", ErrCorrupt)
		}
		return n, r.err
	}
	return n, err
}
