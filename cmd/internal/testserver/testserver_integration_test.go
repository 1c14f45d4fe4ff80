//go:build integration

package testserver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/testserver"
	"github.com/ehrport/ehrport/storage"
)

// A server starts, stores an object, survives SIGKILL and a restart on the
// same port with its data, and is unreachable while down. (MinIO, slower
// to start, goes through the same in the fault tests of
// cmd/internal/reliability.)
func TestIntegrationServerKillRestart(t *testing.T) {
	for _, kind := range []testserver.Kind{testserver.Versitygw} {
		t.Run(string(kind), func(t *testing.T) {
			srv := testserver.Start(t, kind)
			cfg, err := storage.LoadConfig(os.DevNull, srv.Env("T"))
			if err != nil {
				t.Fatal(err)
			}
			st, err := storage.OpenRef(cfg, "t:bucket-"+strings.ToLower(string(kind))+"/p")
			if err != nil {
				t.Fatal(err)
			}
			s3 := st.(*storage.S3Store)
			ctx := context.Background()
			if err := s3.CreateBucket(ctx); err != nil {
				t.Fatal(err)
			}
			body := []byte("kept across a kill")
			if err := s3.Put(ctx, "a.ehr", bytes.NewReader(body), int64(len(body)), storage.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			if n := srv.Committed(s3.Bucket(), "p/", ".ehr"); n != 1 {
				t.Fatalf("committed objects in the data folder: %d, want 1", n)
			}
			port := srv.Port
			srv.Kill()
			short, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err = s3.Stat(short, "a.ehr")
			cancel()
			if !errors.Is(err, storage.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("stat while down: %v, want unavailable", err)
			}
			srv.Restart()
			if srv.Port != port {
				t.Fatalf("port changed: %d -> %d", port, srv.Port)
			}
			rc, err := s3.Get(ctx, "a.ehr")
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("after restart: %q, %v", got, err)
			}
		})
	}
}
