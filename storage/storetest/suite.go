// Package storetest is the conformance suite every storage.Store passes:
// the local folder store, and the S3 store against each real server of the
// test bed. A behaviour that one store shows and another does not is a bug
// in the store, found here rather than in a hospital's exit drill.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/ehrport/ehrport/storage"
)

// NewStore returns an empty store for one subtest. Each call must give a
// fresh namespace (a new folder or key prefix), so subtests cannot see each
// other's objects.
type NewStore func(t *testing.T) storage.Store

// Run runs the whole suite.
func Run(t *testing.T, newStore NewStore) {
	t.Run("RoundTripSizes", func(t *testing.T) { testRoundTripSizes(t, newStore(t)) })
	t.Run("KnownSHA256", func(t *testing.T) { testKnownSHA256(t, newStore(t)) })
	t.Run("WrongSHA256Rejected", func(t *testing.T) { testWrongSHA256(t, newStore(t)) })
	t.Run("SizeMismatchLeavesNothing", func(t *testing.T) { testSizeMismatch(t, newStore(t)) })
	t.Run("Overwrite", func(t *testing.T) { testOverwrite(t, newStore(t)) })
	t.Run("NotExist", func(t *testing.T) { testNotExist(t, newStore(t)) })
	t.Run("UnicodeAndSpaces", func(t *testing.T) { testUnicodeKeys(t, newStore(t)) })
	t.Run("ListPaging", func(t *testing.T) { testListPaging(t, newStore(t)) })
	t.Run("ListPrefixAndOrder", func(t *testing.T) { testListOrder(t, newStore(t)) })
	t.Run("RangeRead", func(t *testing.T) { testRange(t, newStore(t)) })
	t.Run("Cancellation", func(t *testing.T) { testCancel(t, newStore(t)) })
	t.Run("BadKeys", func(t *testing.T) { testBadKeys(t, newStore(t)) })
}

// Sizes exercised by RoundTripSizes: empty, one byte, both sides of S3's
// minimum part size, and a multipart object of several parts.
var Sizes = []int64{0, 1, 4096, 5<<20 - 1, 5<<20 + 1, 64 << 20}

func payload(seed uint64, n int64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1})
	r.Read(b)
	return b
}

func mustPut(t *testing.T, st storage.Store, key string, body []byte) {
	t.Helper()
	if err := st.Put(context.Background(), key, bytes.NewReader(body), int64(len(body)), storage.PutOptions{}); err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
}

func mustGet(t *testing.T, st storage.Store, key string) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return b
}

func listKeys(t *testing.T, st storage.Store, prefix string) []string {
	t.Helper()
	var keys []string
	for oi, err := range st.List(context.Background(), prefix) {
		if err != nil {
			t.Fatalf("list %q: %v", prefix, err)
		}
		keys = append(keys, oi.Key)
	}
	return keys
}

func testRoundTripSizes(t *testing.T, st storage.Store) {
	for i, n := range Sizes {
		key := fmt.Sprintf("sizes/%d.bin", n)
		body := payload(uint64(i), n)
		// iotest.HalfReader returns short reads, as network bodies do.
		if err := st.Put(context.Background(), key, iotest.HalfReader(bytes.NewReader(body)), n, storage.PutOptions{}); err != nil {
			t.Fatalf("put %d bytes: %v", n, err)
		}
		oi, err := st.Stat(context.Background(), key)
		if err != nil {
			t.Fatalf("stat %d bytes: %v", n, err)
		}
		if oi.Size != n {
			t.Fatalf("stat size = %d, want %d", oi.Size, n)
		}
		rc, err := st.Get(context.Background(), key)
		if err != nil {
			t.Fatalf("get %d bytes: %v", n, err)
		}
		// iotest.TestReader probes every read pattern but is slow on large
		// bodies; those are compared by hash of a streamed read.
		if n <= 1<<20 {
			if err := iotest.TestReader(rc, body); err != nil {
				t.Fatalf("read back %d bytes: %v", n, err)
			}
		} else {
			h := sha256.New()
			if _, err := io.Copy(h, rc); err != nil {
				t.Fatalf("read back %d bytes: %v", n, err)
			}
			if want := sha256.Sum256(body); !bytes.Equal(h.Sum(nil), want[:]) {
				t.Fatalf("read back %d bytes: content differs", n)
			}
		}
		rc.Close()
	}
}

func testKnownSHA256(t *testing.T, st storage.Store) {
	for i, n := range []int64{0, 100, 5<<20 + 1, 40 << 20} {
		body := payload(uint64(100+i), n)
		sum := sha256.Sum256(body)
		key := fmt.Sprintf("known/%d", n)
		if err := st.Put(context.Background(), key, bytes.NewReader(body), n, storage.PutOptions{SHA256: sum[:]}); err != nil {
			t.Fatalf("put %d bytes with its SHA-256: %v", n, err)
		}
		if got := mustGet(t, st, key); !bytes.Equal(got, body) {
			t.Fatalf("%d bytes: read back different bytes", n)
		}
	}
}

// A Put whose content does not match the SHA-256 the caller promised must
// fail and leave nothing: this is how a corrupted source is caught in flight.
func testWrongSHA256(t *testing.T, st storage.Store) {
	for _, n := range []int64{10, 40 << 20} {
		body := payload(7, n)
		wrong := sha256.Sum256([]byte("other bytes"))
		key := fmt.Sprintf("wrong/%d", n)
		err := st.Put(context.Background(), key, bytes.NewReader(body), n, storage.PutOptions{SHA256: wrong[:]})
		if err == nil {
			t.Fatalf("put %d bytes with a wrong SHA-256 succeeded", n)
		}
		if _, err := st.Stat(context.Background(), key); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("after a rejected put of %d bytes, stat = %v, want ErrNotExist", n, err)
		}
	}
}

func testSizeMismatch(t *testing.T, st storage.Store) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		body     int64
		declared int64
	}{
		{"short", 10, 11},
		{"long", 12, 11},
		{"short-multipart", 20 << 20, 40 << 20},
		{"long-multipart", 40<<20 + 1, 40 << 20},
	} {
		key := "mismatch/" + tc.name
		err := st.Put(ctx, key, bytes.NewReader(payload(1, tc.body)), tc.declared, storage.PutOptions{})
		if err == nil {
			t.Errorf("%s: put of %d bytes declared as %d succeeded", tc.name, tc.body, tc.declared)
		}
		if _, err := st.Stat(ctx, key); !errors.Is(err, storage.ErrNotExist) {
			t.Errorf("%s: after a failed put, stat = %v, want ErrNotExist", tc.name, err)
		}
	}
	if keys := listKeys(t, st, "mismatch/"); len(keys) != 0 {
		t.Errorf("failed puts left objects: %q", keys)
	}
}

func testOverwrite(t *testing.T, st storage.Store) {
	mustPut(t, st, "o", []byte("first version"))
	mustPut(t, st, "o", []byte("second"))
	if got := string(mustGet(t, st, "o")); got != "second" {
		t.Fatalf("after overwrite got %q", got)
	}
}

func testNotExist(t *testing.T, st storage.Store) {
	ctx := context.Background()
	if _, err := st.Get(ctx, "missing/object"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("get missing: %v, want ErrNotExist", err)
	}
	if _, err := st.Stat(ctx, "missing/object"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("stat missing: %v, want ErrNotExist", err)
	}
	var se *storage.Error
	if _, err := st.Stat(ctx, "missing/object"); !errors.As(err, &se) || se.Key != "missing/object" {
		t.Errorf("stat missing: %v, want a *storage.Error naming the key", err)
	}
	if err := st.Delete(ctx, "missing/object"); err != nil {
		t.Errorf("delete missing: %v, want nil", err)
	}
	mustPut(t, st, "d", []byte("x"))
	if err := st.Delete(ctx, "d"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := st.Stat(ctx, "d"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("stat after delete: %v, want ErrNotExist", err)
	}
	if keys := listKeys(t, st, ""); len(keys) != 0 {
		t.Errorf("store not empty after delete: %q", keys)
	}
}

func testUnicodeKeys(t *testing.T, st storage.Store) {
	keys := []string{
		"with space/file name.ndjson",
		"ünïcödé/Patiënt-æøå.ndjson",
		"日本語/患者.ndjson",
		"emoji/🩺.bin",
		"plus+and=equals&amp;/x",
	}
	for i, k := range keys {
		mustPut(t, st, k, []byte(k))
		if got := string(mustGet(t, st, k)); got != k {
			t.Errorf("key %q: read back %q", k, got)
		}
		if _, err := st.Stat(context.Background(), k); err != nil {
			t.Errorf("stat %q: %v", k, err)
		}
		_ = i
	}
	got := listKeys(t, st, "")
	if len(got) != len(keys) {
		t.Fatalf("listed %d keys, want %d: %q", len(got), len(keys), got)
	}
	for _, k := range keys {
		found := false
		for _, g := range got {
			found = found || g == k
		}
		if !found {
			t.Errorf("key %q missing from listing %q", k, got)
		}
	}
}

// ListKeys is more than one S3 page (1,000 keys).
const ListKeys = 1050

func testListPaging(t *testing.T, st storage.Store) {
	var wg sync.WaitGroup
	errs := make(chan error, ListKeys)
	sem := make(chan struct{}, 16)
	for i := range ListKeys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			k := fmt.Sprintf("page/%05d", i)
			if err := st.Put(context.Background(), k, strings.NewReader("p"), 1, storage.PutOptions{}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	keys := listKeys(t, st, "page/")
	if len(keys) != ListKeys {
		t.Fatalf("listed %d keys, want %d", len(keys), ListKeys)
	}
	for i, k := range keys {
		if want := fmt.Sprintf("page/%05d", i); k != want {
			t.Fatalf("key %d = %q, want %q", i, k, want)
		}
	}
	// Stopping early must work too.
	n := 0
	for _, err := range st.List(context.Background(), "page/") {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 5 {
			break
		}
	}
}

func testListOrder(t *testing.T, st storage.Store) {
	for _, k := range []string{"a/b", "a-c", "a/a/z", "ab", "b", "a0"} {
		mustPut(t, st, k, []byte(k))
	}
	got := strings.Join(listKeys(t, st, ""), " ")
	if want := "a-c a/a/z a/b a0 ab b"; got != want {
		t.Errorf("list order = %q, want %q (byte order of keys, as S3)", got, want)
	}
	if got := strings.Join(listKeys(t, st, "a/"), " "); got != "a/a/z a/b" {
		t.Errorf("list a/ = %q", got)
	}
	if got := strings.Join(listKeys(t, st, "a"), " "); got != "a-c a/a/z a/b a0 ab" {
		t.Errorf("list a = %q", got)
	}
	if got := listKeys(t, st, "zzz"); len(got) != 0 {
		t.Errorf("list zzz = %q", got)
	}
}

func testRange(t *testing.T, st storage.Store) {
	rr, ok := st.(storage.RangeReader)
	if !ok {
		t.Skip("store has no range reads")
	}
	body := payload(3, 1<<20)
	mustPut(t, st, "r", body)
	for _, c := range [][2]int64{{0, 1}, {0, 1 << 20}, {12345, 54321}, {1<<20 - 1, 1}, {100, 0}} {
		rc, err := rr.GetRange(context.Background(), "r", c[0], c[1])
		if err != nil {
			t.Fatalf("range %v: %v", c, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("range %v: %v", c, err)
		}
		if !bytes.Equal(got, body[c[0]:c[0]+c[1]]) {
			t.Fatalf("range %v: wrong bytes", c)
		}
	}
	if _, err := rr.GetRange(context.Background(), "nope", 0, 1); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("range of missing object: %v, want ErrNotExist", err)
	}
}

// blockingReader yields some bytes, then cancels and blocks until the
// context is done, like a slow upstream when the user presses Ctrl-C.
type blockingReader struct {
	ctx    context.Context
	cancel context.CancelFunc
	sent   int
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if b.sent < 1<<20 {
		n := min(len(p), 1<<20-b.sent)
		b.sent += n
		return n, nil
	}
	b.cancel()
	<-b.ctx.Done()
	return 0, b.ctx.Err()
}

func testCancel(t *testing.T, st storage.Store) {
	for _, size := range []int64{2 << 20, 40 << 20} {
		ctx, cancel := context.WithCancel(context.Background())
		key := fmt.Sprintf("cancel/%d", size)
		err := st.Put(ctx, key, &blockingReader{ctx: ctx, cancel: cancel}, size, storage.PutOptions{})
		cancel()
		if err == nil {
			t.Fatalf("cancelled put of %d bytes succeeded", size)
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled put: %v, want context.Canceled in the chain", err)
		}
		if _, err := st.Stat(context.Background(), key); !errors.Is(err, storage.ErrNotExist) {
			t.Errorf("after a cancelled put, stat = %v, want ErrNotExist", err)
		}
	}
	mustPut(t, st, "c", []byte("x"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := st.Get(ctx, "c"); err == nil {
		if _, err := st.Stat(ctx, "c"); err == nil {
			// Folder reads may not look at the context until Read.
			rc, _ := st.Get(ctx, "c")
			if _, err := io.ReadAll(rc); err == nil {
				t.Error("reading with a cancelled context succeeded")
			}
			rc.Close()
		}
	}
	for _, err := range st.List(ctx, "") {
		if err == nil {
			t.Error("listing with a cancelled context yielded an object")
		}
		break
	}
}

func testBadKeys(t *testing.T, st storage.Store) {
	for _, k := range []string{"", "/abs", "a//b", "bad\x00nul", "bad\xffutf8", strings.Repeat("k", 1025)} {
		if err := st.Put(context.Background(), k, strings.NewReader("x"), 1, storage.PutOptions{}); !errors.Is(err, storage.ErrBadRef) {
			t.Errorf("put key %q: %v, want ErrBadRef", k, err)
		}
	}
}
