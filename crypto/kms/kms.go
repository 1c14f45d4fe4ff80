// Package kms turns a KMS key URI into a Tink AEAD through the official
// tink-go KMS modules:
//
//	aws-kms://arn:aws:kms:REGION:ACCOUNT:key/ID   github.com/tink-crypto/tink-go-awskms/v3
//	hcvault://HOST[:PORT]/transit/keys/NAME       github.com/tink-crypto/tink-go-hcvault/v2 (hcvault.NewAEAD)
//	gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K
//	                                              github.com/tink-crypto/tink-go-gcpkms/v2, only in
//	                                              binaries built with -tags gcpkms (it pulls in gRPC)
//
// Credentials come from each SDK's usual environment: the AWS default
// credential chain; VAULT_TOKEN (and VAULT_CACERT etc.) for Vault, whose
// address is taken from the URI; Application Default Credentials for GCP.
package kms

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	vault "github.com/hashicorp/vault/api"
	"github.com/tink-crypto/tink-go-awskms/v3/integration/awskms"
	"github.com/tink-crypto/tink-go-hcvault/v2/integration/hcvault"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// gcpAEAD is set by gcp.go when built with -tags gcpkms.
var gcpAEAD func(ctx context.Context, uri string) (tink.AEAD, error)

// Supported reports whether uri names a KMS this package dispatches to.
func Supported(uri string) bool {
	for _, p := range []string{"aws-kms://", "gcp-kms://", "hcvault://"} {
		if strings.HasPrefix(uri, p) {
			return true
		}
	}
	return false
}

// AEAD returns the AEAD for the KMS key uri. Errors wrap ErrPolicy for an
// unsupported URI and ErrNoMatchingKey when the KMS client cannot be set up.
func AEAD(ctx context.Context, uri string) (tink.AEAD, error) {
	switch {
	case strings.HasPrefix(uri, "aws-kms://"):
		c, err := awskms.NewClientWithOptions(ctx, uri)
		if err != nil {
			return nil, fmt.Errorf("%w: AWS KMS %s: %v", ehrcrypto.ErrNoMatchingKey, uri, err)
		}
		a, err := c.GetAEAD(uri)
		if err != nil {
			return nil, fmt.Errorf("%w: AWS KMS %s: %v", ehrcrypto.ErrNoMatchingKey, uri, err)
		}
		return a, nil
	case strings.HasPrefix(uri, "hcvault://"):
		u, err := url.Parse(uri)
		if err != nil || u.Host == "" || u.Path == "" {
			return nil, fmt.Errorf("%w: malformed Vault key URI %q (want hcvault://HOST/transit/keys/NAME)", ehrcrypto.ErrPolicy, uri)
		}
		cfg := vault.DefaultConfig()
		cfg.Address = "https://" + u.Host
		c, err := vault.NewClient(cfg)
		if err != nil {
			return nil, fmt.Errorf("%w: Vault %s: %v", ehrcrypto.ErrNoMatchingKey, u.Host, err)
		}
		a, err := hcvault.NewAEAD(u.EscapedPath(), c.Logical())
		if err != nil {
			return nil, fmt.Errorf("%w: Vault key %s: %v", ehrcrypto.ErrNoMatchingKey, uri, err)
		}
		return a, nil
	case strings.HasPrefix(uri, "gcp-kms://"):
		if gcpAEAD == nil {
			return nil, fmt.Errorf("%w: this ehrport was built without GCP KMS support; rebuild with -tags gcpkms", ehrcrypto.ErrPolicy)
		}
		return gcpAEAD(ctx, uri)
	}
	return nil, fmt.Errorf("%w: unsupported KMS key URI %q (want aws-kms://, gcp-kms:// or hcvault://)", ehrcrypto.ErrPolicy, uri)
}
