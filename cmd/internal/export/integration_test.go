//go:build integration

package export

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ehrport/ehrport/fhir/synth"
	"github.com/ehrport/ehrport/storage"
)

// openCloud opens NAME:bucket/prefix on the S3 test bed, creating the
// bucket, and removes the prefix's objects when the test ends.
func openCloud(t testing.TB, name string) storage.Store {
	t.Helper()
	if os.Getenv("EHRPORT_TESTBED") == "" {
		t.Fatal("the S3 test bed is not up: run `make testbed-up` and source .cache/testbed/env (make test does both)")
	}
	cfg, err := storage.LoadConfig("", os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	ref := fmt.Sprintf("%s:export-integration/%s-%d", name, strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())
	st, err := storage.OpenRef(cfg, ref)
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
	t.Cleanup(func() {
		for info, err := range st.List(ctx, "") {
			if err != nil {
				return
			}
			st.Delete(ctx, info.Key)
		}
	})
	return st
}

// Export to MinIO and versitygw, restore byte for byte, and find no
// plaintext in any stored object.
func TestIntegrationExportClouds(t *testing.T) {
	src := t.TempDir()
	counts, err := synth.WriteNDJSON(src, synth.Options{Patients: 40, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	k := newTestKeys(t)
	for _, cloud := range []string{"clouda", "cloudb"} {
		t.Run(cloud, func(t *testing.T) {
			st := openCloud(t, cloud)
			o := k.exportOpts(st, src)
			o.SplitResources = 200
			sum, err := o.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if sum.Objects < 5 {
				t.Fatalf("only %d objects", sum.Objects)
			}
			_, dir, err := k.restore(t, st)
			if err != nil {
				t.Fatal(err)
			}
			got := restoredLines(t, dir)
			for typ := range counts {
				b, _ := os.ReadFile(filepath.Join(src, typ+".ndjson"))
				want := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
				if !slices.Equal(got[typ], want) {
					t.Errorf("%s differs after the round trip", typ)
				}
			}
			for info, err := range st.List(context.Background(), "") {
				if err != nil {
					t.Fatal(err)
				}
				if info.Key == ManifestKey || info.Key == SignatureKey {
					continue
				}
				rc, err := st.Get(context.Background(), info.Key)
				if err != nil {
					t.Fatal(err)
				}
				data, _ := io.ReadAll(rc)
				rc.Close()
				if bytes.Contains(data, []byte("resourceType")) {
					t.Errorf("%s holds plaintext", info.Key)
				}
			}
		})
	}
}

// BenchmarkIntegrationExportS3 exports 2,000 generated patients to each
// cloud of the test bed.
func BenchmarkIntegrationExportS3(b *testing.B) {
	src := b.TempDir()
	counts, err := synth.WriteNDJSON(src, synth.Options{Patients: benchPatients, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, c := range counts {
		n += c
	}
	k := newTestKeys(b)
	for _, cloud := range []string{"clouda", "cloudb"} {
		b.Run(cloud, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				st := openCloud(b, cloud)
				b.StartTimer()
				if _, err := k.exportOpts(st, src).Run(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "resources/s")
		})
	}
}
