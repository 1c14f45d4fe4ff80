//go:build integration

package drill

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/ehrport/ehrport/cmd/internal/audit"
	"github.com/ehrport/ehrport/cmd/internal/report"
	"github.com/ehrport/ehrport/storage"
)

// versionedBucket opens cloudb:ehrport-versions-it/<random> on versitygw
// with the bucket's versioning turned on (ehrport itself never changes a
// bucket's settings: the test does it with the S3 API directly).
func versionedBucket(t *testing.T) storage.Store {
	st, _, _ := versionedBucketIn(t, "ehrport-versions-it", false)
	return st
}

// versionedBucketIn is versionedBucket in bucket, made with object lock
// when lock is set; it also returns the S3 client and the store's prefix.
func versionedBucketIn(t *testing.T, bucket string, lock bool) (storage.Store, *minio.Client, string) {
	t.Helper()
	if os.Getenv("EHRPORT_TESTBED") == "" {
		t.Fatal("the S3 test bed is not up: run `make testbed-up` and source .cache/testbed/env (make test does both)")
	}
	u, err := url.Parse(os.Getenv("EHRPORT_STORE_CLOUDB_ENDPOINT"))
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(os.Getenv("EHRPORT_STORE_CLOUDB_CA_CERT"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	mc, err := minio.New(u.Host, &minio.Options{Secure: true, Transport: tr, Region: os.Getenv("EHRPORT_STORE_CLOUDB_REGION"),
		Creds: credentials.NewStaticV4(os.Getenv("EHRPORT_STORE_CLOUDB_ACCESS_KEY"), os.Getenv("EHRPORT_STORE_CLOUDB_SECRET_KEY"), "")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ok, err := mc.BucketExists(ctx, bucket); err != nil {
		t.Fatal(err)
	} else if !ok {
		if err := mc.MakeBucket(ctx, bucket, minio.MakeBucketOptions{ObjectLocking: lock}); err != nil {
			t.Fatal(err)
		}
	}
	if err := mc.SetBucketVersioning(ctx, bucket, minio.BucketVersioningConfiguration{Status: "Enabled"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := storage.LoadConfig(os.DevNull, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	rand.Read(b[:])
	prefix := hex.EncodeToString(b[:])
	st, err := storage.OpenRef(cfg, "cloudb:"+bucket+"/"+prefix)
	if err != nil {
		t.Fatal(err)
	}
	s3, ok := st.(*storage.S3Store)
	if !ok {
		t.Fatalf("cloudb is %T", st)
	}
	if f, err := s3.BucketFacts(ctx); err != nil || f.Versioning != "enabled" {
		t.Fatalf("bucket facts %+v, %v: versioning did not turn on", f, err)
	}
	return st, mc, prefix
}

// Deleting an export in a versioned bucket leaves every object's bytes
// behind as a noncurrent version (plus a delete marker each). The drill's
// decommission must not call that deleted, and the audit must still see
// those versions, including an old plaintext version hidden behind a
// deletion.
func TestIntegrationVersionsAfterDeletion(t *testing.T) {
	ctx := context.Background()
	a := versionedBucket(t)
	b := cloud(t, "clouda")
	res, err := (&Options{Patients: 4, StoreA: a, StoreB: b, DecommissionSource: true, WorkDir: t.TempDir()}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Report
	dec := r.Phase(PhaseDecommission)
	if dec == nil || dec.Status != report.StatusFail || dec.Objects == 0 {
		t.Fatalf("decommission on a versioned bucket: %+v", dec)
	}
	deleted := dec.Objects
	// One noncurrent version and one delete marker per deleted object.
	want := fmt.Sprintf("%d object version(s) or delete marker(s) remain at A", 2*deleted)
	found := false
	for _, f := range r.Findings {
		if f.Phase == PhaseDecommission && f.Code == "versions-remain" && strings.Contains(f.Message, want) {
			found = true
		}
	}
	if !found || r.Verdict != report.Fail {
		t.Fatalf("verdict %s; want a versions-remain finding %q; findings %+v", r.Verdict, want, r.Findings)
	}
	for _, err := range a.List(ctx, "") {
		t.Fatalf("A still lists objects after the deletion (err %v)", err)
	}
	t.Logf("decommission: %s", dec.Summary)

	// A plaintext object written, then deleted: only a version keeps it.
	secret := []byte(`{"resourceType":"Patient","id":"leak","name":[{"family":"Doe"}]}` + "\n")
	if err := a.Put(ctx, "stray/Patient.ndjson", bytes.NewReader(secret), int64(len(secret)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(ctx, "stray/Patient.ndjson"); err != nil {
		t.Fatal(err)
	}

	rep, err := audit.Run(ctx, audit.Options{Store: a, Policy: audit.DefaultPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Store == nil || rep.Store.Versioning != "enabled" {
		t.Fatalf("audit store facts: %+v", rep.Store)
	}
	// deleted objects + the stray one, each with a version and a marker.
	if rep.Versions != 2*(deleted+1) || rep.Classes[audit.ClassDeleted] != deleted+1 {
		t.Fatalf("audit saw %d versions, %d delete markers; want %d and %d (classes %v)", rep.Versions, rep.Classes[audit.ClassDeleted], 2*(deleted+1), deleted+1, rep.Classes)
	}
	if rep.Classes["envelope"] != deleted-2 || rep.Classes["export-metadata"] != 2 {
		t.Errorf("noncurrent versions of the export: classes %v, want %d envelopes and 2 metadata", rep.Classes, deleted-2)
	}
	var leak *audit.Finding
	for i, f := range rep.Findings {
		if f.Code == "plaintext-object" {
			if leak != nil {
				t.Errorf("second plaintext finding: %+v", f)
			}
			leak = &rep.Findings[i]
		}
	}
	if leak == nil || leak.Object != "stray/Patient.ndjson" || leak.VersionID == "" || leak.Severity != audit.Critical {
		t.Fatalf("the deleted plaintext version: %+v (findings %+v)", leak, rep.Findings)
	}
	t.Logf("audit after deletion: %d keys, %d versions, classes %v; plaintext found in version %s", rep.Objects, rep.Versions, rep.Classes, leak.VersionID)
}

// With --purge-versions the decommission removes every version and delete
// marker under A's prefix, including an old plaintext version hidden behind
// a deletion before the drill, and the version listing afterwards is empty.
func TestIntegrationPurgeVersions(t *testing.T) {
	ctx := context.Background()
	a := versionedBucket(t)
	b := cloud(t, "clouda")
	secret := []byte(`{"resourceType":"Patient","id":"leak","name":[{"family":"Doe"}]}` + "\n")
	if err := a.Put(ctx, "stray/Patient.ndjson", bytes.NewReader(secret), int64(len(secret)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(ctx, "stray/Patient.ndjson"); err != nil {
		t.Fatal(err)
	}
	res, err := (&Options{Patients: 4, StoreA: a, StoreB: b, DecommissionSource: true, PurgeVersions: true, WorkDir: t.TempDir()}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Report
	dec := r.Phase(PhaseDecommission)
	if dec == nil || dec.Status != report.StatusPass || dec.Objects == 0 || r.Verdict != report.Pass {
		t.Fatalf("decommission with --purge-versions: %+v, verdict %s, findings %+v", dec, r.Verdict, r.Findings)
	}
	// Each deleted object left a version and a marker; the stray one too.
	want := fmt.Sprintf("%d versions and delete markers removed for good; version listing afterwards: 0", 2*(dec.Objects+1))
	if !strings.Contains(dec.Summary, want) {
		t.Fatalf("summary %q; want %q", dec.Summary, want)
	}
	for v, err := range a.(storage.VersionLister).ListVersions(ctx, "") {
		t.Fatalf("a version survived the purge: %+v (err %v)", v, err)
	}
	t.Logf("decommission: %s", dec.Summary)
}

// A version under legal hold cannot be purged: the drill counts it, names
// the refusal, and fails the decommission, because the bytes are still there.
func TestIntegrationPurgeVersionsLegalHold(t *testing.T) {
	ctx := context.Background()
	a, mc, prefix := versionedBucketIn(t, "ehrport-locked-it", true)
	b := cloud(t, "clouda")
	const bucket = "ehrport-locked-it"
	key := prefix + "/held/object"
	on, off := minio.LegalHoldEnabled, minio.LegalHoldDisabled
	t.Cleanup(func() {
		for v := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: key, WithVersions: true}) {
			_ = mc.PutObjectLegalHold(ctx, bucket, key, minio.PutObjectLegalHoldOptions{Status: &off, VersionID: v.VersionID})
			_ = mc.RemoveObject(ctx, bucket, key, minio.RemoveObjectOptions{VersionID: v.VersionID})
		}
	})
	// The held object reaches A after the migration, as a late upload
	// would, so that only the decommission meets it.
	hold := func(ctx context.Context, _ storage.Store) error {
		held := []byte("held\n")
		if err := a.Put(ctx, "held/object", bytes.NewReader(held), int64(len(held)), storage.PutOptions{}); err != nil {
			return err
		}
		return mc.PutObjectLegalHold(ctx, bucket, key, minio.PutObjectLegalHoldOptions{Status: &on})
	}
	res, err := (&Options{Patients: 3, StoreA: a, StoreB: b, DecommissionSource: true, PurgeVersions: true, WorkDir: t.TempDir(), AfterMigrate: hold}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Report
	dec := r.Phase(PhaseDecommission)
	var locked, remain bool
	for _, f := range r.Findings {
		locked = locked || (f.Code == "versions-locked" && strings.Contains(f.Message, "held/object"))
		remain = remain || (f.Code == "versions-remain" && strings.Contains(f.Message, "survived --purge-versions"))
	}
	if dec == nil || dec.Status != report.StatusFail || !locked || !remain || r.Verdict != report.Fail {
		t.Fatalf("decommission with a held version: %+v, verdict %s, findings %+v", dec, r.Verdict, r.Findings)
	}
	for _, f := range r.Findings {
		t.Logf("finding %s: %s", f.Code, f.Message)
	}
	t.Logf("decommission: %s", dec.Summary)
}
