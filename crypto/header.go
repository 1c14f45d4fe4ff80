package crypto

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"strings"

	"github.com/ehrport/ehrport/crypto/internal/format"
)

// Header is a parsed object header. Parsing needs no key and verifies
// nothing cryptographic: the commitment and MAC can only be checked by a
// key holder (see Open).
type Header struct {
	Version    uint8
	Suite      uint8
	Binding    Binding
	Stanzas    []Stanza
	Commitment [32]byte
	MAC        [32]byte

	raw []byte
}

// Len is the header's length in bytes: the offset of the payload.
func (h *Header) Len() int { return len(h.raw) }

// Bytes returns the header exactly as read or written.
func (h *Header) Bytes() []byte { return bytes.Clone(h.raw) }

func fromFormat(fh *format.Header, raw []byte) *Header {
	return &Header{
		Version:    fh.Version,
		Suite:      fh.Suite,
		Binding:    Binding{ExportID: fh.ExportID, Path: fh.Path},
		Stanzas:    fh.Stanzas,
		Commitment: fh.Commitment,
		MAC:        fh.MAC,
		raw:        raw,
	}
}

func (h *Header) toFormat() *format.Header {
	return &format.Header{
		Version: h.Version, Suite: h.Suite,
		ExportID: h.Binding.ExportID, Path: h.Binding.Path,
		Stanzas: h.Stanzas, Commitment: h.Commitment, MAC: h.MAC,
	}
}

// ParseHeader reads one header from r, which is left at the first payload
// byte. It checks the grammar and local policy (version, suite, stanza count)
// and needs no key.
func ParseHeader(r io.Reader, opts ...Option) (*Header, error) {
	o := buildOptions(opts)
	fh, raw, err := format.Parse(r, o.policy.limits())
	if err != nil {
		return nil, classify(err)
	}
	return fromFormat(fh, raw), nil
}

// Report is what an auditor learns about an object without keys.
type Report struct {
	Header       *Header
	HeaderLen    int64
	ObjectLen    int64 // -1 if unknown
	PayloadLen   int64
	Segments     int64
	PlaintextLen int64
	// Consistent is true when the payload length is one a writer produces.
	Consistent bool
	Problems   []string
}

// Inspect parses the header from r and relates it to the object's total
// length (objectLen, or -1 when unknown). It never needs a key.
func Inspect(r io.Reader, objectLen int64, opts ...Option) (*Report, error) {
	h, err := ParseHeader(r, opts...)
	if err != nil {
		return nil, err
	}
	rep := &Report{Header: h, HeaderLen: int64(h.Len()), ObjectLen: objectLen, Consistent: true}
	if objectLen < 0 {
		return rep, nil
	}
	rep.PayloadLen = objectLen - rep.HeaderLen
	n, segs, ok := format.PlaintextLen(rep.PayloadLen)
	if !ok {
		rep.Consistent = false
		rep.Problems = append(rep.Problems, fmt.Sprintf("payload length %d is not one a writer produces (truncated or padded)", rep.PayloadLen))
	} else {
		rep.Segments, rep.PlaintextLen = segs, n
	}
	return rep, nil
}

// seal builds a header for dek and returns it.
func seal(dek []byte, recipients []Recipient, b Binding, pol Policy) (*Header, error) {
	if err := checkBinding(b); err != nil {
		return nil, err
	}
	if len(recipients) == 0 {
		return nil, fmt.Errorf("%w: no recipients", ErrPolicy)
	}
	if len(recipients) > pol.limits().MaxStanzas {
		return nil, fmt.Errorf("%w: too many recipients: %d, the limit is %d", ErrPolicy, len(recipients), pol.limits().MaxStanzas)
	}
	h := &Header{Version: pol.Version, Suite: pol.Suite, Binding: b}
	for _, r := range recipients {
		s, err := r.Wrap(dek, wrapAD(h.Version, h.Suite, r.StanzaType(), b))
		if err != nil {
			return nil, err
		}
		if s.Type != r.StanzaType() {
			return nil, fmt.Errorf("%w: recipient wrote a %s stanza, announced %s", ErrPolicy, StanzaTypeName(s.Type), StanzaTypeName(r.StanzaType()))
		}
		h.Stanzas = append(h.Stanzas, *s)
	}
	return finish(h, dek, pol)
}

// finish checks the stanza list, sets commitment and MAC, and encodes.
func finish(h *Header, dek []byte, pol Policy) (*Header, error) {
	for i := range h.Stanzas {
		for j := 0; j < i; j++ {
			if format.SameKey(&h.Stanzas[i], &h.Stanzas[j]) {
				return nil, fmt.Errorf("%w: duplicate recipient %s key %d %s", ErrPolicy,
					StanzaTypeName(h.Stanzas[i].Type), h.Stanzas[i].KeyID, h.Stanzas[i].Locator)
			}
		}
	}
	if len(h.Stanzas) > pol.limits().MaxStanzas {
		return nil, fmt.Errorf("%w: too many recipients: %d, the limit is %d", ErrPolicy, len(h.Stanzas), pol.limits().MaxStanzas)
	}
	if err := pol.check(h.Stanzas); err != nil {
		return nil, err
	}
	copy(h.Commitment[:], derive(dek, format.LabelCommitment))
	fh := h.toFormat()
	unauth, err := fh.MarshalUnauthenticated()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPolicy, err)
	}
	mac := hmac.New(sha256.New, derive(dek, format.LabelHeaderMAC))
	mac.Write(unauth)
	copy(h.MAC[:], mac.Sum(nil))
	h.raw = append(unauth, h.MAC[:]...)
	return h, nil
}

// open unwraps the DEK from h with ids and verifies commitment and MAC.
func open(h *Header, ids []Identity, pol Policy) ([]byte, error) {
	if err := pol.check(h.Stanzas); err != nil {
		return nil, err
	}
	var misses []string
	for i := range h.Stanzas {
		s := &h.Stanzas[i]
		ad := wrapAD(h.Version, h.Suite, s.Type, h.Binding)
		for _, id := range ids {
			dek, err := id.Unwrap(s, ad)
			if err != nil {
				if isNoMatch(err) {
					misses = append(misses, err.Error())
					continue
				}
				return nil, err
			}
			if len(dek) != DEKSize {
				return nil, fmt.Errorf("%w: stanza %d unwrapped a %d-byte key", ErrCorrupt, i, len(dek))
			}
			if subtle.ConstantTimeCompare(derive(dek, format.LabelCommitment), h.Commitment[:]) != 1 {
				return nil, fmt.Errorf("%w: stanza %d (%s key %d) wraps a key the header does not commit to", ErrCorrupt, i, StanzaTypeName(s.Type), s.KeyID)
			}
			mac := hmac.New(sha256.New, derive(dek, format.LabelHeaderMAC))
			mac.Write(h.raw[:len(h.raw)-format.MACLen])
			if !hmac.Equal(mac.Sum(nil), h.MAC[:]) {
				return nil, fmt.Errorf("%w: header MAC does not verify (header altered)", ErrCorrupt)
			}
			return dek, nil
		}
	}
	var seen []string
	for i := range h.Stanzas {
		seen = append(seen, StanzaName(&h.Stanzas[i]))
	}
	msg := fmt.Sprintf("%v: none of the offered keys opens this object (it is for: %v)", ErrNoMatchingKey, seen)
	for _, m := range misses {
		if strings.Contains(m, "disabled") {
			msg += "; " + strings.TrimPrefix(m, ErrNoMatchingKey.Error()+": ")
		}
	}
	return nil, &noMatch{msg}
}

type noMatch struct{ msg string }

func (e *noMatch) Error() string        { return e.msg }
func (e *noMatch) Is(target error) bool { return target == ErrNoMatchingKey }
