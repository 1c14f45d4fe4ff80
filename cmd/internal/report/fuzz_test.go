package report

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
)

// FuzzVerify feeds arbitrary report.json and report.json.sig bytes to the
// report verifier (ehrport report verify): it never panics; it accepts only
// the genuine signed bytes; every refusal wraps ErrCorrupt, ErrNoMatchingKey
// or ErrPolicy and names the file at fault. Seeds in
// testdata/fuzz/FuzzVerify.
func FuzzVerify(f *testing.F) {
	s, v, pk := newSigner(f)
	p, err := Write(filepath.Join(f.TempDir(), "r"), sample(), s, pk)
	if err != nil {
		f.Fatal(err)
	}
	goodJSON, _ := os.ReadFile(p.JSON)
	goodSig, _ := os.ReadFile(p.Signature)
	f.Add(goodJSON, goodSig)
	f.Add(append(bytes.Clone(goodJSON), ' '), goodSig)
	dir := f.TempDir()
	jp, sp := filepath.Join(dir, FileJSON), filepath.Join(dir, FileSignature)
	f.Fuzz(func(t *testing.T, rj, sig []byte) {
		if err := os.WriteFile(jp, rj, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(sp, sig, 0o600); err != nil {
			t.Fatal(err)
		}
		r, _, err := Verify(jp, sp, v)
		if err == nil {
			if !bytes.Equal(rj, goodJSON) {
				t.Fatalf("edited report verified:\n%q", rj)
			}
			if r == nil || r.RunID != "r1" {
				t.Fatalf("verified report parsed as %+v", r)
			}
			return
		}
		if !errors.Is(err, ehrcrypto.ErrCorrupt) && !errors.Is(err, ehrcrypto.ErrNoMatchingKey) && !errors.Is(err, ehrcrypto.ErrPolicy) {
			t.Fatalf("undocumented error: %v", err)
		}
		if !strings.Contains(err.Error(), jp) && !strings.Contains(err.Error(), sp) {
			t.Fatalf("error names neither file: %v", err)
		}
	})
}
