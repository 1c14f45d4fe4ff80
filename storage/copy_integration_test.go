//go:build integration

package storage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/ehrport/ehrport/storage"
)

// manifestEntry is what an export's manifest says about one object.
type manifestEntry struct {
	key  string
	size int64
	sum  []byte
}

// cloudStore opens a fresh prefix on a test-bed cloud, removed afterwards.
func cloudStore(t testing.TB, cfg *storage.Config, cloud, prefix string) *storage.S3Store {
	t.Helper()
	bucket := bucketFor(t.(*testing.T), cfg, cloud)
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
	return st.(*storage.S3Store)
}

// seed writes objects to st and returns their manifest entries.
func seed(t testing.TB, st storage.Store, sizes []int64, prefix string) []manifestEntry {
	t.Helper()
	entries := make([]manifestEntry, len(sizes))
	errs := make(chan error, len(sizes))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, n := range sizes {
		body := randomBytes(uint64(1000+i), n)
		sum := sha256.Sum256(body)
		entries[i] = manifestEntry{key: fmt.Sprintf("%s%04d.ndjson.age", prefix, i), size: n, sum: sum[:]}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := st.Put(context.Background(), entries[i].key, bytes.NewReader(body), n, storage.PutOptions{SHA256: sum[:]}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return entries
}

// copyAll copies every entry with workers objects in flight and returns the
// results in entry order.
func copyAll(t testing.TB, src, dst storage.Store, entries []manifestEntry, workers int, o storage.CopyOptions) []storage.CopyResult {
	t.Helper()
	results := make([]storage.CopyResult, len(entries))
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	sem := make(chan struct{}, workers)
	for i, e := range entries {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			eo := o
			eo.Size, eo.SHA256 = e.size, e.sum
			results[i], errs[i] = storage.Copy(context.Background(), src, dst, e.key, eo)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return results
}

// independentCheck lists st and hashes every object with a plain Get,
// without the copy engine's code: the store must hold exactly the entries.
func independentCheck(t testing.TB, st storage.Store, entries []manifestEntry) {
	t.Helper()
	want := map[string]manifestEntry{}
	for _, e := range entries {
		want[e.key] = e
	}
	seen := 0
	for oi, err := range st.List(context.Background(), "") {
		if err != nil {
			t.Fatal(err)
		}
		e, ok := want[oi.Key]
		if !ok {
			t.Errorf("%s: unexpected object %q", st.Location(), oi.Key)
			continue
		}
		seen++
		rc, err := st.Get(context.Background(), oi.Key)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if n != e.size || !bytes.Equal(h.Sum(nil), e.sum) {
			t.Errorf("%s: %s holds %d bytes with SHA-256 %x, manifest says %d and %x", st.Location(), oi.Key, n, h.Sum(nil), e.size, e.sum)
		}
	}
	if seen != len(entries) {
		t.Errorf("%s holds %d of %d objects", st.Location(), seen, len(entries))
	}
}

// verifies asks Check whether st rejects wrong checksums: the only source
// of TrustServerChecksum.
func verifies(t testing.TB, st storage.Store) bool {
	t.Helper()
	caps, err := storage.Check(context.Background(), st, storage.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return caps.VerifiesChecksums
}

// roundTrip copies entries from a to b with the trust b's probe gives
// (server-checksum proof on both test-bed clouds), then from b back to a
// fresh prefix on a proven by read-back, and checks all three sides
// independently. A rerun with SkipExisting then copies nothing.
func roundTrip(t *testing.T, a, b, back storage.Store, entries []manifestEntry, workers int, base storage.CopyOptions) {
	trustB := verifies(t, b)
	if !trustB {
		t.Fatalf("%s does not verify checksums; the test bed's servers do", b.Location())
	}

	o := base
	o.TrustServerChecksum = trustB
	for _, r := range copyAll(t, a, b, entries, workers, o) {
		if r.Proof != storage.ProofServerChecksum || r.Skipped {
			t.Fatalf("%s → %s: %+v", a.Location(), b.Location(), r)
		}
	}
	o = base
	o.TrustServerChecksum = false
	for _, r := range copyAll(t, b, back, entries, workers, o) {
		if r.Proof != storage.ProofReadBack || r.Skipped {
			t.Fatalf("%s → %s: %+v", b.Location(), back.Location(), r)
		}
	}
	independentCheck(t, a, entries)
	independentCheck(t, b, entries)
	independentCheck(t, back, entries)

	for _, trust := range []bool{true, false} {
		o = base
		o.SkipExisting, o.TrustServerChecksum = true, trust
		for _, r := range copyAll(t, a, b, entries, workers, o) {
			if !r.Skipped {
				t.Fatalf("rerun (trust %v) copied %s again: %+v", trust, r.Key, r)
			}
		}
	}
}

func TestIntegrationCopySmall(t *testing.T) {
	cfg := testbedConfig(t)
	run := "copy-small-" + randomHex(4) + "/"
	sizes := make([]int64, 200)
	for i := range sizes {
		sizes[i] = 15<<10 + int64(i*53)%(10<<10)
	}
	sizes[0], sizes[1] = 0, 1
	for _, dir := range [][2]string{{"clouda", "cloudb"}, {"cloudb", "clouda"}} {
		t.Run(dir[0]+"-"+dir[1], func(t *testing.T) {
			a := cloudStore(t, cfg, dir[0], run+"src")
			b := cloudStore(t, cfg, dir[1], run+"dst")
			back := cloudStore(t, cfg, dir[0], run+"back")
			entries := seed(t, a, sizes, "Patient/")
			roundTrip(t, a, b, back, entries, 16, storage.CopyOptions{Parallel: 1})
		})
	}
}

func TestIntegrationCopyLarge(t *testing.T) {
	cfg := testbedConfig(t)
	run := "copy-large-" + randomHex(4) + "/"
	// One PUT per object (the default), and parts (SinglePutMax -1).
	for _, single := range []int64{0, -1} {
		for _, dir := range [][2]string{{"clouda", "cloudb"}, {"cloudb", "clouda"}} {
			t.Run(fmt.Sprintf("%s-%s/single-put-max%d", dir[0], dir[1], single), func(t *testing.T) {
				sub := fmt.Sprintf("%s%d/", run, -single)
				a := cloudStore(t, cfg, dir[0], sub+"src")
				b := cloudStore(t, cfg, dir[1], sub+"dst")
				back := cloudStore(t, cfg, dir[0], sub+"back")
				entries := seed(t, a, []int64{64 << 20, 64<<20 + 12345}, "Observation/")
				roundTrip(t, a, b, back, entries, 2, storage.CopyOptions{Parallel: 4, SinglePutMax: single})
			})
		}
	}
}

// A copy larger than the destination's part size goes in one PUT by
// default, so the server verified, and reports, the whole object's
// SHA-256: a Stat proof then compares it, and a wrong one fails. In parts
// the server reports only a checksum of part checksums.
func TestIntegrationCopyOneRequestWholeSHA(t *testing.T) {
	cfg := testbedConfig(t)
	run := "copy-onereq-" + randomHex(4) + "/"
	for _, dir := range [][2]string{{"clouda", "cloudb"}, {"cloudb", "clouda"}} {
		a := cloudStore(t, cfg, dir[0], run+"src")
		b := cloudStore(t, cfg, dir[1], run+"dst")
		n := int64(storage.DefaultPartSize + 12345)
		e := seed(t, a, []int64{n}, "w/")[0]
		other := bytes.Clone(e.sum)
		other[0] ^= 1
		for _, single := range []int64{0, -1} {
			if _, err := storage.Copy(context.Background(), a, b, e.key, storage.CopyOptions{Size: n, SHA256: e.sum, TrustServerChecksum: true, SinglePutMax: single}); err != nil {
				t.Fatalf("%s → %s, single-put max %d: %v", dir[0], dir[1], single, err)
			}
			_, err := storage.Prove(context.Background(), b, e.key, n, other, true)
			if wholeReported := err != nil; wholeReported != (single == 0) {
				t.Errorf("%s, single-put max %d: Stat proof against a wrong SHA-256 gave %v", dir[1], single, err)
			}
			if _, err := storage.Prove(context.Background(), b, e.key, n, e.sum, true); err != nil {
				t.Errorf("%s, single-put max %d: Stat proof of the right SHA-256: %v", dir[1], single, err)
			}
		}
	}
}

// A source object that differs from its manifest entry is refused and the
// destination stays empty, on real servers, in both directions and for
// every path: read whole and checked by the client (20 KiB), streamed in
// one PUT and checked by the trusted server (40 MiB), streamed in parts and
// checked by the client before Complete (40 MiB, SinglePutMax -1).
func TestIntegrationCopySourceMismatch(t *testing.T) {
	cfg := testbedConfig(t)
	run := "copy-mismatch-" + randomHex(4) + "/"
	for _, dir := range [][2]string{{"clouda", "cloudb"}, {"cloudb", "clouda"}} {
		a := cloudStore(t, cfg, dir[0], run+dir[0]+"-src")
		b := cloudStore(t, cfg, dir[1], run+dir[1]+"-dst")
		if !verifies(t, b) {
			t.Fatalf("%s does not verify checksums: this test needs a trusted destination", dir[1])
		}
		for _, tc := range []struct{ n, single int64 }{{20 << 10, 0}, {40 << 20, 0}, {40 << 20, -1}} {
			e := seed(t, a, []int64{tc.n}, fmt.Sprintf("m%d-%d/", tc.n, -tc.single))[0]
			wrong := bytes.Clone(e.sum)
			wrong[0] ^= 1
			_, err := storage.Copy(context.Background(), a, b, e.key, storage.CopyOptions{Size: tc.n, SHA256: wrong, TrustServerChecksum: true, SinglePutMax: tc.single, Retry: noRetry})
			if !errors.Is(err, storage.ErrIntegrity) || !strings.Contains(err.Error(), e.key) || !strings.Contains(err.Error(), "nothing was written") {
				t.Fatalf("%s → %s, %d bytes (single-put max %d), wrong manifest SHA-256: %v, want ErrIntegrity naming the key and saying nothing was written", dir[0], dir[1], tc.n, tc.single, err)
			}
			t.Logf("%s → %s, %d bytes (single-put max %d): %v", dir[0], dir[1], tc.n, tc.single, err)
			if _, err := b.Stat(context.Background(), e.key); !errors.Is(err, storage.ErrNotExist) {
				t.Fatalf("%s, %d bytes: destination holds the refused object (stat %v)", dir[1], tc.n, err)
			}
		}
	}
}

// What the test-bed servers report through HEAD with x-amz-checksum-mode:
// a Stat proof compares a full-object SHA-256 when the server gives one.
func TestIntegrationServerReportedChecksum(t *testing.T) {
	cfg := testbedConfig(t)
	run := "copy-headsum-" + randomHex(4) + "/"
	for _, cloud := range []string{"clouda", "cloudb"} {
		st := cloudStore(t, cfg, cloud, run)
		for _, n := range []int64{1000, 20 << 20} {
			e := seed(t, st, []int64{n}, fmt.Sprintf("h%d/", n))[0]
			other := bytes.Clone(e.sum)
			other[0] ^= 1
			_, err := storage.Prove(context.Background(), st, e.key, n, other, true)
			t.Logf("%s, %d bytes: Stat proof against a wrong SHA-256: %v", cloud, n, err)
			// Single PUTs report the whole-object SHA-256, which is compared;
			// multipart objects report a checksum of part checksums, which
			// is not, so their Stat proof rests on the server's per-part
			// verification and the size.
			if multipart := n > storage.DefaultPartSize; multipart != (err == nil) {
				t.Errorf("%s, %d bytes (multipart %v): Stat proof against a wrong SHA-256 gave %v", cloud, n, multipart, err)
			}
			if _, err := storage.Prove(context.Background(), st, e.key, n, e.sum, true); err != nil {
				t.Errorf("%s, %d bytes: Stat proof of the right SHA-256: %v", cloud, n, err)
			}
		}
	}
}

// cancellingSource cancels the copy when the third range read starts, or
// after the first kilobyte of a Get: Ctrl-C mid-copy.
type cancellingSource struct {
	*storage.S3Store
	cancel context.CancelFunc
	ranges int
	mu     sync.Mutex
}

func (c *cancellingSource) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	c.mu.Lock()
	c.ranges++
	if c.ranges == 3 {
		c.cancel()
	}
	c.mu.Unlock()
	return c.S3Store.GetRange(ctx, key, off, n)
}

func (c *cancellingSource) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := c.S3Store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(rc, 1024), &cancellingReader{ctx: ctx, cancel: c.cancel, sent: 1000}), rc}, nil
}

func TestIntegrationCopyCancelLeavesNothing(t *testing.T) {
	cfg := testbedConfig(t)
	run := "copy-cancel-" + randomHex(4) + "/"
	a := cloudStore(t, cfg, "clouda", run+"src")
	b := cloudStore(t, cfg, "cloudb", run+"dst")
	entries := seed(t, a, []int64{4 << 10, 40 << 20}, "c/")
	for _, e := range entries {
		ctx, cancel := context.WithCancel(context.Background())
		src := &cancellingSource{S3Store: a, cancel: cancel}
		_, err := storage.Copy(ctx, src, b, e.key, storage.CopyOptions{Size: e.size, SHA256: e.sum, PartSize: 8 << 20, TrustServerChecksum: true})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%d bytes: cancelled copy: %v, want context.Canceled", e.size, err)
		}
		if _, err := b.Stat(context.Background(), e.key); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("%d bytes: cancelled copy is visible at the destination (stat %v)", e.size, err)
		}
	}
}
