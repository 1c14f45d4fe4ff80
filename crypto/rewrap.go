package crypto

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ehrport/ehrport/crypto/internal/format"
	"github.com/ehrport/ehrport/crypto/internal/stream"
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
//
// Escrow stanzas cannot be carried over (a new DEK must be wrapped for the
// escrow's key, which only recipients can do): when recipients have no
// escrow stanza for the same key as one of the old object's, Rekey refuses
// with an *EscrowDroppedError (ErrPolicy) before writing anything, unless
// AllowEscrowDrop is given.
func Rekey(dst io.Writer, src io.Reader, ids []Identity, want Binding, recipients []Recipient, opts ...Option) error {
	r, err := NewDecryptReader(src, ids, want, opts...)
	if err != nil {
		return err
	}
	s, err := NewSealer(recipients, want, opts...)
	if err != nil {
		return err
	}
	if dropped := DroppedEscrow(r.Header(), s.Header()); len(dropped) > 0 && !buildOptions(opts).dropEscrow {
		return &EscrowDroppedError{Stanzas: dropped}
	}
	return sealFrom(s, dst, r)
}

// sealFrom encrypts all of src with s into dst.
func sealFrom(s *Sealer, dst io.Writer, src io.Reader) error {
	w, err := s.Writer(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, src); err != nil {
		return err
	}
	return w.Close()
}

// DroppedEscrow returns the escrow stanzas of old for which next has no
// escrow stanza of the same key.
func DroppedEscrow(old, next *Header) []Stanza {
	var dropped []Stanza
	for i := range old.Stanzas {
		s := &old.Stanzas[i]
		if s.Role != RoleEscrow {
			continue
		}
		kept := false
		for j := range next.Stanzas {
			kept = kept || (next.Stanzas[j].Role == RoleEscrow && format.SameKey(s, &next.Stanzas[j]))
		}
		if !kept {
			dropped = append(dropped, *s)
		}
	}
	return dropped
}

// EscrowDroppedError is Rekey's refusal to leave out escrow recipients. It
// wraps ErrPolicy.
type EscrowDroppedError struct {
	Stanzas []Stanza // the old object's escrow stanzas with no successor
}

func (e *EscrowDroppedError) Error() string {
	names := make([]string, len(e.Stanzas))
	for i := range e.Stanzas {
		names[i] = StanzaName(&e.Stanzas[i])
	}
	return fmt.Sprintf("%v: rekey would drop the escrow recipient(s) %s: give each again as an escrow recipient, or allow dropping escrow explicitly",
		ErrPolicy, strings.Join(names, ", "))
}

// Is reports ErrPolicy.
func (e *EscrowDroppedError) Is(target error) bool { return target == ErrPolicy }

// StanzaName names the key a stanza is for, as messages and inspect show
// it: "kms URI" or "TYPE key ID".
func StanzaName(s *Stanza) string {
	if s.Type == StanzaKMS {
		return "kms " + s.Locator
	}
	return fmt.Sprintf("%s key %d", StanzaTypeName(s.Type), s.KeyID)
}

// WriteFileAtomic runs fill on a new temporary file beside path (mode 0600)
// and renames it to path only if fill and the sync succeed. On failure no
// file remains at path or beside it.
func WriteFileAtomic(path string, fill func(w io.Writer) error) error {
	return writeFileAtomic(path, func(f *os.File) error { return fill(f) })
}

func writeFileAtomic(path string, fill func(f *os.File) error) (err error) {
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

// regularFile returns src as a file to read at offsets, with the offset it
// stands at and the bytes left from there, when it is a regular file.
func regularFile(src io.Reader) (f *os.File, off, size int64, ok bool) {
	f, ok = src.(*os.File)
	if !ok {
		return nil, 0, 0, false
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil, 0, 0, false
	}
	off, err = f.Seek(0, io.SeekCurrent)
	if err != nil || off > st.Size() {
		return nil, 0, 0, false
	}
	return f, off, st.Size() - off, true
}

// sourceErr names a source file that changed under a positional read.
func sourceErr(f *os.File, err error) error {
	if errors.Is(err, stream.ErrSourceChanged) {
		return fmt.Errorf("%s changed size while being read: retry once nothing writes to it", f.Name())
	}
	return err
}

// EncryptFile encrypts src into the file out (atomically). When src is a
// regular file, workers each read, seal and write whole segments at their
// offsets (stream.SealAt), from src's current offset to its end; otherwise
// segments are read straight into their buffers and sealed in parallel.
// Both write the same bytes.
func EncryptFile(out string, src io.Reader, recipients []Recipient, b Binding, opts ...Option) (*Header, error) {
	s, err := NewSealer(recipients, b, opts...)
	if err != nil {
		return nil, err
	}
	err = writeFileAtomic(out, func(f *os.File) error {
		if in, off, size, ok := regularFile(src); ok {
			return sourceErr(in, s.sealAt(f, in, off, size))
		}
		return sealFrom(s, f, src)
	})
	return s.Header(), err
}

// sealAt writes the object for the size bytes at off in src to dst, from
// dst's offset 0.
func (s *Sealer) sealAt(dst io.WriterAt, src io.ReaderAt, off, size int64) error {
	if err := s.claim(); err != nil {
		return err
	}
	if _, err := dst.WriteAt(s.header.raw, 0); err != nil {
		return err
	}
	err := stream.SealAt(dst, int64(len(s.header.raw)), src, off, size,
		derive(s.dek, format.LabelPayloadKey), payloadAD(s.header.Version, s.header.Suite, s.header.Binding), streamParams(s.opts))
	return writeErr(err)
}

// DecryptFile decrypts the object in src into the file out. The plaintext
// goes to a temporary file that is renamed to out only after the last
// segment authenticated; on any failure no file remains. When src is a
// regular file, its segments are read, opened and written at their offsets
// by parallel workers (stream.OpenAt), with the same verdicts.
func DecryptFile(out string, src io.Reader, ids []Identity, want Binding, opts ...Option) (*Header, error) {
	in, off, size, positional := regularFile(src)
	if !positional {
		r, err := NewDecryptReader(src, ids, want, opts...)
		if err != nil {
			return nil, err
		}
		err = WriteFileAtomic(out, func(f io.Writer) error {
			_, err := r.WriteTo(f)
			return err
		})
		return r.Header(), err
	}
	h, dek, err := Open(in, ids, want, opts...)
	if err != nil {
		return nil, err
	}
	payload := off + int64(h.Len())
	err = writeFileAtomic(out, func(f *os.File) error {
		_, err := stream.OpenAt(f, in, payload, size-int64(h.Len()),
			derive(dek, format.LabelPayloadKey), payloadAD(h.Version, h.Suite, h.Binding), streamParams(buildOptions(opts)))
		return sourceErr(in, readErr(err))
	})
	return h, err
}

// RekeyFile is Rekey into the file out (atomically).
func RekeyFile(out string, src io.Reader, ids []Identity, want Binding, recipients []Recipient, opts ...Option) error {
	return WriteFileAtomic(out, func(f io.Writer) error {
		return Rekey(f, src, ids, want, recipients, opts...)
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
		_, err := io.Copy(w, f)
		return err
	})
}
