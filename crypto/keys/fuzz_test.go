package keys

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tink-crypto/tink-go/v2/tink"
)

// FuzzKeysetLoader feeds arbitrary bytes to the key-file and public-keyset
// parsers: they must classify, never panic, and never call the KDF or KMS
// with parameters outside the accepted bounds.
func FuzzKeysetLoader(f *testing.F) {
	dir := f.TempDir()
	if _, err := Init(dir, Unlock{Passphrase: func() ([]byte, error) { return []byte("pw"), nil }}, InitOptions{Argon2: Argon2Params{Time: 2, MemoryKiB: 19 * 1024, Threads: 1}}); err != nil {
		f.Fatal(err)
	}
	for _, n := range []string{FileKEK, FileHPKE, FileHPKEPublic, FileVerify} {
		b, _ := os.ReadFile(filepath.Join(dir, n))
		f.Add(b)
	}
	f.Add([]byte(`{"format":"ehrport-keyset/v1","purpose":"kek","protection":{"kind":"argon2id","argon2":{"time":4294967295,"memory_kib":4294967295,"threads":255}},"keys":[],"keyset":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		// A public keyset parses only if it holds no secrets (Tink checks).
		_, _ = parsePublic(b, "fuzz")
		fl, err := parseFile(b, "fuzz", PurposeKEK)
		if err != nil {
			return
		}
		d := &Dir{Path: t.TempDir(), kdf: map[string]tink.AEAD{}, unlock: Unlock{
			Passphrase: func() ([]byte, error) { return []byte("pw"), nil },
			KMS:        func(string) (tink.AEAD, error) { t.Skip("kms"); return nil, nil },
		}}
		p := fl.Protection
		if p.Kind == "argon2id" && p.Argon2 != nil && p.Argon2.MemoryKiB > 64*1024 {
			// Within bounds but too slow for fuzzing; bounds are tested below.
			if p.Argon2.MemoryKiB > maxArgonMem {
				if _, err := d.masterAEAD(p); err == nil {
					t.Fatal("out-of-bounds argon2 memory accepted")
				}
			}
			return
		}
		if p.Kind == "argon2id" && p.Argon2 != nil && p.Argon2.Time > 4 {
			return
		}
		m, err := d.masterAEAD(p)
		if err != nil {
			return
		}
		_ = m
	})
}
