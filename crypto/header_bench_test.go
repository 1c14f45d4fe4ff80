package crypto_test

import (
	"bytes"
	"io"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
)

// Header parsing is paid once per object: by inspect and audit (no key),
// and by every decryption before the first segment. These benchmarks parse
// the header of a real object with one recipient (the KEK) and with two
// (KEK and an HPKE escrow).

func headerObjects(b *testing.B) map[string][]byte {
	k := newTestKeys(b)
	pt := pattern(1 << 10)
	return map[string][]byte{
		"recipients=1": encrypt(b, pt, []ehrcrypto.Recipient{k.recipient(b)}, bind),
		"recipients=2": encrypt(b, pt, []ehrcrypto.Recipient{k.recipient(b), k.escrow(b)}, bind),
	}
}

// BenchmarkParseHeader: the grammar and policy checks only, no key.
func BenchmarkParseHeader(b *testing.B) {
	objs := headerObjects(b)
	for _, name := range []string{"recipients=1", "recipients=2"} {
		obj := objs[name]
		b.Run(name, func(b *testing.B) {
			r := bytes.NewReader(obj)
			for b.Loop() {
				r.Reset(obj)
				h, err := ehrcrypto.ParseHeader(r)
				if err != nil {
					b.Fatal(err)
				}
				if h.Len() == 0 {
					b.Fatal("empty header")
				}
			}
		})
	}
}

// BenchmarkOpenHeader: what a decryption pays before its first byte of
// payload: parse, unwrap the DEK with the first matching identity, check
// the commitment and the header MAC, then read the 1 KiB payload.
func BenchmarkOpenHeader(b *testing.B) {
	k := newTestKeys(b)
	ids := k.identities(b)
	obj := encrypt(b, pattern(1<<10), []ehrcrypto.Recipient{k.recipient(b)}, bind)
	r := bytes.NewReader(obj)
	for b.Loop() {
		r.Reset(obj)
		d, err := ehrcrypto.NewDecryptReader(r, ids, bind)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, d); err != nil {
			b.Fatal(err)
		}
	}
}
