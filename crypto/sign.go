package crypto

import (
	"encoding/binary"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/signature"
	"github.com/tink-crypto/tink-go/v2/tink"
)

const (
	typeURLEd25519Priv = "type.googleapis.com/google.crypto.tink.Ed25519PrivateKey"
	sigLabel           = "ehrport/v1/signature"
)

// Signer signs manifests and reports with an Ed25519 Tink keyset. Every
// signature is over a purpose string and the message, so that a signature
// made for one purpose (say "manifest") never verifies for another.
type Signer struct {
	keyID uint32
	s     tink.Signer
}

// NewSigner returns a signer for the private Ed25519 keyset h.
func NewSigner(h *keyset.Handle) (*Signer, error) {
	id, err := checkPrimary(h, typeURLEd25519Priv)
	if err != nil {
		return nil, err
	}
	s, err := signature.NewSigner(h)
	if err != nil {
		return nil, fmt.Errorf("%w: signing keyset: %v", ErrPolicy, err)
	}
	return &Signer{keyID: id, s: s}, nil
}

// KeyID is the id of the signing key.
func (s *Signer) KeyID() uint32 { return s.keyID }

func signedMessage(purpose string, msg []byte) []byte {
	b := append([]byte(sigLabel), 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(purpose)))
	b = append(b, purpose...)
	return append(b, msg...)
}

// Sign signs msg for purpose.
func (s *Signer) Sign(purpose string, msg []byte) ([]byte, error) {
	sig, err := s.s.Sign(signedMessage(purpose, msg))
	if err != nil {
		return nil, fmt.Errorf("%w: signing: %v", ErrPolicy, err)
	}
	return sig, nil
}

// Verifier checks signatures with a public verification keyset.
type Verifier struct {
	status map[uint32]bool
	v      tink.Verifier
}

// NewVerifier returns a verifier for the public keyset h.
func NewVerifier(h *keyset.Handle) (*Verifier, error) {
	v, err := signature.NewVerifier(h)
	if err != nil {
		return nil, fmt.Errorf("%w: verification keyset: %v", ErrPolicy, err)
	}
	st := map[uint32]bool{}
	for id, s := range keyStatus(h) {
		st[id] = s.String() == "ENABLED"
	}
	return &Verifier{status: st, v: v}, nil
}

// Verify checks sig over msg for purpose. A signature by a key the keyset
// does not hold (or has disabled) is ErrNoMatchingKey; a bad signature is
// ErrCorrupt.
func (v *Verifier) Verify(purpose string, msg, sig []byte) error {
	if len(sig) < 5 || sig[0] != 0x01 {
		return fmt.Errorf("%w: malformed signature", ErrCorrupt)
	}
	id := binary.BigEndian.Uint32(sig[1:5])
	enabled, ok := v.status[id]
	if !ok {
		return fmt.Errorf("%w: signature by key %d, which this keyset does not hold", ErrNoMatchingKey, id)
	}
	if !enabled {
		return fmt.Errorf("%w: signature by disabled key %d", ErrNoMatchingKey, id)
	}
	if err := v.v.Verify(sig, signedMessage(purpose, msg)); err != nil {
		return fmt.Errorf("%w: signature does not verify (message or signature altered)", ErrCorrupt)
	}
	return nil
}
