//go:build integration

package drill

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/fhirload"
	"github.com/ehrport/ehrport/cmd/internal/report"
	"github.com/ehrport/ehrport/fhir/synth"
)

// fhirTenant is the base URL of a fresh repository on the test FHIR server
// (scripts/fhirserver.sh), dropped when the test ends.
func fhirTenant(t *testing.T) string {
	t.Helper()
	root := os.Getenv("EHRPORT_FHIRSERVER_ROOT")
	if root == "" {
		t.Fatal("the test FHIR server is not up: run `make fhirserver-up` and source .cache/fhirserver/env (make test does both)")
	}
	var b [6]byte
	rand.Read(b[:])
	name := root + "/tenant/drill-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		req, _ := http.NewRequest(http.MethodDelete, name, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	})
	return name + "/fhir"
}

// The whole exit from a FHIR server: $export from a Bulk Data server,
// MinIO to versitygw over TLS, compared with what was downloaded, and
// loaded into a real FHIR engine whose counts per type match. Then the
// same drill into a server that already holds a Patient fails on count.
func TestIntegrationDrillFromServerIntoFHIR(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := synth.WriteNDJSON(dir, synth.Options{Patients: 30, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	srv := newBulkServer(t, dir)
	base := fhirTenant(t)
	fc, err := fhirload.New(fhirload.Options{BaseURL: base})
	if err != nil {
		t.Fatal(err)
	}
	a, b := cloud(t, "clouda"), cloud(t, "cloudb")
	res, err := (&Options{Bulk: srv.source(t), BulkURL: srv.srv.URL + "/fhir", StoreA: a, StoreB: b, RestoreFHIR: fc,
		DecommissionSource: true, RTO: 5 * time.Minute, WorkDir: t.TempDir()}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Report
	if r.Verdict != report.Pass {
		t.Fatalf("verdict %s: %v %+v", r.Verdict, r.VerdictReasons, r.Findings)
	}
	p := r.Phase(PhaseRestoreFHIR)
	if p.Status != report.StatusPass || p.Resources != r.Inputs.Resources || p.DurationSeconds <= 0 || !strings.Contains(p.Summary, "all equal to the export") {
		t.Fatalf("restore-fhir %+v, source %d resources", p, r.Inputs.Resources)
	}
	for typ, n := range r.Counts.Source {
		got, err := fc.Count(ctx, typ)
		if err != nil || got != n {
			t.Errorf("%s at the FHIR server: %d (%v), source %d", typ, got, err, n)
		}
	}
	for _, ph := range r.Phases {
		t.Logf("%-12s %-7s %7.3fs %6.1f MB/s %7.0f res/s", ph.Name, ph.Status, ph.DurationSeconds, ph.Throughput.MBPerSecond, ph.Throughput.ResourcesPerSecond)
	}

	// A server that is not empty: one Patient too many.
	base2 := fhirTenant(t)
	fc2, _ := fhirload.New(fhirload.Options{BaseURL: base2})
	load := fc2.Start(ctx)
	load.Add("other.ndjson", strings.NewReader(`{"resourceType":"Patient","id":"someone-else"}`+"\n"))
	if _, err := load.Wait(); err != nil {
		t.Fatal(err)
	}
	a2, b2 := cloud(t, "clouda"), cloud(t, "cloudb")
	res, err = (&Options{Patients: 3, StoreA: a2, StoreB: b2, RestoreFHIR: fc2, DecommissionSource: true, WorkDir: t.TempDir()}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r = res.Report
	if r.Verdict != report.Fail || !hasFinding(r, PhaseRestoreFHIR, "fhir-count-mismatch", "Patient") || r.Phase(PhaseDecommission).Status != report.StatusSkipped {
		t.Fatalf("verdict %s %v findings %+v", r.Verdict, r.VerdictReasons, r.Findings)
	}
}
