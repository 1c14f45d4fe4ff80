//go:build integration

package migrate

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/cmd/internal/testserver"
	"github.com/ehrport/ehrport/cmd/internal/verify"
	"github.com/ehrport/ehrport/storage"
)

func testbed(t testing.TB) *storage.Config {
	t.Helper()
	if os.Getenv("EHRPORT_TESTBED") == "" {
		t.Fatal("the S3 test bed is not up: run `make testbed-up` and source .cache/testbed/env (make test does both)")
	}
	cfg, err := storage.LoadConfig(os.DevNull, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// s3Location opens cloud:bucket/prefix, creating the bucket.
func s3Location(t testing.TB, cfg *storage.Config, cloud, bucket, prefix string) *storage.S3Store {
	t.Helper()
	st, err := storage.OpenRef(cfg, cloud+":"+bucket+"/"+prefix)
	if err != nil {
		t.Fatal(err)
	}
	s3 := st.(*storage.S3Store)
	if ok, err := s3.BucketExists(context.Background()); err != nil {
		t.Fatal(err)
	} else if !ok {
		if err := s3.CreateBucket(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return s3
}

func randomName(p string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return p + hex.EncodeToString(b)
}

// bigExport writes n small objects and k large ones, with their manifest.
func bigExport(t *testing.T, st storage.Store, n int, small int64, k int, large int64) int {
	t.Helper()
	var m export.Manifest
	m.Extension.Ehrport.FormatVersion = 1
	m.Extension.Ehrport.ExportID = "e-fault"
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	add := func(key string, size int64) {
		defer wg.Done()
		defer func() { <-sem }()
		b := make([]byte, size)
		rand.Read(b)
		sum := sha256.Sum256(b)
		if err := st.Put(context.Background(), key, bytes.NewReader(b), size, storage.PutOptions{SHA256: sum[:]}); err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		m.Extension.Ehrport.Objects = append(m.Extension.Ehrport.Objects, export.ObjectEntry{Key: key, Path: strings.TrimSuffix(key, ".ehr"), Kind: "data", Type: "Observation", Size: size, SHA256: hex.EncodeToString(sum[:])})
		mu.Unlock()
	}
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go add(fmt.Sprintf("Observation.%04d.ndjson.ehr", i), small+int64(i%1000))
	}
	for i := range k {
		wg.Add(1)
		sem <- struct{}{}
		go add(fmt.Sprintf("Binary.%03d.ndjson.ehr", i), large+int64(i))
	}
	wg.Wait()
	mb, _ := json.MarshalIndent(m, "", "  ")
	if err := st.Put(context.Background(), export.ManifestKey, bytes.NewReader(mb), int64(len(mb)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	return n + k
}

// The target is killed with SIGKILL part-way through a migration of 2,000
// small and three 64 MiB objects. The run fails cleanly (unavailable, no
// manifest); after a restart the same migration finishes, re-sending only
// what the first run had not proven, and both clouds hold the same bytes.
// The target is a private versitygw (cmd/internal/testserver), so the kill
// never touches the shared test bed; the source is the test bed's MinIO.
func TestIntegrationMigrateTargetKilledAndResumed(t *testing.T) {
	cfg := testbed(t)
	srv := testserver.Start(t, testserver.Versitygw)
	private, err := storage.LoadConfig(os.DevNull, srv.Env("cloudb"))
	if err != nil {
		t.Fatal(err)
	}
	src := s3Location(t, cfg, "clouda", randomName("mig-src-"), "exit")
	dst := s3Location(t, private, "cloudb", randomName("mig-dst-"), "exit")
	t.Cleanup(func() { removeAll(t, src) })
	total := bigExport(t, src, 2000, 20_000, 3, 64<<20)

	ctx := context.Background()
	var once sync.Once
	quick := storage.RetryPolicy{Attempts: 2, Base: 100 * time.Millisecond, Max: 200 * time.Millisecond}
	rep1, err := Run(ctx, Options{From: src, To: dst, Retry: quick, Progress: func(p Progress) {
		if p.Objects >= 600 {
			once.Do(srv.Kill)
		}
	}})
	if !srv.Running() {
		srv.Restart()
	}
	if err != nil {
		t.Fatalf("first run returned an error instead of a report: %v", err)
	}
	if rep1.Unavailable() == nil || rep1.ManifestWritten || len(rep1.Failed) == 0 {
		t.Fatalf("first run: unavailable %v, manifest %v, failed %d", rep1.Unavailable(), rep1.ManifestWritten, len(rep1.Failed))
	}
	proven := len(rep1.Copied) + len(rep1.Skipped)
	t.Logf("first run: %d proven, %d failed before/after the kill", proven, len(rep1.Failed))

	rep2, err := Run(ctx, Options{From: src, To: dst})
	if err != nil {
		t.Fatal(err)
	}
	if !rep2.Complete() {
		t.Fatalf("rerun incomplete: failed %+v", rep2.Failed)
	}
	// Only what the first run had not finished was sent again, plus the
	// manifest, written last. Objects the target committed just as it died
	// (in flight, so at most the concurrency) are found there and skipped.
	const inFlight = 8
	skipped, copied := len(rep2.Skipped), len(rep2.Copied)
	if skipped < proven || skipped > proven+inFlight || copied != total-skipped+1 {
		t.Fatalf("rerun: copied %d, skipped %d; the first run proved %d of %d", copied, skipped, proven, total)
	}
	t.Logf("rerun: skipped %d (proven before the kill: %d), re-sent %d", skipped, proven, copied-1)
	// Independently: both clouds, every byte.
	cmp, err := verify.Compare(ctx, verify.CompareOptions{Store: dst, Reference: src, Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.OK() || cmp.ObjectsVerified != total+1 {
		t.Fatalf("compare: verified %d of %d, findings %+v", cmp.ObjectsVerified, total+1, cmp.Findings)
	}
}

// Migration MinIO -> versitygw -> MinIO gives back the same bytes.
func TestIntegrationMigrateRoundTrip(t *testing.T) {
	cfg := testbed(t)
	a := s3Location(t, cfg, "clouda", randomName("rt-a-"), "x")
	b := s3Location(t, cfg, "cloudb", randomName("rt-b-"), "y")
	back := s3Location(t, cfg, "clouda", randomName("rt-c-"), "z")
	total := bigExport(t, a, 100, 5000, 1, 20<<20)
	for _, leg := range [][2]storage.Store{{a, b}, {b, back}} {
		rep, err := Run(context.Background(), Options{From: leg[0], To: leg[1]})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Complete() || len(rep.Copied) != total+1 || !rep.TargetVerifiesChecksums {
			t.Fatalf("%s -> %s: %+v", leg[0].Location(), leg[1].Location(), rep.Failed)
		}
	}
	cmp, err := verify.Compare(context.Background(), verify.CompareOptions{Store: back, Reference: a})
	if err != nil || !cmp.OK() {
		t.Fatalf("round trip differs: %v %+v", err, cmp)
	}
	if _, err := back.Stat(context.Background(), export.ManifestKey); errors.Is(err, storage.ErrNotExist) {
		t.Fatal("no manifest after the round trip")
	}
}
