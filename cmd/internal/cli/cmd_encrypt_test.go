package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
)

func TestEncryptDecryptInspect(t *testing.T) {
	t.Setenv("EHRPORT_PASSPHRASE", "unit passphrase")
	ctx := context.Background()
	tmp := t.TempDir()
	k := filepath.Join(tmp, "k")
	initTestKeys(t, k)
	in := filepath.Join(tmp, "in")
	os.WriteFile(in, []byte(strings.Repeat("fhir ", 300000)), 0o600)
	b := ehrcrypto.Binding{ExportID: "e1", Path: "Patient.ndjson"}
	g, out := testGlobals()
	ct := filepath.Join(tmp, "ct")
	if err := (&encryptOptions{globals: g, Keys: k, Escrow: []string{filepath.Join(k, "hpke.pub.json")}, Binding: b, In: in, Out: ct}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	dec := filepath.Join(tmp, "dec")
	if err := (&decryptOptions{globals: g, Keys: k, Binding: b, In: ct, Out: dec}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(in)
	c, _ := os.ReadFile(dec)
	if string(a) != string(c) {
		t.Fatal("round trip")
	}
	out.Reset()
	g.JSON = true
	if err := (&inspectOptions{globals: g, File: ct}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"consistent": true`) || !strings.Contains(out.String(), `"role": "escrow"`) {
		t.Fatal(out.String())
	}
	// Other export id: corrupt, exit 3, no output.
	err := (&decryptOptions{globals: g, Keys: k, Binding: ehrcrypto.Binding{ExportID: "e2", Path: b.Path}, In: ct, Out: dec + "2"}).Run(ctx)
	if ExitCode(ctx, err) != ExitCrypto || !errors.Is(err, ehrcrypto.ErrCorrupt) {
		t.Fatalf("other export: %v", err)
	}
	if _, err := os.Stat(dec + "2"); err == nil {
		t.Fatal("output left behind")
	}
	// Encrypting for nobody is a usage error.
	if err := (&encryptOptions{globals: g, Binding: b, In: in, Out: ct + "x"}).Run(ctx); !errors.Is(err, ErrUsage) {
		t.Fatal(err)
	}
}
