package cli

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"

	"github.com/urfave/cli/v2"
)

// maxCABundleBytes bounds what is read as a CA bundle.
const maxCABundleBytes = 4 << 20

// fhirCAFlag lets a FHIR server with a certificate from the hospital's own
// CA be verified, as a store's ca_cert does for S3: there is no option to
// skip verification.
func fhirCAFlag() cli.Flag {
	return &cli.StringFlag{Name: "fhir-ca-cert", EnvVars: []string{"EHRPORT_FHIR_CA_CERT"}, TakesFile: true,
		Usage: "verify FHIR servers against the CA certificates in `FILE` (PEM) besides the system roots"}
}

// fhirHTTPClient returns the HTTP client for FHIR servers: its own
// transport keeping up to conns idle connections per host, TLS 1.2 or
// later, verified against the system roots plus those in caFile when given.
func fhirHTTPClient(caFile string, conns int) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(conns, 2)
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := readCABundle(caFile)
		if err != nil {
			return nil, err
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usagef("--fhir-ca-cert %s holds no PEM certificate: give the CA's certificate in PEM form (-----BEGIN CERTIFICATE-----)", caFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Transport: tr}, nil
}

func readCABundle(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("--fhir-ca-cert: %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCABundleBytes+1))
	if err != nil {
		return nil, usagef("--fhir-ca-cert %s: %v", path, err)
	}
	if len(b) > maxCABundleBytes {
		return nil, usagef("--fhir-ca-cert %s is over %d MiB: give the CA's certificate, not a whole store", path, maxCABundleBytes>>20)
	}
	return b, nil
}
