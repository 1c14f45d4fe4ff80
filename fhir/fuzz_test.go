package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

// FuzzNDJSONReader feeds arbitrary bytes to the NDJSON reader: it must
// never panic, every resource it yields must be exactly json.Compact of its
// line, and the validator must cope with whatever it yields.
func FuzzNDJSONReader(f *testing.F) {
	f.Add([]byte(pat + "\n\n" + pat))
	f.Add([]byte("{\"resourceType\":\"Observation\",\"id\":\"o\",\"v\":1.50,\"s\":\"\\u00e9\"}\r\n[1,2]\n{"))
	f.Add([]byte("\xEF\xBB\xBF{\"resourceType\":\"Patient\",\"contained\":[{\"resourceType\":\"Patient\"}],\"a\":{\"reference\":\"#x\"}}"))
	v := NewValidator(ValidatorOptions{})
	f.Fuzz(func(t *testing.T, data []byte) {
		o := &WalkOptions{MaxResourceBytes: 4096, MaxDepth: 32}
		src := newNDJSONSource("fuzz.ndjson", io.NopCloser(bytes.NewReader(data)), o)
		for i := 0; i < 10000; i++ {
			it, err := src.next()
			if err == io.EOF {
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			switch it.Kind {
			case KindResource:
				var want bytes.Buffer
				if err := json.Compact(&want, it.Raw); err != nil || !bytes.Equal(want.Bytes(), it.Raw) {
					t.Fatalf("yielded %q, not compact valid JSON (%v)", it.Raw, err)
				}
				v.Check(it.Raw, it.Pos, CheckContext{})
			case KindInvalid:
				if !errors.Is(it.Err, ErrBadInput) {
					t.Fatalf("invalid item without ErrBadInput: %v", it.Err)
				}
				if it.Raw != nil && json.Valid(it.Raw) {
					// valid JSON rejected: only allowed for the depth cap
					if _, err := compactValue(nil, it.Raw, 10000); err == nil && !bytes.Contains([]byte(it.Err.Error()), []byte("nesting")) {
						t.Fatalf("valid line rejected: %q: %v", it.Raw, it.Err)
					}
				}
			}
		}
	})
}

// FuzzBundleReader streams arbitrary bytes as a Bundle: no panics; when the
// stream succeeds its output is json.Compact of the input, and every entry
// is valid compact JSON whose resource the validator can check.
func FuzzBundleReader(f *testing.F) {
	f.Add([]byte(`{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:1","resource":` + pat + `}]}`))
	f.Add([]byte(`{"entry":[],"resourceType":"Bundle"}`))
	f.Add([]byte(`{"resourceType":"Bundle","entry":[{"request":{"method":"POST","url":"Patient"}},1,"x"]}`))
	v := NewValidator(ValidatorOptions{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		o := &WalkOptions{MaxResourceBytes: 4096, MaxDepth: 32}
		bs := newBundleStream(bytes.NewReader(data), &out, o)
		var ef entryFields
		for i := 0; i < 10000; i++ {
			raw, err := bs.next()
			if err == io.EOF {
				var want bytes.Buffer
				if json.Compact(&want, data) != nil || !bytes.Equal(want.Bytes(), out.Bytes()) {
					t.Fatalf("stream accepted %q, output %q", data, out.Bytes())
				}
				return
			}
			if err != nil {
				return
			}
			if !json.Valid(raw) {
				t.Fatalf("entry not valid JSON: %q", raw)
			}
			if ef.read(raw) == nil && ef.res.end > 0 {
				v.Check(raw[ef.res.start:ef.res.end], Position{File: "f", Entry: i}, CheckContext{PathPrefix: "Bundle.entry.resource"})
			}
		}
	})
}
