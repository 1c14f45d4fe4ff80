//go:build integration

package drill

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/report"
	"github.com/ehrport/ehrport/storage"
)

// cloud opens NAME:ehrport-drill-it/<random> on the test bed, creating the
// bucket.
func cloud(t *testing.T, name string) storage.Store {
	t.Helper()
	if os.Getenv("EHRPORT_TESTBED") == "" {
		t.Fatal("the S3 test bed is not up: run `make testbed-up` and source .cache/testbed/env (make test does both)")
	}
	cfg, err := storage.LoadConfig(os.DevNull, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	rand.Read(b[:])
	st, err := storage.OpenRef(cfg, name+":ehrport-drill-it/"+hex.EncodeToString(b[:]))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if s3, ok := st.(*storage.S3Store); ok {
		if ok, err := s3.BucketExists(ctx); err != nil {
			t.Fatal(err)
		} else if !ok {
			if err := s3.CreateBucket(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	return st
}

// A drill from MinIO to versitygw over TLS passes, records both endpoints'
// TLS, and deletes at A with an empty listing afterwards; the same drill
// with an object tampered with at versitygw fails and names it.
func TestIntegrationDrillAcrossClouds(t *testing.T) {
	ctx := context.Background()
	a, b := cloud(t, "clouda"), cloud(t, "cloudb")
	res, err := (&Options{Patients: 20, StoreA: a, StoreB: b, DecommissionSource: true, RTO: 5 * time.Minute, WorkDir: t.TempDir()}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Report
	if r.Verdict != report.Pass {
		t.Fatalf("verdict %s: %v %+v", r.Verdict, r.VerdictReasons, r.Findings)
	}
	for _, s := range r.Stores {
		if s.Kind != "s3" || !s.TLS || len(s.CertSHA256) != 64 {
			t.Errorf("store facts: %+v", s)
		}
	}
	for _, err := range a.List(ctx, "") {
		t.Fatalf("A still lists objects after the drill (err %v)", err)
	}
	for _, p := range r.Phases {
		t.Logf("%-12s %-7s %7.3fs %6.1f MB/s", p.Name, p.Status, p.DurationSeconds, p.Throughput.MBPerSecond)
	}

	a2, b2 := cloud(t, "clouda"), cloud(t, "cloudb")
	res, err = (&Options{Patients: 5, StoreA: a2, StoreB: b2, DecommissionSource: true, WorkDir: t.TempDir(),
		AfterMigrate: flipByte("Observation.000.ndjson.ehr")}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r = res.Report
	if r.Verdict != report.Fail || !hasFinding(r, PhaseVerify, "sha256-mismatch", "Observation.000.ndjson.ehr") {
		t.Fatalf("tampered at versitygw: verdict %s, findings %+v", r.Verdict, r.Findings)
	}
	if _, err := a2.Stat(ctx, "manifest.json"); err != nil {
		t.Fatalf("A was deleted although the drill failed: %v", err)
	}
}
