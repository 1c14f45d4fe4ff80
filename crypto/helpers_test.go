package crypto_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/internal/format"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/hybrid"
	"github.com/tink-crypto/tink-go/v2/keyset"
)

var classes = []error{ehrcrypto.ErrCorrupt, ehrcrypto.ErrNoMatchingKey, ehrcrypto.ErrPolicy}

// classOf returns the one class err wraps, failing the test if it wraps
// none or several.
func classOf(t testing.TB, err error) error {
	t.Helper()
	var found []error
	for _, c := range classes {
		if errors.Is(err, c) {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("error %q wraps %d classes, want exactly 1", err, len(found))
	}
	return found[0]
}

type testKeys struct {
	kek     *keyset.Handle
	hpke    *keyset.Handle
	hpkePub *keyset.Handle
}

func newTestKeys(t testing.TB) *testKeys {
	t.Helper()
	kek, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	must(t, err)
	hp, err := keyset.NewHandle(hybrid.DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM_Key_Template())
	must(t, err)
	pub, err := hp.Public()
	must(t, err)
	return &testKeys{kek: kek, hpke: hp, hpkePub: pub}
}

func (k *testKeys) recipient(t testing.TB) ehrcrypto.Recipient {
	r, err := ehrcrypto.NewKeysetRecipient(k.kek)
	must(t, err)
	return r
}

func (k *testKeys) escrow(t testing.TB) ehrcrypto.Recipient {
	r, err := ehrcrypto.NewHPKERecipient(k.hpkePub)
	must(t, err)
	return ehrcrypto.Escrow(r)
}

func (k *testKeys) identities(t testing.TB) []ehrcrypto.Identity {
	a, err := ehrcrypto.NewKeysetIdentity(k.kek)
	must(t, err)
	h, err := ehrcrypto.NewHPKEIdentity(k.hpke)
	must(t, err)
	return []ehrcrypto.Identity{a, h}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func encrypt(t testing.TB, pt []byte, rs []ehrcrypto.Recipient, b ehrcrypto.Binding, opts ...ehrcrypto.Option) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := ehrcrypto.NewEncryptWriter(&buf, rs, b, opts...)
	must(t, err)
	_, err = w.Write(pt)
	must(t, err)
	must(t, w.Close())
	return buf.Bytes()
}

// decryptFile decrypts obj through DecryptFile twice, streaming from a
// reader and positionally from a file, checks that both give the same
// plaintext or the same error, and that a failure leaves no file behind.
func decryptFile(t testing.TB, obj []byte, ids []ehrcrypto.Identity, b ehrcrypto.Binding, opts ...ehrcrypto.Option) ([]byte, error) {
	t.Helper()
	pt, err := decryptFileFrom(t, bytes.NewReader(obj), ids, b, opts...)
	in := filepath.Join(t.TempDir(), "obj")
	must(t, os.WriteFile(in, obj, 0o600))
	f, ferr := os.Open(in)
	must(t, ferr)
	defer f.Close()
	if !ehrcrypto.Positional(f) {
		t.Fatal("a regular file not taken as positional")
	}
	fpt, ferr := decryptFileFrom(t, f, ids, b, opts...)
	if (err == nil) != (ferr == nil) || (err != nil && err.Error() != ferr.Error()) || !bytes.Equal(pt, fpt) {
		t.Fatalf("streaming and positional decryption disagree: %v / %v", err, ferr)
	}
	return pt, err
}

func decryptFileFrom(t testing.TB, src io.Reader, ids []ehrcrypto.Identity, b ehrcrypto.Binding, opts ...ehrcrypto.Option) ([]byte, error) {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	_, err := ehrcrypto.DecryptFile(out, src, ids, b, opts...)
	if err != nil {
		ents, _ := os.ReadDir(dir)
		if len(ents) != 0 {
			t.Fatalf("failed decryption left %d files behind", len(ents))
		}
		return nil, err
	}
	pt, rerr := os.ReadFile(out)
	must(t, rerr)
	return pt, nil
}

// rawHeader encodes h without any grammar check, for crafting bad headers.
func rawHeader(h *format.Header, count int) []byte {
	b := []byte(format.Magic)
	b = append(b, h.Version, h.Suite, 0, 0, 0, 0, 0, 0)
	b = append(b, format.EncodeBinding(h.ExportID, h.Path)...)
	b = binary.BigEndian.AppendUint16(b, uint16(count))
	for _, s := range h.Stanzas {
		b = append(b, s.Type, s.Role)
		b = binary.BigEndian.AppendUint32(b, s.KeyID)
		b = binary.BigEndian.AppendUint16(b, uint16(len(s.Locator)))
		b = append(b, s.Locator...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(s.Body)))
		b = append(b, s.Body...)
	}
	b = append(b, h.Commitment[:]...)
	b = append(b, h.MAC[:]...)
	binary.BigEndian.PutUint32(b[12:16], uint32(len(b)))
	return b
}

// split parses obj's header and returns it, its length and the payload.
func split(t testing.TB, obj []byte) (*format.Header, int, []byte) {
	t.Helper()
	h, raw, err := format.Parse(bytes.NewReader(obj), format.DefaultLimits)
	must(t, err)
	return h, len(raw), obj[len(raw):]
}

// pattern returns n deterministic bytes.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

type patternReader struct{ off, n int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n-p.off {
		b = b[:p.n-p.off]
	}
	for i := range b {
		j := p.off + int64(i)
		b[i] = byte(j*7 + j>>11)
	}
	p.off += int64(len(b))
	return len(b), nil
}
