package storetest

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/ehrport/ehrport/storage"
)

// StartLyingCloud serves gofakes3 (in memory) over plain HTTP on 127.0.0.1
// until the test ends, and returns its endpoint. gofakes3 accepts any
// x-amz-checksum-sha256 without verifying it and stores the aws-chunked
// framing of streamed uploads as object data: a cloud that says yes to
// everything, which ehrport must catch. It is the only fake server the
// project uses, and only as a faulty one.
func StartLyingCloud(tb testing.TB) string {
	tb.Helper()
	srv := NewLyingCloudServer()
	tb.Cleanup(srv.Close)
	return srv.URL
}

// NewLyingCloudServer starts the lying cloud; the caller closes it.
func NewLyingCloudServer() *httptest.Server {
	return httptest.NewServer(gofakes3.New(s3mem.New()).Server())
}

// LyingCloudEnv returns the EHRPORT_STORE_<NAME>_* variables naming a store
// at endpoint.
func LyingCloudEnv(name, endpoint string, partSize int64) []string {
	p := "EHRPORT_STORE_" + name + "_"
	return []string{
		p + "ENDPOINT=" + endpoint,
		p + "ACCESS_KEY=liar",
		p + "SECRET_KEY=liar-secret",
		p + "ALLOW_HTTP=true",
		p + "PATH_STYLE=path",
		p + "REGION=us-east-1",
		fmt.Sprintf("%sPART_SIZE=%d", p, partSize),
	}
}

// LyingCloud starts a lying cloud and returns a store for a fresh bucket
// (with the key prefix given) on it.
func LyingCloud(tb testing.TB, bucket, prefix string, partSize int64) *storage.S3Store {
	tb.Helper()
	cfg, err := storage.LoadConfig(os.DevNull, LyingCloudEnv("LIAR", StartLyingCloud(tb), partSize))
	if err != nil {
		tb.Fatal(err)
	}
	st, err := storage.OpenRef(cfg, "liar:"+bucket+"/"+prefix)
	if err != nil {
		tb.Fatal(err)
	}
	s3 := st.(*storage.S3Store)
	if err := s3.CreateBucket(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return s3
}
