package verify

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"sync"
	"testing"

	"github.com/ehrport/ehrport/storage"
)

// tlsRecord is the most one Read of an HTTPS body returns: one TLS record.
const tlsRecord = 16 << 10

// recordReads serves bodies that return at most one TLS record per Read,
// and counts the Reads and the bytes per key.
type recordReads struct {
	storage.Store
	mu    sync.Mutex
	reads map[string]int
	bytes map[string]int64
}

func (s *recordReads) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := s.Store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	return &recordBody{rc: rc, s: s, key: key}, nil
}

type recordBody struct {
	rc  io.ReadCloser
	s   *recordReads
	key string
}

func (b *recordBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p[:min(len(p), tlsRecord)])
	b.s.mu.Lock()
	if b.s.reads == nil {
		b.s.reads, b.s.bytes = map[string]int{}, map[string]int64{}
	}
	b.s.reads[b.key]++
	b.s.bytes[b.key] += int64(n)
	b.s.mu.Unlock()
	return n, err
}

func (b *recordBody) Close() error { return b.rc.Close() }

// Each Read of an object's body goes down the whole stack (limit, HTTP
// body, TLS): verify asks for at least a record at a time, so a large
// object takes about one Read per record on each side, not two (io.Copy's
// 8 KiB), and every byte is still read.
func TestVerifyReadsWholeRecords(t *testing.T) {
	a, b, bodies := twoCopies(t)
	target, reference := &recordReads{Store: b}, &recordReads{Store: a}
	_, cmp := verifyAgainst(t, target, reference)
	if !cmp.OK() {
		t.Fatalf("identical copies: findings %+v", cmp.Findings)
	}
	for k, body := range bodies {
		n := int64(len(body))
		for side, s := range map[string]*recordReads{"target": target, "reference": reference} {
			// The limit lets one byte more through (to see a longer
			// object); the header parser and EOF may take a few more Reads.
			want := int((n+tlsRecord-1)/tlsRecord) + 8
			if s.bytes[k] != n {
				t.Errorf("%s at the %s: %d of %d bytes read", k, side, s.bytes[k], n)
			}
			if s.reads[k] > want {
				t.Errorf("%s (%d bytes) at the %s: %d Reads, want at most %d", k, n, side, s.reads[k], want)
			}
		}
	}
}

// A small reference object is read into a buffer of its own size, not a
// whole refChunk: with thousands of small objects, those chunks were most
// of what verify --against allocated.
func TestCompareReferenceSmallObjectAllocation(t *testing.T) {
	st, err := storage.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	obj := make([]byte, 20000)
	for i := range obj {
		obj[i] = byte(i)
	}
	ctx := context.Background()
	if err := st.Put(ctx, "small.ehr", bytes.NewReader(obj), int64(len(obj)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	compare := func() {
		r := compareReference(ctx, st, "small.ehr", int64(len(obj)))
		r.Write(obj)
		if !r.same() {
			t.Fatal("the reference differs from its own bytes")
		}
		r.close()
	}
	compare() // the folder store's first use
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const rounds = 20
	for range rounds {
		compare()
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / rounds; per > 3*uint64(len(obj)) {
		t.Fatalf("comparing a %d-byte object allocated %d bytes", len(obj), per)
	}
}
