//go:build integration

package storage_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/ehrport/ehrport/storage"
	"github.com/ehrport/ehrport/storage/storetest"
)

// testbedConfig loads the stores that scripts/testbed.sh describes in its env
// file (sourced by `make test`). Integration tests never skip: if the test
// bed is not up, that is a failure, not a pass.
func testbedConfig(t *testing.T) *storage.Config {
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

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// bucketFor creates (once) the conformance bucket on a cloud.
func bucketFor(t *testing.T, cfg *storage.Config, cloud string) string {
	t.Helper()
	const bucket = "ehrport-conformance"
	st, err := storage.OpenRef(cfg, cloud+":"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	s3 := st.(*storage.S3Store)
	ok, err := s3.BucketExists(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		if err := s3.CreateBucket(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return bucket
}

func TestIntegrationS3Conformance(t *testing.T) {
	cfg := testbedConfig(t)
	for _, cloud := range []string{"clouda", "cloudb"} {
		t.Run(cloud, func(t *testing.T) {
			bucket := bucketFor(t, cfg, cloud)
			storetest.Run(t, func(t *testing.T) storage.Store {
				prefix := "suite-" + randomHex(6)
				st, err := storage.OpenRef(cfg, cloud+":"+bucket+"/"+prefix)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					for oi, err := range st.List(context.Background(), "") {
						if err != nil {
							break
						}
						st.Delete(context.Background(), oi.Key)
					}
				})
				return st
			})
		})
	}
}

func TestIntegrationCheck(t *testing.T) {
	cfg := testbedConfig(t)
	for _, cloud := range []string{"clouda", "cloudb"} {
		t.Run(cloud, func(t *testing.T) {
			st, err := storage.OpenRef(cfg, cloud+":ehrport-check-"+randomHex(4))
			if err != nil {
				t.Fatal(err)
			}
			// A missing bucket is an error that says how to create it.
			_, err = storage.Check(context.Background(), st, storage.CheckOptions{})
			if !errors.Is(err, storage.ErrNotExist) || !strings.Contains(err.Error(), "--create") {
				t.Fatalf("check of a missing bucket: %v", err)
			}
			caps, err := storage.Check(context.Background(), st, storage.CheckOptions{CreateBucket: true})
			if err != nil {
				t.Fatal(err)
			}
			if !caps.OK {
				t.Fatalf("check failed: %+v", caps.Checks)
			}
			if caps.TLSVersion == "" || len(caps.CertSHA256) != 64 {
				t.Errorf("TLS not recorded: %q %q", caps.TLSVersion, caps.CertSHA256)
			}
			if !caps.ListPaging {
				t.Error("list paging not seen")
			}
			// Both real servers of the test bed verify SHA-256 checksums.
			if !caps.VerifiesChecksums {
				t.Error("server did not reject a wrong x-amz-checksum-sha256")
			}
			for oi := range st.List(context.Background(), "") {
				t.Errorf("check left %q behind", oi.Key)
			}
		})
	}
}

func TestIntegrationWrongSecret(t *testing.T) {
	testbedConfig(t)
	env := append(os.Environ(), "EHRPORT_STORE_CLOUDA_SECRET_KEY=wrong-secret-value")
	cfg, err := storage.LoadConfig(os.DevNull, env)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := storage.OpenRef(cfg, "clouda:ehrport-conformance")
	_, err = st.Stat(context.Background(), "x")
	if !errors.Is(err, storage.ErrPermission) {
		t.Fatalf("wrong secret: %v, want ErrPermission", err)
	}
	if strings.Contains(err.Error(), "wrong-secret-value") {
		t.Fatal("error text carries the secret")
	}
}

// ReplaceHead rewrites the start of an object while the server copies the
// rest: the result must be exactly the new head plus the kept bytes.
func TestIntegrationReplaceHead(t *testing.T) {
	cfg := testbedConfig(t)
	for _, cloud := range []string{"clouda", "cloudb"} {
		t.Run(cloud, func(t *testing.T) {
			bucket := bucketFor(t, cfg, cloud)
			st, err := storage.OpenRef(cfg, cloud+":"+bucket+"/replace-"+randomHex(4))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			body := make([]byte, 12<<20+777)
			rand.Read(body)
			if err := st.Put(ctx, "obj", bytes.NewReader(body), int64(len(body)), storage.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			head := bytes.Repeat([]byte("H"), 300)
			const keep = 120
			if err := st.(storage.HeadReplacer).ReplaceHead(ctx, "obj", int64(len(body)), head, keep); err != nil {
				t.Fatal(err)
			}
			rc, err := st.Get(ctx, "obj")
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			if want := append(append([]byte{}, head...), body[keep:]...); !bytes.Equal(got, want) {
				t.Fatalf("replaced object: %d bytes, want %d; equal prefix %v", len(got), len(want), bytes.HasPrefix(got, head))
			}
			// Too small to pay: the caller is told to rewrite.
			st.Put(ctx, "small", bytes.NewReader(body[:1000]), 1000, storage.PutOptions{})
			if err := st.(storage.HeadReplacer).ReplaceHead(ctx, "small", 1000, head, keep); !errors.Is(err, storage.ErrNotSupported) {
				t.Fatalf("small object: %v, want ErrNotSupported", err)
			}
			st.Delete(ctx, "obj")
			st.Delete(ctx, "small")
		})
	}
}
