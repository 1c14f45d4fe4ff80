//go:build gcpkms

package kms

import (
	"context"
	"fmt"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/tink-crypto/tink-go-gcpkms/v2/integration/gcpkms"
	"github.com/tink-crypto/tink-go/v2/tink"
)

func init() {
	gcpAEAD = func(ctx context.Context, uri string) (tink.AEAD, error) {
		c, err := gcpkms.NewClientWithOptions(ctx, uri)
		if err != nil {
			return nil, fmt.Errorf("%w: GCP KMS %s: %v", ehrcrypto.ErrNoMatchingKey, uri, err)
		}
		a, err := c.GetAEAD(uri)
		if err != nil {
			return nil, fmt.Errorf("%w: GCP KMS %s: %v", ehrcrypto.ErrNoMatchingKey, uri, err)
		}
		return a, nil
	}
}
