package kms

import (
	"context"
	"errors"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
)

func TestDispatch(t *testing.T) {
	ctx := context.Background()
	if _, err := AEAD(ctx, "fake://x"); !errors.Is(err, ehrcrypto.ErrPolicy) {
		t.Fatalf("unknown scheme: %v", err)
	}
	if _, err := AEAD(ctx, "hcvault://"); !errors.Is(err, ehrcrypto.ErrPolicy) {
		t.Fatalf("malformed vault URI: %v", err)
	}
	if gcpAEAD == nil {
		if _, err := AEAD(ctx, "gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k"); !errors.Is(err, ehrcrypto.ErrPolicy) {
			t.Fatalf("gcp without tag: %v", err)
		}
	}
	// Vault needs no network to build the AEAD.
	if _, err := AEAD(ctx, "hcvault://vault.example:8200/transit/keys/k"); err != nil {
		t.Fatal(err)
	}
	if !Supported("aws-kms://arn:aws:kms:eu-west-1:1:key/x") || Supported("file:///x") {
		t.Fatal("Supported")
	}
}
