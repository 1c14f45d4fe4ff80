package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/ehrport/ehrport/crypto/keys"
)

// TLS is verified against the configured CA, with no way around it: the
// same S3 server (gofakes3 behind TLS, a certificate for 127.0.0.1 signed by
// a CA made here) is usable with that CA as ca_cert, and refused (exit 4,
// a certificate error) with another CA or with none. Every run is a real
// ehrport process.
func TestTLSVerifiedAgainstConfiguredCA(t *testing.T) {
	dir := t.TempDir()
	rightCA, rightKey := newCA(t, "ehrport test CA")
	wrongCA, _ := newCA(t, "some other CA")
	writePEM(t, filepath.Join(dir, "right.pem"), rightCA.Raw)
	writePEM(t, filepath.Join(dir, "wrong.pem"), wrongCA.Raw)

	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, rightCA, &leafKey.PublicKey, rightKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(gofakes3.New(s3mem.New()).Server())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: leafKey}}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)

	unlock := keys.Unlock{Passphrase: func() ([]byte, error) { return []byte(badPassphrase), nil }}
	kdir := filepath.Join(dir, "keys")
	if _, err := keys.Init(kdir, unlock, keys.InitOptions{Argon2: keys.Argon2Params{Time: 2, MemoryKiB: 19 * 1024, Threads: 1}}); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "in.ndjson")
	if err := os.WriteFile(in, []byte(`{"resourceType":"Patient","id":"p1"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(ca string) []string {
		e := append(os.Environ(), "EHRPORT_PASSPHRASE="+badPassphrase,
			"EHRPORT_STORE_TLSCLOUD_ENDPOINT="+srv.URL, "EHRPORT_STORE_TLSCLOUD_ACCESS_KEY=tls-access",
			"EHRPORT_STORE_TLSCLOUD_SECRET_KEY=tls-secret", "EHRPORT_STORE_TLSCLOUD_PATH_STYLE=path",
			"EHRPORT_STORE_TLSCLOUD_REGION=us-east-1")
		if ca != "" {
			e = append(e, "EHRPORT_STORE_TLSCLOUD_CA_CERT="+filepath.Join(dir, ca))
		}
		return e
	}

	// The right CA: the bucket is created, reached over TLS, and an export
	// lands there.
	res := runEhrport(t, env("right.pem"), []string{"stores", "check", "--create", "tlscloud:bucket"})
	if !strings.Contains(res.stdout, "TLS 1.") || strings.Contains(res.stderr, "certificate") {
		t.Fatalf("right CA: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = runEhrport(t, env("right.pem"), []string{"export", "--from", in, "--to", "tlscloud:bucket/x", "--keys", kdir})
	if res.code != 0 {
		t.Fatalf("export with the right CA: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}

	// Another CA, or none (the system roots): refused, nothing sent.
	for _, ca := range []string{"wrong.pem", ""} {
		for _, args := range [][]string{
			{"stores", "check", "tlscloud:bucket"},
			{"export", "--from", in, "--to", "tlscloud:bucket/y", "--keys", kdir},
			{"verify", "--at", "tlscloud:bucket/x"},
		} {
			res := runEhrport(t, env(ca), args)
			if res.code != 4 || !strings.Contains(res.stderr, "certificate") {
				t.Errorf("CA %q, ehrport %s: exit %d, want 4 with a certificate error\n%s%s", ca, strings.Join(args, " "), res.code, res.stdout, res.stderr)
			}
			if strings.Contains(res.stdout+res.stderr, "tls-secret") {
				t.Errorf("CA %q, ehrport %s: the secret key is shown", ca, strings.Join(args, " "))
			}
		}
	}
}

func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func writePEM(t *testing.T, path string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}
