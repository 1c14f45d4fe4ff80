package fhir

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestNewBundleBytes(t *testing.T) {
	raw := []byte(`{"resourceType":"Bundle","id":"b1","type":"collection","entry":[{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient","id":"p1"}},{"resource":{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}}]}`)
	b, err := NewBundleBytes(raw, Position{File: "Bundle.000.ndjson.ehr", Line: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.Type != "collection" || b.ID != "b1" || b.Pos.Entry != -1 {
		t.Errorf("bundle = %+v", b)
	}
	var n int
	if err := b.Entries(func(e *Entry) error { n++; return nil }); err != nil || n != 2 {
		t.Fatalf("entries = %d, %v", n, err)
	}
	// It streams the same bytes twice, as a file-backed Bundle does.
	var out bytes.Buffer
	if _, err := b.WriteTo(&out); err != nil || !bytes.Equal(out.Bytes(), raw) {
		t.Fatalf("WriteTo = %q, %v", out.Bytes(), err)
	}
	// Checked like an exported Bundle: the reference resolves inside it.
	ck := NewChecker(CheckerOptions{Policy: PolicyFail})
	if _, err := ck.Item(&Item{Kind: KindBundle, Pos: b.Pos, Bundle: b}); err != nil {
		t.Fatal(err)
	}
	if err := ck.Finish(); err != nil {
		t.Fatalf("finish: %v", err)
	}
	for _, bad := range []string{`{"resourceType":"Patient","id":"x"}`, `not json`} {
		if _, err := NewBundleBytes([]byte(bad), Position{File: "f"}, nil); !errors.Is(err, ErrBadInput) {
			t.Errorf("%s: %v, want ErrBadInput", bad, err)
		}
	}
}

// A Bundle whose entry is not an array, or whose entry's resource is not an
// object, is bad input with a message saying so, never silently accepted.
func TestBundleShapeErrors(t *testing.T) {
	for raw, want := range map[string]string{
		`{"resourceType":"Bundle","type":"collection","entry":"x"}`:                "Bundle.entry must be a JSON array",
		`{"resourceType":"Bundle","type":"collection","entry":[{"resource":"x"}]}`: "(Bundle.entry.resource) must be a JSON object",
	} {
		b, err := NewBundleBytes([]byte(raw), Position{File: "b.json"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = b.Entries(func(*Entry) error { return nil })
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", raw, err, want)
		}
	}
}
