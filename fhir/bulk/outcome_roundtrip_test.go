package bulk

import (
	"strings"
	"testing"
)

// A manifest that is STU4 only because of `"outcome": []` stays STU4 when
// written back: the empty array must survive omitempty (fuzz finding).
func TestEmptyOutcomeKeepsSTU4(t *testing.T) {
	m, err := ParseManifest("t", []byte(`{"transactionTime":"2021-01-01T00:00:00Z","requiresAccessToken":true,"output":[],"outcome":[]}`))
	if err != nil || m.Version != STU4 {
		t.Fatalf("parse: %v, version %v", err, m.Version)
	}
	out, err := m.MarshalJSON()
	if err != nil || !strings.Contains(string(out), `"outcome":[]`) {
		t.Fatalf("marshal: %v: %s", err, out)
	}
	m2, err := ParseManifest("t2", out)
	if err != nil || m2.Version != STU4 {
		t.Fatalf("re-parse: %v, version %v", err, m2.Version)
	}
}
