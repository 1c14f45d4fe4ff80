package migrate

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/storage"
)

// resetOnce is a source whose first read of the manifest breaks part-way,
// as a connection reset does.
type resetOnce struct {
	storage.Store
	broken atomic.Bool
}

type brokenBody struct{ loc string }

func (b brokenBody) Read([]byte) (int, error) {
	return 0, &storage.Error{Op: "get", Location: b.loc, Key: export.ManifestKey, Err: fmt.Errorf("%w: connection reset by peer", storage.ErrUnavailable)}
}
func (brokenBody) Close() error { return nil }

func (s *resetOnce) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if key == export.ManifestKey && s.broken.CompareAndSwap(false, true) {
		return brokenBody{s.Location()}, nil
	}
	return s.Store.Get(ctx, key)
}

// A reset while the plan (the source's manifest) is read is retried like
// any copy's, instead of ending the run before it started.
func TestMigratePlanReadRetried(t *testing.T) {
	src, dst := local(t, "a"), local(t, "b")
	fakeExport(t, src, sizes(5, 100))
	quick := storage.RetryPolicy{Attempts: 3, Base: time.Millisecond, Max: time.Millisecond}
	rep, err := Run(context.Background(), Options{From: &resetOnce{Store: src}, To: dst, Retry: quick})
	if err != nil {
		t.Fatalf("a reset while reading the manifest ended the run: %v", err)
	}
	if !rep.Complete() {
		t.Fatalf("incomplete: %+v", rep.Failed)
	}
}
