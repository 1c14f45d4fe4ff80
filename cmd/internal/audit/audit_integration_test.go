//go:build integration

package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/ehrport/ehrport/storage"
)

// rawClient talks to a test-bed cloud directly, to plant what ehrport
// itself would never write: old plaintext versions, metadata, tags.
func rawClient(t testing.TB, cloud string) *minio.Client {
	t.Helper()
	if os.Getenv("EHRPORT_TESTBED") == "" {
		t.Fatal("the S3 test bed is not up: run `make testbed-up` and source .cache/testbed/env (make test does both)")
	}
	cfg, err := storage.LoadConfig(os.DevNull, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := cfg.Lookup(cloud)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(sc.Endpoint)
	tr, err := minio.DefaultTransport(true)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := caPool(sc.CACert)
	if err != nil {
		t.Fatal(err)
	}
	tr.TLSClientConfig.RootCAs = pool
	c, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(sc.AccessKey, sc.SecretKey.Reveal(), ""), Secure: true, Region: sc.Region, Transport: http.RoundTripper(tr)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func openStore(t testing.TB, ref string) storage.Store {
	t.Helper()
	cfg, err := storage.LoadConfig(os.DevNull, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	st, err := storage.OpenRef(cfg, ref)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func freshBucket(t testing.TB, c *minio.Client, versioned bool) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := "audit-" + hex.EncodeToString(b)
	ctx := context.Background()
	if err := c.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	if versioned {
		if err := c.EnableVersioning(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

func TestIntegrationAuditVersionsMetadataTags(t *testing.T) {
	for _, cloud := range []string{"clouda", "cloudb"} {
		t.Run(cloud, func(t *testing.T) {
			ctx := context.Background()
			c := rawClient(t, cloud)
			bucket := freshBucket(t, c, true)
			r, _ := kekRecipient(t)
			putRaw := func(key string, body []byte, opts minio.PutObjectOptions) {
				t.Helper()
				if _, err := c.PutObject(ctx, bucket, key, bytes.NewReader(body), int64(len(body)), opts); err != nil {
					t.Fatal(err)
				}
			}
			// An old plaintext version hidden behind a valid envelope.
			putRaw("exp/Patient.000.ndjson.ehr", ndjson(3), minio.PutObjectOptions{})
			putRaw("exp/Patient.000.ndjson.ehr", envelope(t, r, "E1", "Patient.000.ndjson", ndjson(3)), minio.PutObjectOptions{})
			// A plaintext digest in metadata, a patient attribute in tags.
			putRaw("exp/Observation.000.ndjson.ehr", envelope(t, r, "E1", "Observation.000.ndjson", ndjson(2)),
				minio.PutObjectOptions{UserMetadata: map[string]string{"content-sha256": hex.EncodeToString(make([]byte, 32))}})
			putRaw("exp/Encounter.000.ndjson.ehr", envelope(t, r, "E1", "Encounter.000.ndjson", ndjson(2)),
				minio.PutObjectOptions{UserTags: map[string]string{"patient-name": "redacted"}})
			putRaw("exp/Condition.000.ndjson.ehr", envelope(t, r, "E1", "Condition.000.ndjson", ndjson(2)), minio.PutObjectOptions{})
			putRaw("exp/manifest.json", []byte(`{}`), minio.PutObjectOptions{})
			// A deleted plaintext object leaves its version behind.
			putRaw("exp/old-leak.ndjson", ndjson(1), minio.PutObjectOptions{})
			if err := c.RemoveObject(ctx, bucket, "exp/old-leak.ndjson", minio.RemoveObjectOptions{}); err != nil {
				t.Fatal(err)
			}

			rep, err := Run(ctx, Options{Store: openStore(t, cloud+":"+bucket), Policy: DefaultPolicy()})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range rep.Findings {
				if f.Severity >= High {
					got = append(got, f.Code+" "+f.Object)
					if f.Code == "plaintext-object" && f.VersionID == "" {
						t.Errorf("plaintext finding on %s does not name the version", f.Object)
					}
				}
			}
			slices.Sort(got)
			want := []string{
				"plaintext-object exp/Patient.000.ndjson.ehr",
				"plaintext-object exp/old-leak.ndjson",
				"sensitive-metadata exp/Observation.000.ndjson.ehr",
				"sensitive-tag exp/Encounter.000.ndjson.ehr",
			}
			if !slices.Equal(got, want) {
				t.Errorf("high findings:\n got %q\nwant %q", got, want)
				for _, f := range rep.Findings {
					t.Logf("%s %s %s %s: %s", f.Severity, f.Code, f.Object, f.VersionID, f.Message)
				}
			}
			if rep.Store == nil || rep.Store.Versioning != "enabled" || !rep.Store.TLS || len(rep.Store.CertSHA256) != 64 {
				t.Errorf("store facts = %+v", rep.Store)
			}
			if rep.Classes[ClassDeleted] != 1 || rep.Versions != 8 {
				t.Errorf("classes %v, versions %d", rep.Classes, rep.Versions)
			}
		})
	}
}

// BenchmarkIntegrationAudit audits 2,000 small envelopes (about 20 KB) on
// each cloud and reports objects/s (target: 2,000 per second).
func BenchmarkIntegrationAudit(b *testing.B) {
	for _, cloud := range []string{"clouda", "cloudb"} {
		b.Run(cloud, func(b *testing.B) {
			c := rawClient(b, cloud)
			const bucket, n = "audit-bench-2000", 2000
			ctx := context.Background()
			if ok, _ := c.BucketExists(ctx, bucket); !ok {
				if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
					b.Fatal(err)
				}
				r, _ := kekRecipient(b)
				var wg sync.WaitGroup
				sem := make(chan struct{}, 16)
				for i := range n {
					wg.Add(1)
					sem <- struct{}{}
					go func() {
						defer wg.Done()
						defer func() { <-sem }()
						p := fmt.Sprintf("Observation.%04d.ndjson", i)
						body := envelope(b, r, "E1", p, ndjson(130)) // about 20 KB
						if _, err := c.PutObject(ctx, bucket, p+".ehr", bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
							b.Error(err)
						}
					}()
				}
				wg.Wait()
				c.PutObject(ctx, bucket, "manifest.json", bytes.NewReader([]byte("{}")), 2, minio.PutObjectOptions{})
			}
			st := openStore(b, cloud+":"+bucket)
			b.ResetTimer()
			for b.Loop() {
				rep, err := Run(ctx, Options{Store: st, Policy: DefaultPolicy()})
				if err != nil {
					b.Fatal(err)
				}
				if rep.Objects != n+1 || len(rep.Findings) > 3 {
					b.Fatalf("objects %d, findings %v", rep.Objects, rep.Findings)
				}
			}
			b.ReportMetric(float64(n+1)*float64(b.N)/b.Elapsed().Seconds(), "objects/s")
		})
	}
}

func caPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no certificate", path)
	}
	return pool, nil
}
