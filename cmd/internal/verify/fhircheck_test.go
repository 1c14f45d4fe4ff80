package verify

import (
	"strings"
	"testing"

	"github.com/ehrport/ehrport/fhir"
)

// TestCheckFHIRErrorsBounded: Bundles the checker cannot read are findings,
// the first samplesPerCode listed and the rest counted in one more.
func TestCheckFHIRErrorsBounded(t *testing.T) {
	lines := make(chan fhirLine, 64)
	for i := range samplesPerCode + 10 {
		lines <- fhirLine{raw: []byte(`{"resourceType":"Bundle","type":`), pos: fhir.Position{File: "Bundle.000.ndjson", Line: int64(i + 1)}, bundle: true}
	}
	close(lines)
	res := (&verifier{}).checkFHIR(lines)
	errs := res.samples["error"]
	if len(errs) != samplesPerCode+1 || !strings.Contains(errs[samplesPerCode].Message, "10 more") {
		t.Fatalf("%d error findings, last %+v", len(errs), errs[len(errs)-1])
	}
	for _, f := range errs[:samplesPerCode] {
		if f.Code != "fhir-error" || f.Object != "Bundle.000.ndjson" {
			t.Fatalf("finding %+v", f)
		}
	}
}
