// Package fhirtest gives integration tests an empty FHIR R4 server of their
// own on the test FHIR server that scripts/fhirserver.sh starts (make test
// starts it and exports EHRPORT_FHIRSERVER_ROOT).
package fhirtest

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"testing"
)

// Tenant returns the FHIR base URL of a fresh, empty repository (a tenant
// named prefix-<random>), dropped when the test ends. It fails the test
// when the test server is not up.
func Tenant(t testing.TB, prefix string) string {
	t.Helper()
	root := os.Getenv("EHRPORT_FHIRSERVER_ROOT")
	if root == "" {
		t.Fatal("the test FHIR server is not up: run `make fhirserver-up` and source .cache/fhirserver/env (make test does both)")
	}
	var b [6]byte
	rand.Read(b[:])
	name := root + "/tenant/" + prefix + "-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		req, err := http.NewRequest(http.MethodDelete, name, nil)
		if err != nil {
			return
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	})
	return name + "/fhir"
}
