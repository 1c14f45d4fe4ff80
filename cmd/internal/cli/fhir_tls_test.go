package cli

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A FHIR server whose certificate comes from a CA the system does not
// know is refused, with a hint, until --fhir-ca-cert names that CA; a file
// without a certificate is a usage error naming it.
func TestExportFHIRCACert(t *testing.T) {
	t.Setenv("EHRPORT_PASSPHRASE", "unit passphrase")
	t.Setenv("EHRPORT_BULK_TOKEN", "")
	t.Setenv("EHRPORT_FHIR_CA_CERT", "")
	tmp := t.TempDir()
	keys := filepath.Join(tmp, "k")
	initTestKeys(t, keys)
	keyFile, _ := writeSMARTKey(t, tmp, false, 0o600)
	srv := &smartServer{clientID: "ehrport-test"}
	srv.Server = httptest.NewTLSServer(http.HandlerFunc(srv.serve))
	t.Cleanup(srv.Close)
	ca := filepath.Join(tmp, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(tmp, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(to string, extra ...string) (int, string) {
		var out bytes.Buffer
		args := append([]string{"ehrport", "export", "--from", srv.URL + "/fhir", "--to", filepath.Join(tmp, to), "--keys", keys,
			"--smart-client-id", "ehrport-test", "--smart-key", keyFile}, extra...)
		code := Main(context.Background(), args, &out, &out)
		return code, out.String()
	}
	if code, out := run("unknown-ca"); code != ExitStorage || !strings.Contains(out, "certificate") || !strings.Contains(out, "--fhir-ca-cert") {
		t.Fatalf("unknown CA: exit %d (want %d, naming the certificate and --fhir-ca-cert)\n%s", code, ExitStorage, out)
	}
	// With a static token, the first request is the kick-off itself.
	t.Setenv("EHRPORT_BULK_TOKEN", "planted-static-token")
	var out bytes.Buffer
	code := Main(context.Background(), []string{"ehrport", "export", "--from", srv.URL + "/fhir", "--to", filepath.Join(tmp, "static"), "--keys", keys}, &out, &out)
	if code != ExitStorage || !strings.Contains(out.String(), "--fhir-ca-cert") {
		t.Fatalf("unknown CA, static token: exit %d\n%s", code, out.String())
	}
	t.Setenv("EHRPORT_BULK_TOKEN", "")
	if code, out := run("not-pem", "--fhir-ca-cert", notPEM); code != ExitUsage || !strings.Contains(out, notPEM+" holds no PEM certificate") {
		t.Fatalf("--fhir-ca-cert without a certificate: exit %d\n%s", code, out)
	}
	if code, out := run("trusted", "--fhir-ca-cert", ca); code != ExitOK || !strings.Contains(out, "Exported 2 resources") {
		t.Fatalf("--fhir-ca-cert: exit %d\n%s", code, out)
	}
	t.Setenv("EHRPORT_FHIR_CA_CERT", ca)
	if code, out := run("trusted-env"); code != ExitOK {
		t.Fatalf("EHRPORT_FHIR_CA_CERT: exit %d\n%s", code, out)
	}

	// restore --to-fhir reaches the server the same way. This test server
	// is no FHIR R4 endpoint for restore, so getting past TLS is the point.
	restore := func(extra ...string) (int, string) {
		var out bytes.Buffer
		args := append([]string{"ehrport", "restore", "--from", filepath.Join(tmp, "trusted"), "--keys", keys, "--to-fhir", srv.URL + "/fhir"}, extra...)
		code := Main(context.Background(), args, &out, &out)
		return code, out.String()
	}
	t.Setenv("EHRPORT_FHIR_CA_CERT", "")
	if code, out := restore(); code != ExitStorage || !strings.Contains(out, "--fhir-ca-cert") {
		t.Fatalf("restore --to-fhir, unknown CA: exit %d\n%s", code, out)
	}
	if code, out := restore("--fhir-ca-cert", ca); code == ExitOK || strings.Contains(out, "certificate") {
		t.Fatalf("restore --to-fhir --fhir-ca-cert: exit %d, still a certificate problem or a success against a non-FHIR server\n%s", code, out)
	}
}
