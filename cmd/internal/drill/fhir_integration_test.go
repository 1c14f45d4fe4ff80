//go:build integration

package drill

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/fhirload"
	"github.com/ehrport/ehrport/cmd/internal/fhirload/fhirtest"
	"github.com/ehrport/ehrport/cmd/internal/report"
	"github.com/ehrport/ehrport/fhir/synth"
)

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
	base := fhirtest.Tenant(t, "drill")
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
	base2 := fhirtest.Tenant(t, "drill")
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
