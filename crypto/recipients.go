package crypto

import (
	"errors"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/hybrid"
	"github.com/tink-crypto/tink-go/v2/keyset"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// Compile-time checks of the interfaces.
var (
	_ Recipient = (*KeysetRecipient)(nil)
	_ Identity  = (*KeysetIdentity)(nil)
	_ Recipient = (*HPKERecipient)(nil)
	_ Identity  = (*HPKEIdentity)(nil)
	_ Recipient = (*KMSRecipient)(nil)
	_ Identity  = (*KMSIdentity)(nil)
	_ Recipient = escrow{}
)

const (
	typeURLAESGCM = "type.googleapis.com/google.crypto.tink.AesGcmKey"
	typeURLHPKE   = "type.googleapis.com/google.crypto.tink.HpkePrivateKey"
	typeURLHPKEPu = "type.googleapis.com/google.crypto.tink.HpkePublicKey"
)

func isNoMatch(err error) bool { return errors.Is(err, ErrNoMatchingKey) }

// keyStatus maps key id to status for a keyset.
func keyStatus(h *keyset.Handle) map[uint32]tinkpb.KeyStatusType {
	m := map[uint32]tinkpb.KeyStatusType{}
	for _, ki := range h.KeysetInfo().GetKeyInfo() {
		m[ki.GetKeyId()] = ki.GetStatus()
	}
	return m
}

func primaryInfo(h *keyset.Handle) *tinkpb.KeysetInfo_KeyInfo {
	info := h.KeysetInfo()
	for _, ki := range info.GetKeyInfo() {
		if ki.GetKeyId() == info.GetPrimaryKeyId() {
			return ki
		}
	}
	return nil
}

func checkPrimary(h *keyset.Handle, typeURL string) (uint32, error) {
	p := primaryInfo(h)
	if p == nil {
		return 0, fmt.Errorf("%w: keyset has no primary key", ErrPolicy)
	}
	if p.GetTypeUrl() != typeURL || p.GetOutputPrefixType() != tinkpb.OutputPrefixType_TINK {
		return 0, fmt.Errorf("%w: keyset primary key %d is %s/%s, format v1 needs %s with TINK prefix",
			ErrPolicy, p.GetKeyId(), p.GetTypeUrl(), p.GetOutputPrefixType(), typeURL)
	}
	return p.GetKeyId(), nil
}

// KeysetRecipient wraps DEKs with the primary key of a Tink AEAD keyset
// (AES256_GCM, TINK prefix): the hospital's key-encryption key.
type KeysetRecipient struct {
	keyID uint32
	a     tink.AEAD
}

// NewKeysetRecipient returns a recipient for the KEK keyset h.
func NewKeysetRecipient(h *keyset.Handle) (*KeysetRecipient, error) {
	id, err := checkPrimary(h, typeURLAESGCM)
	if err != nil {
		return nil, err
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("%w: KEK keyset: %v", ErrPolicy, err)
	}
	return &KeysetRecipient{keyID: id, a: a}, nil
}

// StanzaType is StanzaTinkAEAD.
func (r *KeysetRecipient) StanzaType() uint8 { return StanzaTinkAEAD }

// KeyID is the Tink key id that will wrap.
func (r *KeysetRecipient) KeyID() uint32 { return r.keyID }

// Wrap implements Recipient.
func (r *KeysetRecipient) Wrap(dek, ad []byte) (*Stanza, error) {
	ct, err := r.a.Encrypt(dek, ad)
	if err != nil {
		return nil, fmt.Errorf("%w: KEK wrap: %v", ErrPolicy, err)
	}
	return &Stanza{Type: StanzaTinkAEAD, KeyID: r.keyID, Body: ct}, nil
}

// KeysetIdentity unwraps tink-aead stanzas with any enabled key of a KEK
// keyset; disabled keys report ErrNoMatchingKey.
type KeysetIdentity struct {
	status map[uint32]tinkpb.KeyStatusType
	a      tink.AEAD
}

// NewKeysetIdentity returns an identity for the KEK keyset h.
func NewKeysetIdentity(h *keyset.Handle) (*KeysetIdentity, error) {
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("%w: KEK keyset: %v", ErrPolicy, err)
	}
	return &KeysetIdentity{status: keyStatus(h), a: a}, nil
}

// Unwrap implements Identity.
func (id *KeysetIdentity) Unwrap(s *Stanza, ad []byte) ([]byte, error) {
	return unwrapTink(s, StanzaTinkAEAD, id.status, ad, id.a.Decrypt)
}

func unwrapTink(s *Stanza, typ uint8, status map[uint32]tinkpb.KeyStatusType, ad []byte, dec func(ct, ad []byte) ([]byte, error)) ([]byte, error) {
	if s.Type != typ {
		return nil, fmt.Errorf("%w: not a %s stanza", ErrNoMatchingKey, StanzaTypeName(typ))
	}
	st, ok := status[s.KeyID]
	if !ok {
		return nil, fmt.Errorf("%w: key %d is not in this keyset", ErrNoMatchingKey, s.KeyID)
	}
	if st != tinkpb.KeyStatusType_ENABLED {
		return nil, fmt.Errorf("%w: key %d is disabled", ErrNoMatchingKey, s.KeyID)
	}
	dek, err := dec(s.Body, ad)
	if err != nil {
		return nil, fmt.Errorf("%w: the %s stanza for key %d does not authenticate (altered, or moved from another object)", ErrCorrupt, StanzaTypeName(typ), s.KeyID)
	}
	return dek, nil
}

// HPKERecipient wraps DEKs for the primary key of a public HPKE keyset
// (X25519, HKDF-SHA256, AES-256-GCM, TINK prefix). It holds no secret.
type HPKERecipient struct {
	keyID uint32
	e     tink.HybridEncrypt
}

// NewHPKERecipient returns a recipient for the public keyset pub.
func NewHPKERecipient(pub *keyset.Handle) (*HPKERecipient, error) {
	id, err := checkPrimary(pub, typeURLHPKEPu)
	if err != nil {
		return nil, err
	}
	e, err := hybrid.NewHybridEncrypt(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: HPKE public keyset: %v", ErrPolicy, err)
	}
	return &HPKERecipient{keyID: id, e: e}, nil
}

// StanzaType is StanzaHPKE.
func (r *HPKERecipient) StanzaType() uint8 { return StanzaHPKE }

// KeyID is the Tink key id of the recipient's key.
func (r *HPKERecipient) KeyID() uint32 { return r.keyID }

// Wrap implements Recipient.
func (r *HPKERecipient) Wrap(dek, ad []byte) (*Stanza, error) {
	ct, err := r.e.Encrypt(dek, ad)
	if err != nil {
		return nil, fmt.Errorf("%w: HPKE wrap: %v", ErrPolicy, err)
	}
	return &Stanza{Type: StanzaHPKE, KeyID: r.keyID, Body: ct}, nil
}

// HPKEIdentity unwraps hpke-x25519 stanzas with an HPKE private keyset.
type HPKEIdentity struct {
	status map[uint32]tinkpb.KeyStatusType
	d      tink.HybridDecrypt
}

// NewHPKEIdentity returns an identity for the private keyset priv.
func NewHPKEIdentity(priv *keyset.Handle) (*HPKEIdentity, error) {
	d, err := hybrid.NewHybridDecrypt(priv)
	if err != nil {
		return nil, fmt.Errorf("%w: HPKE private keyset: %v", ErrPolicy, err)
	}
	return &HPKEIdentity{status: keyStatus(priv), d: d}, nil
}

// Unwrap implements Identity.
func (id *HPKEIdentity) Unwrap(s *Stanza, ad []byte) ([]byte, error) {
	return unwrapTink(s, StanzaHPKE, id.status, ad, id.d.Decrypt)
}

// KMSRecipient wraps DEKs with a KMS key named by URI (aws-kms://,
// gcp-kms://, hcvault://). The AEAD comes from crypto/kms or any tink-go
// KMS client.
type KMSRecipient struct {
	uri string
	a   tink.AEAD
}

// NewKMSRecipient returns a recipient for the KMS key uri reached through a.
func NewKMSRecipient(uri string, a tink.AEAD) *KMSRecipient { return &KMSRecipient{uri: uri, a: a} }

// StanzaType is StanzaKMS.
func (r *KMSRecipient) StanzaType() uint8 { return StanzaKMS }

// Wrap implements Recipient.
func (r *KMSRecipient) Wrap(dek, ad []byte) (*Stanza, error) {
	ct, err := r.a.Encrypt(dek, ad)
	if err != nil {
		return nil, fmt.Errorf("%w: KMS %s refused to wrap: %v", ErrNoMatchingKey, r.uri, err)
	}
	return &Stanza{Type: StanzaKMS, Locator: r.uri, Body: ct}, nil
}

// KMSIdentity unwraps kms stanzas naming its URI.
type KMSIdentity struct {
	uri string
	a   tink.AEAD
}

// NewKMSIdentity returns an identity for the KMS key uri reached through a.
func NewKMSIdentity(uri string, a tink.AEAD) *KMSIdentity { return &KMSIdentity{uri: uri, a: a} }

// Unwrap implements Identity. A KMS cannot tell a tampered stanza from a
// key it will not use for us, so every refusal is ErrNoMatchingKey.
func (id *KMSIdentity) Unwrap(s *Stanza, ad []byte) ([]byte, error) {
	if s.Type != StanzaKMS || s.Locator != id.uri {
		return nil, fmt.Errorf("%w: not a stanza for %s", ErrNoMatchingKey, id.uri)
	}
	dek, err := id.a.Decrypt(s.Body, ad)
	if err != nil {
		return nil, fmt.Errorf("%w: KMS %s refused to unwrap (no access, another key, or the stanza was altered or moved)", ErrNoMatchingKey, id.uri)
	}
	return dek, nil
}

type escrow struct{ Recipient }

// Escrow marks r's stanza with the escrow role.
func Escrow(r Recipient) Recipient { return escrow{r} }

func (e escrow) Wrap(dek, ad []byte) (*Stanza, error) {
	s, err := e.Recipient.Wrap(dek, ad)
	if err != nil {
		return nil, err
	}
	s.Role = RoleEscrow
	return s, nil
}
