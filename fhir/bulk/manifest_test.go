package bulk

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ehrport/ehrport/fhir"
)

func TestParseManifestSTU3(t *testing.T) {
	in := `{"transactionTime":"2021-01-01T00:00:00Z","request":"https://x/fhir/$export","requiresAccessToken":true,
	 "outputOrganizedBy":"","output":[{"type":"Patient","url":"https://x/o/1.ndjson","count":5},
	 {"type":"Observation","url":"https://x/o/2.ndjson","continuesInFile":"3.ndjson"}],
	 "deleted":[{"type":"Bundle","url":"https://x/d/1.ndjson","count":0}],
	 "error":[{"type":"OperationOutcome","url":"https://x/e/1.ndjson","count":2}],
	 "extension":{ "https://example.com/p" : true }}`
	m, err := ParseManifest("inline", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := &Manifest{
		Version: STU3, TransactionTime: "2021-01-01T00:00:00Z", Request: "https://x/fhir/$export", RequiresAccessToken: true,
		Output: []File{
			{Kind: KindOutput, Type: "Patient", URL: "https://x/o/1.ndjson", Count: 5, HasCount: true, RequiresAccessToken: true},
			{Kind: KindOutput, Type: "Observation", URL: "https://x/o/2.ndjson", ContinuesInFile: "3.ndjson", RequiresAccessToken: true},
		},
		Deleted:   []File{{Kind: KindDeleted, Type: "Bundle", URL: "https://x/d/1.ndjson", HasCount: true, RequiresAccessToken: true}},
		Errors:    []File{{Kind: KindError, Type: "OperationOutcome", URL: "https://x/e/1.ndjson", Count: 2, HasCount: true, RequiresAccessToken: true}},
		Extension: json.RawMessage(`{"https://example.com/p":true}`),
	}
	warnings := m.Warnings
	m.Warnings = nil
	if !reflect.DeepEqual(m, want) {
		t.Errorf("got  %+v\nwant %+v", m, want)
	}
	if len(warnings) != 2 || !strings.Contains(warnings[0], `outputOrganizedBy is ""`) || !strings.Contains(warnings[1], `continuesInFile "3.ndjson" is not listed`) {
		t.Errorf("warnings = %q", warnings)
	}
	if ti, err := m.TransactionInstant(); err != nil || ti.Year() != 2021 {
		t.Errorf("TransactionInstant = %v, %v", ti, err)
	}
}

func TestParseManifestSTU4(t *testing.T) {
	in := `{"manifestType":"http://hl7.org/fhir/uv/bulkdata/StructureDefinition/BulkDataManifest",
	 "transactionTime":"2021-01-01T00:00:00.123+05:00","requiresAccessToken":false,
	 "output":[{"url":"https://x/1.ndjson"},{"url":"https://x/2.ndjson","continuesInFile":"https://x/1.ndjson"}],
	 "outcome":[{"url":"https://x/err.ndjson"}],
	 "extension":[{"url":"http://example.org/e","valueBoolean":true}],
	 "link":[{"relation":"next","url":"https://x/manifest-2.json"}]}`
	m, err := ParseManifest("inline", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != STU4 || len(m.Errors) != 1 || m.Errors[0].Kind != KindError || m.Next() != "https://x/manifest-2.json" ||
		string(m.Extension) != `[{"url":"http://example.org/e","valueBoolean":true}]` || len(m.Warnings) != 0 {
		t.Errorf("manifest = %+v", m)
	}
	out, err := json.Marshal(m)
	if err != nil || !bytes.Contains(out, []byte(`"outcome":`)) || bytes.Contains(out, []byte(`"error":`)) {
		t.Errorf("STU4 re-marshal = %s, %v", out, err)
	}
}

func TestParseManifestRejects(t *testing.T) {
	for name, tc := range map[string]struct{ in, want string }{
		"empty":            {``, "empty document"},
		"not json":         {"{\n \"transactionTime\": 2021,\n oops}", "line 3"},
		"wrong type":       {`{"transactionTime":5,"requiresAccessToken":true}`, "invalid JSON at line 1"},
		"trailing":         {`{"transactionTime":"2021-01-01T00:00:00Z","requiresAccessToken":true} {}`, "trailing data"},
		"no time":          {`{"requiresAccessToken":true}`, "transactionTime is missing"},
		"bad time":         {`{"transactionTime":"2021-01-01","requiresAccessToken":true}`, "not a FHIR instant"},
		"one-digit hour":   {`{"transactionTime":"2021-01-01T0:00:00Z","requiresAccessToken":true}`, "not a FHIR instant"},
		"year zero":        {`{"transactionTime":"0000-01-01T00:00:00Z","requiresAccessToken":true}`, "not a FHIR instant"},
		"no rat":           {`{"transactionTime":"2021-01-01T00:00:00Z","output":[]}`, "requiresAccessToken is missing"},
		"relative url":     {`{"transactionTime":"2021-01-01T00:00:00Z","requiresAccessToken":true,"output":[{"url":"/a.ndjson"}]}`, "output[0].url"},
		"no url":           {`{"transactionTime":"2021-01-01T00:00:00Z","requiresAccessToken":true,"deleted":[{"type":"Bundle"}]}`, "deleted[0].url: missing"},
		"negative count":   {`{"transactionTime":"2021-01-01T00:00:00Z","requiresAccessToken":true,"error":[{"url":"https://x/e","count":-1}]}`, "negative"},
		"float count":      {`{"transactionTime":"2021-01-01T00:00:00Z","requiresAccessToken":true,"output":[{"url":"https://x/e","count":1.5}]}`, "invalid JSON"},
		"string extension": {`{"transactionTime":"2021-01-01T00:00:00Z","requiresAccessToken":true,"extension":"x"}`, "extension"},
		"link no url":      {`{"transactionTime":"2021-01-01T00:00:00Z","requiresAccessToken":true,"link":[{"relation":"next"}]}`, "link[0]"},
		"array":            {`[]`, "invalid JSON"},
	} {
		_, err := ParseManifest("src-"+name, []byte(tc.in))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !errors.Is(err, fhir.ErrBadInput) || !strings.Contains(err.Error(), "src-"+name) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q and the source", name, err, tc.want)
		}
	}
}

func TestParseOutcome(t *testing.T) {
	o, ok := ParseOutcome([]byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","details":{"text":"timeout"}},{"code":"transient"}]}`))
	if !ok || !o.Transient || o.Diagnostics != "timeout; transient" {
		t.Errorf("got %+v %v", o, ok)
	}
	for body, want := range map[string]string{
		`{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational"},{"severity":"warning","code":"incomplete"}]}`: "warning",
		`{"resourceType":"OperationOutcome","issue":[{"severity":"fatal","code":"exception"},{"severity":"error","code":"processing"}]}`:             "fatal",
		`{"resourceType":"OperationOutcome","issue":[{"severity":"bogus","code":"processing"},{"severity":"warning","code":"processing"}]}`:          "error",
		`{"resourceType":"OperationOutcome","issue":[]}`: "",
	} {
		if o, ok := ParseOutcome([]byte(body)); !ok || o.Severity != want {
			t.Errorf("%s: severity %q, want %q", body, o.Severity, want)
		}
	}
	if _, ok := ParseOutcome([]byte(`{"resourceType":"Patient"}`)); ok {
		t.Error("Patient taken for an OperationOutcome")
	}
	if _, ok := ParseOutcome([]byte(`<html>`)); ok {
		t.Error("HTML taken for an OperationOutcome")
	}
}

func TestParseDeletedBundle(t *testing.T) {
	data := fixture(t, "Patient.deleted.ndjson")
	var refs []DeletedRef
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		r, err := ParseDeletedBundle("Patient.deleted.ndjson", sc.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, r...)
	}
	want := []DeletedRef{{"Patient", "p9"}, {"Patient", "p10"}, {"Observation", "o77"}}
	if !slices.Equal(refs, want) {
		t.Errorf("refs = %v", refs)
	}
	for _, bad := range []string{
		`{"resourceType":"Bundle","type":"batch","entry":[]}`,
		`{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"PUT","url":"Patient/1"}}]}`,
		`{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Patient?name=x"}}]}`,
		`{"resourceType":"Patient"}`,
	} {
		if _, err := ParseDeletedBundle("x", []byte(bad)); !errors.Is(err, fhir.ErrBadInput) {
			t.Errorf("%s: err = %v", bad, err)
		}
	}
}

// TestCorpusReplay parses every captured or spec-published response in
// ../shared/corpus/bulk-data-ig-manifests.
func TestCorpusReplay(t *testing.T) {
	dir := corpusDir(t, "bulk-data-ig-manifests")
	var jsonFiles []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".json") {
			jsonFiles = append(jsonFiles, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(jsonFiles) < 15 {
		t.Fatalf("only %d JSON files in %s", len(jsonFiles), dir)
	}
	manifests := map[string]*Manifest{}
	for _, p := range jsonFiles {
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(p, "transient-error.json") {
			o, ok := ParseOutcome(data)
			if !ok || !o.Transient || !strings.Contains(o.Diagnostics, "Please try again") {
				t.Errorf("%s: outcome %+v %v", rel, o, ok)
			}
			continue
		}
		m, err := ParseManifest(rel, data)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		// Re-marshalling gives a manifest that parses to the same thing.
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := ParseManifest(rel+" (re-marshalled)", out)
		if err != nil {
			t.Errorf("%s: re-marshalled: %v", rel, err)
			continue
		}
		a, b := *m, *m2
		a.Warnings, b.Warnings = nil, nil // outputOrganizedBy "" warns only on the original
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: round trip differs:\n%+v\n%+v", rel, a, b)
		}
		manifests[filepath.Base(p)] = m
	}

	// Spot checks of the quirks named in the notes.
	cap := manifests["captured-smart-bulk-data-server-manifest.json"]
	if cap == nil || cap.Version != STU3 || len(cap.Output) != 4 || cap.Output[1].Count != 10000 || cap.RequiresAccessToken ||
		!slices.ContainsFunc(cap.Warnings, func(w string) bool { return strings.Contains(w, `"5.Observation.ndjson" is not listed`) }) ||
		!slices.ContainsFunc(cap.Warnings, func(w string) bool { return strings.Contains(w, `outputOrganizedBy is ""`) }) {
		t.Errorf("captured manifest = %+v", cap)
	}
	if e := manifests["captured-smart-bulk-data-server-manifest-with-errors.json"]; e == nil || len(e.Errors) != 2 || e.Errors[0].Count != 2000 {
		t.Errorf("captured error manifest = %+v", e)
	}
	if d := manifests["captured-smart-bulk-data-server-manifest-with-deleted.json"]; d == nil || len(d.Deleted) != 2 || d.Deleted[0].Count != 270 {
		t.Errorf("captured deleted manifest = %+v", d)
	}
	if s4 := manifests["BulkDataManifestOrganizedByPatientExample.json"]; s4 == nil || s4.Version != STU4 || s4.OutputOrganizedBy != "Patient" ||
		len(s4.Errors) != 1 || s4.Next() != "https://example.org/output/manifest-2.json" || s4.Extension[0] != '[' || len(s4.Warnings) != 0 {
		t.Errorf("STU4 organised manifest = %+v", s4)
	}
	if s3 := manifests["manifest-by-type.json"]; s3 == nil || s3.Version != STU3 || s3.Extension[0] != '{' || len(s3.Errors) != 1 {
		t.Errorf("STU3 by-type manifest = %+v", s3)
	}
	if p := manifests["BulkPublishManifestPendingStubExample.json"]; p == nil || p.Next() != "" || len(p.Links) != 1 {
		t.Errorf("#pending link must not count as a page: %+v", p)
	}
	if s := manifests["BulkSubmitStatusManifestExample.json"]; s == nil || len(s.Errors) != 2 {
		t.Errorf("submit status manifest = %+v", s)
	}

	// The spec's printed deleted-Bundle example is invalid JSON: it must
	// fail, naming the file and the position.
	bad := filepath.Join("stu3-3.0.0-spec-page", "deleted-bundle-example-AS-PRINTED-invalid-json.txt")
	data, err := os.ReadFile(filepath.Join(dir, bad))
	if err != nil {
		t.Fatal(err)
	}
	_, err = ParseDeletedBundle(bad, data)
	if !errors.Is(err, fhir.ErrBadInput) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "line 4") {
		t.Errorf("printed deleted Bundle: err = %v", err)
	}
	if _, err := ParseManifest(bad, data); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("printed deleted Bundle as manifest: err = %v", err)
	}

	// The captured kick-off answer yields its status URL.
	hdr, err := os.Open(filepath.Join(dir, "captured-smart-bulk-data-server-kickoff-response-headers.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer hdr.Close()
	resp, err := http.ReadResponse(bufio.NewReader(hdr), nil)
	if err != nil {
		t.Fatal(err)
	}
	loc, err := statusURLFrom(resp)
	if resp.StatusCode != 202 || err != nil || loc != "http://127.0.0.1:9443/fhir/bulkstatus/323a062896ff47ba7c4004cb7eb9e687" {
		t.Errorf("kick-off capture: %d %q %v", resp.StatusCode, loc, err)
	}
}
