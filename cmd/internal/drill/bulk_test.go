package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/cmd/internal/fhirload"
	"github.com/ehrport/ehrport/cmd/internal/report"
	"github.com/ehrport/ehrport/fhir/bulk"
	"github.com/ehrport/ehrport/fhir/synth"
)

// bulkServer is a small Bulk Data $export server over a folder of NDJSON
// files (one per type): kick-off, one "in progress" poll, the manifest,
// the files (each served with pretty-printed first line and a blank line,
// as servers do), and DELETE of the job.
type bulkServer struct {
	srv     *httptest.Server
	dir     string
	kicked  atomic.Int64
	deleted atomic.Int64
}

func newBulkServer(t *testing.T, dir string) *bulkServer {
	b := &bulkServer{dir: dir}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /fhir/$export", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Prefer") != "respond-async" {
			w.WriteHeader(400)
			return
		}
		b.kicked.Add(1)
		w.Header().Set("Content-Location", b.srv.URL+"/fhir/status/1")
		w.WriteHeader(http.StatusAccepted)
	})
	var polls atomic.Int64
	mux.HandleFunc("GET /fhir/status/1", func(w http.ResponseWriter, r *http.Request) {
		if polls.Add(1) == 1 {
			w.Header().Set("X-Progress", "50%")
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusAccepted)
			return
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
		sort.Strings(files)
		var out []map[string]any
		for _, f := range files {
			typ := strings.TrimSuffix(filepath.Base(f), ".ndjson")
			out = append(out, map[string]any{"type": typ, "url": b.srv.URL + "/files/" + filepath.Base(f)})
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"transactionTime": "2026-11-23T01:02:03.456Z", "request": b.srv.URL + "/fhir/$export",
			"requiresAccessToken": false, "output": out, "error": []any{}})
	})
	mux.HandleFunc("DELETE /fhir/status/1", func(w http.ResponseWriter, r *http.Request) {
		b.deleted.Add(1)
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("GET /files/{name}", func(w http.ResponseWriter, r *http.Request) {
		data, err := os.ReadFile(filepath.Join(dir, filepath.Base(r.PathValue("name"))))
		if err != nil {
			w.WriteHeader(404)
			return
		}
		w.Header().Set("Content-Type", "application/fhir+ndjson")
		// Whitespace inside a line and a blank line: the export compacts
		// and skips them, and so must the comparison's index.
		first, rest, _ := strings.Cut(string(data), "\n")
		io.WriteString(w, strings.Replace(first, `","`, `", "`, 1)+"\n\n"+rest)
	})
	b.srv = httptest.NewServer(mux)
	t.Cleanup(b.srv.Close)
	return b
}

func (b *bulkServer) source(t *testing.T) *export.BulkSource {
	c, err := bulk.New(bulk.Options{BaseURL: b.srv.URL + "/fhir", PollInterval: 10 * time.Millisecond, MinPollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return &export.BulkSource{Client: c, Request: bulk.Request{Level: bulk.LevelSystem}}
}

// A drill from a FHIR server: the export downloads the server's $export,
// the comparison checks the restored data against what was downloaded,
// resource by resource, and nothing of the server's data stays on disk.
func TestDrillFromBulkServer(t *testing.T) {
	dir := t.TempDir()
	if _, err := synth.WriteNDJSON(dir, synth.Options{Patients: 6, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	srv := newBulkServer(t, dir)
	res := run(t, &Options{Bulk: srv.source(t), BulkURL: srv.srv.URL + "/fhir"})
	r := res.Report
	if r.Verdict != report.Pass {
		t.Fatalf("verdict %s: %v; findings %+v", r.Verdict, r.VerdictReasons, r.Findings)
	}
	if r.Inputs.Source != "fhir-server" || len(r.Inputs.Paths) != 1 || r.Inputs.Paths[0] != srv.srv.URL+"/fhir" || r.Inputs.Embedded {
		t.Errorf("inputs %+v", r.Inputs)
	}
	var lines int64
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		lines += int64(strings.Count(string(b), "\n"))
	}
	cmp := r.Phase(PhaseCompare)
	if r.Inputs.Resources != lines || r.Counts.Source["Patient"] != 6 || r.Counts.Target["Patient"] != 6 ||
		!strings.Contains(cmp.Summary, fmt.Sprintf("%d equal, 0 missing, 0 different, 0 extra", lines)) {
		t.Fatalf("%d lines at the server; inputs %+v; compare: %s", lines, r.Inputs, cmp.Summary)
	}
	if srv.kicked.Load() != 1 || srv.deleted.Load() != 1 {
		t.Errorf("kick-offs %d (the comparison must not export again), deletes %d", srv.kicked.Load(), srv.deleted.Load())
	}
	if r.Phase(PhaseRestoreFHIR).Status != report.StatusSkipped {
		t.Errorf("restore-fhir: %+v", r.Phase(PhaseRestoreFHIR))
	}
	for _, n := range r.NotChecked {
		if strings.Contains(n, "phase restore-fhir") {
			t.Errorf("an optional phase not asked for is listed as skipped: %s", n)
		}
	}
}

// The comparison's index is what the export read: a restored record that
// differs from it, one missing and one extra are each named.
func TestCompareRestoredAgainstIndex(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "Patient.ndjson"), []byte(`{"resourceType":"Patient","id":"a","active":true}
{"resourceType":"Patient","id":"b"}
{"resourceType":"Patient","id":"c"}
`), 0o600)
	idx, err := readSource(context.Background(), []string{src})
	if err != nil {
		t.Fatal(err)
	}
	restored := t.TempDir()
	os.WriteFile(filepath.Join(restored, "Patient.000.ndjson"), []byte(`{"resourceType":"Patient","id":"a","active":false}
{"resourceType":"Patient","id":"b"}
{"resourceType":"Patient","id":"d"}
`), 0o600)
	c, err := compareRestored(context.Background(), idx, restored)
	if err != nil {
		t.Fatal(err)
	}
	if c.equal != 1 || c.differ != 1 || c.missing != 1 || c.extra != 1 {
		t.Fatalf("equal %d differ %d missing %d extra %d", c.equal, c.differ, c.missing, c.extra)
	}
	codes := map[string]string{}
	for _, f := range c.findings {
		codes[f.Code] = f.Object
	}
	if codes["resource-differs"] != "Patient/a" || codes["resource-missing"] != "Patient/c" || codes["resource-extra"] != "Patient/d" {
		t.Fatalf("findings %v", codes)
	}
}

// --restore-fhir to a server that does not answer stops the drill before
// it starts; one that fails while loading fails the phase with a finding
// naming the URL, and the other phases still run and pass.
func TestDrillRestoreFHIRUnavailable(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL + "/fhir"
	down.Close()
	c, err := fhirload.New(fhirload.Options{BaseURL: downURL, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = (&Options{Patients: 2, RestoreFHIR: c, WorkDir: t.TempDir()}).Run(context.Background())
	if !errors.Is(err, fhirload.ErrUnavailable) || !strings.Contains(err.Error(), downURL) {
		t.Fatalf("server down before the drill: %v", err)
	}

	// Answers /metadata, then 503 on every transaction.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fhir/metadata" {
			io.WriteString(w, `{"resourceType":"CapabilityStatement","fhirVersion":"4.0.1"}`)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	base := srv.URL + "/fhir"
	if c, err = fhirload.New(fhirload.Options{BaseURL: base, Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	res := run(t, &Options{RestoreFHIR: c, DecommissionSource: true})
	r := res.Report
	st := phaseStatus(r)
	if r.Verdict != report.Fail || st[PhaseRestoreFHIR] != report.StatusFail || st[PhaseCompare] != report.StatusPass || st[PhaseAudit] != report.StatusPass ||
		!hasFinding(r, PhaseRestoreFHIR, "fhir-server-unavailable", base) {
		t.Fatalf("verdict %s %v phases %v findings %+v", r.Verdict, r.VerdictReasons, st, r.Findings)
	}
	if st[PhaseDecommission] != report.StatusSkipped {
		t.Errorf("A was decommissioned although restore-fhir failed")
	}
	var order []string
	for _, p := range r.Phases {
		order = append(order, p.Name)
	}
	if strings.Join(order, " ") != "export migrate verify restore compare restore-fhir audit decommission" {
		t.Errorf("phase order: %v", order)
	}
}
