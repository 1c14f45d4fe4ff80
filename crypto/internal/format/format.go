// Package format is the grammar of the ehrport version-1 header
// (docs/format-v1.md §1, §3). It parses and encodes bytes and knows no keys.
// Errors are *Error values carrying a Class that the crypto package maps to
// its sentinels.
package format

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"unicode/utf8"
)

// Constants mirrored from docs/format-v1.md.
const (
	Magic = "EHRPORT\n"

	Version1 = 0x01
	Suite1   = 0x01

	FixedLen = 16

	MaxExportIDLen = 128
	MaxPathLen     = 1024
	MaxStanzas     = 16
	MaxLocatorLen  = 1024
	MaxKMSBodyLen  = 2048

	CommitmentLen = 32
	MACLen        = 32

	TypeTinkAEAD = 0x01
	TypeKMS      = 0x02
	TypeHPKE     = 0x03

	RoleRecipient = 0x00
	RoleEscrow    = 0x01

	TinkAEADBodyLen = 65
	HPKEBodyLen     = 85

	// Payload (suite 1): Tink AES256_GCM_HKDF_1MB.
	SegmentSize       = 1 << 20
	StreamHeaderLen   = 40
	TagLen            = 16
	FirstSegmentPlain = SegmentSize - StreamHeaderLen - TagLen
	SegmentPlain      = SegmentSize - TagLen

	LabelCommitment = "ehrport/v1/commitment"
	LabelHeaderMAC  = "ehrport/v1/header-mac"
	LabelPayloadKey = "ehrport/v1/payload"
	LabelWrapAD     = "ehrport/v1/wrap"
	LabelPayloadAD  = "ehrport/v1/payload"
)

// Class says which of the crypto error classes a grammar error belongs to.
type Class int

const (
	Corrupt Class = iota + 1
	Policy
)

// Error is a grammar error.
type Error struct {
	Class Class
	Msg   string
}

func (e *Error) Error() string { return e.Msg }

func corrupt(f string, a ...any) error { return &Error{Corrupt, fmt.Sprintf(f, a...)} }
func policy(f string, a ...any) error  { return &Error{Policy, fmt.Sprintf(f, a...)} }

// Stanza is one wrapped copy of the DEK.
type Stanza struct {
	Type    uint8
	Role    uint8
	KeyID   uint32
	Locator string
	Body    []byte
}

// TypeName is the document's name for a stanza type.
func TypeName(t uint8) string {
	switch t {
	case TypeTinkAEAD:
		return "tink-aead"
	case TypeKMS:
		return "kms"
	case TypeHPKE:
		return "hpke-x25519"
	}
	return fmt.Sprintf("unknown(0x%02x)", t)
}

// RoleName is the document's name for a stanza role.
func RoleName(r uint8) string {
	switch r {
	case RoleRecipient:
		return "recipient"
	case RoleEscrow:
		return "escrow"
	}
	return fmt.Sprintf("unknown(0x%02x)", r)
}

// Header is a parsed version-1 header.
type Header struct {
	Version    uint8
	Suite      uint8
	ExportID   string
	Path       string
	Stanzas    []Stanza
	Commitment [CommitmentLen]byte
	MAC        [MACLen]byte
}

// EncodeBinding returns B (docs §1).
func EncodeBinding(exportID, path string) []byte {
	b := make([]byte, 0, 3+len(exportID)+len(path))
	b = append(b, byte(len(exportID)))
	b = append(b, exportID...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(path)))
	return append(b, path...)
}

// CheckBinding validates a binding against the grammar's bounds.
func CheckBinding(exportID, path string) error {
	if len(exportID) > MaxExportIDLen {
		return corrupt("export id longer than %d bytes", MaxExportIDLen)
	}
	if len(path) == 0 || len(path) > MaxPathLen {
		return corrupt("logical path must be 1..%d bytes", MaxPathLen)
	}
	if !printable(exportID) || !printable(path) {
		return corrupt("binding must be UTF-8 without control characters")
	}
	return nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// CheckStanza validates one stanza against the grammar.
func CheckStanza(s *Stanza) error {
	if s.Role != RoleRecipient && s.Role != RoleEscrow {
		return corrupt("stanza has unknown role 0x%02x", s.Role)
	}
	switch s.Type {
	case TypeTinkAEAD, TypeHPKE:
		want := TinkAEADBodyLen
		if s.Type == TypeHPKE {
			want = HPKEBodyLen
		}
		if s.Locator != "" {
			return corrupt("%s stanza must not have a locator", TypeName(s.Type))
		}
		if len(s.Body) != want {
			return corrupt("%s stanza wraps %d bytes, want %d", TypeName(s.Type), len(s.Body), want)
		}
		if s.Body[0] != 0x01 || binary.BigEndian.Uint32(s.Body[1:5]) != s.KeyID {
			return corrupt("%s stanza key id %d disagrees with its wrapped key", TypeName(s.Type), s.KeyID)
		}
	case TypeKMS:
		if s.KeyID != 0 {
			return corrupt("kms stanza must have key id 0")
		}
		if len(s.Locator) == 0 || len(s.Locator) > MaxLocatorLen || !validURI(s.Locator) {
			return corrupt("kms stanza has an invalid key URI")
		}
		if len(s.Body) == 0 || len(s.Body) > MaxKMSBodyLen {
			return corrupt("kms stanza wraps %d bytes, want 1..%d", len(s.Body), MaxKMSBodyLen)
		}
	default:
		return corrupt("unknown stanza type 0x%02x", s.Type)
	}
	return nil
}

func validURI(u string) bool {
	i := bytes.Index([]byte(u), []byte("://"))
	if i <= 0 || i+3 >= len(u) {
		return false
	}
	for _, c := range u[:i] {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return printable(u)
}

// SameKey reports whether two stanzas are duplicates (docs §3).
func SameKey(a, b *Stanza) bool {
	return a.Type == b.Type && a.KeyID == b.KeyID && a.Locator == b.Locator
}

// CheckStanzas checks count, each stanza, and duplicates.
func CheckStanzas(ss []Stanza, maxStanzas int) error {
	if len(ss) == 0 {
		return corrupt("header has no stanzas")
	}
	if len(ss) > maxStanzas {
		return policy("too many stanzas: %d, the limit is %d", len(ss), maxStanzas)
	}
	for i := range ss {
		if err := CheckStanza(&ss[i]); err != nil {
			return err
		}
		for j := 0; j < i; j++ {
			if SameKey(&ss[i], &ss[j]) {
				return corrupt("duplicate stanza for %s key %d %s", TypeName(ss[i].Type), ss[i].KeyID, ss[i].Locator)
			}
		}
	}
	return nil
}

// MarshalUnauthenticated encodes everything before the MAC (the MAC input).
func (h *Header) MarshalUnauthenticated() ([]byte, error) {
	if err := CheckBinding(h.ExportID, h.Path); err != nil {
		return nil, err
	}
	if err := CheckStanzas(h.Stanzas, MaxStanzas); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 1024)
	b = append(b, Magic...)
	b = append(b, h.Version, h.Suite, 0, 0)
	b = append(b, 0, 0, 0, 0) // header_len, patched below
	b = append(b, EncodeBinding(h.ExportID, h.Path)...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Stanzas)))
	for _, s := range h.Stanzas {
		b = append(b, s.Type, s.Role)
		b = binary.BigEndian.AppendUint32(b, s.KeyID)
		b = binary.BigEndian.AppendUint16(b, uint16(len(s.Locator)))
		b = append(b, s.Locator...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(s.Body)))
		b = append(b, s.Body...)
	}
	b = append(b, h.Commitment[:]...)
	binary.BigEndian.PutUint32(b[12:16], uint32(len(b)+MACLen))
	return b, nil
}

// Marshal encodes the whole header, MAC included.
func (h *Header) Marshal() ([]byte, error) {
	b, err := h.MarshalUnauthenticated()
	if err != nil {
		return nil, err
	}
	return append(b, h.MAC[:]...), nil
}

// Limits are the local-policy inputs of the parser.
type Limits struct {
	Versions   []uint8 // accepted versions
	Suites     []uint8 // accepted suites
	MaxStanzas int
}

// DefaultLimits accepts version 1, suite 1 and MaxStanzas stanzas.
var DefaultLimits = Limits{Versions: []uint8{Version1}, Suites: []uint8{Suite1}, MaxStanzas: MaxStanzas}

type reader struct {
	r   io.Reader
	raw []byte
	err error
}

func (r *reader) read(n int) []byte {
	if r.err != nil {
		return nil
	}
	start := len(r.raw)
	r.raw = append(r.raw, make([]byte, n)...)
	if _, err := io.ReadFull(r.r, r.raw[start:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			r.err = corrupt("header is truncated")
		} else {
			r.err = err
		}
		return nil
	}
	return r.raw[start:]
}

func (r *reader) u8() uint8 {
	b := r.read(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) u16() uint16 {
	b := r.read(2)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}

func (r *reader) u32() uint32 {
	b := r.read(4)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

// Parse reads exactly one header from r and returns it with its raw bytes.
// It reads field by field and checks each bound before reading further.
// Errors that are not *Error come from r itself.
func Parse(r io.Reader, lim Limits) (*Header, []byte, error) {
	p := &reader{r: r}
	magic := p.read(len(Magic))
	if p.err != nil {
		if _, ok := p.err.(*Error); ok {
			return nil, nil, corrupt("not an ehrport encrypted object (too short)")
		}
		return nil, nil, p.err
	}
	if string(magic) != Magic {
		return nil, nil, corrupt("not an ehrport encrypted object (bad magic)")
	}
	h := &Header{}
	h.Version = p.u8()
	h.Suite = p.u8()
	reserved := p.u16()
	headerLen := p.u32()
	if p.err != nil {
		return nil, nil, p.err
	}
	if !contains(lim.Versions, h.Version) {
		return nil, nil, policy("format version %d is not accepted by local policy", h.Version)
	}
	if !contains(lim.Suites, h.Suite) {
		return nil, nil, policy("suite %d is not accepted by local policy", h.Suite)
	}
	if reserved != 0 {
		return nil, nil, corrupt("reserved header bits are set")
	}
	idLen := p.u8()
	if p.err == nil && int(idLen) > MaxExportIDLen {
		return nil, nil, corrupt("export id length %d exceeds %d", idLen, MaxExportIDLen)
	}
	h.ExportID = string(p.read(int(idLen)))
	pathLen := p.u16()
	if p.err == nil && (pathLen == 0 || int(pathLen) > MaxPathLen) {
		return nil, nil, corrupt("logical path length %d out of range", pathLen)
	}
	h.Path = string(p.read(int(pathLen)))
	if p.err != nil {
		return nil, nil, p.err
	}
	if err := CheckBinding(h.ExportID, h.Path); err != nil {
		return nil, nil, err
	}
	n := int(p.u16())
	if p.err != nil {
		return nil, nil, p.err
	}
	if n > lim.MaxStanzas || n > MaxStanzas {
		return nil, nil, policy("too many stanzas: %d, the limit is %d", n, min(lim.MaxStanzas, MaxStanzas))
	}
	if n == 0 {
		return nil, nil, corrupt("header has no stanzas")
	}
	h.Stanzas = make([]Stanza, n)
	for i := range h.Stanzas {
		s := &h.Stanzas[i]
		s.Type = p.u8()
		s.Role = p.u8()
		s.KeyID = p.u32()
		ll := p.u16()
		if p.err == nil && int(ll) > MaxLocatorLen {
			return nil, nil, corrupt("stanza locator too long")
		}
		s.Locator = string(p.read(int(ll)))
		bl := p.u16()
		if p.err == nil && int(bl) > MaxKMSBodyLen {
			return nil, nil, corrupt("stanza body too long")
		}
		s.Body = bytes.Clone(p.read(int(bl)))
		if p.err != nil {
			return nil, nil, p.err
		}
		if err := CheckStanza(s); err != nil {
			return nil, nil, err
		}
	}
	if err := CheckStanzas(h.Stanzas, lim.MaxStanzas); err != nil {
		return nil, nil, err
	}
	copy(h.Commitment[:], p.read(CommitmentLen))
	copy(h.MAC[:], p.read(MACLen))
	if p.err != nil {
		return nil, nil, p.err
	}
	if int(headerLen) != len(p.raw) {
		return nil, nil, corrupt("header length field says %d, header is %d bytes", headerLen, len(p.raw))
	}
	return h, p.raw, nil
}

func contains(l []uint8, v uint8) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}

// Segments returns the number of payload segments for n plaintext bytes.
func Segments(n int64) int64 {
	if n <= FirstSegmentPlain {
		return 1
	}
	return 1 + (n-FirstSegmentPlain+SegmentPlain-1)/SegmentPlain
}

// PayloadLen returns the payload length for n plaintext bytes (docs §5).
func PayloadLen(n int64) int64 {
	return StreamHeaderLen + n + TagLen*Segments(n)
}

// PlaintextLen inverts PayloadLen. ok is false for a length no writer
// produces.
func PlaintextLen(payloadLen int64) (n, segments int64, ok bool) {
	m := payloadLen - StreamHeaderLen
	first := int64(SegmentSize - StreamHeaderLen)
	if m < TagLen {
		return 0, 0, false
	}
	if m <= first {
		return m - TagLen, 1, true
	}
	rest := m - first
	k := (rest + SegmentSize - 1) / SegmentSize
	last := rest - (k-1)*SegmentSize
	if last <= TagLen {
		return 0, 0, false
	}
	return m - TagLen*(k+1), k + 1, true
}
