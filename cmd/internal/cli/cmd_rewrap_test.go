package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
)

// twoKeyDirs makes the key directories k1 and k2 and a file "in" of size
// bytes in a temporary folder.
func twoKeyDirs(t *testing.T, size int) (tmp, k1, k2, in string) {
	t.Setenv("EHRPORT_PASSPHRASE", "unit passphrase")
	tmp = t.TempDir()
	k1, k2 = filepath.Join(tmp, "k1"), filepath.Join(tmp, "k2")
	initTestKeys(t, k1)
	initTestKeys(t, k2)
	in = filepath.Join(tmp, "in")
	if err := os.WriteFile(in, bytes.Repeat([]byte("x"), size), 0o600); err != nil {
		t.Fatal(err)
	}
	return tmp, k1, k2, in
}

func TestRewrapRekey(t *testing.T) {
	ctx := context.Background()
	tmp, k1, k2, in := twoKeyDirs(t, 2<<20)
	b := ehrcrypto.Binding{Path: "p"}
	g, out := testGlobals()
	ct := filepath.Join(tmp, "ct")
	if err := (&encryptOptions{globals: g, Keys: k1, Binding: b, In: in, Out: ct}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	rw := filepath.Join(tmp, "rw")
	out.Reset()
	if err := (&rewrapOptions{globals: g, Keys: k1, ToKeys: k2, In: ct, Out: rw}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out.Bytes(), []byte("payload bytes unchanged")) {
		t.Fatal(out.String())
	}
	x, _ := os.ReadFile(ct)
	y, _ := os.ReadFile(rw)
	hx, _ := ehrcrypto.ParseHeader(bytes.NewReader(x))
	hy, _ := ehrcrypto.ParseHeader(bytes.NewReader(y))
	if !bytes.Equal(x[hx.Len():], y[hy.Len():]) {
		t.Fatal("rewrap changed the payload")
	}
	if err := (&decryptOptions{globals: g, Keys: k1, Binding: b, In: rw, Out: filepath.Join(tmp, "o")}).Run(ctx); !errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
		t.Fatalf("old key after rewrap: %v", err)
	}
	// Remove by id, add the public recipient of k1 back.
	out.Reset()
	g.JSON = true
	if err := (&rewrapOptions{globals: g, Keys: k2, Add: []string{filepath.Join(k1, "hpke.pub.json")}, In: rw, Out: rw + "2"}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := (&decryptOptions{globals: g, Keys: k1, Binding: b, In: rw + "2", Out: filepath.Join(tmp, "o2")}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	rk := filepath.Join(tmp, "rk")
	out.Reset()
	if err := (&rekeyOptions{globals: g, Keys: k2, Binding: b, In: rw, Out: rk}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out.Bytes(), []byte(`"dek_changed": true`)) {
		t.Fatal(out.String())
	}
	z, _ := os.ReadFile(rk)
	hz, _ := ehrcrypto.ParseHeader(bytes.NewReader(z))
	if hz.Commitment == hy.Commitment {
		t.Fatal("rekey kept the DEK")
	}
	if err := (&rewrapOptions{globals: g, Keys: k2, Remove: []string{"abc"}, In: rw, Out: rw + "3"}).Run(ctx); !errors.Is(err, ErrUsage) {
		t.Fatal(err)
	}
}

// TestRekeyEscrow: rekey refuses to drop an escrow recipient silently; it
// keeps it when given again and drops it only with --drop-escrow, saying so.
func TestRekeyEscrow(t *testing.T) {
	ctx := context.Background()
	tmp, k1, auditor, in := twoKeyDirs(t, 3<<20)
	escrowPub := filepath.Join(auditor, "hpke.pub.json")
	b := ehrcrypto.Binding{Path: "p"}
	g, out := testGlobals()
	ct := filepath.Join(tmp, "ct")
	if err := (&encryptOptions{globals: g, Keys: k1, Escrow: []string{escrowPub}, Binding: b, In: in, Out: ct}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	rk := filepath.Join(tmp, "rk")
	err := (&rekeyOptions{globals: g, Keys: k1, Binding: b, In: ct, Out: rk}).Run(ctx)
	if !errors.Is(err, ehrcrypto.ErrPolicy) || ExitCode(ctx, err) != ExitCrypto || !strings.Contains(err.Error(), "--escrow") {
		t.Fatalf("rekey dropping escrow: %v", err)
	}
	if _, serr := os.Stat(rk); serr == nil {
		t.Fatal("refused rekey left OUT")
	}
	// Given again: the auditor still opens the rekeyed file.
	if err := (&rekeyOptions{globals: g, Keys: k1, Escrow: []string{escrowPub}, Binding: b, In: ct, Out: rk}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := (&decryptOptions{globals: g, Keys: auditor, Binding: b, In: rk, Out: filepath.Join(tmp, "o1")}).Run(ctx); err != nil {
		t.Fatalf("escrow after rekey: %v", err)
	}
	// Dropped knowingly: a warning names it, and the auditor is locked out.
	out.Reset()
	if err := (&rekeyOptions{globals: g, Keys: k1, DropEscrow: true, Binding: b, In: ct, Out: rk + "2"}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "warning: escrow recipient(s) dropped") || !strings.Contains(out.String(), "hpke-x25519 key") {
		t.Fatal(out.String())
	}
	if err := (&decryptOptions{globals: g, Keys: auditor, Binding: b, In: rk + "2", Out: filepath.Join(tmp, "o2")}).Run(ctx); !errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
		t.Fatalf("dropped escrow: %v", err)
	}
	got, _ := os.ReadFile(filepath.Join(tmp, "o1"))
	want, _ := os.ReadFile(in)
	if !bytes.Equal(got, want) {
		t.Fatal("rekeyed plaintext differs")
	}
	// An escrow that is the HPKE key of OLD is carried over by itself.
	ct2 := filepath.Join(tmp, "ct2")
	if err := (&encryptOptions{globals: g, Keys: auditor, Escrow: []string{escrowPub}, Binding: b, In: in, Out: ct2}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := (&rekeyOptions{globals: g, Keys: auditor, Binding: b, In: ct2, Out: rk + "3"}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "escrow kept") {
		t.Fatal(out.String())
	}
	f, _ := os.Open(rk + "3")
	h, err := ehrcrypto.ParseHeader(f)
	f.Close()
	if err != nil || len(h.Stanzas) != 2 || h.Stanzas[1].Role != ehrcrypto.RoleEscrow {
		t.Fatalf("carried escrow: %v %+v", err, h)
	}
}
