package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
)

func TestRewrapRekey(t *testing.T) {
	t.Setenv("EHRPORT_PASSPHRASE", "unit passphrase")
	ctx := context.Background()
	tmp := t.TempDir()
	k1, k2 := filepath.Join(tmp, "k1"), filepath.Join(tmp, "k2")
	initTestKeys(t, k1)
	initTestKeys(t, k2)
	in := filepath.Join(tmp, "in")
	os.WriteFile(in, bytes.Repeat([]byte("x"), 2<<20), 0o600)
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
