// Package crypto implements ehrport's envelope encryption: the version-1
// object format of docs/format-v1.md.
//
// Every object gets a fresh random data-encryption key (DEK). The payload is
// a Tink streaming AEAD (AES256_GCM_HKDF_1MB) under a key derived from the
// DEK, with the object's binding (export id and logical path) as associated
// data. The header carries the DEK wrapped once per recipient (stanzas), a
// commitment to the DEK and a MAC over the whole header, so that stanzas
// cannot be stripped, added or swapped, and two recipients can never decrypt
// one object to two different plaintexts.
//
// Writers call NewEncryptWriter (or NewSealer when they must know the
// object's size before writing, as for a PUT). Readers call
// NewDecryptReader, or DecryptFile, which releases a file only after the
// last segment authenticated. Auditors call ParseHeader or Inspect, which
// need no key. Rewrap replaces the header without touching the payload;
// Rekey re-encrypts under a new DEK.
//
// Recipients (who can be encrypted to) and Identities (who can decrypt) are
// small interfaces. This package provides them for a Tink AEAD keyset (the
// hospital's key-encryption key), a KMS AEAD named by URI, and an HPKE
// X25519 public key, so a party holding only a public key can encrypt for
// the hospital.
//
// Every failure wraps exactly one of ErrCorrupt, ErrNoMatchingKey and
// ErrPolicy, except errors from the caller's own io.Reader or io.Writer,
// which are returned as they are.
//
// The package name collides with the standard library's; import it as
// ehrcrypto.
package crypto

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/ehrport/ehrport/crypto/internal/format"
)

// Format constants, mirrored from docs/format-v1.md.
const (
	// Magic opens every object, so an auditor can tell an envelope from
	// anything else without a key.
	Magic       = format.Magic
	Version1    = format.Version1
	Suite1      = format.Suite1
	MaxStanzas  = format.MaxStanzas
	SegmentSize = format.SegmentSize
	DEKSize     = 32
)

// Stanza types and roles (docs §3).
const (
	StanzaTinkAEAD = format.TypeTinkAEAD
	StanzaKMS      = format.TypeKMS
	StanzaHPKE     = format.TypeHPKE

	RoleRecipient = format.RoleRecipient
	RoleEscrow    = format.RoleEscrow
)

// Stanza is one wrapped copy of the DEK: its type, role, the id of the key
// that wrapped it (Tink key id, or 0 and the KMS URI in Locator) and the
// wrapped bytes.
type Stanza = format.Stanza

// StanzaTypeName and RoleName return the names used in the format document.
func StanzaTypeName(t uint8) string { return format.TypeName(t) }

// RoleName returns "recipient" or "escrow".
func RoleName(r uint8) string { return format.RoleName(r) }

// Binding names what an object is: the export it belongs to and its logical
// path inside that export. It is never a bucket or endpoint, which change on
// migration. The binding is in the clear in the header and authenticated by
// every wrap, the header MAC and the payload.
type Binding struct {
	ExportID string
	Path     string
}

func (b Binding) String() string {
	if b.ExportID == "" {
		return b.Path
	}
	return b.ExportID + ":" + b.Path
}

// Recipient wraps a DEK for one key holder.
//
// StanzaType names the stanza type Wrap produces; it is part of the wrap's
// associated data. Wrap must return a stanza of that type that an Identity
// for the same key can unwrap with the same ad, and must not retain dek.
// Errors should wrap ErrPolicy (unusable key material) or ErrNoMatchingKey
// (a KMS refused).
type Recipient interface {
	StanzaType() uint8
	Wrap(dek, ad []byte) (*Stanza, error)
}

// Identity unwraps DEKs.
//
// Unwrap returns an error wrapping ErrNoMatchingKey when the stanza is not
// for this identity or its key is disabled, and ErrCorrupt when the stanza
// names this identity's key but does not authenticate under ad.
type Identity interface {
	Unwrap(s *Stanza, ad []byte) ([]byte, error)
}

// Policy is local policy. The suite is never negotiated from the file:
// a reader accepts only Suite, and a writer writes only Suite.
type Policy struct {
	Version    uint8
	Suite      uint8
	MaxStanzas int
	// RequireEscrow refuses objects without an escrow stanza.
	RequireEscrow bool
	// RequiredKeyIDs refuses objects that lack a stanza for one of these
	// Tink key ids (a hospital KEK or HPKE key).
	RequiredKeyIDs []uint32
}

// DefaultPolicy accepts and writes version 1, suite 1, at most 16 stanzas.
func DefaultPolicy() Policy {
	return Policy{Version: Version1, Suite: Suite1, MaxStanzas: MaxStanzas}
}

func (p Policy) limits() format.Limits {
	n := p.MaxStanzas
	if n <= 0 || n > MaxStanzas {
		n = MaxStanzas
	}
	return format.Limits{Versions: []uint8{p.Version}, Suites: []uint8{p.Suite}, MaxStanzas: n}
}

// Check applies the stanza rules (escrow, required key ids) to a parsed
// header. It needs no key, so an auditor can enforce them at rest.
func (p Policy) Check(h *Header) error { return p.check(h.Stanzas) }

func (p Policy) check(ss []Stanza) error {
	if p.RequireEscrow {
		found := false
		for _, s := range ss {
			found = found || s.Role == RoleEscrow
		}
		if !found {
			return fmt.Errorf("%w: an escrow recipient is required and missing", ErrPolicy)
		}
	}
	for _, id := range p.RequiredKeyIDs {
		found := false
		for _, s := range ss {
			found = found || (s.Type != StanzaKMS && s.KeyID == id)
		}
		if !found {
			return fmt.Errorf("%w: required recipient key %d is missing", ErrPolicy, id)
		}
	}
	return nil
}

type options struct {
	rand       io.Reader
	policy     Policy
	workers    int
	dropEscrow bool
}

// Option configures encryption and decryption.
type Option func(*options)

// WithRand sets the source of DEKs (crypto/rand by default). Only tests and
// golden files should set it.
func WithRand(r io.Reader) Option { return func(o *options) { o.rand = r } }

// WithPolicy replaces DefaultPolicy.
func WithPolicy(p Policy) Option { return func(o *options) { o.policy = p } }

// WithWorkers bounds how many payload segments one object seals or opens
// at once (default GOMAXPROCS). Each holds a 1 MiB buffer, so a caller that
// already works on many objects at once may want 1.
func WithWorkers(n int) Option { return func(o *options) { o.workers = n } }

// AllowEscrowDrop lets Rekey write an object without escrow stanzas the old
// one had; without it Rekey refuses with an *EscrowDroppedError.
func AllowEscrowDrop() Option { return func(o *options) { o.dropEscrow = true } }

func buildOptions(opts []Option) *options {
	o := &options{policy: DefaultPolicy()}
	for _, f := range opts {
		f(o)
	}
	return o
}

// classify maps a grammar error to the package's sentinels.
func classify(err error) error {
	var fe *format.Error
	if errors.As(err, &fe) {
		switch fe.Class {
		case format.Policy:
			return fmt.Errorf("%w: %s", ErrPolicy, fe.Msg)
		default:
			return fmt.Errorf("%w: %s", ErrCorrupt, fe.Msg)
		}
	}
	return err
}

func checkBinding(b Binding) error {
	if err := format.CheckBinding(b.ExportID, b.Path); err != nil {
		var fe *format.Error
		errors.As(err, &fe)
		return fmt.Errorf("%w: invalid binding: %s", ErrPolicy, fe.Msg)
	}
	return nil
}

func derive(dek []byte, label string) []byte {
	k, err := hkdf.Key(sha256.New, dek, nil, label, 32)
	if err != nil {
		panic(err) // only for lengths HKDF cannot produce
	}
	return k
}

func wrapAD(version, suite, typ uint8, b Binding) []byte {
	ad := append([]byte(format.LabelWrapAD), 0, version, suite, typ)
	return append(ad, format.EncodeBinding(b.ExportID, b.Path)...)
}

func payloadAD(version, suite uint8, b Binding) []byte {
	ad := append([]byte(format.LabelPayloadAD), 0, version, suite)
	return append(ad, format.EncodeBinding(b.ExportID, b.Path)...)
}

// CiphertextSize returns the size of an object holding plaintextSize bytes
// behind a header of headerLen bytes (docs §5).
func CiphertextSize(plaintextSize int64, headerLen int) int64 {
	return int64(headerLen) + format.PayloadLen(plaintextSize)
}

// PlaintextSize returns the plaintext size and segment count implied by a
// payload of payloadLen bytes; ok is false for a length no writer produces.
func PlaintextSize(payloadLen int64) (size, segments int64, ok bool) {
	return format.PlaintextLen(payloadLen)
}
