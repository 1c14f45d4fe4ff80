package crypto

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ehrport/ehrport/crypto/internal/format"
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

// EncryptFile encrypts src into the file out (atomically). Segments are
// read straight into their buffers and sealed in parallel while the
// caller's goroutine reads and writes.
func EncryptFile(out string, src io.Reader, recipients []Recipient, b Binding, opts ...Option) (*Header, error) {
	s, err := NewSealer(recipients, b, opts...)
	if err != nil {
		return nil, err
	}
	err = WriteFileAtomic(out, func(f io.Writer) error { return sealFrom(s, f, src) })
	return s.Header(), err
}

// DecryptFile decrypts the object in src into the file out. The plaintext
// goes to a temporary file that is renamed to out only after the last
// segment authenticated; on any failure no file remains.
func DecryptFile(out string, src io.Reader, ids []Identity, want Binding, opts ...Option) (*Header, error) {
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
