package crypto_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/internal/format"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
)

// lying wraps a different DEK than the one it is given: the attack key
// commitment stops.
type lying struct {
	ehrcrypto.Recipient
	dek []byte
}

func (l lying) Wrap(_, ad []byte) (*ehrcrypto.Stanza, error) { return l.Recipient.Wrap(l.dek, ad) }

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func TestNegative(t *testing.T) {
	k := newTestKeys(t)
	other := newTestKeys(t)
	rs := []ehrcrypto.Recipient{k.recipient(t), k.escrow(t)}
	// Four segments: first, two full middle ones, and a short last one.
	pt := pattern(int(boundary(3)) + 5000)
	obj := encrypt(t, pt, rs, bind)
	h, hl, payload := split(t, obj)
	pay := func(p []byte) []byte { return append(bytes.Clone(obj[:hl]), p...) }
	seg := func(i int) (int, int) { // payload offsets of segment i
		if i == 0 {
			return format.StreamHeaderLen, format.SegmentSize
		}
		s := format.SegmentSize + (i-1)*format.SegmentSize
		return s, min(s+format.SegmentSize, len(payload))
	}

	// Header field offsets.
	off := map[string]int{"magic": 0, "version": 8, "suite": 9, "reserved": 10, "header_len": 15, "export_id_len": 16, "export_id": 17}
	o := 17 + len(h.ExportID)
	off["path_len"] = o + 1
	off["path"] = o + 2
	o += 2 + len(h.Path)
	off["stanza_count"] = o + 1
	o += 2
	off["stanza0.type"] = o
	off["stanza0.role"] = o + 1
	off["stanza0.key_id"] = o + 5
	off["stanza0.locator_len"] = o + 7
	off["stanza0.body_len"] = o + 9
	off["stanza0.body_prefix"] = o + 11
	off["stanza0.body"] = o + 40
	o += 10 + len(h.Stanzas[0].Body)
	off["stanza1.type"] = o
	off["stanza1.role"] = o + 1
	off["stanza1.key_id"] = o + 5
	off["stanza1.body"] = o + 50
	off["commitment"] = hl - 64
	off["mac"] = hl - 1

	// Crafted headers.
	reencode := func(edit func(fh *format.Header) int) []byte {
		fh, _, err := format.Parse(bytes.NewReader(obj), format.DefaultLimits)
		must(t, err)
		n := edit(fh)
		return append(rawHeader(fh, n), payload...)
	}
	otherObj := encrypt(t, pattern(5000), rs, ehrcrypto.Binding{ExportID: "exp-1", Path: "exports/x/Observation.000.ndjson"})
	sameBindObj := encrypt(t, pattern(len(pt)), rs, bind)
	_, ohl, opay := split(t, sameBindObj)

	otherKEK := other.recipient(t)
	dek2 := bytes.Repeat([]byte{9}, 32)
	twoDEKs := encrypt(t, pt, []ehrcrypto.Recipient{k.recipient(t), lying{other.recipient(t), dek2}}, bind)

	// A keyset whose key that wrapped obj is now disabled.
	disabledKEK := func() []ehrcrypto.Identity {
		m := keyset.NewManagerFromHandle(k.kek)
		id, err := m.Add(aead.AES256GCMKeyTemplate())
		must(t, err)
		must(t, m.SetPrimary(id))
		must(t, m.Disable(h.Stanzas[0].KeyID))
		nh, err := m.Handle()
		must(t, err)
		ident, err := ehrcrypto.NewKeysetIdentity(nh)
		must(t, err)
		return []ehrcrypto.Identity{ident}
	}()

	kekOnly := func() []ehrcrypto.Identity { return k.identities(t)[:1] }()
	s0, _ := seg(0)
	m1, _ := seg(1)
	m2, m2end := seg(2)
	l3, l3end := seg(3)

	cases := []struct {
		name string
		obj  []byte
		ids  []ehrcrypto.Identity
		b    ehrcrypto.Binding
		pol  *ehrcrypto.Policy
		want error
	}{
		{"ok", obj, nil, bind, nil, nil},
		// 1. bit flips in every header field
		{"flip magic", flip(obj, off["magic"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip version", flip(obj, off["version"]), nil, bind, nil, ehrcrypto.ErrPolicy},
		{"flip suite", flip(obj, off["suite"]), nil, bind, nil, ehrcrypto.ErrPolicy},
		{"flip reserved", flip(obj, off["reserved"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip header_len", flip(obj, off["header_len"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip export_id_len", flip(obj, off["export_id_len"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip export_id", flip(obj, off["export_id"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip path_len", flip(obj, off["path_len"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip path", flip(obj, off["path"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip stanza_count", flip(obj, off["stanza_count"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip stanza0 type", flip(obj, off["stanza0.type"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip stanza0 role", flip(obj, off["stanza0.role"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip stanza0 key_id", flip(obj, off["stanza0.key_id"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip stanza0 locator_len", flip(obj, off["stanza0.locator_len"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip stanza0 body_len", flip(obj, off["stanza0.body_len"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip stanza0 body prefix", flip(obj, off["stanza0.body_prefix"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip stanza0 wrapped key", flip(obj, off["stanza0.body"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip stanza1 type", flip(obj, off["stanza1.type"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip stanza1 role", flip(obj, off["stanza1.role"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip stanza1 key_id", flip(obj, off["stanza1.key_id"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip stanza1 wrapped key (unused by KEK holder)", flip(obj, off["stanza1.body"]), kekOnly, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip stanza1 wrapped key (HPKE holder)", flip(obj, off["stanza1.body"]), k.identities(t)[1:], bind, nil, ehrcrypto.ErrCorrupt},
		{"flip commitment", flip(obj, off["commitment"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip mac", flip(obj, off["mac"]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		// bit flips in the payload
		{"flip stream header", flip(obj, hl+5), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip first segment", flip(obj, hl+s0+10), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip middle segment", flip(obj, hl+m2+500), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip last segment", flip(obj, len(obj)-100), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"flip last tag byte", flip(obj, len(obj)-1), nil, bind, nil, ehrcrypto.ErrCorrupt},
		// 2. truncation
		{"truncate to 0", obj[:0], nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"truncate in magic", obj[:4], nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"truncate in header", obj[:hl/2], nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"truncate before mac end", obj[:hl-1], nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"truncate after header", obj[:hl], nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"truncate in stream header", obj[:hl+20], nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"truncate after stream header", obj[:hl+40], nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"truncate at segment boundary 1", obj[:hl+m1], nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"truncate at segment boundary 2", obj[:hl+m2], nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"truncate at segment boundary 3", obj[:hl+l3], nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"truncate mid segment", obj[:hl+m2+1000], nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"truncate final tag", obj[:len(obj)-16], nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"truncate one byte", obj[:len(obj)-1], nil, bind, nil, ehrcrypto.ErrCorrupt},
		// 3. trailing data, appended or duplicated segments
		{"trailing byte", append(bytes.Clone(obj), 0), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"trailing garbage", append(bytes.Clone(obj), bytes.Repeat([]byte{0xAA}, 100)...), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"appended last segment twice", append(bytes.Clone(obj), payload[l3:l3end]...), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"appended middle segment", pay(append(bytes.Clone(payload[:l3end]), payload[m2:m2end]...)), nil, bind, nil, ehrcrypto.ErrCorrupt},
		// 4. reordered, duplicated, deleted segments
		{"segments 1 and 2 swapped", pay(concat(payload[:m1], payload[m2:m2end], payload[m1:m2], payload[l3:])), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"segment 1 duplicated", pay(concat(payload[:m2], payload[m1:m2], payload[m2:])), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"segment 2 deleted", pay(concat(payload[:m2], payload[l3:])), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"last segment deleted", pay(payload[:l3]), nil, bind, nil, ehrcrypto.ErrCorrupt},
		// 6. swaps and bindings
		{"header of another object, same binding", append(bytes.Clone(sameBindObj[:ohl]), payload...), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"payload of another object", append(bytes.Clone(obj[:hl]), opay...), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"another object's file", otherObj, nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"object renamed", obj, nil, ehrcrypto.Binding{ExportID: "exp-1", Path: "exports/x/Observation.000.ndjson"}, nil, ehrcrypto.ErrCorrupt},
		{"other export id", obj, nil, ehrcrypto.Binding{ExportID: "exp-2", Path: bind.Path}, nil, ehrcrypto.ErrCorrupt},
		{"binding edited in header", reencode(func(fh *format.Header) int {
			fh.Path = "exports/x/Observation.000.ndjson"
			return len(fh.Stanzas)
		}), nil, ehrcrypto.Binding{ExportID: "exp-1", Path: "exports/x/Observation.000.ndjson"}, nil, ehrcrypto.ErrCorrupt},
		// 7. downgrade
		{"version 0", setByte(obj, 8, 0), nil, bind, nil, ehrcrypto.ErrPolicy},
		{"version 2", setByte(obj, 8, 2), nil, bind, nil, ehrcrypto.ErrPolicy},
		{"suite 0", setByte(obj, 9, 0), nil, bind, nil, ehrcrypto.ErrPolicy},
		{"suite 2", setByte(obj, 9, 2), nil, bind, nil, ehrcrypto.ErrPolicy},
		{"local policy wants another suite", obj, nil, bind, &ehrcrypto.Policy{Version: 1, Suite: 2}, ehrcrypto.ErrPolicy},
		// 8. stanzas
		{"escrow stanza stripped", reencode(func(fh *format.Header) int {
			fh.Stanzas = fh.Stanzas[:1]
			return 1
		}), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"own stanza stripped", reencode(func(fh *format.Header) int {
			fh.Stanzas = fh.Stanzas[1:]
			return 1
		}), kekOnly, bind, nil, ehrcrypto.ErrNoMatchingKey},
		{"all stanzas stripped", reencode(func(fh *format.Header) int {
			fh.Stanzas = nil
			return 0
		}), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"stanza added", reencode(func(fh *format.Header) int {
			s, err := otherKEK.Wrap(bytes.Repeat([]byte{1}, 32), nil)
			must(t, err)
			fh.Stanzas = append(fh.Stanzas, *s)
			return len(fh.Stanzas)
		}), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"stanza relabelled tink-aead to kms", reencode(func(fh *format.Header) int {
			fh.Stanzas[0].Type = format.TypeKMS
			return 2
		}), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"stanza relabelled hpke to tink-aead", reencode(func(fh *format.Header) int {
			fh.Stanzas[1].Type = format.TypeTinkAEAD
			return 2
		}), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"stanza relabelled escrow to recipient", reencode(func(fh *format.Header) int {
			fh.Stanzas[1].Role = format.RoleRecipient
			return 2
		}), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"stanza duplicated", reencode(func(fh *format.Header) int {
			fh.Stanzas = append(fh.Stanzas, fh.Stanzas[0])
			return 3
		}), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"10000 stanzas", reencode(func(fh *format.Header) int {
			for i := 0; len(fh.Stanzas) < 10000; i++ {
				s := fh.Stanzas[0]
				s.Body = bytes.Clone(s.Body)
				s.KeyID = uint32(i + 1000)
				binary.BigEndian.PutUint32(s.Body[1:5], s.KeyID)
				fh.Stanzas = append(fh.Stanzas, s)
			}
			return 10000
		}), nil, bind, nil, ehrcrypto.ErrPolicy},
		{"17 stanzas", reencode(func(fh *format.Header) int {
			for i := 0; len(fh.Stanzas) < 17; i++ {
				s := fh.Stanzas[0]
				s.Body = bytes.Clone(s.Body)
				s.KeyID = uint32(i + 1000)
				binary.BigEndian.PutUint32(s.Body[1:5], s.KeyID)
				fh.Stanzas = append(fh.Stanzas, s)
			}
			return 17
		}), nil, bind, nil, ehrcrypto.ErrPolicy},
		{"wrapped key too short", reencode(func(fh *format.Header) int {
			fh.Stanzas[0].Body = fh.Stanzas[0].Body[:64]
			return 2
		}), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"wrapped key too long", reencode(func(fh *format.Header) int {
			fh.Stanzas[0].Body = append(bytes.Clone(fh.Stanzas[0].Body), 0)
			return 2
		}), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"hpke wrapped key wrong length", reencode(func(fh *format.Header) int {
			fh.Stanzas[1].Body = fh.Stanzas[1].Body[:80]
			return 2
		}), nil, bind, nil, ehrcrypto.ErrCorrupt},
		{"required escrow missing", encrypt(t, pt[:100], rs[:1], bind), nil, bind, &ehrcrypto.Policy{Version: 1, Suite: 1, RequireEscrow: true}, ehrcrypto.ErrPolicy},
		{"required key missing", obj, nil, bind, &ehrcrypto.Policy{Version: 1, Suite: 1, RequiredKeyIDs: []uint32{12345}}, ehrcrypto.ErrPolicy},
		// 9. keys
		{"wrong key", obj, other.identities(t), bind, nil, ehrcrypto.ErrNoMatchingKey},
		{"no keys", obj, []ehrcrypto.Identity{}, bind, nil, ehrcrypto.ErrNoMatchingKey},
		{"disabled key", obj, disabledKEK, bind, nil, ehrcrypto.ErrNoMatchingKey},
		// 10. stanzas wrapping different DEKs
		{"two DEKs, first stanza's holder", twoDEKs, kekOnly, bind, nil, nil},
		{"two DEKs, second stanza's holder", twoDEKs, other.identities(t), bind, nil, ehrcrypto.ErrCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ids := c.ids
			if ids == nil {
				ids = k.identities(t)
			}
			var opts []ehrcrypto.Option
			if c.pol != nil {
				opts = append(opts, ehrcrypto.WithPolicy(*c.pol))
			}
			got, err := decryptFile(t, c.obj, ids, c.b, opts...)
			if c.want == nil {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
				if !bytes.Equal(got, pt) {
					t.Fatal("plaintext differs")
				}
				return
			}
			if err == nil {
				t.Fatalf("want %v, decryption succeeded", c.want)
			}
			if cl := classOf(t, err); cl != c.want {
				t.Fatalf("want %v, got %v", c.want, err)
			}
			t.Logf("%v", err)
		})
	}
}

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func setByte(b []byte, i int, v byte) []byte {
	c := bytes.Clone(b)
	c[i] = v
	return c
}

// TestEveryHeaderBitAndTruncation flips every bit of a small object's header
// and stream header, and truncates the object at every length: all fail
// with exactly one class and leave no output.
func TestEveryHeaderBitAndTruncation(t *testing.T) {
	k := newTestKeys(t)
	pt := pattern(1000)
	obj := encrypt(t, pt, []ehrcrypto.Recipient{k.recipient(t), k.escrow(t)}, bind)
	_, hl, _ := split(t, obj)
	ids := k.identities(t)
	for i := 0; i < hl+format.StreamHeaderLen; i++ {
		for bit := 0; bit < 8; bit++ {
			c := bytes.Clone(obj)
			c[i] ^= 1 << bit
			r, err := ehrcrypto.NewDecryptReader(bytes.NewReader(c), ids, bind)
			if err == nil {
				_, err = readAll(r)
			}
			if err == nil {
				t.Fatalf("flip of byte %d bit %d went undetected", i, bit)
			}
			classOf(t, err)
		}
	}
	for n := 0; n < len(obj); n++ {
		r, err := ehrcrypto.NewDecryptReader(bytes.NewReader(obj[:n]), ids, bind)
		if err == nil {
			_, err = readAll(r)
		}
		if err == nil {
			t.Fatalf("truncation to %d bytes went undetected", n)
		}
		if !errors.Is(err, ehrcrypto.ErrCorrupt) {
			t.Fatalf("truncation to %d: %v", n, err)
		}
	}
}

func readAll(r *ehrcrypto.Reader) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(r)
	return b.Bytes(), err
}
