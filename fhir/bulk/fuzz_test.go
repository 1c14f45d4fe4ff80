package bulk

import (
	"errors"
	"reflect"
	"testing"

	"github.com/ehrport/ehrport/fhir"
)

// FuzzParseManifest: parsing never panics; a failure always wraps
// fhir.ErrBadInput; a success re-marshals to a manifest that parses to the
// same value and marshals to the same bytes (a fixpoint after one round).
// Seeds live in testdata/fuzz/FuzzParseManifest.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"transactionTime":"2021-01-01T00:00:00Z","requiresAccessToken":false,"output":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest("fuzz", data)
		if err != nil {
			if !errors.Is(err, fhir.ErrBadInput) {
				t.Fatalf("error does not wrap ErrBadInput: %v", err)
			}
			return
		}
		out, err := m.MarshalJSON()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		m2, err := ParseManifest("fuzz2", out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		a, b := *m, *m2
		a.Warnings, b.Warnings = nil, nil
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("round trip differs:\n%+v\n%+v", a, b)
		}
		out2, err := m2.MarshalJSON()
		if err != nil || string(out) != string(out2) {
			t.Fatalf("marshal not a fixpoint:\n%s\n%s", out, out2)
		}
	})
}
