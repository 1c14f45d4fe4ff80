package crypto_test

import (
	"crypto/hkdf"
	"crypto/sha256"

	"github.com/tink-crypto/tink-go/v2/insecuresecretdataaccess"
	"github.com/tink-crypto/tink-go/v2/secretdata"
)

func hkdfLabel(dek []byte, label string) []byte {
	k, err := hkdf.Key(sha256.New, dek, nil, label, 32)
	if err != nil {
		panic(err)
	}
	return k
}

func secretFrom(b []byte) secretdata.Bytes {
	return secretdata.NewBytesFromData(b, insecuresecretdataaccess.Token{})
}
