package crypto

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// RewrapChange says how a rewrap edits the stanza list.
type RewrapChange struct {
	// Keep reports whether an old stanza stays (verbatim). Nil keeps all.
	Keep func(s *Stanza) bool
	// Add are new recipients; each gets a stanza for the same DEK.
	Add []Recipient
}

// Rewrap reads the header of the object in src, authenticates it with ids,
// and returns a new header for the same DEK, binding and commitment with the
// stanza list edited by change. payloadOffset is where the untouched payload
// starts in the old object: the new object is newHeader followed by the old
// object's bytes from payloadOffset on. The payload is not read.
func Rewrap(src io.Reader, ids []Identity, change RewrapChange, opts ...Option) (newHeader []byte, payloadOffset int64, err error) {
	o := buildOptions(opts)
	h, err := ParseHeader(src, opts...)
	if err != nil {
		return nil, 0, err
	}
	dek, err := open(h, ids, o.policy)
	if err != nil {
		return nil, 0, err
	}
	nh := &Header{Version: h.Version, Suite: h.Suite, Binding: h.Binding}
	for i := range h.Stanzas {
		if change.Keep == nil || change.Keep(&h.Stanzas[i]) {
			nh.Stanzas = append(nh.Stanzas, h.Stanzas[i])
		}
	}
	for _, r := range change.Add {
		s, err := r.Wrap(dek, wrapAD(h.Version, h.Suite, r.StanzaType(), h.Binding))
		if err != nil {
			return nil, 0, err
		}
		nh.Stanzas = append(nh.Stanzas, *s)
	}
	if len(nh.Stanzas) == 0 {
		return nil, 0, fmt.Errorf("%w: rewrap would leave no recipient", ErrPolicy)
	}
	nh, err = finish(nh, dek, o.policy)
	if err != nil {
		return nil, 0, err
	}
	return nh.raw, int64(h.Len()), nil
}

// Rekey decrypts the object in src (bound to want) with ids and writes it to
// dst under a fresh DEK for recipients, with the same binding. dst receives
// unauthenticated plaintext-derived ciphertext before the end of src is
// authenticated, so write it to a temporary place (RekeyFile does).
func Rekey(dst io.Writer, src io.Reader, ids []Identity, want Binding, recipients []Recipient, opts ...Option) error {
	r, err := NewDecryptReader(src, ids, want, opts...)
	if err != nil {
		return err
	}
	w, err := NewEncryptWriter(dst, recipients, want, opts...)
	if err != nil {
		return err
	}
	if _, err := copyBuf(w, r); err != nil {
		return err
	}
	return w.Close()
}

func copyBuf(w io.Writer, r io.Reader) (int64, error) {
	buf := make([]byte, SegmentSize)
	return io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{r}, buf)
}

// WriteFileAtomic runs fill on a new temporary file beside path (mode 0600)
// and renames it to path only if fill and the sync succeed. On failure no
// file remains at path or beside it.
func WriteFileAtomic(path string, fill func(w io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = fill(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// EncryptFile encrypts src into the file out (atomically). Reading,
// encrypting and writing run concurrently, with bounded buffers.
func EncryptFile(out string, src io.Reader, recipients []Recipient, b Binding, opts ...Option) (*Header, error) {
	s, err := NewSealer(recipients, b, opts...)
	if err != nil {
		return nil, err
	}
	err = WriteFileAtomic(out, func(f io.Writer) error {
		return pipeline(f, src, func(dst io.Writer, r io.Reader) error {
			w, err := s.Writer(dst)
			if err != nil {
				return err
			}
			if _, err := copyBuf(w, r); err != nil {
				return err
			}
			return w.Close()
		})
	})
	return s.Header(), err
}

// DecryptFile decrypts the object in src into the file out. The plaintext
// goes to a temporary file that is renamed to out only after the last
// segment authenticated; on any failure no file remains.
func DecryptFile(out string, src io.Reader, ids []Identity, want Binding, opts ...Option) (*Header, error) {
	ra := newReadAhead(src)
	defer ra.Close()
	r, err := NewDecryptReader(ra, ids, want, opts...)
	if err != nil {
		return nil, err
	}
	err = WriteFileAtomic(out, func(f io.Writer) error {
		wb := newWriteBehind(f)
		_, err := copyBuf(wb, r)
		if cerr := wb.Close(); err == nil {
			err = cerr
		}
		return err
	})
	return r.Header(), err
}

// RekeyFile is Rekey into the file out (atomically).
func RekeyFile(out string, src io.Reader, ids []Identity, want Binding, recipients []Recipient, opts ...Option) error {
	return WriteFileAtomic(out, func(f io.Writer) error {
		return pipeline(f, src, func(w io.Writer, r io.Reader) error {
			return Rekey(w, r, ids, want, recipients, opts...)
		})
	})
}

// RewrapFile rewraps the object file in into out: new header, then the old
// payload bytes copied unchanged.
func RewrapFile(out, in string, ids []Identity, change RewrapChange, opts ...Option) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	nh, off, err := Rewrap(f, ids, change, opts...)
	if err != nil {
		return err
	}
	return WriteFileAtomic(out, func(w io.Writer) error {
		if _, err := w.Write(nh); err != nil {
			return err
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return err
		}
		_, err := copyBuf(w, f)
		return err
	})
}
