package keys_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/keys"
)

// Secret key files are 0600 and the folder 0700 even when the umask would
// allow more, and they stay so after rotate and disable rewrite them.
// Public keysets are readable by others, as they are meant to be shared.
func TestKeyFilesPrivateWhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	d := initDir(t, "pw")
	if _, err := d.Rotate(); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		st, err := os.Stat(d.Path)
		if err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: key folder mode %v, %v", when, st.Mode().Perm(), err)
		}
		for _, f := range []string{keys.FileKEK, keys.FileHPKE, keys.FileSigning} {
			st, err := os.Stat(filepath.Join(d.Path, f))
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("%s: %s mode %v, %v", when, f, st.Mode().Perm(), err)
			}
		}
		for _, f := range []string{keys.FileHPKEPublic, keys.FileVerify} {
			st, err := os.Stat(filepath.Join(d.Path, f))
			if err != nil || st.Mode().Perm()&0o077 == 0 || st.Mode().Perm()&0o022 != 0 {
				t.Errorf("%s: public %s mode %v, %v", when, f, st.Mode().Perm(), err)
			}
		}
	}
	check("after init and rotate")
	infos, err := d.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range infos {
		if i.Purpose == keys.PurposeKEK && !i.Primary {
			if _, err := d.Disable(i.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	check("after disable")
}

// Any secret key file that group or others can read, or write, is refused
// before it is parsed, with the file and the fix named.
func TestKeyFileReadableByOthersRefused(t *testing.T) {
	d := initDir(t, "pw")
	for _, f := range []string{keys.FileKEK, keys.FileHPKE, keys.FileSigning} {
		for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660, 0o606} {
			p := filepath.Join(d.Path, f)
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
			_, err := keys.Open(d.Path, pass("pw"))
			if !errors.Is(err, ehrcrypto.ErrPolicy) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "chmod 600") {
				t.Errorf("%s mode %04o: %v", f, mode, err)
			}
			os.Chmod(p, 0o600)
		}
	}
	if _, err := keys.Open(d.Path, pass("pw")); err != nil {
		t.Fatal(err)
	}
}

// A key file whose protection block is out of policy (a denial-of-service
// argon2 cost) is refused before any KDF work, and the error names the
// file.
func TestOutOfPolicyProtectionNamesFile(t *testing.T) {
	d := initDir(t, "pw")
	p := filepath.Join(d.Path, keys.FileKEK)
	b, _ := os.ReadFile(p)
	b = bytes.Replace(b, []byte(`"memory_kib": 19456`), []byte(`"memory_kib": 4294967295`), 1)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	d2, _ := keys.Open(d.Path, pass("pw"))
	_, err := d2.Recipients()
	if !errors.Is(err, ehrcrypto.ErrPolicy) || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v, want a policy error naming %s", err, p)
	}
}

// The passphrase is never written into any file of the key folder, nor
// into an error about a wrong passphrase.
func TestPassphraseNeverStored(t *testing.T) {
	const secret = "PlantedPassphrase4711"
	d := initDir(t, secret)
	ents, _ := os.ReadDir(d.Path)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(d.Path, e.Name()))
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the passphrase", e.Name())
		}
	}
	d2, _ := keys.Open(d.Path, pass(secret+"x"))
	if _, err := d2.Recipients(); err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("wrong passphrase: %v", err)
	}
}
