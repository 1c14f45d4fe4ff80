package storage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ehrport/ehrport/storage"
)

func localStore(t testing.TB) *storage.LocalStore {
	t.Helper()
	st, err := storage.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func putLocal(t testing.TB, st storage.Store, key string, body []byte) {
	t.Helper()
	if err := st.Put(context.Background(), key, bytes.NewReader(body), int64(len(body)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func keysOf(t testing.TB, st storage.Store) []string {
	t.Helper()
	var keys []string
	for oi, err := range st.List(context.Background(), "") {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, oi.Key)
	}
	return keys
}

// noRetry keeps unit tests from sleeping.
var noRetry = storage.RetryPolicy{Attempts: 1}

const testPart = 64 << 10

func TestCopySizes(t *testing.T) {
	for _, par := range []int{1, 3} {
		// Streamed, through memory by default (up to DefaultBufferMax, the
		// largest size here above it), and all through memory (buffers
		// grown past the pool's first size).
		for _, bufMax := range []int64{-1, 0, 1 << 20} {
			for _, n := range []int64{0, 1, testPart - 1, testPart, testPart + 1, 5*testPart + 123} {
				t.Run(fmt.Sprintf("parallel%d/buffer%d/%d", par, bufMax, n), func(t *testing.T) {
					testCopySize(t, n, storage.CopyOptions{PartSize: testPart, Parallel: par, BufferMax: bufMax, Retry: noRetry})
				})
			}
		}
	}
}

func testCopySize(t *testing.T, n int64, o storage.CopyOptions) {
	src, dst := localStore(t), localStore(t)
	body := randomBytes(uint64(n), n)
	sum := sha256.Sum256(body)
	putLocal(t, src, "a/obj", body)
	o.Size, o.SHA256 = n, sum[:]
	res, err := storage.Copy(context.Background(), src, dst, "a/obj", o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Proof != storage.ProofReadBack || res.Skipped || res.Bytes != n || res.DstKey != "a/obj" {
		t.Errorf("result %+v", res)
	}
	if got := readAll(t, dst, "a/obj"); !bytes.Equal(got, body) {
		t.Fatalf("copied %d bytes differ", n)
	}
}

func TestCopyDstKeyAndTrust(t *testing.T) {
	src, dst := localStore(t), localStore(t)
	body := randomBytes(1, 3*testPart)
	sum := sha256.Sum256(body)
	putLocal(t, src, "k", body)
	res, err := storage.Copy(context.Background(), src, dst, "k", storage.CopyOptions{
		Size: int64(len(body)), SHA256: sum[:], DstKey: "other/k", PartSize: testPart, TrustServerChecksum: true,
	})
	if err != nil || res.Proof != storage.ProofServerChecksum || res.DstKey != "other/k" {
		t.Fatalf("%+v, %v", res, err)
	}
	if got := keysOf(t, dst); len(got) != 1 || got[0] != "other/k" {
		t.Fatalf("dst holds %q", got)
	}
}

func TestCopyBadOptions(t *testing.T) {
	src, dst := localStore(t), localStore(t)
	putLocal(t, src, "k", []byte("x"))
	for _, o := range []storage.CopyOptions{{Size: 1}, {Size: 1, SHA256: []byte("short")}, {Size: -1, SHA256: make([]byte, 32)}} {
		if _, err := storage.Copy(context.Background(), src, dst, "k", o); err == nil || storage.Retryable(err) {
			t.Errorf("options %+v: %v, want a non-retryable error", o, err)
		}
	}
}

// A source that serves other bytes than the manifest says (changed,
// truncated or extended) fails with ErrIntegrity before anything becomes
// visible at the destination, for both the single-stream and ranged paths,
// whether the client or the (trusted) destination compares the content: a
// LocalStore checks the SHA-256 its Put is given, as a verifying server does.
func TestCopySourceMismatchLeavesNothing(t *testing.T) {
	ctx := context.Background()
	good := randomBytes(5, 4*testPart+7)
	sum := sha256.Sum256(good)
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1 // only the very last byte differs
	early := bytes.Clone(good)
	early[3] ^= 1
	for _, tc := range []struct {
		name   string
		served []byte
	}{
		{"last-byte", flipped},
		{"first-part", early},
		{"short", good[:len(good)-1]},
		{"long", append(bytes.Clone(good), 'x')},
		{"empty", nil},
	} {
		for _, m := range []struct {
			part, bufMax int64
			trust        bool
		}{
			{testPart, 0, false},      // ranged
			{1 << 30, 0, false},       // single stream (the object is over DefaultBufferMax)
			{1 << 30, 1 << 20, false}, // read whole, checked before any Put
			{testPart, 0, true},       // the destination compares the content
			{1 << 30, 0, true},
			{1 << 30, 1 << 20, true},
		} {
			t.Run(fmt.Sprintf("%s/part%d/buffer%d/trust=%v", tc.name, m.part, m.bufMax, m.trust), func(t *testing.T) {
				src, dst := localStore(t), &countingStore{Store: localStore(t)}
				putLocal(t, src, "obj", tc.served)
				_, err := storage.Copy(ctx, src, dst, "obj", storage.CopyOptions{
					Size: int64(len(good)), SHA256: sum[:], PartSize: m.part, BufferMax: m.bufMax, Retry: noRetry,
					TrustServerChecksum: m.trust,
				})
				if !errors.Is(err, storage.ErrIntegrity) {
					t.Fatalf("copy of a wrong source: %v, want ErrIntegrity", err)
				}
				if !strings.Contains(err.Error(), "obj") || !strings.Contains(err.Error(), "nothing was written") {
					t.Errorf("error does not name the key or say that nothing was written: %v", err)
				}
				if keys := keysOf(t, dst); len(keys) != 0 {
					t.Fatalf("destination holds %q after a rejected copy", keys)
				}
				if m.bufMax > 0 && dst.puts.Load() != 0 {
					t.Errorf("a buffered copy of a wrong source called Put %d times, want 0", dst.puts.Load())
				}
			})
		}
	}
	// Size 0 with a SHA-256 that is not the empty one, and a non-empty
	// source for an empty manifest entry.
	src, dst := localStore(t), localStore(t)
	putLocal(t, src, "e", []byte("not empty"))
	empty := sha256.Sum256(nil)
	for _, o := range []storage.CopyOptions{{Size: 0, SHA256: sum[:]}, {Size: 0, SHA256: empty[:]}} {
		o.Retry = noRetry
		if _, err := storage.Copy(ctx, src, dst, "e", o); !errors.Is(err, storage.ErrIntegrity) {
			t.Errorf("empty copy %x: %v, want ErrIntegrity", o.SHA256[:4], err)
		}
	}
	if keys := keysOf(t, dst); len(keys) != 0 {
		t.Fatalf("destination holds %q", keys)
	}
}

// A previous object at the destination survives a rejected copy.
func TestCopySourceMismatchKeepsPrevious(t *testing.T) {
	src, dst := localStore(t), localStore(t)
	good := randomBytes(6, 1000)
	sum := sha256.Sum256(good)
	putLocal(t, dst, "obj", good)
	putLocal(t, src, "obj", randomBytes(7, 1000))
	if _, err := storage.Copy(context.Background(), src, dst, "obj", storage.CopyOptions{Size: 1000, SHA256: sum[:], Retry: noRetry}); !errors.Is(err, storage.ErrIntegrity) {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, dst, "obj"), good) {
		t.Fatal("previous object replaced by a rejected copy")
	}
}

// Up to BufferMax bytes an object is read whole and checked before Put is
// called: a wrong source never reaches the destination at all. One byte
// more and it streams, its last byte held back, so the Put is called and
// fails. Both leave nothing behind.
func TestCopyBufferMax(t *testing.T) {
	for _, tc := range []struct {
		size, bufMax int64
		wantPuts     int64
	}{
		{storage.DefaultBufferMax, 0, 0},
		{storage.DefaultBufferMax + 1, 0, 1},
		{1000, 1000, 0},
		{1001, 1000, 1},
		{1000, -1, 1},
		{0, 0, 0},
	} {
		good := randomBytes(uint64(tc.size), tc.size)
		sum := sha256.Sum256(good)
		served := append(bytes.Clone(good), 'x') // one byte too many
		src, dst := localStore(t), &countingStore{Store: localStore(t)}
		putLocal(t, src, "obj", served)
		_, err := storage.Copy(context.Background(), src, dst, "obj", storage.CopyOptions{
			Size: tc.size, SHA256: sum[:], BufferMax: tc.bufMax, Retry: noRetry,
		})
		if !errors.Is(err, storage.ErrIntegrity) || !strings.Contains(err.Error(), "more than") {
			t.Fatalf("size %d, buffer max %d: %v, want ErrIntegrity (source too long)", tc.size, tc.bufMax, err)
		}
		if got := dst.puts.Load(); got != tc.wantPuts {
			t.Errorf("size %d, buffer max %d: %d Puts, want %d", tc.size, tc.bufMax, got, tc.wantPuts)
		}
		if keys := keysOf(t, dst); len(keys) != 0 {
			t.Fatalf("size %d: destination holds %q", tc.size, keys)
		}
	}
}

// A small object from a wrong source, to a cloud that verifies nothing
// (gofakes3): read whole, it is refused before any request goes out;
// streamed (BufferMax -1), the held-back last byte stops it. Either way the
// cloud holds nothing. (TestLyingCloudSourceMismatchNeverCommitted covers
// the streamed large objects.)
func TestCopyBufferedLyingCloud(t *testing.T) {
	liar := &countingStore{Store: lyingCloud(t, 5<<20)}
	src := localStore(t)
	ctx := context.Background()
	for _, bufMax := range []int64{0, -1} {
		good := randomBytes(uint64(20000-bufMax), 20000)
		sum := sha256.Sum256(good)
		served := bytes.Clone(good)
		served[len(served)-1] ^= 1
		key := fmt.Sprintf("small-mismatch/%d", bufMax)
		putLocal(t, src, key, served)
		liar.puts.Store(0)
		_, err := storage.Copy(ctx, src, liar, key, storage.CopyOptions{Size: 20000, SHA256: sum[:], BufferMax: bufMax, Retry: noRetry})
		if !errors.Is(err, storage.ErrIntegrity) || !strings.Contains(err.Error(), key) {
			t.Fatalf("buffer max %d: %v, want ErrIntegrity naming the key", bufMax, err)
		}
		if _, err := liar.Stat(ctx, key); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("buffer max %d: the lying cloud committed the object (stat %v)", bufMax, err)
		}
		want := int64(0) // refused before the Put
		if bufMax < 0 {
			want = 1 // the Put saw a body one byte short
		}
		if liar.puts.Load() != want {
			t.Errorf("buffer max %d: %d Puts, want %d", bufMax, liar.puts.Load(), want)
		}
	}
}

// breakingSource serves the first bytes of each object, then fails its
// first reads with a store error (a connection reset), as a source whose
// connection drops mid-body does.
type breakingSource struct {
	storage.Store
	breaks atomic.Int64
}

func (b *breakingSource) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := b.Store.Get(ctx, key)
	if err != nil || b.breaks.Add(-1) < 0 {
		return rc, err
	}
	reset := &storage.Error{Op: "get", Location: b.Location(), Key: key, Err: fmt.Errorf("connection reset: %w", storage.ErrUnavailable)}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(rc, 10), errReader{reset}), rc}, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// A body that breaks off is the store's failure, retried, never taken for
// a source that differs from the manifest, buffered or streamed.
func TestCopyBrokenBodyRetried(t *testing.T) {
	body := randomBytes(16, 5000)
	sum := sha256.Sum256(body)
	for _, bufMax := range []int64{0, -1} {
		src := &breakingSource{Store: localStore(t)}
		src.breaks.Store(2)
		putLocal(t, src.Store, "obj", body)
		dst := localStore(t)
		res, err := storage.Copy(context.Background(), src, dst, "obj", storage.CopyOptions{
			Size: int64(len(body)), SHA256: sum[:], BufferMax: bufMax,
			Retry: storage.RetryPolicy{Attempts: 3, Sleep: (&recordingSleep{}).Sleep},
		})
		if err != nil || res.Retries != 2 {
			t.Fatalf("buffer max %d: %+v, %v; want success after 2 retries", bufMax, res, err)
		}
		if !bytes.Equal(readAll(t, dst, "obj"), body) {
			t.Fatalf("buffer max %d: bytes differ", bufMax)
		}
	}
}

// countingStore counts Gets and Puts of a store.
type countingStore struct {
	storage.Store
	gets, ranges, puts, stats atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, key)
}

func (c *countingStore) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	c.ranges.Add(1)
	return c.Store.(storage.RangeReader).GetRange(ctx, key, off, n)
}

func (c *countingStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	c.puts.Add(1)
	return c.Store.Put(ctx, key, r, size, opts)
}

func (c *countingStore) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	c.stats.Add(1)
	return c.Store.Stat(ctx, key)
}

func TestCopySkipExisting(t *testing.T) {
	ctx := context.Background()
	body := randomBytes(8, 3*testPart)
	sum := sha256.Sum256(body)
	n := int64(len(body))
	for _, trust := range []bool{false, true} {
		t.Run(fmt.Sprintf("trust=%v", trust), func(t *testing.T) {
			src := &countingStore{Store: localStore(t)}
			dst := &countingStore{Store: localStore(t)}
			putLocal(t, src.Store, "obj", body)
			o := storage.CopyOptions{Size: n, SHA256: sum[:], PartSize: testPart, SkipExisting: true, TrustServerChecksum: trust, Retry: noRetry}

			res, err := storage.Copy(ctx, src, dst, "obj", o)
			if err != nil || res.Skipped {
				t.Fatalf("first copy: %+v, %v", res, err)
			}
			src.gets.Store(0)
			src.ranges.Store(0)
			dst.gets.Store(0)
			dst.ranges.Store(0)
			dst.puts.Store(0)
			res, err = storage.Copy(ctx, src, dst, "obj", o)
			if err != nil || !res.Skipped || res.Bytes != 0 {
				t.Fatalf("rerun: %+v, %v", res, err)
			}
			if src.gets.Load()+src.ranges.Load() != 0 || dst.puts.Load() != 0 {
				t.Errorf("skip read the source %d times, put %d times", src.gets.Load()+src.ranges.Load(), dst.puts.Load())
			}
			wantProof, wantReads := storage.ProofReadBack, int64(1)
			if trust {
				wantProof, wantReads = storage.ProofServerChecksum, 0
			}
			reads := dst.gets.Load() + dst.ranges.Load()
			if res.Proof != wantProof || min(reads, 1) != wantReads {
				t.Errorf("skip proof %q with %d reads, want %q with %d", res.Proof, reads, wantProof, wantReads)
			}

			// A wrong-size object is replaced without being read.
			putLocal(t, dst.Store, "obj", body[:10])
			dst.gets.Store(0)
			res, err = storage.Copy(ctx, src, dst, "obj", o)
			if err != nil || res.Skipped {
				t.Fatalf("wrong size at dst: %+v, %v", res, err)
			}
			if !bytes.Equal(readAll(t, dst, "obj"), body) {
				t.Fatal("wrong-size object not replaced")
			}
			// A same-size object with other bytes: only read-back sees it.
			other := bytes.Clone(body)
			other[0] ^= 1
			putLocal(t, dst.Store, "obj", other)
			res, err = storage.Copy(ctx, src, dst, "obj", o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Skipped != trust {
				t.Errorf("same size, other bytes: skipped=%v", res.Skipped)
			}
		})
	}
}

// blockingSource serves a few bytes, then cancels the copy and blocks until
// the context ends, like a slow upstream when the user presses Ctrl-C.
type blockingSource struct {
	storage.Store
	cancel context.CancelFunc
}

func (b *blockingSource) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	return io.NopCloser(&cancellingReader{ctx: ctx, cancel: b.cancel}), nil
}

func (b *blockingSource) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	return b.Get(ctx, key)
}

func (b *blockingSource) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	return storage.ObjectInfo{Key: key, Size: 10 * testPart}, nil
}

type cancellingReader struct {
	ctx    context.Context
	cancel context.CancelFunc
	sent   int
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	if c.sent < 1000 {
		n := min(len(p), 1000-c.sent)
		c.sent += n
		return n, nil
	}
	c.cancel()
	<-c.ctx.Done()
	return 0, c.ctx.Err()
}

func TestCopyCancelLeavesNothing(t *testing.T) {
	for _, part := range []int64{testPart, 1 << 30} {
		ctx, cancel := context.WithCancel(context.Background())
		src := &blockingSource{Store: localStore(t), cancel: cancel}
		dst := localStore(t)
		sum := sha256.Sum256(nil)
		res, err := storage.Copy(ctx, src, dst, "obj", storage.CopyOptions{Size: 10 * testPart, SHA256: sum[:], PartSize: part})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled copy: %v, want context.Canceled", err)
		}
		if res.Retries != 0 {
			t.Errorf("cancellation retried %d times", res.Retries)
		}
		if keys := keysOf(t, dst); len(keys) != 0 {
			t.Fatalf("cancelled copy left %q", keys)
		}
	}
}

// flakyStore fails the first N Gets, GetRanges and Puts with ErrUnavailable
// (a 503 SlowDown, say), or with another error when failWith is set.
type flakyStore struct {
	storage.Store
	mu       sync.Mutex
	getFails int
	putFails int
	failWith error
	calls    int
}

func (f *flakyStore) fail(op, key string, left *int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if *left <= 0 {
		return nil
	}
	*left--
	cause := f.failWith
	if cause == nil {
		cause = fmt.Errorf("503 SlowDown: %w", storage.ErrUnavailable)
	}
	return &storage.Error{Op: op, Location: f.Location(), Key: key, Err: cause}
}

func (f *flakyStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := f.fail("get", key, &f.getFails); err != nil {
		return nil, err
	}
	return f.Store.Get(ctx, key)
}

func (f *flakyStore) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if err := f.fail("get", key, &f.getFails); err != nil {
		return nil, err
	}
	return f.Store.(storage.RangeReader).GetRange(ctx, key, off, n)
}

func (f *flakyStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	if err := f.fail("put", key, &f.putFails); err != nil {
		return err
	}
	return f.Store.Put(ctx, key, r, size, opts)
}

// recordingSleep is an injected sleeper: no wall time passes in tests.
type recordingSleep struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (r *recordingSleep) Sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.delays = append(r.delays, d)
	r.mu.Unlock()
	return ctx.Err()
}

func TestCopyRetriesUnavailable(t *testing.T) {
	body := randomBytes(12, 3*testPart)
	sum := sha256.Sum256(body)
	for _, part := range []int64{testPart, 1 << 30} {
		src := &flakyStore{Store: localStore(t), getFails: 2}
		dst := &flakyStore{Store: localStore(t), putFails: 1}
		putLocal(t, src.Store, "obj", body)
		sl := &recordingSleep{}
		res, err := storage.Copy(context.Background(), src, dst, "obj", storage.CopyOptions{
			Size: int64(len(body)), SHA256: sum[:], PartSize: part,
			Retry: storage.RetryPolicy{Attempts: 5, Base: time.Second, Max: 10 * time.Second, Sleep: sl.Sleep, Jitter: func() float64 { return 0.5 }},
		})
		if err != nil {
			t.Fatal(err)
		}
		// One Get fails per try on the single-stream path; ranged reads
		// may spend both Get failures, and the Put's, in one try.
		lo := 3
		if part < int64(len(body)) {
			lo = 1
		}
		if res.Retries < lo || res.Retries > 3 || len(sl.delays) != res.Retries {
			t.Errorf("part %d: %d retries, %d sleeps %v; want %d-3 (2 gets, 1 put)", part, res.Retries, len(sl.delays), sl.delays, lo)
		}
		// 1s, 2s, 4s, each jittered to 3/4.
		want := []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second}
		for i := range min(len(want), len(sl.delays)) {
			if sl.delays[i] != want[i] {
				t.Errorf("delay %d = %v, want %v", i, sl.delays[i], want[i])
			}
		}
		if !bytes.Equal(readAll(t, dst, "obj"), body) {
			t.Fatal("bytes differ after retries")
		}
	}

	// Out of attempts: the last error, still ErrUnavailable.
	src := &flakyStore{Store: localStore(t), getFails: 100}
	putLocal(t, src.Store, "obj", body)
	sl := &recordingSleep{}
	res, err := storage.Copy(context.Background(), src, localStore(t), "obj", storage.CopyOptions{
		Size: int64(len(body)), SHA256: sum[:], Retry: storage.RetryPolicy{Attempts: 3, Sleep: sl.Sleep},
	})
	if !errors.Is(err, storage.ErrUnavailable) || res.Retries != 2 || src.calls != 3 {
		t.Fatalf("exhausted: %v, %d retries, %d calls", err, res.Retries, src.calls)
	}
}

func TestCopyDoesNotRetryAnswers(t *testing.T) {
	body := randomBytes(13, 100)
	sum := sha256.Sum256(body)
	for _, cause := range []error{storage.ErrPermission, storage.ErrNotExist, storage.ErrBadRef, storage.ErrIntegrity,
		// An answer that also says "unavailable" is still an answer.
		errors.Join(storage.ErrIntegrity, storage.ErrUnavailable), context.Canceled} {
		src := &flakyStore{Store: localStore(t), getFails: 1, failWith: cause}
		putLocal(t, src.Store, "obj", body)
		sl := &recordingSleep{}
		res, err := storage.Copy(context.Background(), src, localStore(t), "obj", storage.CopyOptions{
			Size: 100, SHA256: sum[:], Retry: storage.RetryPolicy{Attempts: 5, Sleep: sl.Sleep},
		})
		if err == nil || res.Retries != 0 || len(sl.delays) != 0 || src.calls != 1 {
			t.Errorf("%v: err=%v retries=%d sleeps=%d calls=%d; want one failed try", cause, err, res.Retries, len(sl.delays), src.calls)
		}
	}
}

// Retrying the proof alone: the Put succeeded, the read-back hit a 503.
func TestCopyRetriesProofOnly(t *testing.T) {
	body := randomBytes(14, 100)
	sum := sha256.Sum256(body)
	src := localStore(t)
	putLocal(t, src, "obj", body)
	dst := &flakyStore{Store: localStore(t), getFails: 1}
	counted := &countingStore{Store: dst}
	sl := &recordingSleep{}
	res, err := storage.Copy(context.Background(), src, counted, "obj", storage.CopyOptions{
		Size: 100, SHA256: sum[:], Retry: storage.RetryPolicy{Attempts: 3, Sleep: sl.Sleep},
	})
	if err != nil || res.Retries != 1 || counted.puts.Load() != 1 || res.Proof != storage.ProofReadBack {
		t.Fatalf("%+v, %v, %d puts", res, err, counted.puts.Load())
	}
}

// corruptingStore stores what it is given but serves other bytes: a
// destination that lies. Read-back must catch it and delete the copy.
type corruptingStore struct {
	storage.Store
}

func (c corruptingStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := c.Store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return nil, err
	}
	if len(b) > 0 {
		b[len(b)/2] ^= 0x80
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// corruptingRanges also serves corrupt ranges, for ranged read-backs.
type corruptingRanges struct {
	corruptingStore
}

func (c corruptingRanges) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	rc, err := c.Store.(storage.RangeReader).GetRange(ctx, key, off, n)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return nil, err
	}
	if off > 0 && len(b) > 0 {
		b[0] ^= 0x80
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func TestCopyReadBackMismatchDeletes(t *testing.T) {
	body := randomBytes(15, 2*testPart+1)
	sum := sha256.Sum256(body)
	src := localStore(t)
	putLocal(t, src, "x/obj", body)
	for _, dst := range []storage.Store{corruptingStore{localStore(t)}, corruptingRanges{corruptingStore{localStore(t)}}} {
		res, err := storage.Copy(context.Background(), src, dst, "x/obj", storage.CopyOptions{
			Size: int64(len(body)), SHA256: sum[:], PartSize: testPart, Retry: storage.RetryPolicy{Attempts: 3, Sleep: (&recordingSleep{}).Sleep},
		})
		if !errors.Is(err, storage.ErrIntegrity) || res.Retries != 0 || res.Proof != "" {
			t.Fatalf("%T: %+v, %v", dst, res, err)
		}
		if !strings.Contains(err.Error(), "x/obj") || !strings.Contains(err.Error(), "deleted") || !strings.Contains(err.Error(), "SHA-256") {
			t.Errorf("%T: error should name the key, the hash and say it was deleted: %v", dst, err)
		}
		if keys := keysOf(t, dst); len(keys) != 0 {
			t.Fatalf("%T: bad copy left: %q", dst, keys)
		}
	}
}

// Many copies at once through one limiter (run with -race).
func TestCopyConcurrent(t *testing.T) {
	src, dst := localStore(t), localStore(t)
	lim := storage.NewRateLimiter(1 << 40)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		body := randomBytes(uint64(100+i), int64(i)*testPart/3)
		putLocal(t, src, fmt.Sprint(i), body)
		sum := sha256.Sum256(body)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := storage.Copy(context.Background(), src, dst, fmt.Sprint(i), storage.CopyOptions{
				Size: int64(len(body)), SHA256: sum[:], PartSize: testPart, Parallel: 2, Limiter: lim, Retry: noRetry,
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkCopy copies from cloud A (MinIO) to cloud B (versitygw) of the
// test bed; it skips when the test bed's env file is not sourced. "raw" is
// a plain Get→Put with the SHA-256 header and no proof, the yardstick for
// what holding back, ranged reads and proofs cost.
//
//	set -a; source .cache/testbed/env; set +a
//	go test -run '^$' -bench BenchmarkCopy -benchtime 3x ./storage/
func BenchmarkCopy(b *testing.B) {
	if os.Getenv("EHRPORT_TESTBED") == "" {
		b.Skip("the S3 test bed is not up: run `make testbed-up` and source .cache/testbed/env")
	}
	cfg, err := storage.LoadConfig(os.DevNull, os.Environ())
	if err != nil {
		b.Fatal(err)
	}
	run := "bench-copy-" + fmt.Sprint(time.Now().UnixNano()) + "/"
	src := benchStore(b, cfg, "clouda", run+"src/")
	dst := benchStore(b, cfg, "cloudb", run+"dst/")
	caps, err := storage.Check(context.Background(), dst, storage.CheckOptions{})
	if err != nil {
		b.Fatal(err)
	}

	small := make([]int64, 200)
	for i := range small {
		small[i] = 15<<10 + int64(i*53)%(10<<10)
	}
	sets := []struct {
		name     string
		sizes    []int64
		workers  int
		parallel int
	}{
		{"small", small, 16, 1},
		{"large", []int64{64 << 20, 64 << 20}, 2, 0}, // DefaultCopyParallel
	}
	for _, set := range sets {
		type obj struct {
			key  string
			size int64
			sum  []byte
		}
		var objs []obj
		var total int64
		for i, n := range set.sizes {
			body := randomBytes(uint64(i), n)
			sum := sha256.Sum256(body)
			key := fmt.Sprintf("%s/%04d", set.name, i)
			if err := src.Put(context.Background(), key, bytes.NewReader(body), n, storage.PutOptions{SHA256: sum[:]}); err != nil {
				b.Fatal(err)
			}
			objs = append(objs, obj{key, n, sum[:]})
			total += n
		}
		modes := []struct {
			name string
			copy func(ctx context.Context, o obj) error
		}{
			{"raw", func(ctx context.Context, o obj) error {
				rc, err := src.Get(ctx, o.key)
				if err != nil {
					return err
				}
				defer rc.Close()
				return dst.Put(ctx, o.key, rc, o.size, storage.PutOptions{SHA256: o.sum})
			}},
			{storage.ProofServerChecksum, func(ctx context.Context, o obj) error {
				_, err := storage.Copy(ctx, src, dst, o.key, storage.CopyOptions{Size: o.size, SHA256: o.sum, Parallel: set.parallel, TrustServerChecksum: caps.VerifiesChecksums})
				return err
			}},
			{storage.ProofReadBack, func(ctx context.Context, o obj) error {
				_, err := storage.Copy(ctx, src, dst, o.key, storage.CopyOptions{Size: o.size, SHA256: o.sum, Parallel: set.parallel})
				return err
			}},
		}
		if set.name == "large" {
			// Range reads in flight per object (the default, 1, is one
			// plain Get), and the upload in parts instead of one PUT.
			for _, v := range []struct{ par, single int64 }{{2, 0}, {4, 0}, {0, -1}, {2, -1}} {
				name := fmt.Sprintf("%s-parallel%d", storage.ProofServerChecksum, max(v.par, storage.DefaultCopyParallel))
				if v.single < 0 {
					name += "-parts"
				}
				modes = append(modes, struct {
					name string
					copy func(ctx context.Context, o obj) error
				}{name, func(ctx context.Context, o obj) error {
					_, err := storage.Copy(ctx, src, dst, o.key, storage.CopyOptions{Size: o.size, SHA256: o.sum, Parallel: int(v.par), SinglePutMax: v.single, TrustServerChecksum: caps.VerifiesChecksums})
					return err
				}})
			}
		}
		for _, m := range modes {
			b.Run(set.name+"/"+m.name, func(b *testing.B) {
				b.SetBytes(total)
				start := time.Now()
				for range b.N {
					var wg sync.WaitGroup
					errs := make(chan error, len(objs))
					sem := make(chan struct{}, set.workers)
					for _, o := range objs {
						wg.Add(1)
						sem <- struct{}{}
						go func() {
							defer wg.Done()
							defer func() { <-sem }()
							if err := m.copy(context.Background(), o); err != nil {
								errs <- err
							}
						}()
					}
					wg.Wait()
					close(errs)
					for err := range errs {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*len(objs))/time.Since(start).Seconds(), "obj/s")
			})
		}
	}
}

func benchStore(b *testing.B, cfg *storage.Config, cloud, prefix string) storage.Store {
	b.Helper()
	const bucket = "ehrport-bench"
	st, err := storage.OpenRef(cfg, cloud+":"+bucket+"/"+prefix)
	if err != nil {
		b.Fatal(err)
	}
	s3 := st.(*storage.S3Store)
	if ok, err := s3.BucketExists(context.Background()); err != nil {
		b.Fatal(err)
	} else if !ok {
		if err := s3.CreateBucket(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() {
		for oi, err := range st.List(context.Background(), "") {
			if err != nil {
				break
			}
			st.Delete(context.Background(), oi.Key)
		}
	})
	return st
}

// boundedSource checks, at every range read, that the copy holds no more
// than Parallel ranges that the destination has not yet consumed: the
// memory bound of docs/copy.md.
type boundedSource struct {
	*storage.LocalStore
	consumed  *atomic.Int64
	parallel  int64
	part      int64
	mu        sync.Mutex
	violation string
}

func (b *boundedSource) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if ahead := off - b.consumed.Load(); ahead > b.parallel*b.part {
		b.mu.Lock()
		b.violation = fmt.Sprintf("range at %d started with only %d bytes consumed (more than %d ranges ahead)", off, b.consumed.Load(), b.parallel)
		b.mu.Unlock()
	}
	return b.LocalStore.GetRange(ctx, key, off, n)
}

type countingDst struct {
	*storage.LocalStore
	consumed *atomic.Int64
}

type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countReader) Read(p []byte) (int, error) {
	// A slow consumer: small reads, so ranges pile up if nothing bounds them.
	n, err := c.r.Read(p[:min(len(p), 4096)])
	c.n.Add(int64(n))
	return n, err
}

func (c countingDst) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	return c.LocalStore.Put(ctx, key, countReader{r, c.consumed}, size, opts)
}

func TestCopyRangesBounded(t *testing.T) {
	const parallel, parts = 3, 20
	var consumed atomic.Int64
	src := &boundedSource{LocalStore: localStore(t), consumed: &consumed, parallel: parallel, part: testPart}
	dst := countingDst{localStore(t), &consumed}
	body := randomBytes(20, parts*testPart)
	sum := sha256.Sum256(body)
	putLocal(t, src.LocalStore, "big", body)
	if _, err := storage.Copy(context.Background(), src, dst, "big", storage.CopyOptions{
		Size: int64(len(body)), SHA256: sum[:], PartSize: testPart, Parallel: parallel, Retry: noRetry, TrustServerChecksum: true,
	}); err != nil {
		t.Fatal(err)
	}
	if src.violation != "" {
		t.Fatal(src.violation)
	}
	if consumed.Load() != int64(len(body)) {
		t.Fatalf("destination consumed %d bytes", consumed.Load())
	}
}
