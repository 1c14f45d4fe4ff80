package cli

import (
	"crypto/tls"
	"net/http"

	"github.com/urfave/cli/v2"

	"github.com/ehrport/ehrport/storage"
)

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
		pool, err := storage.RootCAs(caFile)
		if err != nil {
			return nil, usagef("--fhir-ca-cert %v", err)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Transport: tr}, nil
}
