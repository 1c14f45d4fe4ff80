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

// resetOnce is a source whose first read of key (the manifest by default)
// breaks part-way, as a connection reset does; always breaks every read.
type resetOnce struct {
	storage.Store
	key    string
	always bool
	broken atomic.Bool
}

type brokenBody struct{ loc, key string }

func (b brokenBody) Read([]byte) (int, error) {
	return 0, &storage.Error{Op: "get", Location: b.loc, Key: b.key, Err: fmt.Errorf("%w: connection reset by peer", storage.ErrUnavailable)}
}
func (brokenBody) Close() error { return nil }

func (s *resetOnce) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	want := s.key
	if want == "" {
		want = export.ManifestKey
	}
	if key == want && (s.broken.CompareAndSwap(false, true) || s.always) {
		return brokenBody{s.Location(), key}, nil
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

// The signature is read from the source last, just before the manifest is
// written: a reset there is retried, and a source that stays down is
// filed in the report (which the command prints) rather than ending the
// run without one.
func TestMigrateSignatureReadRetried(t *testing.T) {
	quick := storage.RetryPolicy{Attempts: 3, Base: time.Millisecond, Max: time.Millisecond}
	src := local(t, "a")
	fakeExport(t, src, sizes(5, 100))
	put(t, src, export.SignatureKey, []byte(`{"signature":"x"}`))
	rep, err := Run(context.Background(), Options{From: &resetOnce{Store: src, key: export.SignatureKey}, To: local(t, "b"), Retry: quick})
	if err != nil || !rep.Complete() {
		t.Fatalf("a reset while reading the signature: %v, %+v", err, rep)
	}
	rep, err = Run(context.Background(), Options{From: &resetOnce{Store: src, key: export.SignatureKey, always: true}, To: local(t, "c"), Retry: quick})
	if err != nil {
		t.Fatalf("a source down at the last step ended the run without a report: %v", err)
	}
	if rep.ManifestWritten || rep.Unavailable() == nil || len(rep.Failed) != 1 || rep.Failed[0].Key != export.SignatureKey {
		t.Fatalf("report: manifest %v, unavailable %v, failed %+v", rep.ManifestWritten, rep.Unavailable(), rep.Failed)
	}
}
