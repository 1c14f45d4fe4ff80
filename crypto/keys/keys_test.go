package keys_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/keys"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/testing/fakekms"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// Fast argon2 parameters for tests (at the accepted minimum).
var testArgon = keys.Argon2Params{Time: 2, MemoryKiB: 19 * 1024, Threads: 1}

func pass(p string) keys.Unlock {
	return keys.Unlock{Passphrase: func() ([]byte, error) { return []byte(p), nil }}
}

func initDir(t *testing.T, p string) *keys.Dir {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	d, err := keys.Init(dir, pass(p), keys.InitOptions{Argon2: testArgon})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var bind = ehrcrypto.Binding{ExportID: "e", Path: "Patient.ndjson"}

func roundTrip(t *testing.T, rs []ehrcrypto.Recipient, ids []ehrcrypto.Identity) error {
	t.Helper()
	var buf bytes.Buffer
	w, err := ehrcrypto.NewEncryptWriter(&buf, rs, bind)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("hello"))
	w.Close()
	r, err := ehrcrypto.NewDecryptReader(&buf, ids, bind)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if _, err := out.ReadFrom(r); err != nil {
		return err
	}
	if out.String() != "hello" {
		t.Fatal("mismatch")
	}
	return nil
}

func TestInitModesAndReopen(t *testing.T) {
	d := initDir(t, "correct horse")
	for _, f := range []string{keys.FileKEK, keys.FileHPKE, keys.FileSigning} {
		st, err := os.Stat(filepath.Join(d.Path, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v", f, st.Mode(), err)
		}
		b, _ := os.ReadFile(filepath.Join(d.Path, f))
		if bytes.Contains(b, []byte("correct horse")) {
			t.Fatal("passphrase written to disk")
		}
	}
	d2, err := keys.Open(d.Path, pass("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := d2.Recipients()
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(t, rs, d2.Identities()); err != nil {
		t.Fatal(err)
	}
	// Public recipient: encrypt with no secret, decrypt with the dir.
	pub, err := keys.LoadRecipient(filepath.Join(d.Path, keys.FileHPKEPublic))
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(t, []ehrcrypto.Recipient{pub}, d2.Identities()); err != nil {
		t.Fatal(err)
	}
	// Wrong passphrase.
	d3, _ := keys.Open(d.Path, pass("wrong"))
	if _, err := d3.Recipients(); !errors.Is(err, ehrcrypto.ErrNoMatchingKey) || strings.Contains(err.Error(), "wrong\"") {
		t.Fatalf("wrong passphrase: %v", err)
	}
	// Refuses to overwrite.
	if _, err := keys.Init(d.Path, pass("x"), keys.InitOptions{Argon2: testArgon}); !errors.Is(err, ehrcrypto.ErrPolicy) {
		t.Fatalf("overwrite: %v", err)
	}
}

func TestReadableKeyFileRefused(t *testing.T) {
	d := initDir(t, "pw")
	p := filepath.Join(d.Path, keys.FileHPKE)
	os.Chmod(p, 0o640)
	if _, err := keys.Open(d.Path, pass("pw")); !errors.Is(err, ehrcrypto.ErrPolicy) {
		t.Fatalf("group-readable key file: %v", err)
	}
}

func TestAlteredKeyFileMetadata(t *testing.T) {
	d := initDir(t, "pw")
	p := filepath.Join(d.Path, keys.FileKEK)
	b, _ := os.ReadFile(p)
	b = bytes.Replace(b, []byte(`"created": "20`), []byte(`"created": "19`), 1)
	os.WriteFile(p, b, 0o600)
	d2, _ := keys.Open(d.Path, pass("pw"))
	if _, err := d2.Recipients(); err == nil {
		t.Fatal("altered key metadata accepted")
	}
	// Weakened KDF parameters are refused by policy.
	d = initDir(t, "pw")
	p = filepath.Join(d.Path, keys.FileKEK)
	b, _ = os.ReadFile(p)
	b = bytes.Replace(b, []byte(`"time": 2`), []byte(`"time": 1`), 1)
	os.WriteFile(p, b, 0o600)
	d2, _ = keys.Open(d.Path, pass("pw"))
	if _, err := d2.Recipients(); !errors.Is(err, ehrcrypto.ErrPolicy) {
		t.Fatalf("weak argon2: %v", err)
	}
}

func TestRotateDisableList(t *testing.T) {
	d := initDir(t, "pw")
	rsOld, _ := d.Recipients()
	var old bytes.Buffer
	w, _ := ehrcrypto.NewEncryptWriter(&old, rsOld, bind)
	w.Write([]byte("hello"))
	w.Close()
	oldID := rsOld[0].(*ehrcrypto.KeysetRecipient).KeyID()

	newID, err := d.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	d, _ = keys.Open(d.Path, pass("pw"))
	rs, _ := d.Recipients()
	if rs[0].(*ehrcrypto.KeysetRecipient).KeyID() != newID {
		t.Fatal("rotate did not make the new key primary")
	}
	// Old objects still open.
	if _, err := ehrcrypto.NewDecryptReader(bytes.NewReader(old.Bytes()), d.Identities(), bind); err != nil {
		t.Fatal(err)
	}
	list, err := d.List()
	if err != nil || len(list) != 4 {
		t.Fatalf("list: %v %v", list, err)
	}
	for _, k := range list {
		if k.Created.IsZero() || k.Status != "enabled" {
			t.Fatalf("bad info %+v", k)
		}
	}
	if _, err := d.Disable(newID); !errors.Is(err, ehrcrypto.ErrPolicy) {
		t.Fatalf("disabling the primary: %v", err)
	}
	if _, err := d.Disable(oldID); err != nil {
		t.Fatal(err)
	}
	d, _ = keys.Open(d.Path, pass("pw"))
	_, err = ehrcrypto.NewDecryptReader(bytes.NewReader(old.Bytes()), d.Identities(), bind)
	if !errors.Is(err, ehrcrypto.ErrNoMatchingKey) || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("disabled key: %v", err)
	}
	if _, err := d.Disable(42); !errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestSignVerify(t *testing.T) {
	d := initDir(t, "pw")
	s, err := d.Signer()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	paths, err := d.WritePublic(out)
	if err != nil || len(paths) != 2 {
		t.Fatal(paths, err)
	}
	v, err := keys.LoadVerifier(filepath.Join(out, keys.FileVerify))
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := s.Sign("manifest", []byte("m"))
	if err := v.Verify("manifest", []byte("m"), sig); err != nil {
		t.Fatal(err)
	}
	if err := v.Verify("report", []byte("m"), sig); !errors.Is(err, ehrcrypto.ErrCorrupt) {
		t.Fatalf("cross-purpose: %v", err)
	}
	other := initDir(t, "pw")
	s2, _ := other.Signer()
	sig2, _ := s2.Sign("manifest", []byte("m"))
	if err := v.Verify("manifest", []byte("m"), sig2); !errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
		t.Fatalf("foreign signer: %v", err)
	}
	// A secret keyset is refused as a public one.
	if _, err := keys.LoadVerifier(filepath.Join(d.Path, keys.FileSigning)); err == nil {
		t.Fatal("secret file loaded as public keyset")
	}
}

// TestKMSProtectedDir protects the key files with Tink's fake KMS and shows
// that the keyset's associated data is enforced.
func TestKMSProtectedDir(t *testing.T) {
	uri, err := fakekms.NewKeyURI()
	if err != nil {
		t.Fatal(err)
	}
	unlock := keys.Unlock{KMS: func(u string) (tink.AEAD, error) { return fakekms.NewAEAD(u) }}
	dir := filepath.Join(t.TempDir(), "k")
	d, err := keys.Init(dir, unlock, keys.InitOptions{KMSURI: uri})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := d.Recipients()
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(t, rs, d.Identities()); err != nil {
		t.Fatal(err)
	}
	// Swapping the KEK file's purpose metadata breaks its associated data.
	b, _ := os.ReadFile(filepath.Join(dir, keys.FileKEK))
	b = bytes.Replace(b, []byte(`"created": "20`), []byte(`"created": "19`), 1)
	os.WriteFile(filepath.Join(dir, keys.FileKEK), b, 0o600)
	d, _ = keys.Open(dir, unlock)
	if _, err := d.Recipients(); !errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
		t.Fatalf("altered KMS-protected file: %v", err)
	}
}

// TestKMSRecipient wraps DEKs with a (fake) KMS key directly and shows the
// KMS enforces the wrap's associated data.
func TestKMSRecipient(t *testing.T) {
	uri, _ := fakekms.NewKeyURI()
	a, err := fakekms.NewAEAD(uri)
	if err != nil {
		t.Fatal(err)
	}
	r := ehrcrypto.NewKMSRecipient(uri, a)
	id := ehrcrypto.NewKMSIdentity(uri, a)
	if err := roundTrip(t, []ehrcrypto.Recipient{r}, []ehrcrypto.Identity{id}); err != nil {
		t.Fatal(err)
	}
	s, err := r.Wrap(bytes.Repeat([]byte{1}, 32), []byte("ad one"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id.Unwrap(s, []byte("ad one")); err != nil {
		t.Fatal(err)
	}
	if _, err := id.Unwrap(s, []byte("ad two")); !errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
		t.Fatalf("KMS ignored associated data: %v", err)
	}
	// Another KMS key: no matching key.
	uri2, _ := fakekms.NewKeyURI()
	a2, _ := fakekms.NewAEAD(uri2)
	if err := roundTrip(t, []ehrcrypto.Recipient{r}, []ehrcrypto.Identity{ehrcrypto.NewKMSIdentity(uri2, a2)}); !errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
		t.Fatalf("other KMS key: %v", err)
	}
	_ = aead.AES256GCMKeyTemplate
}
